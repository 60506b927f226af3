"""Persistent entities. Every row carries ``tenant_id`` from day one."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

DEFAULT_TENANT = "default"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_column=Column(DateTime(timezone=True), **kw))


class Tenant(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    created_at: datetime = _ts(nullable=False)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_key"
    id: str = Field(primary_key=True, max_length=32)  # public key id, part of the key string
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    role: str = Field(max_length=16)
    name: str = Field(default="", max_length=200)
    secret_hash: str = Field(max_length=64)  # sha256 hex of the secret part
    created_at: datetime = _ts(nullable=False)
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class Device(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "external_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    external_id: str = Field(max_length=128)
    source: str = Field(max_length=16)
    first_seen: datetime = _ts(nullable=False)
    last_seen: datetime = _ts(nullable=False)


class Customer(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "ref"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    ref: str = Field(max_length=128)
    merged_into_id: int | None = Field(default=None, foreign_key="customer.id")  # set by a merge
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False, index=True)


class Recording(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "device_id", "client_ref"),)
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    device_id: int = Field(foreign_key="device.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    source: str = Field(max_length=16)
    client_ref: str | None = Field(default=None, max_length=128)
    recorded_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = _ts(nullable=False)
    filename: str = Field(default="", max_length=255)
    content_type: str = Field(default="", max_length=100)
    size_bytes: int = 0
    sha256: str = Field(max_length=64)
    audio_path: str = Field(max_length=500)  # relative to the audio store
    audio_format: str = Field(default="", max_length=32)
    duration: float | None = None
    status: str = Field(default="queued", max_length=16, index=True)  # queued|processing|done|failed
    progress: float = 0.0
    error: str | None = Field(default=None, max_length=2000)
    language: str | None = Field(default=None, max_length=8)
    asr_model: str | None = Field(default=None, max_length=200)
    asr_info: dict | None = Field(default=None, sa_column=Column(JSON))
    asr_checkpoint: float = 0.0  # seconds of audio fully transcribed and stored (resume point)
    channels: int = 1
    appointments: list | None = Field(default=None, sa_column=Column(JSON))  # [{start, end, customer_ref}]
    updated_at: datetime = _ts(nullable=False)


class Conversation(SQLModel, table=True):
    """One customer conversation inside a recording (a badge day holds several)."""

    __table_args__ = (UniqueConstraint("recording_id", "idx"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    idx: int
    start: float
    end: float
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    customer_linked_by: str | None = Field(default=None, max_length=32)  # API key id that linked it by hand
    split_reason: str = Field(default="", max_length=32)  # start | pause | appointment
    staff_seconds: float = 0.0
    customer_seconds: float = 0.0
    talk_ratio: float | None = None  # staff share of speech time


class Job(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("recording_id", "stage"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    stage: str = Field(max_length=16)  # transcribe | speakers | tag
    status: str = Field(default="queued", max_length=16, index=True)  # queued|running|done|failed
    attempts: int = 0
    lease_until: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    worker: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class Segment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("recording_id", "idx"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    idx: int
    start: float
    end: float
    text: str
    speaker: str | None = Field(default=None, max_length=16)  # staff | customer | None
    conversation_idx: int | None = None
    discarded: str | None = Field(default=None, max_length=32)  # guard reason; not tagged
    loudness_db: float | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None


class TagAssignment(SQLModel, table=True):
    __tablename__ = "tag_assignment"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    customer_id: int | None = Field(default=None, foreign_key="customer.id", index=True)
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    label: str = Field(max_length=100)
    confidence: float
    method: str = Field(max_length=32)
    taxonomy_version: str = Field(max_length=32)
    tagger_version: str = Field(max_length=32)
    status: str = Field(default="auto", max_length=16)  # auto | accepted | rejected (QA reviews)
    evidence: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(nullable=False)


class ProfileTag(SQLModel, table=True):
    """A customer's tag, aggregated over her recordings (materialised for fast reads)."""

    __tablename__ = "profile_tag"
    __table_args__ = (UniqueConstraint("customer_id", "kind", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    label: str = Field(max_length=100)
    count: int
    confidence: float
    first_seen: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    last_seen: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    recordings: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    conversations: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))  # "rid:idx"
    source: str = Field(default="conversation", max_length=16)  # conversation | manual
    updated_at: datetime = _ts(nullable=False)


class TagChange(SQLModel, table=True):
    """The change log CRMs pull: one row per profile change, ``seq`` is the cursor."""

    __tablename__ = "tag_change"
    __table_args__ = (
        Index("ix_tag_change_tenant_seq", "tenant_id", "seq"),  # the feed's query: tenant, seq > cursor
        {"sqlite_autoincrement": True},  # never reuse a sequence number
    )
    seq: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", max_length=64)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    customer_ref: str = Field(max_length=128)
    action: str = Field(max_length=16)  # added | updated | removed
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    label: str = Field(max_length=100)
    count: int
    confidence: float
    recording_id: str | None = Field(default=None, max_length=32)
    source: str = Field(default="conversation", max_length=16)  # conversation | manual
    reason: str = Field(default="tagging", max_length=16)  # tagging | review | link | merge | manual
    created_at: datetime = _ts(nullable=False)


class TaxonomyOverride(SQLModel, table=True):
    """A tenant's changes to the taxonomy (more synonyms, disabled codes, its own codes)."""

    __tablename__ = "taxonomy_override"
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=64)
    revision: int = 0  # bumped on every change: taggers are rebuilt when it moves
    data: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_by: str = Field(default="", max_length=32)  # the API key id
    updated_at: datetime = _ts(nullable=False)


class ComplianceFlag(SQLModel, table=True):
    """A phrase QA flags (保证效果, 零风险 …) said by staff in a conversation."""

    __tablename__ = "compliance_flag"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    device_id: int = Field(foreign_key="device.id", index=True)  # the badge: who said it
    code: str = Field(max_length=64)
    label: str = Field(max_length=100)
    segment_idx: int
    start: float | None = None
    end: float | None = None
    quote: str
    match: str = Field(max_length=200)
    rules_version: str = Field(default="", max_length=32)
    created_at: datetime = _ts(nullable=False)
