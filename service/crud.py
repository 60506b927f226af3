"""Every query of the service, keyword-only, always scoped by tenant."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from .errors import NotFound
from .models import (
    ComplianceFlag,
    Conversation,
    Customer,
    Device,
    Job,
    ProfileTag,
    Recording,
    Segment,
    TagAssignment,
    TagChange,
    TaxonomyOverride,
    utcnow,
)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# -- devices, customers ------------------------------------------------------------------------
def get_or_create_device(session: Session, *, tenant_id: str, external_id: str, source: str) -> Device:
    q = select(Device).where(Device.tenant_id == tenant_id, Device.external_id == external_id)
    device = session.exec(q).first()
    if device is None:
        device = Device(tenant_id=tenant_id, external_id=external_id, source=source)
        session.add(device)
        session.flush()
    else:
        device.last_seen = utcnow()
        session.add(device)
    return device


def get_or_create_customer(session: Session, *, tenant_id: str, ref: str) -> Customer:
    q = select(Customer).where(Customer.tenant_id == tenant_id, Customer.ref == ref)
    customer = session.exec(q).first()
    if customer is None:
        customer = Customer(tenant_id=tenant_id, ref=ref)
        session.add(customer)
        session.flush()
    return customer


def get_customer(session: Session, *, tenant_id: str, ref: str) -> Customer:
    q = select(Customer).where(Customer.tenant_id == tenant_id, Customer.ref == ref)
    customer = session.exec(q).first()
    if customer is None:
        raise NotFound(f"no customer {ref!r}", type="/problems/customer-not-found")
    return customer


# -- recordings --------------------------------------------------------------------------------
def find_by_client_ref(session: Session, *, tenant_id: str, device_id: int, client_ref: str) -> Recording | None:
    q = select(Recording).where(
        Recording.tenant_id == tenant_id, Recording.device_id == device_id, Recording.client_ref == client_ref
    )
    return session.exec(q).first()


def create_recording(session: Session, recording: Recording) -> Recording:
    """Insert a recording and its first job in the caller's transaction.

    Raises IntegrityError when the (device, client_ref) pair already exists.
    """
    session.add(recording)
    session.flush()
    session.add(Job(tenant_id=recording.tenant_id, recording_id=recording.id, stage="transcribe"))
    session.flush()
    return recording


def get_recording(session: Session, *, tenant_id: str, recording_id: str) -> Recording:
    rec = session.get(Recording, recording_id)
    if rec is None or rec.tenant_id != tenant_id:  # another tenant's id reads as absent
        raise NotFound(f"no recording {recording_id!r}", type="/problems/recording-not-found")
    return rec


def list_segments(session: Session, *, recording_id: str) -> list[Segment]:
    q = select(Segment).where(Segment.recording_id == recording_id).order_by(Segment.idx)
    return list(session.exec(q))


def list_tag_assignments(session: Session, *, recording_id: str) -> list[TagAssignment]:
    q = select(TagAssignment).where(TagAssignment.recording_id == recording_id).order_by(TagAssignment.id)
    return list(session.exec(q))


def set_recording_state(session: Session, recording_id: str, **fields) -> None:
    fields["updated_at"] = utcnow()
    session.exec(update(Recording).where(Recording.id == recording_id).values(**fields))


# -- jobs --------------------------------------------------------------------------------------
def enqueue(session: Session, *, tenant_id: str, recording_id: str, stage: str) -> None:
    """Queue *stage* for a recording; an existing row for that stage is reset (idempotent)."""
    q = select(Job).where(Job.recording_id == recording_id, Job.stage == stage)
    job = session.exec(q).first()
    if job is None:
        session.add(Job(tenant_id=tenant_id, recording_id=recording_id, stage=stage))
    else:
        job.status, job.attempts, job.error, job.lease_until, job.updated_at = "queued", 0, None, None, utcnow()
        session.add(job)
    session.flush()


def claim_job(session: Session, *, worker: str, lease_seconds: int, max_attempts: int) -> Job | None:
    """Claim the oldest runnable job (queued, or running with an expired lease): compare-and-set."""
    now = utcnow()
    q = (
        select(Job)
        .where(
            or_(
                Job.status == "queued",
                (Job.status == "running") & (col(Job.lease_until) < now),
            ),
            Job.attempts < max_attempts,
        )
        .order_by(Job.id)
        .limit(1)
    )
    job = session.exec(q).first()
    if job is None:
        return None
    result = session.exec(
        update(Job)
        .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts)
        .values(
            status="running",
            attempts=job.attempts + 1,
            worker=worker,
            lease_until=now + timedelta(seconds=lease_seconds),
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        return None
    session.refresh(job)
    return job


def renew_lease(session: Session, *, job_id: int, worker: str, lease_seconds: int) -> None:
    session.exec(
        update(Job)
        .where(Job.id == job_id, Job.worker == worker)
        .values(lease_until=utcnow() + timedelta(seconds=lease_seconds))
    )


def finish_job(session: Session, *, job_id: int, status: str, error: str | None = None) -> None:
    session.exec(
        update(Job).where(Job.id == job_id).values(status=status, error=error, lease_until=None, updated_at=utcnow())
    )


def requeue_running(session: Session) -> int:
    """Embedded mode owns every job: at start-up, whatever was running was interrupted."""
    result = session.exec(
        update(Job).where(Job.status == "running").values(status="queued", lease_until=None, updated_at=utcnow())
    )
    return result.rowcount


def pending_jobs(session: Session) -> int:
    return len(session.exec(select(Job.id).where(col(Job.status).in_(["queued", "running"]))).all())


# -- segments, conversations and tags -----------------------------------------------------------
def trim_segments(session: Session, *, recording_id: str, keep_before: float) -> int:
    """Delete a recording's segments that start at or after *keep_before*; return how many remain."""
    session.exec(delete(Segment).where(Segment.recording_id == recording_id, col(Segment.start) >= keep_before))
    session.flush()
    return len(session.exec(select(Segment.id).where(Segment.recording_id == recording_id)).all())


def add_segments(session: Session, *, recording: Recording, segments: Iterable) -> None:
    for s in segments:
        session.add(
            Segment(
                tenant_id=recording.tenant_id,
                recording_id=recording.id,
                idx=s.index,
                start=s.start,
                end=s.end,
                text=s.text,
                speaker=s.speaker,
                discarded=s.discarded,
                loudness_db=s.loudness_db,
                avg_logprob=s.avg_logprob,
                no_speech_prob=s.no_speech_prob,
            )
        )
    session.flush()


def list_conversations(session: Session, *, recording_id: str) -> list[Conversation]:
    q = select(Conversation).where(Conversation.recording_id == recording_id).order_by(Conversation.idx)
    return list(session.exec(q))


def replace_conversations(session: Session, *, recording: Recording, spans, labels: dict, customer_for) -> None:
    """Store the conversations of a recording and each segment's conversation and speaker."""
    session.exec(
        update(TagAssignment).where(TagAssignment.recording_id == recording.id).values(conversation_id=None)
    )
    session.exec(delete(Conversation).where(Conversation.recording_id == recording.id))
    segs = {g.idx: g for g in list_segments(session, recording_id=recording.id)}
    for g in segs.values():
        g.conversation_idx, g.speaker = None, labels.get(g.idx, g.speaker)
    for span in spans:
        staff = customer = 0.0
        for i in span.segments:
            g = segs[i]
            g.conversation_idx = span.index
            if not g.discarded:
                if g.speaker == "staff":
                    staff += g.end - g.start
                elif g.speaker == "customer":
                    customer += g.end - g.start
        session.add(
            Conversation(
                tenant_id=recording.tenant_id,
                recording_id=recording.id,
                idx=span.index,
                start=span.start,
                end=span.end,
                customer_id=customer_for(span),
                split_reason=span.reason,
                staff_seconds=round(staff, 3),
                customer_seconds=round(customer, 3),
                talk_ratio=round(staff / (staff + customer), 3) if staff + customer > 0 else None,
            )
        )
    for g in segs.values():
        session.add(g)
    session.flush()


def replace_tags(session: Session, *, recording: Recording, results: Iterable) -> list[TagChange]:
    """Replace a recording's machine tags (``results``: (conversation, assignments) pairs), refresh
    the affected customers' profiles and log what changed.

    Idempotent: running it twice with the same assignments changes nothing the second time.
    """
    results = list(results)
    old_customer_ids = {
        cid
        for cid in session.exec(
            select(TagAssignment.customer_id).where(TagAssignment.recording_id == recording.id)
        ).all()
        if cid is not None
    }
    session.exec(
        delete(TagAssignment).where(TagAssignment.recording_id == recording.id, TagAssignment.status == "auto")
    )
    new_customer_ids = set()
    for conv, assignments in results:
        if conv.customer_id:
            new_customer_ids.add(conv.customer_id)
        for a in assignments:
            session.add(
                TagAssignment(
                    tenant_id=recording.tenant_id,
                    recording_id=recording.id,
                    conversation_id=conv.id,
                    customer_id=conv.customer_id,
                    kind=a.kind,
                    code=a.code,
                    label=a.label,
                    confidence=a.confidence,
                    method=a.method,
                    taxonomy_version=a.taxonomy_version,
                    tagger_version=a.tagger_version,
                    evidence=[asdict(e) for e in a.evidence],
                )
            )
    session.flush()
    changes: list[TagChange] = []
    for cid in sorted(old_customer_ids | new_customer_ids):
        changes += refresh_profile(session, customer_id=cid, trigger_recording=recording.id)
    return changes


def refresh_profile(session: Session, *, customer_id: int, trigger_recording: str | None) -> list[TagChange]:
    """Recompute a customer's profile tags from her tag assignments; write and return the diff."""
    customer = session.get(Customer, customer_id)
    rows = session.exec(
        select(TagAssignment, Recording.recorded_at)
        .join(Recording, Recording.id == TagAssignment.recording_id)
        .where(TagAssignment.customer_id == customer_id, TagAssignment.status != "rejected")
    ).all()
    agg: dict[tuple[str, str], dict] = {}
    for ta, recorded_at in rows:
        recorded_at = as_utc(recorded_at)
        a = agg.setdefault(
            (ta.kind, ta.code),
            {"label": ta.label, "recordings": set(), "conversations": set(), "confidence": 0.0, "first": recorded_at, "last": recorded_at},
        )
        a["recordings"].add(ta.recording_id)
        a["conversations"].add(ta.conversation_id or ta.recording_id)
        a["confidence"] = max(a["confidence"], ta.confidence)
        a["first"] = min(a["first"], recorded_at)
        a["last"] = max(a["last"], recorded_at)
    existing = {
        (p.kind, p.code): p for p in session.exec(select(ProfileTag).where(ProfileTag.customer_id == customer_id))
    }
    changes: list[TagChange] = []
    now = utcnow()

    def log(action: str, kind: str, code: str, label: str, count: int, confidence: float) -> None:
        change = TagChange(
            tenant_id=customer.tenant_id,
            customer_id=customer_id,
            customer_ref=customer.ref,
            action=action,
            kind=kind,
            code=code,
            label=label,
            count=count,
            confidence=confidence,
            recording_id=trigger_recording,
        )
        session.add(change)
        changes.append(change)

    for (kind, code), a in sorted(agg.items()):
        recs = sorted(a["recordings"])
        count = len(a["conversations"])
        conf = round(a["confidence"], 3)
        p = existing.pop((kind, code), None)
        if p is None:
            session.add(
                ProfileTag(
                    tenant_id=customer.tenant_id,
                    customer_id=customer_id,
                    kind=kind,
                    code=code,
                    label=a["label"],
                    count=count,
                    confidence=conf,
                    first_seen=a["first"],
                    last_seen=a["last"],
                    recordings=recs,
                )
            )
            log("added", kind, code, a["label"], count, conf)
        elif (p.count, round(p.confidence, 3), sorted(p.recordings)) != (count, conf, recs):
            p.count, p.confidence, p.recordings = count, conf, recs
            p.first_seen, p.last_seen, p.updated_at = a["first"], a["last"], now
            session.add(p)
            log("updated", kind, code, p.label, count, conf)
    for (kind, code), p in sorted(existing.items()):
        session.delete(p)
        log("removed", kind, code, p.label, 0, 0.0)
    if changes:
        customer.updated_at = now
        session.add(customer)
    session.flush()
    return changes


def profile_tags(session: Session, *, customer_id: int) -> list[ProfileTag]:
    q = select(ProfileTag).where(ProfileTag.customer_id == customer_id).order_by(ProfileTag.kind, ProfileTag.code)
    return list(session.exec(q))


def list_changes(session: Session, *, tenant_id: str, after: int, limit: int) -> list[TagChange]:
    q = (
        select(TagChange)
        .where(TagChange.tenant_id == tenant_id, col(TagChange.seq) > after)
        .order_by(TagChange.seq)
        .limit(limit)
    )
    return list(session.exec(q))




# -- taxonomy overrides ------------------------------------------------------------------------------
def get_taxonomy_override(session: Session, *, tenant_id: str) -> TaxonomyOverride | None:
    return session.get(TaxonomyOverride, tenant_id)


def put_taxonomy_override(session: Session, *, tenant_id: str, data: dict, key_id: str) -> TaxonomyOverride:
    row = session.get(TaxonomyOverride, tenant_id)
    if row is None:
        row = TaxonomyOverride(tenant_id=tenant_id, revision=0)
    row.data = data
    row.revision += 1
    row.updated_by = key_id
    row.updated_at = utcnow()
    session.add(row)
    session.flush()
    return row


# -- training data from QA decisions ----------------------------------------------------------------
def reviewed_conversations(session: Session, *, tenant_id: str | None = None) -> list[dict]:
    """Conversations QA has decided on, as gold items: the kept segments and the QA-final labels
    (machine tags not rejected, plus the tags QA added)."""
    q = select(TagAssignment).where(or_(TagAssignment.status != "auto", TagAssignment.method == "manual"))
    if tenant_id is not None:
        q = q.where(TagAssignment.tenant_id == tenant_id)
    reviewed = {a.conversation_id for a in session.exec(q).all() if a.conversation_id is not None}
    out = []
    for conv_id in sorted(reviewed):
        conv = session.get(Conversation, conv_id)
        segs = session.exec(
            select(Segment)
            .where(Segment.recording_id == conv.recording_id, Segment.conversation_idx == conv.idx, Segment.discarded.is_(None))
            .order_by(Segment.idx)
        ).all()
        tags = session.exec(select(TagAssignment).where(TagAssignment.conversation_id == conv_id)).all()
        item = {"id": f"{conv.recording_id}:{conv.idx}", "segments": [{"speaker": g.speaker, "text": g.text} for g in segs]}
        for kind in ("project", "concern", "intent"):
            item[kind] = sorted({t.code for t in tags if t.kind == kind and t.status != "rejected"})
        if item["segments"]:
            out.append(item)
    return out


# -- compliance flags --------------------------------------------------------------------------------
def replace_compliance_flags(session: Session, *, recording: Recording, results: Iterable) -> int:
    """Replace a recording's flags (``results``: (conversation, flags) pairs); idempotent."""
    session.exec(delete(ComplianceFlag).where(ComplianceFlag.recording_id == recording.id))
    n = 0
    for conv, flags in results:
        for f in flags:
            session.add(ComplianceFlag(
                tenant_id=recording.tenant_id, recording_id=recording.id, conversation_id=conv.id,
                device_id=recording.device_id, code=f.code, label=f.label, segment_idx=f.segment,
                start=f.start, end=f.end, quote=f.quote, match=f.match[:200], rules_version=f.rules_version,
            ))
            n += 1
    session.flush()
    return n


def list_compliance_flags(session: Session, *, recording_id: str) -> list[ComplianceFlag]:
    return list(session.exec(
        select(ComplianceFlag).where(ComplianceFlag.recording_id == recording_id)
        .order_by(ComplianceFlag.conversation_id, ComplianceFlag.segment_idx)
    ).all())


def compliance_report(session: Session, *, tenant_id: str, since: datetime | None, until: datetime | None) -> list[dict]:
    """Per consultant (badge): conversations, flagged conversations and flags per code, for
    recordings made in [since, until)."""
    q = (
        select(ComplianceFlag, Device.external_id)
        .join(Recording, Recording.id == ComplianceFlag.recording_id)
        .join(Device, Device.id == ComplianceFlag.device_id)
        .where(ComplianceFlag.tenant_id == tenant_id)
    )
    c = (
        select(Conversation.id, Device.external_id)
        .join(Recording, Recording.id == Conversation.recording_id)
        .join(Device, Device.id == Recording.device_id)
        .where(Conversation.tenant_id == tenant_id)
    )
    if since is not None:
        q, c = q.where(Recording.recorded_at >= since), c.where(Recording.recorded_at >= since)
    if until is not None:
        q, c = q.where(Recording.recorded_at < until), c.where(Recording.recorded_at < until)
    out: dict[str, dict] = {}
    for _, device in session.exec(c).all():
        out.setdefault(device, {"device_id": device, "conversations": 0, "flagged_conversations": set(), "flags": {}})
        out[device]["conversations"] += 1
    for flag, device in session.exec(q).all():
        row = out.setdefault(device, {"device_id": device, "conversations": 0, "flagged_conversations": set(), "flags": {}})
        row["flagged_conversations"].add(flag.conversation_id)
        row["flags"][flag.code] = row["flags"].get(flag.code, 0) + 1
    rows = []
    for row in out.values():
        row["flagged_conversations"] = len(row["flagged_conversations"])
        row["total_flags"] = sum(row["flags"].values())
        rows.append(row)
    return sorted(rows, key=lambda r: (-r["total_flags"], r["device_id"]))
