"""Compliance routes: what staff said that advertising rules forbid, per conversation and per consultant."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from . import crud
from .api import PrincipalDep, SessionDep

router = APIRouter(tags=["compliance"])


class ComplianceFlagOut(BaseModel):
    conversation: int | None = Field(description="the conversation's index in the recording")
    code: str
    label: str
    segment: int
    start: float | None
    end: float | None
    quote: str = Field(description="the segment's text")
    match: str = Field(description="the flagged words")


class RecordingCompliance(BaseModel):
    recording_id: str
    flags: list[ComplianceFlagOut]


class ConsultantCompliance(BaseModel):
    device_id: str = Field(description="the badge, i.e. the consultant who wears it")
    conversations: int
    flagged_conversations: int
    total_flags: int
    flags: dict[str, int] = Field(description="flags per compliance code")


class ComplianceReport(BaseModel):
    since: datetime | None
    until: datetime | None
    consultants: list[ConsultantCompliance]


@router.get("/v1/recordings/{recording_id}/compliance", response_model=RecordingCompliance)
def recording_compliance(recording_id: str, principal: PrincipalDep, session: SessionDep) -> RecordingCompliance:
    """Phrases QA flags (保证效果, 无副作用, 零风险, 绝对安全 …) said by staff, per conversation."""
    principal.require("compliance:read")
    rec = crud.get_recording(session, tenant_id=principal.tenant_id, recording_id=recording_id)
    index = {c.id: c.idx for c in crud.list_conversations(session, recording_id=rec.id)}
    return RecordingCompliance(
        recording_id=rec.id,
        flags=[
            ComplianceFlagOut(conversation=index.get(f.conversation_id), code=f.code, label=f.label,
                              segment=f.segment_idx, start=f.start, end=f.end, quote=f.quote, match=f.match)
            for f in crud.list_compliance_flags(session, recording_id=rec.id)
        ],
    )


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


@router.get("/v1/reports/compliance", response_model=ComplianceReport)
def compliance_report(
    principal: PrincipalDep,
    session: SessionDep,
    since: Annotated[datetime | None, Query(description="recordings made at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="recordings made before (ISO 8601)")] = None,
) -> ComplianceReport:
    """Per consultant (badge): conversations, flagged conversations and flags per code."""
    principal.require("compliance:read")
    since, until = _utc(since), _utc(until)
    rows = crud.compliance_report(session, tenant_id=principal.tenant_id, since=since, until=until)
    return ComplianceReport(since=since, until=until, consultants=[ConsultantCompliance(**r) for r in rows])
