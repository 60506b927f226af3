"""Tables of the CRM write-back: QA reviews, manual CRM tags, webhook outbox, WeCom connector.

Every row carries ``tenant_id``. The webhook outbox (``webhook_delivery``) is written in the same
transaction as the ``tag_change`` rows it announces, so a committed change always has its
deliveries and a rolled-back one has none.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import Column, DateTime, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from .models import _ts


def _dt(**kw):
    return Field(default=None, sa_column=Column(DateTime(timezone=True), **kw))


class TagReview(SQLModel, table=True):
    """A QA decision on one tag of one conversation: who decided what, when."""

    __tablename__ = "tag_review"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    recording_id: str = Field(foreign_key="recording.id", index=True, max_length=32)
    conversation_id: int | None = Field(default=None, foreign_key="conversation.id", index=True)
    conversation_idx: int  # survives re-processing (conversation ids are replaced)
    tag_assignment_id: int | None = Field(default=None, foreign_key="tag_assignment.id")
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    action: str = Field(max_length=8)  # accept | reject | add
    actor: str = Field(max_length=32)  # API key id
    note: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _ts(nullable=False)


class ManualTag(SQLModel, table=True):
    """A tag a CRM set (``present``) or took away (``removed``) on a customer.

    ``removed`` hides the conversation evidence recorded up to ``updated_at``; a later
    conversation that shows the tag again brings it back.
    """

    __tablename__ = "manual_tag"
    __table_args__ = (UniqueConstraint("customer_id", "kind", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    customer_id: int = Field(foreign_key="customer.id", index=True)
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    label: str = Field(max_length=100)
    state: str = Field(max_length=8)  # present | removed
    actor: str = Field(max_length=32)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


def new_webhook_secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoint"
    id: str = Field(default_factory=lambda: "ep_" + secrets.token_hex(8), primary_key=True, max_length=32)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    url: str = Field(max_length=2000)
    description: str = Field(default="", max_length=200)
    secret: str = Field(default_factory=new_webhook_secret, max_length=100)  # whsec_<base64>, needed to sign
    enabled: bool = True
    disabled_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)


class WebhookDelivery(SQLModel, table=True):
    """One change for one endpoint (the outbox row). Delivered in ``change_seq`` order per endpoint.

    status: pending (waiting for its turn or its next attempt) | sending (leased by a worker) |
    delivered | dead (gave up after ~ a day, or the endpoint answered a permanent error).
    """

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "change_seq"),
        Index("ix_webhook_delivery_queue", "status", "endpoint_id", "change_seq"),
    )
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    endpoint_id: str = Field(foreign_key="webhook_endpoint.id", max_length=32)
    change_seq: int = Field(foreign_key="tag_change.seq")
    msg_id: str = Field(max_length=64)  # the webhook-id header: the same on every attempt
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False)
    lease_until: datetime | None = _dt()
    worker: str | None = Field(default=None, max_length=100)
    last_status: int | None = None
    last_error: str | None = Field(default=None, max_length=1000)
    created_at: datetime = _ts(nullable=False)
    delivered_at: datetime | None = _dt()


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempt"
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    delivery_id: int = Field(foreign_key="webhook_delivery.id", index=True)
    attempt: int
    status_code: int | None = None
    error: str | None = Field(default=None, max_length=1000)
    duration_ms: int
    created_at: datetime = _ts(nullable=False)


class WecomConfig(SQLModel, table=True):
    """A tenant's WeCom (企业微信) connector: credentials, cached token, and its change-feed cursor."""

    __tablename__ = "wecom_config"
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=64)
    corp_id: str = Field(max_length=64)
    secret: str = Field(max_length=200)
    base_url: str = Field(default="https://qyapi.weixin.qq.com", max_length=500)
    group_prefix: str = Field(default="Earmark", max_length=32)
    enabled: bool = True
    cursor: int = 0  # last tag_change.seq applied (or skipped) in WeCom
    access_token: str | None = Field(default=None, max_length=600)
    token_expires_at: datetime | None = _dt()
    next_run_at: datetime | None = _dt()  # back-off after rate limits or outages
    last_error: str | None = Field(default=None, max_length=1000)
    applied: int = 0  # mark_tag calls that succeeded
    skipped: int = 0  # changes of customers with no WeCom contact, or refused by WeCom
    updated_at: datetime = _ts(nullable=False)


class WecomTag(SQLModel, table=True):
    """Taxonomy code → WeCom corp tag id (one tag group per family)."""

    __tablename__ = "wecom_tag"
    __table_args__ = (UniqueConstraint("tenant_id", "kind", "code"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    tag_id: str = Field(max_length=64)
    group_id: str = Field(max_length=64)


class WecomContact(SQLModel, table=True):
    """Which WeCom external contact a customer is, and which staff member owns the relation."""

    __tablename__ = "wecom_contact"
    __table_args__ = (UniqueConstraint("customer_id"),)
    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=64)
    customer_id: int = Field(foreign_key="customer.id")
    userid: str = Field(max_length=64)
    external_userid: str = Field(max_length=64)
    synced: bool = False  # the whole current profile was marked in WeCom (done once per new contact)
    updated_at: datetime = _ts(nullable=False)
