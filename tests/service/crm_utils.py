"""Helpers for the CRM tests: an app without the speech models, and recordings seeded as rows.

Seeded recordings skip transcription (their segments are given) but go through the real
conversation store and the real ``tag`` stage, so profiles and changes come from production code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from service import crud
from service.auth import ensure_tenant
from service.db import session_scope
from service.models import Recording, new_id


@dataclass
class Seg:
    index: int
    start: float
    end: float
    text: str
    speaker: str | None = "customer"
    discarded: str | None = None
    loudness_db: float | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass
class Span:
    index: int
    start: float
    end: float
    segments: list[int] = field(default_factory=list)
    reason: str = "pause"
    customer_ref: str | None = None


def spans_of(conversations: list[list[tuple[str, str]]]) -> tuple[list[Seg], list[Span]]:
    segs, spans, t, i = [], [], 0.0, 0
    for n, turns in enumerate(conversations):
        span = Span(index=n, start=t, end=t)
        for speaker, text in turns:
            segs.append(Seg(index=i, start=t, end=t + 3.0, text=text, speaker=speaker))
            span.segments.append(i)
            i, t = i + 1, t + 3.5
        span.end = t
        spans.append(span)
        t += 120.0
    return segs, spans


def seed_recording(
    app, conversations: list[list[tuple[str, str]]], *, customer_ref: str | None = None, tenant: str = "default",
    recorded_at: datetime = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc), device: str = "badge-1",
) -> str:
    """A finished recording with the given conversations (turns of (speaker, text)), tagged by the
    real tag stage. Returns its id."""
    engine = app.state.engine
    segs, spans = spans_of(conversations)
    with session_scope(engine) as s:
        ensure_tenant(s, tenant)
        dev = crud.get_or_create_device(s, tenant_id=tenant, external_id=device, source="badge")
        cust = crud.get_or_create_customer(s, tenant_id=tenant, ref=customer_ref) if customer_ref else None
        rec = Recording(id=new_id(), tenant_id=tenant, device_id=dev.id, customer_id=cust.id if cust else None,
                        source="badge", recorded_at=recorded_at, sha256="0" * 64, audio_path="seeded",
                        status="processing", duration=spans[-1].end if spans else 0.0, language="zh")
        s.add(rec)
        s.flush()
        crud.add_segments(s, recording=rec, segments=segs)
        crud.replace_conversations(s, recording=rec, spans=spans, labels={},
                                   customer_for=lambda span: cust.id if cust else None)
        rid = rec.id
    app.state.pipeline.tag(rid)
    return rid


def respan(app, rid: str, conversations) -> None:
    """Run the conversation store again with the same spans (as a re-run of the speakers stage)."""
    _, spans = spans_of(conversations)
    with session_scope(app.state.engine) as s:
        rec = s.get(Recording, rid)
        crud.replace_conversations(s, recording=rec, spans=spans, labels={},
                                   customer_for=lambda span: rec.customer_id)
