"""Every query of the service, keyword-only, always scoped by tenant."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, or_, update
from sqlmodel import Session, col, select

from .crm_models import (
    ManualTag,
    TagReview,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WecomContact,
)
from .errors import Conflict, NotFound, Unprocessable
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
    """The customer with *ref* (created when new); a merged-away ref resolves to its survivor."""
    q = select(Customer).where(Customer.tenant_id == tenant_id, Customer.ref == ref)
    customer = session.exec(q).first()
    if customer is None:
        customer = Customer(tenant_id=tenant_id, ref=ref)
        session.add(customer)
        session.flush()
    seen = {customer.id}
    while customer.merged_into_id is not None and customer.merged_into_id not in seen:
        customer = session.get(Customer, customer.merged_into_id)
        seen.add(customer.id)
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
    """Store the conversations of a recording and each segment's conversation and speaker.

    What people decided survives a re-run: a conversation linked to a customer by hand keeps that
    customer (same index), and reviewed or added tags stay attached to the conversation of the
    same index.
    """
    old = list_conversations(session, recording_id=recording.id)
    old_idx = {c.id: c.idx for c in old}
    linked = {c.idx: (c.customer_id, c.customer_linked_by) for c in old if c.customer_linked_by}
    kept_tags = [  # (assignment id, index of its conversation), read before the ids go away
        (ta_id, old_idx.get(conv_id))
        for ta_id, conv_id in session.exec(
            select(TagAssignment.id, TagAssignment.conversation_id).where(
                TagAssignment.recording_id == recording.id, TagAssignment.status != "auto"
            )
        ).all()
    ]
    session.exec(
        update(TagAssignment).where(TagAssignment.recording_id == recording.id).values(conversation_id=None)
    )
    session.exec(update(TagReview).where(TagReview.recording_id == recording.id).values(conversation_id=None))
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
        customer_id, linked_by = linked.get(span.index, (customer_for(span), None))
        session.add(
            Conversation(
                tenant_id=recording.tenant_id,
                recording_id=recording.id,
                idx=span.index,
                start=span.start,
                end=span.end,
                customer_id=customer_id,
                customer_linked_by=linked_by,
                split_reason=span.reason,
                staff_seconds=round(staff, 3),
                customer_seconds=round(customer, 3),
                talk_ratio=round(staff / (staff + customer), 3) if staff + customer > 0 else None,
            )
        )
    for g in segs.values():
        session.add(g)
    session.flush()
    new_by_idx = {c.idx: c for c in list_conversations(session, recording_id=recording.id)}
    for ta_id, idx in kept_tags:
        if (conv := new_by_idx.get(idx)) is not None:
            session.exec(update(TagAssignment).where(TagAssignment.id == ta_id).values(conversation_id=conv.id))
    for idx, conv in new_by_idx.items():
        session.exec(
            update(TagReview)
            .where(TagReview.recording_id == recording.id, TagReview.conversation_idx == idx)
            .values(conversation_id=conv.id)
        )
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
    # QA's decisions (accepted, rejected, added) survive re-tagging: the tagger neither resurrects
    # a rejected tag nor duplicates an accepted one
    decided = {
        (ta.conversation_id, ta.kind, ta.code): ta
        for ta in session.exec(select(TagAssignment).where(TagAssignment.recording_id == recording.id))
    }
    new_customer_ids = set()
    for conv, assignments in results:
        if conv.customer_id:
            new_customer_ids.add(conv.customer_id)
        for ta in decided.values():
            if ta.conversation_id == conv.id and ta.customer_id != conv.customer_id:
                ta.customer_id = conv.customer_id
                session.add(ta)
        for a in assignments:
            if (conv.id, a.kind, a.code) in decided:
                continue
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


def refresh_profile(
    session: Session, *, customer_id: int, trigger_recording: str | None, reason: str = "tagging"
) -> list[TagChange]:
    """Recompute a customer's profile tags from her tag assignments and the CRM's manual tags;
    write the diff as change rows (and their webhook outbox rows) and return it.

    Rejected assignments never count. A manual tag (``present``) is in the profile whatever the
    conversations say; a manual removal hides the evidence recorded up to the removal.
    """
    customer = session.get(Customer, customer_id)
    rows = session.exec(
        select(TagAssignment, Recording.recorded_at, Conversation.idx)
        .join(Recording, Recording.id == TagAssignment.recording_id)
        .outerjoin(Conversation, Conversation.id == TagAssignment.conversation_id)
        .where(TagAssignment.customer_id == customer_id, TagAssignment.status != "rejected")
    ).all()
    manual = {
        (m.kind, m.code): m for m in session.exec(select(ManualTag).where(ManualTag.customer_id == customer_id))
    }
    agg: dict[tuple[str, str], dict] = {}
    for ta, recorded_at, conv_idx in rows:
        recorded_at = as_utc(recorded_at)
        m = manual.get((ta.kind, ta.code))
        if m is not None and m.state == "removed" and recorded_at <= as_utc(m.updated_at):
            continue  # the CRM took this tag away after seeing this evidence
        a = agg.setdefault(
            (ta.kind, ta.code),
            {"label": ta.label, "recordings": set(), "conversations": set(), "confidence": 0.0,
             "first": recorded_at, "last": recorded_at, "source": "conversation"},
        )
        a["recordings"].add(ta.recording_id)
        a["conversations"].add(f"{ta.recording_id}:{conv_idx}" if conv_idx is not None else ta.recording_id)
        a["confidence"] = max(a["confidence"], ta.confidence)
        a["first"] = min(a["first"], recorded_at)
        a["last"] = max(a["last"], recorded_at)
    for (kind, code), m in manual.items():
        if m.state != "present":
            continue
        at = as_utc(m.created_at)
        a = agg.setdefault(
            (kind, code),
            {"label": m.label, "recordings": set(), "conversations": set(), "confidence": 1.0, "first": at, "last": at},
        )
        a["source"], a["confidence"] = "manual", 1.0
    existing = {
        (p.kind, p.code): p for p in session.exec(select(ProfileTag).where(ProfileTag.customer_id == customer_id))
    }
    changes: list[TagChange] = []
    now = utcnow()

    def log(action: str, kind: str, code: str, label: str, count: int, confidence: float, source: str) -> None:
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
            source=source,
            reason=reason,
        )
        session.add(change)
        changes.append(change)

    for (kind, code), a in sorted(agg.items()):
        recs, convs = sorted(a["recordings"]), sorted(a["conversations"])
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
                    conversations=convs,
                    source=a["source"],
                )
            )
            log("added", kind, code, a["label"], count, conf, a["source"])
        elif (p.count, round(p.confidence, 3), sorted(p.recordings), sorted(p.conversations or []), p.source) != (
            count, conf, recs, convs, a["source"]
        ):
            p.count, p.confidence, p.recordings, p.conversations, p.source = count, conf, recs, convs, a["source"]
            p.first_seen, p.last_seen, p.updated_at = a["first"], a["last"], now
            session.add(p)
            log("updated", kind, code, p.label, count, conf, a["source"])
    for (kind, code), p in sorted(existing.items()):
        session.delete(p)
        log("removed", kind, code, p.label, 0, 0.0, p.source)
    if changes:
        customer.updated_at = now
        session.add(customer)
    session.flush()
    if changes:
        enqueue_deliveries(session, tenant_id=customer.tenant_id, changes=changes)
    return changes


def profile_tags(session: Session, *, customer_id: int) -> list[ProfileTag]:
    q = select(ProfileTag).where(ProfileTag.customer_id == customer_id).order_by(ProfileTag.kind, ProfileTag.code)
    return list(session.exec(q))


CHANGE_FIELDS = ("seq", "customer_ref", "action", "kind", "code", "label", "count", "confidence", "recording_id",
                 "source", "reason", "created_at")


def change_feed_rows(session: Session, *, tenant_id: str, after: int, limit: int) -> list:
    """The feed's hot path: plain rows (no ORM objects) of :data:`CHANGE_FIELDS`, seq order."""
    t = TagChange.__table__
    q = (
        select(*(t.c[f] for f in CHANGE_FIELDS))
        .where(t.c.tenant_id == tenant_id, t.c.seq > after)
        .order_by(t.c.seq)
        .limit(limit)
    )
    return list(session.execute(q).all())


def list_changes(session: Session, *, tenant_id: str, after: int, limit: int) -> list[TagChange]:
    q = (
        select(TagChange)
        .where(TagChange.tenant_id == tenant_id, col(TagChange.seq) > after)
        .order_by(TagChange.seq)
        .limit(limit)
    )
    return list(session.exec(q))




# -- QA reviews, links, merges, manual tags -----------------------------------------------------
def get_conversation(session: Session, *, tenant_id: str, recording_id: str, idx: int) -> Conversation:
    rec = get_recording(session, tenant_id=tenant_id, recording_id=recording_id)
    conv = session.exec(select(Conversation).where(Conversation.recording_id == rec.id, Conversation.idx == idx)).first()
    if conv is None:
        raise NotFound(f"recording {recording_id!r} has no conversation {idx}", type="/problems/conversation-not-found")
    return conv


def review_tag(
    session: Session, *, conversation: Conversation, action: str, kind: str, code: str, label: str,
    actor: str, note: str | None = None,
) -> tuple[TagReview, list[TagChange]]:
    """Record a QA decision on one tag of a conversation and bring the profile in line with it.

    accept → every assignment of that code in the conversation becomes ``accepted`` (a rejected one
    is restored); reject → ``rejected`` (never counted again, nor re-created by re-tagging);
    add → the existing assignment is accepted, or a ``manual`` one is created.
    """
    rows = list(
        session.exec(
            select(TagAssignment)
            .where(TagAssignment.conversation_id == conversation.id, TagAssignment.kind == kind, TagAssignment.code == code)
            .order_by(TagAssignment.id)
        )
    )
    if action in ("accept", "reject") and not rows:
        raise NotFound(
            f"conversation {conversation.idx} of recording {conversation.recording_id} has no tag {kind}/{code}; "
            "to give it that tag use the action 'add'",
            type="/problems/tag-not-found",
        )
    if action == "add":
        live = [r for r in rows if r.status != "rejected"]
        if live:
            rows = live
        else:
            manual = TagAssignment(
                tenant_id=conversation.tenant_id, recording_id=conversation.recording_id,
                conversation_id=conversation.id, customer_id=conversation.customer_id, kind=kind, code=code,
                label=label, confidence=1.0, method="manual", taxonomy_version="", tagger_version="",
                status="accepted", evidence=[],
            )
            session.add(manual)
            session.flush()
            rows = [manual]
    new_status = "rejected" if action == "reject" else "accepted"
    for r in rows:
        r.status = new_status
        session.add(r)
    review = TagReview(
        tenant_id=conversation.tenant_id, recording_id=conversation.recording_id, conversation_id=conversation.id,
        conversation_idx=conversation.idx, tag_assignment_id=rows[0].id, kind=kind, code=code, action=action, actor=actor, note=note,
    )
    session.add(review)
    session.flush()
    changes = []
    if conversation.customer_id is not None:
        changes = refresh_profile(
            session, customer_id=conversation.customer_id, trigger_recording=conversation.recording_id, reason="review"
        )
    return review, changes


def list_reviews(session: Session, *, conversation_id: int) -> list[TagReview]:
    return list(session.exec(select(TagReview).where(TagReview.conversation_id == conversation_id).order_by(TagReview.id)))


def reviewed_conversations(session: Session, *, tenant_id: str | None = None) -> list[dict]:
    """Every conversation QA reviewed at least once, with its kept segments and QA-final labels.

    ``{"id": "<recording_id>:<idx>", "segments": [{"speaker", "text"}], "project": [...],
    "concern": [...], "intent": [...]}``; labels are codes: the tagger's and accepted ones that were
    not rejected, plus those QA added. The tagger's learning loop trains on this.
    """
    q = select(Conversation).where(
        col(Conversation.id).in_(select(TagReview.conversation_id).where(col(TagReview.conversation_id).is_not(None)))
    )
    if tenant_id is not None:
        q = q.where(Conversation.tenant_id == tenant_id)
    out = []
    for conv in session.exec(q.order_by(Conversation.recording_id, Conversation.idx)):
        segs = session.exec(
            select(Segment)
            .where(Segment.recording_id == conv.recording_id, Segment.conversation_idx == conv.idx,
                   col(Segment.discarded).is_(None))
            .order_by(Segment.idx)
        )
        labels: dict[str, set[str]] = {"project": set(), "concern": set(), "intent": set()}
        for ta in session.exec(
            select(TagAssignment).where(TagAssignment.conversation_id == conv.id, TagAssignment.status != "rejected")
        ):
            labels.setdefault(ta.kind, set()).add(ta.code)
        out.append({
            "id": f"{conv.recording_id}:{conv.idx}",
            "segments": [{"speaker": g.speaker, "text": g.text} for g in segs],
            **{kind: sorted(codes) for kind, codes in labels.items()},
        })
    return out


def link_conversation(session: Session, *, conversation: Conversation, customer: Customer, actor: str) -> list[TagChange]:
    """Make *customer* the conversation's customer: its tags move to her profile."""
    old = conversation.customer_id
    conversation.customer_id, conversation.customer_linked_by = customer.id, actor
    session.add(conversation)
    session.exec(
        update(TagAssignment).where(TagAssignment.conversation_id == conversation.id).values(customer_id=customer.id)
    )
    session.flush()
    changes: list[TagChange] = []
    for cid in sorted({c for c in (old, customer.id) if c is not None}):
        changes += refresh_profile(session, customer_id=cid, trigger_recording=conversation.recording_id, reason="link")
    return changes


def merge_customers(session: Session, *, target: Customer, source: Customer) -> list[TagChange]:
    """Fold *source* into *target*: conversations, recordings, tags, manual tags and the WeCom
    contact move; *source* keeps its ref but resolves to *target* from now on."""
    if source.id == target.id:
        raise Unprocessable("a customer cannot be merged into itself", type="/problems/validation")
    if target.merged_into_id is not None:
        raise Conflict(f"customer {target.ref!r} was itself merged away", type="/problems/customer-merged")
    for model in (Conversation, TagAssignment, Recording):
        session.exec(update(model).where(model.customer_id == source.id).values(customer_id=target.id))
    target_manual = {
        (m.kind, m.code) for m in session.exec(select(ManualTag).where(ManualTag.customer_id == target.id))
    }
    for m in session.exec(select(ManualTag).where(ManualTag.customer_id == source.id)).all():
        if (m.kind, m.code) in target_manual:
            session.delete(m)  # the surviving record's own decision wins
        else:
            m.customer_id = target.id
            session.add(m)
    contact = session.exec(select(WecomContact).where(WecomContact.customer_id == source.id)).first()
    if contact is not None:
        if session.exec(select(WecomContact).where(WecomContact.customer_id == target.id)).first():
            session.delete(contact)
        else:
            contact.customer_id = target.id
            session.add(contact)
    session.exec(update(Customer).where(Customer.merged_into_id == source.id).values(merged_into_id=target.id))
    source.merged_into_id = target.id
    session.add(source)
    session.flush()
    changes = refresh_profile(session, customer_id=source.id, trigger_recording=None, reason="merge")
    changes += refresh_profile(session, customer_id=target.id, trigger_recording=None, reason="merge")
    return changes


def set_manual_tag(
    session: Session, *, customer: Customer, kind: str, code: str, label: str, present: bool, actor: str
) -> list[TagChange]:
    """A CRM sets (``present``) or takes away a tag on a customer."""
    m = session.exec(
        select(ManualTag).where(ManualTag.customer_id == customer.id, ManualTag.kind == kind, ManualTag.code == code)
    ).first()
    now = utcnow()
    if m is None:
        m = ManualTag(tenant_id=customer.tenant_id, customer_id=customer.id, kind=kind, code=code, label=label,
                      state="present" if present else "removed", actor=actor, created_at=now, updated_at=now)
    else:
        if (m.state == "present") != present:
            m.created_at = now if present else m.created_at
        m.state, m.actor, m.updated_at = ("present" if present else "removed"), actor, now
    session.add(m)
    session.flush()
    return refresh_profile(session, customer_id=customer.id, trigger_recording=None, reason="manual")


def list_customers(
    session: Session, *, tenant_id: str, updated_since: datetime | None, after: tuple[datetime, int] | None, limit: int
) -> list[Customer]:
    """Customers by (updated_at, id), optionally changed since a time, keyset-paginated."""
    q = select(Customer).where(Customer.tenant_id == tenant_id)
    if updated_since is not None:
        q = q.where(col(Customer.updated_at) >= updated_since)
    if after is not None:
        at, cid = after
        q = q.where(or_(col(Customer.updated_at) > at, (Customer.updated_at == at) & (col(Customer.id) > cid)))
    return list(session.exec(q.order_by(Customer.updated_at, Customer.id).limit(limit)))


def customer_ref(session: Session, customer_id: int | None) -> str | None:
    c = session.get(Customer, customer_id) if customer_id is not None else None
    return c.ref if c else None


def wecom_contact(session: Session, *, customer_id: int) -> WecomContact | None:
    return session.exec(select(WecomContact).where(WecomContact.customer_id == customer_id)).first()


# -- webhook subscriptions and their outbox ------------------------------------------------------
def get_endpoint(session: Session, *, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    ep = session.get(WebhookEndpoint, endpoint_id)
    if ep is None or ep.tenant_id != tenant_id:
        raise NotFound(f"no webhook {endpoint_id!r}", type="/problems/webhook-not-found")
    return ep


def list_endpoints(session: Session, *, tenant_id: str) -> list[WebhookEndpoint]:
    q = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id).order_by(WebhookEndpoint.created_at)
    return list(session.exec(q))


def delete_endpoint(session: Session, *, endpoint: WebhookEndpoint) -> None:
    ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint.id)
    session.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids)))
    session.exec(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id))
    session.delete(endpoint)
    session.flush()


def msg_id(seq: int) -> str:
    """The webhook-id of a change: the same for every attempt and every redelivery."""
    return f"chg_{seq}"


def enqueue_deliveries(session: Session, *, tenant_id: str, changes: list[TagChange]) -> int:
    """Outbox rows for *changes* (already flushed: they have their seq), one per subscription, in
    the caller's transaction. A disabled endpoint gets them too: they wait until it is enabled
    again (or deleted), so re-enabling loses nothing."""
    endpoints = session.exec(select(WebhookEndpoint.id).where(WebhookEndpoint.tenant_id == tenant_id)).all()
    if not endpoints:
        return 0
    now = utcnow()
    rows = [
        {"tenant_id": tenant_id, "endpoint_id": ep, "change_seq": c.seq, "msg_id": msg_id(c.seq), "status": "pending",
         "attempts": 0, "next_attempt_at": now, "created_at": now}
        for ep in endpoints
        for c in changes
    ]
    session.execute(WebhookDelivery.__table__.insert(), rows)
    return len(rows)


def replay_deliveries(session: Session, *, tenant_id: str, after: int, endpoint_id: str | None = None) -> int:
    """Send every change after *after* again (same webhook-id): to one endpoint or all enabled ones.
    Returns how many deliveries were queued."""
    q = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
    q = q.where(WebhookEndpoint.id == endpoint_id) if endpoint_id else q.where(WebhookEndpoint.enabled == True)  # noqa: E712
    endpoints = list(session.exec(q))
    if endpoint_id and not endpoints:
        raise NotFound(f"no webhook {endpoint_id!r}", type="/problems/webhook-not-found")
    now = utcnow()
    n = 0
    seqs = session.exec(
        select(TagChange.seq).where(TagChange.tenant_id == tenant_id, col(TagChange.seq) > after).order_by(TagChange.seq)
    ).all()
    for ep in endpoints:
        session.exec(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == ep.id, col(WebhookDelivery.change_seq) > after,
                   WebhookDelivery.status != "sending")
            .values(status="pending", next_attempt_at=now, attempts=0, lease_until=None)
        )
        have = set(session.exec(
            select(WebhookDelivery.change_seq).where(WebhookDelivery.endpoint_id == ep.id,
                                                     col(WebhookDelivery.change_seq) > after)
        ).all())
        missing = [
            {"tenant_id": tenant_id, "endpoint_id": ep.id, "change_seq": s, "msg_id": msg_id(s), "status": "pending",
             "attempts": 0, "next_attempt_at": now, "created_at": now}
            for s in seqs if s not in have
        ]
        if missing:
            session.execute(WebhookDelivery.__table__.insert(), missing)
        n += len(seqs)
    session.flush()
    return n


def claim_deliveries(
    session: Session, *, worker: str, lease_seconds: float, busy: set[str], limit: int
) -> list[tuple[WebhookDelivery, WebhookEndpoint, TagChange]]:
    """Lease the head delivery of up to *limit* endpoints whose turn it is.

    Per endpoint only the lowest ``change_seq`` not yet delivered or dead may go (order), and only
    when it is due (``pending``) or its lease ran out (a worker died mid-send). Endpoints in
    *busy* (this process is sending to them) are skipped. Compare-and-set, like jobs.
    """
    now = utcnow()
    heads = (
        select(WebhookDelivery.endpoint_id, func.min(WebhookDelivery.change_seq).label("seq"))
        .where(col(WebhookDelivery.status).in_(["pending", "sending"]))
        .group_by(WebhookDelivery.endpoint_id)
        .subquery()
    )
    q = (
        select(WebhookDelivery, WebhookEndpoint, TagChange)
        .join(heads, (heads.c.endpoint_id == WebhookDelivery.endpoint_id) & (heads.c.seq == WebhookDelivery.change_seq))
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .join(TagChange, TagChange.seq == WebhookDelivery.change_seq)
        .where(
            WebhookEndpoint.enabled == True,  # noqa: E712
            or_(
                (WebhookDelivery.status == "pending") & (col(WebhookDelivery.next_attempt_at) <= now),
                (WebhookDelivery.status == "sending") & (col(WebhookDelivery.lease_until) < now),
            ),
        )
        .order_by(WebhookDelivery.next_attempt_at)
    )
    if busy:
        q = q.where(col(WebhookDelivery.endpoint_id).not_in(busy))
    out = []
    for d, ep, change in session.exec(q.limit(limit)).all():
        result = session.exec(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == d.id, WebhookDelivery.status == d.status, WebhookDelivery.attempts == d.attempts)
            .values(status="sending", attempts=d.attempts + 1, worker=worker,
                    lease_until=now + timedelta(seconds=lease_seconds))
        )
        if result.rowcount == 1:
            session.refresh(d)
            out.append((d, ep, change))
    return out


def finish_delivery(
    session: Session, *, delivery_id: int, worker: str, status_code: int | None, error: str | None,
    duration_ms: int, outcome: str, next_attempt_at: datetime | None = None, disable_reason: str | None = None,
) -> bool:
    """Record one attempt and its outcome (``delivered`` | ``retry`` | ``dead``). Returns False when
    this worker no longer holds the lease (another one took the delivery over)."""
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.status != "sending" or d.worker != worker:
        return False
    session.add(WebhookAttempt(tenant_id=d.tenant_id, delivery_id=d.id, attempt=d.attempts, status_code=status_code,
                               error=(error or None) and error[:1000], duration_ms=duration_ms))
    now = utcnow()
    d.last_status, d.last_error, d.lease_until = status_code, (error or None) and error[:1000], None
    if outcome == "delivered":
        d.status, d.delivered_at = "delivered", now
    elif outcome == "dead":
        d.status = "dead"
    else:
        d.status, d.next_attempt_at = "pending", next_attempt_at or now
    session.add(d)
    if disable_reason:
        session.exec(
            update(WebhookEndpoint).where(WebhookEndpoint.id == d.endpoint_id)
            .values(enabled=False, disabled_reason=disable_reason, updated_at=now)
        )
    session.flush()
    return True


def requeue_sending(session: Session) -> int:
    """Embedded mode owns every delivery: at start-up, whatever was being sent was interrupted."""
    result = session.exec(
        update(WebhookDelivery).where(WebhookDelivery.status == "sending").values(status="pending", lease_until=None)
    )
    return result.rowcount


def list_deliveries(
    session: Session, *, endpoint_id: str, status: str | None, after: int, limit: int
) -> list[WebhookDelivery]:
    q = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id, col(WebhookDelivery.id) > after)
    if status:
        q = q.where(WebhookDelivery.status == status)
    return list(session.exec(q.order_by(WebhookDelivery.id).limit(limit)))


def get_delivery(session: Session, *, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery:
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.endpoint_id != endpoint.id:
        raise NotFound(f"no delivery {delivery_id} for webhook {endpoint.id!r}", type="/problems/delivery-not-found")
    return d


def list_attempts(session: Session, *, delivery_id: int) -> list[WebhookAttempt]:
    q = select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id).order_by(WebhookAttempt.id)
    return list(session.exec(q))


def redeliver(session: Session, *, delivery: WebhookDelivery) -> None:
    if delivery.status == "sending":
        raise Conflict("this delivery is being sent right now", type="/problems/delivery-in-flight")
    delivery.status, delivery.next_attempt_at, delivery.attempts = "pending", utcnow(), 0
    delivery.created_at = utcnow()  # the retry window (about a day) starts again
    session.add(delivery)
    session.flush()


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
