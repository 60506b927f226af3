"""Response shapes of the public API (what OpenAPI documents)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class RecordingAccepted(BaseModel):
    id: str
    status: str
    duplicate: bool = Field(False, description="true when this client_ref was uploaded before; nothing was stored twice")


class ConversationOut(BaseModel):
    index: int
    start: float = Field(description="seconds from the recording's start")
    end: float
    customer_ref: str | None = None
    split_reason: str = Field(description="start | pause | appointment")
    staff_seconds: float
    customer_seconds: float
    talk_ratio: float | None = Field(None, description="staff share of the speech time")


class RecordingOut(BaseModel):
    id: str
    status: str = Field(description="queued | processing | done | failed")
    progress: float = Field(ge=0, le=1)
    error: str | None = None
    device_id: str
    source: str
    customer_ref: str | None = None
    client_ref: str | None = None
    recorded_at: datetime
    received_at: datetime
    duration: float | None = Field(None, description="seconds")
    language: str | None = None
    size_bytes: int
    sha256: str
    conversations: list[ConversationOut] = []


class EvidenceOut(BaseModel):
    segment: int
    start: float | None
    end: float | None
    quote: str
    match: str
    speaker: str | None = None


class TagOut(BaseModel):
    conversation: int | None = Field(None, description="index of the conversation the tag belongs to")
    kind: str
    code: str
    label: str
    confidence: float
    method: str
    status: str
    taxonomy_version: str
    tagger_version: str
    evidence: list[EvidenceOut]


class SegmentOut(BaseModel):
    index: int
    start: float
    end: float
    text: str
    speaker: str | None = Field(None, description="staff | customer")
    conversation: int | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class DiscardedOut(BaseModel):
    index: int
    start: float
    end: float
    text: str
    reason: str = Field(description="phantom | repetition | no_speech | low_confidence | language")


class TranscriptOut(BaseModel):
    recording_id: str
    status: str
    language: str | None
    duration: float | None
    asr_model: str | None
    text: str
    segments: list[SegmentOut]
    discarded: list[DiscardedOut] = Field(description="text the hallucination guards set aside (not tagged)")
    conversations: list[ConversationOut]
    tags: list[TagOut]


class ProfileTagOut(BaseModel):
    kind: str
    code: str
    label: str
    count: int = Field(description="number of conversations the tag came from (0: set by the CRM only)")
    confidence: float
    first_seen: datetime
    last_seen: datetime
    recordings: list[str]
    conversations: list[str] = Field([], description="`<recording_id>:<conversation index>` of each conversation")
    source: str = Field("conversation", description="conversation | manual (set by a CRM)")


class WecomContactOut(BaseModel):
    userid: str
    external_userid: str


class CustomerProfileOut(BaseModel):
    customer_ref: str
    updated_at: datetime
    merged_into: str | None = Field(None, description="set when this record was merged into another customer")
    wecom: WecomContactOut | None = None
    tags: list[ProfileTagOut]


class ChangeOut(BaseModel):
    cursor: int
    customer_ref: str
    action: str = Field(description="added | updated | removed")
    kind: str
    code: str
    label: str
    count: int
    confidence: float
    recording_id: str | None
    source: str = Field("conversation", description="conversation | manual")
    reason: str = Field("tagging", description="what caused it: tagging | review | link | merge | manual")
    created_at: datetime


def change_out(c) -> ChangeOut:
    """A ``TagChange`` row as the feed and the webhooks show it."""
    from datetime import timezone

    created = c.created_at if c.created_at.tzinfo else c.created_at.replace(tzinfo=timezone.utc)
    return ChangeOut(
        cursor=c.seq, customer_ref=c.customer_ref, action=c.action, kind=c.kind, code=c.code, label=c.label,
        count=c.count, confidence=c.confidence, recording_id=c.recording_id, source=c.source, reason=c.reason,
        created_at=created,
    )


class ChangesPage(BaseModel):
    data: list[ChangeOut]
    next: int = Field(description="pass as `after` to read on; equals `after` when nothing new")
    has_more: bool


class Health(BaseModel):
    status: str
    pending_jobs: int
