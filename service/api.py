"""HTTP routes. Thin: parse, check permission, call :mod:`service.crud`, shape the answer."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile, status
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

import asr

from . import crud, schemas
from .auth import Principal, authenticate
from .errors import PayloadTooLarge, Unprocessable
from .models import Customer, Device, Recording, new_id
from .store import safe_ext

logger = logging.getLogger(__name__)

router = APIRouter()


# -- dependencies ------------------------------------------------------------------------------
def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(request: Request) -> Iterator[Session]:
    """For routes that only read: on SQLite a deferred transaction on a snapshot (no write lock)."""
    with Session(request.app.state.read_engine, expire_on_commit=False) as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def get_principal(session: ReadSessionDep, authorization: Annotated[str | None, Header()] = None) -> Principal:
    principal = authenticate(session, authorization)
    session.rollback()  # end the read transaction before long work
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
REF = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
CLIENT_REF = r"^[^\x00-\x1f\x7f]{1,128}$"  # opaque to us (never a path): any printable text


def _conversations_out(session: Session, rec: Recording) -> list[schemas.ConversationOut]:
    out = []
    for c in crud.list_conversations(session, recording_id=rec.id):
        customer = session.get(Customer, c.customer_id) if c.customer_id else None
        out.append(
            schemas.ConversationOut(
                index=c.idx, start=c.start, end=c.end, customer_ref=customer.ref if customer else None,
                split_reason=c.split_reason, staff_seconds=c.staff_seconds, customer_seconds=c.customer_seconds,
                talk_ratio=c.talk_ratio,
            )
        )
    return out


def _parse_appointments(raw: str | None) -> list[dict] | None:
    """`[{"start": ISO 8601, "end": ISO 8601, "customer_ref": "…"}]` → normalised list, or 422."""
    if raw is None or not raw.strip():
        return None
    try:
        items = json.loads(raw)
        if not isinstance(items, list) or len(items) > 500:
            raise ValueError("expected a JSON list of at most 500 windows")
        out = []
        for i, a in enumerate(items):
            if not isinstance(a, dict):
                raise ValueError(f"item {i} is not an object")
            start, end = datetime.fromisoformat(str(a["start"])), datetime.fromisoformat(str(a["end"]))
            start = (start if start.tzinfo else start.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
            end = (end if end.tzinfo else end.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
            if end <= start:
                raise ValueError(f"item {i}: end is not after start")
            ref = a.get("customer_ref")
            if ref is not None and not re.match(REF, str(ref)):
                raise ValueError(f"item {i}: customer_ref is not a valid reference")
            out.append({"start": start.isoformat(), "end": end.isoformat(), "customer_ref": ref})
        return out
    except (ValueError, KeyError, TypeError) as exc:
        raise Unprocessable(
            f"appointments: {exc if not isinstance(exc, KeyError) else f'missing {exc}'}; expected "
            '[{"start": "2026-11-20T10:00:00+08:00", "end": "…", "customer_ref": "…"}]',
            type="/problems/validation",
        ) from exc


def _recording_out(session: Session, rec: Recording) -> schemas.RecordingOut:
    device = session.get(Device, rec.device_id)
    customer = session.get(Customer, rec.customer_id) if rec.customer_id else None
    return schemas.RecordingOut(
        id=rec.id,
        status=rec.status,
        progress=rec.progress,
        error=rec.error,
        device_id=device.external_id if device else "",
        source=rec.source,
        customer_ref=customer.ref if customer else None,
        client_ref=rec.client_ref,
        recorded_at=crud.as_utc(rec.recorded_at),
        received_at=crud.as_utc(rec.received_at),
        duration=rec.duration,
        language=rec.language,
        size_bytes=rec.size_bytes,
        sha256=rec.sha256,
        conversations=_conversations_out(session, rec),
    )


# -- routes ------------------------------------------------------------------------------------
@router.get("/healthz", response_model=schemas.Health, tags=["operations"])
def healthz(session: ReadSessionDep) -> schemas.Health:
    """Liveness plus the number of jobs waiting or running. No key needed."""
    return schemas.Health(status="ok", pending_jobs=crud.pending_jobs(session))


@router.post(
    "/v1/recordings",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.RecordingAccepted,
    tags=["recordings"],
    responses={
        200: {"model": schemas.RecordingAccepted, "description": "already uploaded with this client_ref"},
        413: {"description": "file or audio too large (problem+json)"},
        422: {"description": "not decodable audio, or a bad field (problem+json)"},
    },
)
def upload_recording(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="the audio: wav, mp3, m4a/aac, ogg/opus, flac, amr")],
    device_id: Annotated[str, Form(pattern=REF, description="the badge's or kiosk's id")],
    recorded_at: Annotated[datetime, Form(description="ISO 8601 start of the recording; no offset = UTC")],
    source: Annotated[Literal["badge", "avatar"], Form()] = "badge",
    customer_ref: Annotated[str | None, Form(pattern=REF, description="the CRM's customer id, if known")] = None,
    client_ref: Annotated[
        str | None, Form(pattern=CLIENT_REF, description="the device's own id for this file: a retry with it is answered with the first upload")
    ] = None,
    appointments: Annotated[
        str | None,
        Form(description='optional JSON list of appointment windows: [{"start": ISO 8601, "end": ISO 8601, "customer_ref": "…"}]; speech inside a window is that customer\'s conversation'),
    ] = None,
) -> schemas.RecordingAccepted:
    """Store the audio durably, queue it for transcription and tagging, answer 202.

    The same `client_ref` from the same device again answers 200 with the first id and stores
    nothing twice.
    """
    principal.require("recordings:create")
    appointment_windows = _parse_appointments(appointments)
    settings = request.app.state.settings
    store = request.app.state.pipeline.store
    tenant = principal.tenant_id
    engine = request.app.state.engine
    if recorded_at.tzinfo is None:
        recorded_at = recorded_at.replace(tzinfo=timezone.utc)
    recorded_at = recorded_at.astimezone(timezone.utc)  # stored as UTC on every backend

    def existing() -> schemas.RecordingAccepted | None:
        if client_ref is None:
            return None
        with Session(engine, expire_on_commit=False) as s:
            dev = s.exec(
                select(Device).where(Device.tenant_id == tenant, Device.external_id == device_id)
            ).first()
            rec = dev and crud.find_by_client_ref(s, tenant_id=tenant, device_id=dev.id, client_ref=client_ref)
            if rec:
                response.status_code = status.HTTP_200_OK
                return schemas.RecordingAccepted(id=rec.id, status=rec.status, duplicate=True)
        return None

    if (dup := existing()) is not None:
        return dup

    rec_id = new_id()
    now = datetime.now(timezone.utc)
    ext = safe_ext(file.filename) or "bin"
    key = f"{tenant}/{now:%Y/%m/%d}/{rec_id}.{ext}"
    size, digest = store.put_stream(key, file.file, max_bytes=settings.max_upload_bytes)
    try:
        if size == 0:
            raise Unprocessable("the uploaded file is empty", type="/problems/empty-audio")
        try:
            info = asr.probe(store.path(key))
        except asr.AudioError as exc:
            raise Unprocessable(f"the file is not decodable audio: {exc}", type="/problems/undecodable-audio") from exc
        if info.duration is not None and info.duration > settings.max_audio_seconds:
            raise PayloadTooLarge(
                f"the audio lasts {info.duration:.0f} s, longer than the limit of {settings.max_audio_seconds:.0f} s",
                type="/problems/audio-too-long",
            )
        if info.duration is not None and info.duration <= 0:
            raise Unprocessable("the audio has no samples", type="/problems/empty-audio")
        with Session(engine, expire_on_commit=False) as s:
            dev = crud.get_or_create_device(s, tenant_id=tenant, external_id=device_id, source=source)
            cust = crud.get_or_create_customer(s, tenant_id=tenant, ref=customer_ref) if customer_ref else None
            rec = Recording(
                id=rec_id,
                tenant_id=tenant,
                device_id=dev.id,
                customer_id=cust.id if cust else None,
                source=source,
                client_ref=client_ref,
                recorded_at=recorded_at,
                filename=os.path.basename((file.filename or "").replace("\\", "/"))[:255],
                content_type=(file.content_type or "")[:100],
                size_bytes=size,
                sha256=digest,
                audio_path=key,
                audio_format=info.format[:32],
                duration=info.duration,
                channels=info.channels,
                appointments=appointment_windows,
            )
            crud.create_recording(s, rec)
            s.commit()
    except IntegrityError:
        store.delete(key)  # a concurrent duplicate won the race: answer with its id
        if (dup := existing()) is not None:
            return dup
        raise
    except BaseException:
        store.delete(key)
        raise
    request.app.state.worker.notify()
    response.headers["Location"] = f"/v1/recordings/{rec_id}"
    return schemas.RecordingAccepted(id=rec_id, status="queued", duplicate=False)


@router.get("/v1/recordings/{recording_id}", response_model=schemas.RecordingOut, tags=["recordings"])
def get_recording(recording_id: str, principal: PrincipalDep, session: ReadSessionDep) -> schemas.RecordingOut:
    """Status (`queued|processing|done|failed`), progress 0..1 and the error text of a recording."""
    principal.require("recordings:status")
    rec = crud.get_recording(session, tenant_id=principal.tenant_id, recording_id=recording_id)
    return _recording_out(session, rec)


@router.get("/v1/recordings/{recording_id}/transcript", response_model=schemas.TranscriptOut, tags=["recordings"])
def get_transcript(recording_id: str, principal: PrincipalDep, session: ReadSessionDep) -> schemas.TranscriptOut:
    """Segments with times and the tag assignments with their evidence."""
    principal.require("transcripts:read")
    rec = crud.get_recording(session, tenant_id=principal.tenant_id, recording_id=recording_id)
    all_segs = crud.list_segments(session, recording_id=rec.id)
    segs = [s for s in all_segs if not s.discarded]
    tags = crud.list_tag_assignments(session, recording_id=rec.id)
    conv_index = {c.id: c.idx for c in crud.list_conversations(session, recording_id=rec.id)}
    return schemas.TranscriptOut(
        recording_id=rec.id,
        status=rec.status,
        language=rec.language,
        duration=rec.duration,
        asr_model=rec.asr_model,
        text="".join(s.text for s in segs) if (rec.language or "").startswith("zh") else " ".join(s.text for s in segs),
        segments=[
            schemas.SegmentOut(
                index=s.idx, start=s.start, end=s.end, text=s.text, speaker=s.speaker,
                conversation=s.conversation_idx, avg_logprob=s.avg_logprob, no_speech_prob=s.no_speech_prob,
            )
            for s in segs
        ],
        discarded=[
            schemas.DiscardedOut(index=s.idx, start=s.start, end=s.end, text=s.text, reason=s.discarded)
            for s in all_segs
            if s.discarded
        ],
        conversations=_conversations_out(session, rec),
        tags=[
            schemas.TagOut(
                conversation=conv_index.get(t.conversation_id), kind=t.kind, code=t.code, label=t.label, confidence=t.confidence, method=t.method,
                status=t.status, taxonomy_version=t.taxonomy_version, tagger_version=t.tagger_version,
                evidence=[schemas.EvidenceOut(**{k: e.get(k) for k in schemas.EvidenceOut.model_fields}) for e in t.evidence],
            )
            for t in tags
        ],
    )


@router.get("/v1/customers/{customer_ref}", response_model=schemas.CustomerProfileOut, tags=["customers"])
def get_customer(customer_ref: str, request: Request, principal: PrincipalDep, session: ReadSessionDep) -> Response:
    """The customer's profile: each tag with count, confidence, first/last seen and the
    conversations it came from, or `source: manual`. ETag / If-None-Match supported."""
    principal.require("customers:read")
    customer = crud.get_customer(session, tenant_id=principal.tenant_id, ref=customer_ref)
    return with_etag(request, profile_out(session, customer))


def with_etag(request: Request, model: BaseModel) -> Response:
    """JSON with a strong ETag over the body; 304 when the client's If-None-Match matches."""
    body = model.model_dump_json().encode()
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


def profile_out(session: Session, customer: Customer) -> schemas.CustomerProfileOut:
    contact = crud.wecom_contact(session, customer_id=customer.id)
    return schemas.CustomerProfileOut(
        customer_ref=customer.ref,
        updated_at=crud.as_utc(customer.updated_at),
        merged_into=crud.customer_ref(session, customer.merged_into_id),
        wecom=schemas.WecomContactOut(userid=contact.userid, external_userid=contact.external_userid) if contact else None,
        tags=[
            schemas.ProfileTagOut(
                kind=p.kind, code=p.code, label=p.label, count=p.count, confidence=p.confidence,
                first_seen=crud.as_utc(p.first_seen), last_seen=crud.as_utc(p.last_seen), recordings=p.recordings,
                conversations=p.conversations or [], source=p.source,
            )
            for p in crud.profile_tags(session, customer_id=customer.id)
        ],
    )


@router.get("/v1/changes", response_model=schemas.ChangesPage, tags=["crm"])
async def get_changes(
    request: Request,
    after: Annotated[int, Query(ge=0, description="the `next` of the previous page; 0 = from the start")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """Profile tag changes in commit order. Persist `next` and pass it as `after`."""
    # The hot path of every CRM. Two indexed reads on a snapshot (about a millisecond on SQLite)
    # run on the event loop: the thread-pool hops of sync dependencies cost more than the work.
    with Session(request.app.state.read_engine) as session:
        principal = authenticate(session, authorization)
        principal.require("changes:read")
        rows = crud.change_feed_rows(session, tenant_id=principal.tenant_id, after=after, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    # rows straight to JSON (the shape is schemas.ChangeOut's)
    data = []
    for r in rows:
        d = dict(zip(crud.CHANGE_FIELDS, r))
        d["cursor"] = d.pop("seq")
        d["created_at"] = d["created_at"].replace(tzinfo=None).isoformat() + "Z"
        data.append(d)
    body = {"data": data, "next": rows[-1][0] if rows else after, "has_more": has_more}
    return Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), media_type="application/json")
