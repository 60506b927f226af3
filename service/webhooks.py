"""Webhook subscriptions (Standard Webhooks) and the delivery loop that drains the outbox.

Every profile change is written together with one ``webhook_delivery`` row per enabled endpoint
(same transaction, see :func:`service.crud.enqueue_deliveries`). The :class:`Dispatcher` runs in
the service process beside the job worker:

* per endpoint, changes go out one at a time in ``tag_change.seq`` order (the head of the queue
  must be delivered, or given up, before the next one goes);
* different endpoints are sent to concurrently (a thread pool), so a slow receiver holds one
  thread, not the others;
* a claimed delivery carries a lease in the database; a restart (even after SIGKILL) sends it
  again with the same ``webhook-id``, so receivers de-duplicate by that id;
* non-2xx and network errors are retried with exponential backoff and jitter until the delivery is
  ``webhook_max_age_s`` old (a day), then it goes to the dead-letter list (``status=dead``);
  ``Retry-After`` on 429/503 sets the next attempt; 410 Gone disables the endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Query, Request, Response, status
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select
from standardwebhooks import Webhook

from . import crud, schemas
from .api import PrincipalDep, SessionDep
from .crm_models import WebhookDelivery, WebhookEndpoint
from .db import session_scope
from .models import utcnow
from .settings import Settings

logger = logging.getLogger(__name__)
router = APIRouter()
EVENT_TYPE = "profile.tag_changed"
USER_AGENT = "Earmark-Webhooks/0.1"


# -- the message ---------------------------------------------------------------------------------
def event_body(change) -> str:
    """The JSON body of the message announcing *change* (what is signed and sent)."""
    data = schemas.change_out(change).model_dump(mode="json")
    return json.dumps({"type": EVENT_TYPE, "timestamp": data["created_at"], "data": data},
                      ensure_ascii=False, separators=(",", ":"))


def signed_headers(secret: str, msg_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (v1, HMAC-SHA256 over
    ``id.timestamp.body`` with the ``whsec_`` secret)."""
    at = (at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """Retry-After as delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random = random) -> float:
    """Exponential backoff with jitter: between half and all of min(cap, base · 2^(attempt-1))."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * rng.uniform(0.5, 1.0)


# -- the delivery loop ---------------------------------------------------------------------------
class Dispatcher:
    """Claims due deliveries and sends them on a thread pool; one in flight per endpoint."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.name = f"{os.getpid()}:webhooks"
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None

    def start(self) -> None:
        with session_scope(self.engine) as s:
            n = crud.requeue_sending(s)
        if n:
            logger.info("re-queued %d interrupted webhook deliveries", n)
        self._client = httpx.Client(timeout=self.settings.webhook_timeout_s, follow_redirects=False)
        self._pool = ThreadPoolExecutor(self.settings.webhook_concurrency, thread_name_prefix="earmark-webhook")
        self._thread = threading.Thread(target=self._loop, name="earmark-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._client:
            self._client.close()

    def notify(self) -> None:
        self.wake.set()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                n = self.dispatch()
            except Exception:  # keep the loop alive whatever happens
                logger.exception("webhook loop error")
                n = 0
            if n == 0:
                self.wake.wait(timeout=self.settings.webhook_poll_s)
                self.wake.clear()

    def dispatch(self) -> int:
        """Claim what is due (up to the free threads) and hand it to the pool; return how many."""
        with self._lock:
            free = self.settings.webhook_concurrency - len(self._busy)
            busy = set(self._busy)
        if free <= 0:
            return 0
        lease = self.settings.webhook_timeout_s * 3 + 30
        with session_scope(self.engine) as s:
            claimed = crud.claim_deliveries(s, worker=self.name, lease_seconds=lease, busy=busy, limit=free)
        for d, ep, change in claimed:
            with self._lock:
                self._busy.add(ep.id)
            self._pool.submit(self._send_and_release, d, ep, event_body(change))
        return len(claimed)

    def _send_and_release(self, d: WebhookDelivery, ep: WebhookEndpoint, body: str) -> None:
        try:
            self.send(d, ep, body)
        except Exception:
            logger.exception("webhook delivery %s failed unexpectedly", d.id)
        finally:
            with self._lock:
                self._busy.discard(ep.id)
            self.wake.set()

    def send(self, d: WebhookDelivery, ep: WebhookEndpoint, body: str) -> str:
        """One HTTP attempt and its bookkeeping; returns the outcome."""
        s_ = self.settings
        started = time.monotonic()
        code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            r = self._client.post(ep.url, content=body.encode(), headers=signed_headers(ep.secret, d.msg_id, body))
            code = r.status_code
            if not 200 <= code < 300:
                error = f"HTTP {code}: {r.text[:200]}"
            if code in (429, 503):
                retry_after = retry_after_seconds(r.headers.get("retry-after"), datetime.now(timezone.utc))
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:1000]
        duration_ms = int((time.monotonic() - started) * 1000)
        now = utcnow()
        disable = None
        if code is not None and 200 <= code < 300:
            outcome, next_at = "delivered", None
        elif code == 410:
            outcome, next_at, disable = "dead", None, "the endpoint answered 410 Gone"
        else:
            delay = retry_after if retry_after is not None else backoff_delay(
                d.attempts, base=s_.webhook_backoff_base_s, cap=s_.webhook_backoff_max_s
            )
            next_at = now + timedelta(seconds=delay)
            too_old = next_at > crud.as_utc(d.created_at) + timedelta(seconds=s_.webhook_max_age_s)
            outcome = "dead" if too_old else "retry"
        with session_scope(self.engine) as s:
            crud.finish_delivery(
                s, delivery_id=d.id, worker=self.name, status_code=code, error=error, duration_ms=duration_ms,
                outcome=outcome, next_attempt_at=next_at, disable_reason=disable,
            )
        if outcome != "delivered":
            logger.info("webhook %s → %s: %s (%s)", d.msg_id, ep.id, outcome, error)
        return outcome


# -- routes --------------------------------------------------------------------------------------
def _check_url(v: str | None) -> str | None:
    if v is not None:
        u = httpx.URL(v)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError("expected an http:// or https:// URL with a host")
    return v


class WebhookIn(BaseModel):
    url: str = Field(max_length=2000, description="http(s) URL that receives POSTs")
    description: str = Field("", max_length=200)

    _url = field_validator("url")(_check_url)


class WebhookPatch(BaseModel):
    url: str | None = Field(None, max_length=2000)
    description: str | None = Field(None, max_length=200)
    enabled: bool | None = None

    _url = field_validator("url")(_check_url)


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    secret: str | None = Field(None, description="whsec_…: shown only when the subscription is created")
    pending: int = Field(0, description="deliveries waiting or in flight")
    dead: int = Field(0, description="deliveries on the dead-letter list")


class AttemptOut(BaseModel):
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: int
    at: datetime


class DeliveryOut(BaseModel):
    id: int
    webhook_id: str = Field(description="the webhook-id header (chg_<cursor>), the same on every attempt")
    cursor: int
    status: str = Field(description="pending | sending | delivered | dead")
    attempts: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    log: list[AttemptOut] | None = Field(None, description="every attempt (single-delivery reads only)")


class DeliveriesPage(BaseModel):
    data: list[DeliveryOut]
    next: int = Field(description="pass as `after` for the next page")
    has_more: bool


class ReplayIn(BaseModel):
    after: int = Field(ge=0, description="send every change with a cursor above this again")


class Queued(BaseModel):
    queued: int


def _webhook_out(session, ep: WebhookEndpoint, *, with_secret: bool = False) -> WebhookOut:
    counts = dict(
        session.exec(
            select(WebhookDelivery.status, func.count())
            .where(WebhookDelivery.endpoint_id == ep.id)
            .group_by(WebhookDelivery.status)
        ).all()
    )
    return WebhookOut(
        id=ep.id, url=ep.url, description=ep.description, enabled=ep.enabled, disabled_reason=ep.disabled_reason,
        created_at=crud.as_utc(ep.created_at), secret=ep.secret if with_secret else None,
        pending=counts.get("pending", 0) + counts.get("sending", 0), dead=counts.get("dead", 0),
    )


def _delivery_out(d: WebhookDelivery, attempts=None) -> DeliveryOut:
    return DeliveryOut(
        id=d.id, webhook_id=d.msg_id, cursor=d.change_seq, status=d.status, attempts=d.attempts,
        next_attempt_at=crud.as_utc(d.next_attempt_at) if d.status == "pending" else None,
        last_status=d.last_status, last_error=d.last_error, created_at=crud.as_utc(d.created_at),
        delivered_at=crud.as_utc(d.delivered_at),
        log=None if attempts is None else [
            AttemptOut(attempt=a.attempt, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms,
                       at=crud.as_utc(a.created_at))
            for a in attempts
        ],
    )


@router.post("/v1/webhooks", status_code=status.HTTP_201_CREATED, response_model=WebhookOut, tags=["webhooks"])
def create_webhook(body: WebhookIn, principal: PrincipalDep, session: SessionDep) -> WebhookOut:
    """Subscribe a URL to profile changes (from now on; use `/replay` for history). The answer
    holds the `whsec_` signing secret, shown this once."""
    principal.require("webhooks:manage")
    ep = WebhookEndpoint(tenant_id=principal.tenant_id, url=body.url, description=body.description)
    session.add(ep)
    session.commit()
    return _webhook_out(session, ep, with_secret=True)


@router.get("/v1/webhooks", response_model=list[WebhookOut], tags=["webhooks"])
def list_webhooks(principal: PrincipalDep, session: SessionDep) -> list[WebhookOut]:
    principal.require("webhooks:manage")
    return [_webhook_out(session, ep) for ep in crud.list_endpoints(session, tenant_id=principal.tenant_id)]


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def get_webhook(webhook_id: str, principal: PrincipalDep, session: SessionDep) -> WebhookOut:
    principal.require("webhooks:manage")
    return _webhook_out(session, crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id))


@router.patch("/v1/webhooks/{webhook_id}", response_model=WebhookOut, tags=["webhooks"])
def patch_webhook(
    webhook_id: str, body: WebhookPatch, request: Request, principal: PrincipalDep, session: SessionDep
) -> WebhookOut:
    """Change the URL or description, or enable the endpoint again (after a 410 disabled it):
    what waited for it is then sent, in order."""
    principal.require("webhooks:manage")
    ep = crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id)
    if body.url is not None:
        ep.url = body.url
    if body.description is not None:
        ep.description = body.description
    if body.enabled is not None:
        ep.enabled = body.enabled
        ep.disabled_reason = None if body.enabled else "disabled through the API"
    ep.updated_at = utcnow()
    session.add(ep)
    session.commit()
    request.app.state.worker.notify_deliveries()
    return _webhook_out(session, ep)


@router.delete("/v1/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["webhooks"])
def delete_webhook(webhook_id: str, principal: PrincipalDep, session: SessionDep) -> Response:
    """Unsubscribe; its delivery log goes too."""
    principal.require("webhooks:manage")
    crud.delete_endpoint(session, endpoint=crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id))
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveriesPage, tags=["webhooks"])
def list_webhook_deliveries(
    webhook_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    status_: Annotated[
        Literal["pending", "sending", "delivered", "dead"] | None,
        Query(alias="status", description="`dead` is the dead-letter list"),
    ] = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeliveriesPage:
    """The delivery log of an endpoint, oldest first."""
    principal.require("webhooks:manage")
    ep = crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id)
    rows = crud.list_deliveries(session, endpoint_id=ep.id, status=status_, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return DeliveriesPage(data=[_delivery_out(d) for d in rows], next=rows[-1].id if rows else after, has_more=more)


@router.get("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryOut, tags=["webhooks"])
def get_webhook_delivery(webhook_id: str, delivery_id: int, principal: PrincipalDep, session: SessionDep) -> DeliveryOut:
    """One delivery with every attempt (status code, error, duration)."""
    principal.require("webhooks:manage")
    ep = crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id)
    d = crud.get_delivery(session, endpoint=ep, delivery_id=delivery_id)
    return _delivery_out(d, crud.list_attempts(session, delivery_id=d.id))


@router.post(
    "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryOut, tags=["webhooks"],
)
def redeliver_webhook(
    webhook_id: str, delivery_id: int, request: Request, principal: PrincipalDep, session: SessionDep
) -> DeliveryOut:
    """Send a delivery again (typically one from the dead-letter list), same webhook-id."""
    principal.require("webhooks:manage")
    ep = crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id)
    d = crud.get_delivery(session, endpoint=ep, delivery_id=delivery_id)
    crud.redeliver(session, delivery=d)
    session.commit()
    request.app.state.worker.notify_deliveries()
    return _delivery_out(d)


@router.post("/v1/webhooks/{webhook_id}/replay", status_code=status.HTTP_202_ACCEPTED, response_model=Queued, tags=["webhooks"])
def replay_webhook(
    webhook_id: str, body: ReplayIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> Queued:
    """Send every change after the cursor `after` to this endpoint again, in order (same
    webhook-ids). Same as `earmark crm replay --after CURSOR --webhook ID`."""
    principal.require("webhooks:manage")
    ep = crud.get_endpoint(session, tenant_id=principal.tenant_id, endpoint_id=webhook_id)
    n = crud.replay_deliveries(session, tenant_id=principal.tenant_id, after=body.after, endpoint_id=ep.id)
    session.commit()
    request.app.state.worker.notify_deliveries()
    return Queued(queued=n)
