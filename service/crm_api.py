"""CRM routes: QA reviews, conversation links, customer merges, manual tags, the customer list.

Thin like :mod:`service.api`: parse, check the permission, call :mod:`service.crud`, commit,
wake the delivery loop.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from sqlmodel import Session
from pydantic import BaseModel, Field

from . import crud, schemas
from .api import REF, PrincipalDep, ReadSessionDep, SessionDep, profile_out, with_etag
from .errors import BadRequest, Unprocessable

router = APIRouter()


# -- shapes ------------------------------------------------------------------------------------
class ReviewIn(BaseModel):
    action: Literal["accept", "reject", "add"]
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)
    note: str | None = Field(None, max_length=2000)


class ReviewOut(BaseModel):
    id: int
    recording_id: str
    conversation: int
    tag_assignment_id: int | None
    kind: str
    code: str
    action: str
    actor: str = Field(description="the API key id that decided")
    note: str | None
    created_at: datetime
    changes: list[schemas.ChangeOut] = Field([], description="the profile changes this decision caused")


class LinkIn(BaseModel):
    customer_ref: str = Field(pattern=REF)


class LinkOut(BaseModel):
    recording_id: str
    conversation: int
    customer_ref: str
    changes: list[schemas.ChangeOut]


class MergeIn(BaseModel):
    from_: str = Field(alias="from", pattern=REF, description="the customer record to fold into this one")


class ManualTagIn(BaseModel):
    kind: str = Field(max_length=16)
    code: str = Field(max_length=64)


class WecomContactIn(BaseModel):
    userid: str = Field(min_length=1, max_length=64, description="the staff member's WeCom userid")
    external_userid: str = Field(min_length=1, max_length=64, description="the customer's WeCom external_userid")


class CustomersPage(BaseModel):
    data: list[schemas.CustomerProfileOut]
    next_page_token: str | None = Field(None, description="pass as `page_token` for the next page; null at the end")


# -- helpers -----------------------------------------------------------------------------------
def taxonomy_label(request: Request, kind: str, code: str, *, session: Session, tenant_id: str) -> str:
    """The label of a code of the tenant's taxonomy (its overrides applied), or 422."""
    taxonomy, _ = request.app.state.pipeline.tenant_taxonomy(session, tenant_id)
    tc = taxonomy.get(kind, code)
    if tc is None:
        raise Unprocessable(
            f"{kind}/{code} is not a code of the active taxonomy", type="/problems/unknown-tag", kind=kind, code=code
        )
    return tc.label


def _notify(request: Request) -> None:
    request.app.state.worker.notify_deliveries()


def _review_out(session, review, conv_idx: int, changes) -> ReviewOut:
    return ReviewOut(
        id=review.id, recording_id=review.recording_id, conversation=conv_idx, tag_assignment_id=review.tag_assignment_id,
        kind=review.kind, code=review.code, action=review.action, actor=review.actor, note=review.note,
        created_at=crud.as_utc(review.created_at), changes=[schemas.change_out(c) for c in changes],
    )


# -- QA and links ------------------------------------------------------------------------------
@router.post(
    "/v1/recordings/{recording_id}/conversations/{idx}/reviews",
    status_code=status.HTTP_201_CREATED,
    response_model=ReviewOut,
    tags=["qa"],
)
def post_review(
    recording_id: str, idx: int, body: ReviewIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> ReviewOut:
    """Accept, reject or add a tag on one conversation. A rejection takes the tag off the
    customer's profile (a change is emitted); re-tagging never brings it back."""
    principal.require("reviews:write")
    label = taxonomy_label(request, body.kind, body.code, session=session, tenant_id=principal.tenant_id)
    conv = crud.get_conversation(session, tenant_id=principal.tenant_id, recording_id=recording_id, idx=idx)
    review, changes = crud.review_tag(
        session, conversation=conv, action=body.action, kind=body.kind, code=body.code, label=label,
        actor=principal.key_id, note=body.note,
    )
    session.commit()
    _notify(request)
    return _review_out(session, review, conv.idx, changes)


@router.get(
    "/v1/recordings/{recording_id}/conversations/{idx}/reviews", response_model=list[ReviewOut], tags=["qa"]
)
def get_reviews(recording_id: str, idx: int, principal: PrincipalDep, session: SessionDep) -> list[ReviewOut]:
    """The QA decisions on a conversation, oldest first."""
    principal.require("transcripts:read")
    conv = crud.get_conversation(session, tenant_id=principal.tenant_id, recording_id=recording_id, idx=idx)
    return [_review_out(session, r, conv.idx, []) for r in crud.list_reviews(session, conversation_id=conv.id)]


@router.put("/v1/recordings/{recording_id}/conversations/{idx}/customer", response_model=LinkOut, tags=["qa"])
def put_conversation_customer(
    recording_id: str, idx: int, body: LinkIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> LinkOut:
    """Say whose conversation this was: its tags move to that customer's profile (both profiles
    are recomputed and the changes emitted). Survives re-processing of the recording."""
    principal.require("conversations:link")
    conv = crud.get_conversation(session, tenant_id=principal.tenant_id, recording_id=recording_id, idx=idx)
    customer = crud.get_or_create_customer(session, tenant_id=principal.tenant_id, ref=body.customer_ref)
    changes = crud.link_conversation(session, conversation=conv, customer=customer, actor=principal.key_id)
    session.commit()
    _notify(request)
    return LinkOut(recording_id=recording_id, conversation=idx, customer_ref=customer.ref,
                   changes=[schemas.change_out(c) for c in changes])


# -- customers ---------------------------------------------------------------------------------
def _page_token(customer) -> str:
    raw = f"{crud.as_utc(customer.updated_at).isoformat()}|{customer.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _parse_page_token(token: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, cid = raw.split("|")
        return datetime.fromisoformat(at), int(cid)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("page_token is not one this API handed out", type="/problems/bad-page-token") from exc


@router.get("/v1/customers", response_model=CustomersPage, tags=["customers"])
def list_customers(
    request: Request,
    principal: PrincipalDep,
    session: ReadSessionDep,
    updated_since: Annotated[datetime | None, Query(description="ISO 8601; customers whose profile changed at or after it")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    page_token: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Customer profiles by last change (oldest first), with an ETag (send If-None-Match: 304 when
    nothing changed). For an exact, gap-free sync use `/v1/changes`."""
    principal.require("customers:read")
    if updated_since is not None and updated_since.tzinfo is None:
        updated_since = updated_since.replace(tzinfo=timezone.utc)
    after = _parse_page_token(page_token) if page_token else None
    rows = crud.list_customers(
        session, tenant_id=principal.tenant_id,
        updated_since=updated_since.astimezone(timezone.utc) if updated_since else None, after=after, limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    page = CustomersPage(data=[profile_out(session, c) for c in rows],
                         next_page_token=_page_token(rows[-1]) if more else None)
    return with_etag(request, page)


@router.post("/v1/customers/{customer_ref}/merge", response_model=schemas.CustomerProfileOut, tags=["customers"])
def merge_customer(
    customer_ref: str, body: MergeIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> schemas.CustomerProfileOut:
    """Fold the customer `from` into this one (two CRM records of one person): conversations,
    tags, manual tags and the WeCom contact move; `from` is emptied (removals emitted) and
    resolves to this customer from now on."""
    principal.require("customers:write")
    target = crud.get_customer(session, tenant_id=principal.tenant_id, ref=customer_ref)
    source = crud.get_customer(session, tenant_id=principal.tenant_id, ref=body.from_)
    crud.merge_customers(session, target=target, source=source)
    session.commit()
    _notify(request)
    return profile_out(session, target)


@router.post(
    "/v1/customers/{customer_ref}/tags", status_code=status.HTTP_201_CREATED,
    response_model=schemas.CustomerProfileOut, tags=["customers"],
)
def add_manual_tag(
    customer_ref: str, body: ManualTagIn, request: Request, principal: PrincipalDep, session: SessionDep
) -> schemas.CustomerProfileOut:
    """Set a tag on a customer by hand (shown with `source: manual`). An unknown customer ref is
    created: the CRM knows its customers."""
    principal.require("customers:write")
    if not _ref_ok(customer_ref):
        raise Unprocessable("customer_ref is not a valid reference", type="/problems/validation")
    label = taxonomy_label(request, body.kind, body.code, session=session, tenant_id=principal.tenant_id)
    customer = crud.get_or_create_customer(session, tenant_id=principal.tenant_id, ref=customer_ref)
    crud.set_manual_tag(session, customer=customer, kind=body.kind, code=body.code, label=label, present=True,
                        actor=principal.key_id)
    session.commit()
    _notify(request)
    return profile_out(session, customer)


@router.delete(
    "/v1/customers/{customer_ref}/tags/{kind}/{code}", response_model=schemas.CustomerProfileOut, tags=["customers"]
)
def remove_manual_tag(
    customer_ref: str, kind: str, code: str, request: Request, principal: PrincipalDep, session: SessionDep
) -> schemas.CustomerProfileOut:
    """Take a tag off a customer: a manual tag goes, and the conversation evidence recorded so far
    no longer counts (a later conversation that shows it again brings it back)."""
    principal.require("customers:write")
    label = taxonomy_label(request, kind, code, session=session, tenant_id=principal.tenant_id)
    customer = crud.get_customer(session, tenant_id=principal.tenant_id, ref=customer_ref)
    crud.set_manual_tag(session, customer=customer, kind=kind, code=code, label=label, present=False,
                        actor=principal.key_id)
    session.commit()
    _notify(request)
    return profile_out(session, customer)


def _ref_ok(ref: str) -> bool:
    return re.match(REF, ref) is not None
