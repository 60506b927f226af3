"""API keys and the permission rules, in one place.

A key looks like ``em_<id>_<secret>``; only sha256(secret) is stored. Roles:

| permission          | device | crm | qa | admin |
|---------------------|:------:|:---:|:--:|:-----:|
| recordings:create   |   ✓    |     |    |   ✓   |
| recordings:status   |   ✓    |  ✓  | ✓  |   ✓   |
| transcripts:read    |        |     | ✓  |   ✓   |
| customers:read      |        |  ✓  | ✓  |   ✓   |
| changes:read        |        |  ✓  |    |   ✓   |
| reviews:write       |        |     | ✓  |   ✓   |
| conversations:link  |        |  ✓  | ✓  |   ✓   |
| customers:write     |        |  ✓  |    |   ✓   |
| webhooks:manage     |        |  ✓  |    |   ✓   |
| integrations:manage |        |     |    |   ✓   |
| keys:manage         |        |     |    |   ✓   |
| taxonomy:read       |        |  ✓  | ✓  |   ✓   |
| taxonomy:write      |        |     |    |   ✓   |
| compliance:read     |        |     | ✓  |   ✓   |
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlmodel import Session, select

from .errors import Forbidden, Unauthorized
from .models import DEFAULT_TENANT, ApiKey, Tenant

ROLES = ("admin", "device", "crm", "qa")

PERMISSIONS: dict[str, frozenset[str]] = {
    "recordings:create": frozenset({"device", "admin"}),
    "recordings:status": frozenset({"device", "crm", "qa", "admin"}),
    "transcripts:read": frozenset({"qa", "admin"}),
    "customers:read": frozenset({"crm", "qa", "admin"}),
    "changes:read": frozenset({"crm", "admin"}),
    "reviews:write": frozenset({"qa", "admin"}),  # accept / reject / add tags on a conversation
    "conversations:link": frozenset({"crm", "qa", "admin"}),  # say whose conversation it was
    "customers:write": frozenset({"crm", "admin"}),  # manual tags, merges, WeCom contact
    "webhooks:manage": frozenset({"crm", "admin"}),
    "integrations:manage": frozenset({"admin"}),  # WeCom credentials
    "keys:manage": frozenset({"admin"}),
    "taxonomy:read": frozenset({"crm", "qa", "admin"}),
    "taxonomy:write": frozenset({"admin"}),
    "compliance:read": frozenset({"qa", "admin"}),
}


@dataclass(frozen=True)
class Principal:
    key_id: str
    tenant_id: str
    role: str

    def require(self, permission: str) -> None:
        if self.role not in PERMISSIONS[permission]:
            allowed = ", ".join(sorted(PERMISSIONS[permission]))
            raise Forbidden(
                f"this key's role {self.role!r} lacks the permission {permission!r} (roles that have it: {allowed})",
                type="/problems/forbidden",
            )


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_tenant(session: Session, tenant_id: str = DEFAULT_TENANT, name: str | None = None) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        tenant = Tenant(id=tenant_id, name=name or tenant_id)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(session: Session, *, role: str, tenant_id: str = DEFAULT_TENANT, name: str = "") -> str:
    """Create a key and return its full text (shown once, never stored)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    ensure_tenant(session, tenant_id)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(24)
    session.add(ApiKey(id=key_id, tenant_id=tenant_id, role=role, name=name, secret_hash=_hash(secret)))
    session.flush()
    return f"em_{key_id}_{secret}"


def authenticate(session: Session, authorization: str | None) -> Principal:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'", type="/problems/unauthorized")
    token = authorization[7:].strip()
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != "em":
        raise Unauthorized("malformed API key", type="/problems/unauthorized")
    key = session.get(ApiKey, parts[1])
    if key is None or key.revoked_at is not None or not hmac.compare_digest(key.secret_hash, _hash(parts[2])):
        raise Unauthorized("unknown or revoked API key", type="/problems/unauthorized")
    return Principal(key_id=key.id, tenant_id=key.tenant_id, role=key.role)


def has_admin_key(session: Session, tenant_id: str = DEFAULT_TENANT) -> bool:
    q = select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.role == "admin", ApiKey.revoked_at.is_(None))
    return session.exec(q).first() is not None
