"""The WeCom (企业微信) connector: applies profile changes to external contacts as corp tags.

Per tenant it reads the change feed from its own durable cursor (``wecom_config.cursor``), maps
each taxonomy code to a corp tag (one tag group per family, ``<prefix>·<family label>``; found
with ``externalcontact/get_corp_tag_list``, created with ``externalcontact/add_corp_tag``) and
calls ``externalcontact/mark_tag`` for each customer that has a WeCom contact
(``userid`` + ``external_userid``). The cursor moves only after WeCom said ok, so nothing is lost
across outages or restarts; ``mark_tag`` is idempotent, so a batch done twice changes nothing.

Errors: an expired or invalid access token → fetch a new one and retry once; rate limits and
"system busy" → back off (exponential, per tenant) without moving the cursor; a contact WeCom does
not know → that customer's changes are skipped and counted, the rest go on.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from . import crud, schemas
from .api import REF, PrincipalDep, SessionDep, profile_out
from .crm_models import WecomConfig, WecomContact, WecomTag
from .errors import NotFound, Unprocessable
from .db import session_scope
from .models import utcnow
from .settings import Settings

logger = logging.getLogger(__name__)

TOKEN_ERRORS = {40014, 41001, 42001}  # invalid, missing, expired access_token
RATE_LIMITS = {-1, 45009, 45033}  # system busy, API frequency limit, concurrency limit
CONTACT_ERRORS = {40003, 40096, 84061, 60111}  # unknown userid / external_userid / relation
INVALID_TAG = 40068


class WecomError(Exception):
    """WeCom answered an errcode other than 0 (or not JSON at all)."""

    def __init__(self, errcode: int, errmsg: str, *, api: str):
        super().__init__(f"{api}: errcode {errcode}: {errmsg}")
        self.errcode, self.errmsg, self.api = errcode, errmsg, api


class WecomUnavailable(Exception):
    """Rate-limited, busy, or unreachable: try again later."""


class WecomClient:
    """The four WeCom endpoints the connector needs, with the access token cached and refreshed.

    ``token`` / ``save_token`` let the caller keep the token in the database between runs.
    """

    def __init__(self, cfg: WecomConfig, *, save_token: Callable[[str, int], None], timeout: float = 10.0):
        self.cfg = cfg
        self.save_token = save_token
        self.http = httpx.Client(base_url=cfg.base_url.rstrip("/"), timeout=timeout, follow_redirects=False)
        self.token = cfg.access_token
        expires = crud.as_utc(cfg.token_expires_at)
        if expires is None or expires - timedelta(minutes=5) <= utcnow():
            self.token = None

    def close(self) -> None:
        self.http.close()

    def _json(self, r: httpx.Response, api: str) -> dict:
        if r.status_code == 429 or r.status_code >= 500:
            raise WecomUnavailable(f"{api}: HTTP {r.status_code}")
        try:
            body = r.json()
        except ValueError as exc:
            raise WecomError(-2, f"not JSON (HTTP {r.status_code})", api=api) from exc
        code = int(body.get("errcode", 0))
        if code in RATE_LIMITS:
            raise WecomUnavailable(f"{api}: errcode {code}: {body.get('errmsg', '')}")
        if code != 0:
            raise WecomError(code, str(body.get("errmsg", "")), api=api)
        return body

    def fetch_token(self) -> str:
        try:
            r = self.http.get("/cgi-bin/gettoken", params={"corpid": self.cfg.corp_id, "corpsecret": self.cfg.secret})
        except httpx.HTTPError as exc:
            raise WecomUnavailable(f"gettoken: {exc}") from exc
        body = self._json(r, "gettoken")
        self.token = body["access_token"]
        self.save_token(self.token, int(body.get("expires_in", 7200)))
        return self.token

    def call(self, api: str, payload: dict) -> dict:
        """POST /cgi-bin/<api>?access_token=…; a token error refreshes the token and retries once."""
        for attempt in (1, 2):
            token = self.token or self.fetch_token()
            try:
                r = self.http.post(f"/cgi-bin/{api}", params={"access_token": token}, json=payload)
            except httpx.HTTPError as exc:
                raise WecomUnavailable(f"{api}: {exc}") from exc
            try:
                return self._json(r, api)
            except WecomError as exc:
                if exc.errcode in TOKEN_ERRORS and attempt == 1:
                    logger.info("WeCom token refused (%s): fetching a new one", exc.errcode)
                    self.token = None
                    continue
                raise
        raise AssertionError("unreachable")

    def corp_tags(self) -> list[dict]:
        return self.call("externalcontact/get_corp_tag_list", {}).get("tag_group", [])

    def add_corp_tags(self, *, group_name: str, group_id: str | None, names: list[str]) -> dict:
        payload: dict = {"tag": [{"name": n} for n in names]}
        if group_id:
            payload["group_id"] = group_id
        else:
            payload["group_name"] = group_name
        return self.call("externalcontact/add_corp_tag", payload)["tag_group"]

    def mark_tag(self, *, userid: str, external_userid: str, add: list[str], remove: list[str]) -> None:
        payload = {"userid": userid, "external_userid": external_userid}
        if add:
            payload["add_tag"] = add
        if remove:
            payload["remove_tag"] = remove
        self.call("externalcontact/mark_tag", payload)


class WecomSync:
    """The connector's loop, one round per tenant with an enabled configuration."""

    def __init__(self, settings: Settings, engine: Engine, *, taxonomy: Callable):
        self.settings = settings
        self.engine = engine
        self.taxonomy = taxonomy  # the active taxonomy (labels and family names)
        self.wake = threading.Event()
        self.stop_event = threading.Event()
        self._failures: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="earmark-wecom", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout)

    def notify(self) -> None:
        self.wake.set()

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            busy = False
            try:
                with Session(self.engine) as s:
                    tenants = s.exec(select(WecomConfig.tenant_id).where(WecomConfig.enabled == True)).all()  # noqa: E712
                    s.rollback()
                for tenant in tenants:
                    busy |= self.run_tenant(tenant) > 0
            except Exception:
                logger.exception("WeCom loop error")
            if not busy:
                self.wake.wait(timeout=self.settings.webhook_poll_s * 2)
                self.wake.clear()

    def run_tenant(self, tenant_id: str) -> int:
        """Apply the next batch of a tenant's changes; return how many changes it consumed."""
        now = utcnow()
        with session_scope(self.engine) as s:
            cfg = s.get(WecomConfig, tenant_id)
            if cfg is None or not cfg.enabled:
                return 0
            if cfg.next_run_at is not None and crud.as_utc(cfg.next_run_at) > now:
                return 0
            changes = crud.list_changes(s, tenant_id=tenant_id, after=cfg.cursor, limit=self.settings.wecom_batch)
            fresh = list(s.exec(select(WecomContact).where(WecomContact.tenant_id == tenant_id,
                                                           WecomContact.synced == False)))  # noqa: E712
            initial = {c.customer_id: {(p.kind, p.code): True for p in crud.profile_tags(s, customer_id=c.customer_id)}
                       for c in fresh}
            if not changes and not fresh:
                return 0
            contacts = {c.customer_id: crud.wecom_contact(s, customer_id=c.customer_id) for c in changes}
            contacts.update({c.customer_id: c for c in fresh})
            mapping = {(t.kind, t.code): t.tag_id for t in s.exec(select(WecomTag).where(WecomTag.tenant_id == tenant_id))}
        client = WecomClient(cfg, save_token=lambda token, ttl: self._save_token(tenant_id, token, ttl),
                             timeout=self.settings.webhook_timeout_s)
        applied = skipped = 0
        last_error = None
        try:
            # the net effect per customer, in feed order (added/updated → tagged, removed → not)
            # a new contact first gets her whole current profile
            wanted: dict[int, dict[tuple[str, str], bool]] = {cid: dict(tags) for cid, tags in initial.items()}
            for c in changes:
                if contacts.get(c.customer_id) is None:
                    skipped += 1
                    continue
                wanted.setdefault(c.customer_id, {})[(c.kind, c.code)] = c.action != "removed"
            needed = {k for per in wanted.values() for k in per} - set(mapping)
            if needed:
                mapping.update(self._ensure_tags(client, tenant_id, cfg.group_prefix, needed))
            for customer_id, per in wanted.items():
                contact = contacts[customer_id]
                add = sorted(mapping[k] for k, on in per.items() if on)
                remove = sorted(mapping[k] for k, on in per.items() if not on)
                if not add and not remove:  # a new contact with an empty profile: nothing to send
                    continue
                try:
                    client.mark_tag(userid=contact.userid, external_userid=contact.external_userid, add=add, remove=remove)
                    applied += 1
                except WecomError as exc:
                    if exc.errcode == INVALID_TAG:  # someone deleted our tag in WeCom: map again next round
                        self._forget_tags(tenant_id)
                        raise WecomUnavailable(str(exc)) from exc
                    if exc.errcode not in CONTACT_ERRORS:
                        raise
                    skipped += len(per)
                    last_error = str(exc)
                    logger.warning("WeCom refused customer %s: %s", customer_id, exc)
        except (WecomUnavailable, WecomError) as exc:
            n = self._failures[tenant_id] = self._failures.get(tenant_id, 0) + 1
            delay = min(600.0, self.settings.webhook_backoff_base_s * 2 ** (n - 1))
            logger.warning("WeCom sync of %s backs off %.1f s: %s", tenant_id, delay, exc)
            with session_scope(self.engine) as s:
                cfg = s.get(WecomConfig, tenant_id)
                cfg.next_run_at, cfg.last_error, cfg.updated_at = utcnow() + timedelta(seconds=delay), str(exc)[:1000], utcnow()
                s.add(cfg)
            return 0
        finally:
            client.close()
        self._failures.pop(tenant_id, None)
        with session_scope(self.engine) as s:
            for c in fresh:
                s.exec(update(WecomContact).where(WecomContact.id == c.id, WecomContact.updated_at == c.updated_at)
                       .values(synced=True))
            cfg = s.get(WecomConfig, tenant_id)
            cfg.cursor = changes[-1].seq if changes else cfg.cursor
            cfg.applied += applied
            cfg.skipped += skipped
            cfg.next_run_at, cfg.updated_at = None, utcnow()
            if last_error:
                cfg.last_error = last_error[:1000]
            s.add(cfg)
        return len(changes) + len(fresh)

    def _save_token(self, tenant_id: str, token: str, ttl: int) -> None:
        with session_scope(self.engine) as s:
            cfg = s.get(WecomConfig, tenant_id)
            cfg.access_token, cfg.token_expires_at = token, utcnow() + timedelta(seconds=ttl)
            s.add(cfg)

    def _forget_tags(self, tenant_id: str) -> None:
        with session_scope(self.engine) as s:
            s.exec(delete(WecomTag).where(WecomTag.tenant_id == tenant_id))

    def _ensure_tags(self, client: WecomClient, tenant_id: str, prefix: str, needed: set[tuple[str, str]]) -> dict:
        """Find or create the corp tags of *needed* codes; store and return their ids."""
        tax = self.taxonomy()
        label = {k: (tax.get(*k).label if tax.get(*k) else k[1]) for k in needed}
        group_name = {kind: f"{prefix}·{tax.family_labels.get(kind, kind)}" for kind, _ in needed}
        groups = {g["group_name"]: g for g in client.corp_tags() if not g.get("deleted")}
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for k in needed:
            g = groups.get(group_name[k[0]])
            for t in (g or {}).get("tag", []):
                if t["name"] == label[k] and not t.get("deleted"):
                    found[k] = (t["id"], g["group_id"])
        by_kind: dict[str, list[tuple[str, str]]] = {}
        for k in sorted(needed - set(found)):
            by_kind.setdefault(k[0], []).append(k)
        for kind, keys in by_kind.items():
            g = groups.get(group_name[kind])
            created = client.add_corp_tags(group_name=group_name[kind], group_id=g["group_id"] if g else None,
                                           names=[label[k] for k in keys])
            ids = {t["name"]: t["id"] for t in created.get("tag", [])}
            for k in keys:
                if label[k] in ids:
                    found[k] = (ids[label[k]], created["group_id"])
        with session_scope(self.engine) as s:
            for (kind, code), (tag_id, gid) in found.items():
                s.add(WecomTag(tenant_id=tenant_id, kind=kind, code=code, tag_id=tag_id, group_id=gid))
        missing = needed - set(found)
        if missing:
            raise WecomError(-3, f"WeCom did not create the tags {sorted(missing)}", api="add_corp_tag")
        return {k: v[0] for k, v in found.items()}


# -- routes --------------------------------------------------------------------------------------
router = APIRouter()


class WecomConfigIn(BaseModel):
    corp_id: str = Field(min_length=1, max_length=64, description="企业ID (corpid)")
    secret: str = Field(min_length=1, max_length=200, description="the 客户联系 secret (corpsecret)")
    base_url: str = Field("https://qyapi.weixin.qq.com", max_length=500, description="WeCom API base URL")
    group_prefix: str = Field("Earmark", min_length=1, max_length=32, description="tag groups are named <prefix>·<family>")
    enabled: bool = True


class WecomConfigOut(BaseModel):
    corp_id: str
    secret: str = Field(description="masked")
    base_url: str
    group_prefix: str
    enabled: bool
    cursor: int = Field(description="the last change applied in WeCom")
    applied: int
    skipped: int
    last_error: str | None
    next_run_at: datetime | None
    tags_mapped: int


class WecomContactIn(BaseModel):
    userid: str = Field(min_length=1, max_length=64, description="the staff member's WeCom userid")
    external_userid: str = Field(min_length=1, max_length=64, description="the customer's external_userid")


def _config_out(session, cfg: WecomConfig) -> WecomConfigOut:
    n = len(session.exec(select(WecomTag.id).where(WecomTag.tenant_id == cfg.tenant_id)).all())
    return WecomConfigOut(
        corp_id=cfg.corp_id, secret=cfg.secret[:3] + "…" if len(cfg.secret) > 6 else "…", base_url=cfg.base_url,
        group_prefix=cfg.group_prefix, enabled=cfg.enabled, cursor=cfg.cursor, applied=cfg.applied,
        skipped=cfg.skipped, last_error=cfg.last_error, next_run_at=crud.as_utc(cfg.next_run_at), tags_mapped=n,
    )


@router.put("/v1/integrations/wecom", response_model=WecomConfigOut, tags=["integrations"])
def put_wecom(body: WecomConfigIn, request: Request, principal: PrincipalDep, session: SessionDep) -> WecomConfigOut:
    """Configure this tenant's WeCom connector. The first configuration starts from the
    beginning of the change feed; changing the credentials or base URL drops the cached token."""
    principal.require("integrations:manage")
    u = httpx.URL(body.base_url)
    if u.scheme not in ("http", "https") or not u.host:
        raise Unprocessable("base_url: expected an http(s) URL", type="/problems/validation")
    cfg = session.get(WecomConfig, principal.tenant_id)
    if cfg is None:
        cfg = WecomConfig(tenant_id=principal.tenant_id, corp_id=body.corp_id, secret=body.secret)
    if (cfg.corp_id, cfg.secret, cfg.base_url) != (body.corp_id, body.secret, body.base_url):
        cfg.access_token = cfg.token_expires_at = None
    if cfg.base_url != body.base_url or cfg.group_prefix != body.group_prefix:
        session.exec(delete(WecomTag).where(WecomTag.tenant_id == principal.tenant_id))
    cfg.corp_id, cfg.secret, cfg.base_url = body.corp_id, body.secret, body.base_url
    cfg.group_prefix, cfg.enabled, cfg.next_run_at, cfg.updated_at = body.group_prefix, body.enabled, None, utcnow()
    session.add(cfg)
    session.commit()
    request.app.state.worker.notify_deliveries()
    return _config_out(session, cfg)


@router.get("/v1/integrations/wecom", response_model=WecomConfigOut, tags=["integrations"])
def get_wecom(principal: PrincipalDep, session: SessionDep) -> WecomConfigOut:
    """The connector's state: cursor, counts, last error, back-off."""
    principal.require("integrations:manage")
    cfg = session.get(WecomConfig, principal.tenant_id)
    if cfg is None:
        raise NotFound("WeCom is not configured for this tenant", type="/problems/wecom-not-configured")
    return _config_out(session, cfg)


@router.put("/v1/customers/{customer_ref}/wecom", response_model=schemas.CustomerProfileOut, tags=["customers"])
def put_customer_wecom(
    customer_ref: str, body: WecomContactIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> schemas.CustomerProfileOut:
    """Say which WeCom external contact this customer is (and which staff member's contact):
    her whole current profile is marked in WeCom, then every later change."""
    principal.require("customers:write")
    if not re.match(REF, customer_ref):
        raise Unprocessable("customer_ref is not a valid reference", type="/problems/validation")
    customer = crud.get_or_create_customer(session, tenant_id=principal.tenant_id, ref=customer_ref)
    contact = crud.wecom_contact(session, customer_id=customer.id) or WecomContact(
        tenant_id=principal.tenant_id, customer_id=customer.id, userid=body.userid, external_userid=body.external_userid
    )
    contact.userid, contact.external_userid, contact.synced, contact.updated_at = (
        body.userid, body.external_userid, False, utcnow()
    )
    session.add(contact)
    session.commit()
    request.app.state.worker.notify_deliveries()
    return profile_out(session, customer)
