"""The pipeline's stages, composed from :mod:`asr` and :mod:`tagging`.

transcribe → speakers (conversations, diarization, talk ratio) → tag.

Each stage is safe to run twice: outputs are keyed by recording (and conversation) and replaced,
never appended, and the profile diff makes a repeated tagging emit no second change. Transcription
persists segments window by window with a checkpoint, so an interrupted job resumes where it
stopped instead of from zero.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, replace
from datetime import datetime

import numpy as np
from sqlalchemy.engine import Engine

import asr
import tagging
from asr.conversations import AppointmentWindow, split_conversations
from asr.speakers import Diarizer, SpeakerTurn, assign_speakers, wearer_level
from tagging.registry import TaggerRegistry

from . import crud
from .db import session_scope
from .models import Recording
from .settings import Settings
from .store import LocalStore

logger = logging.getLogger(__name__)

#: errors that will not go away by trying again: the job fails at once with the reason
PERMANENT_ERRORS = (asr.AudioError, tagging.TaggingError)
STAGES = ("transcribe", "speakers", "tag")
NEXT_STAGE = {"transcribe": "speakers", "speakers": "tag", "tag": None}
#: share of the progress bar each stage ends at
PROGRESS_AT = {"transcribe": 0.85, "speakers": 0.95, "tag": 1.0}
FLUSH_EVERY_S = 2.0


class Pipeline:
    """Loads models once (lazily, thread-safe) and runs stages against the database."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.store = LocalStore(settings.audio_dir)
        self._lock = threading.RLock()  # the diarizer asks for the transcriber's device under it
        self._transcriber: asr.Transcriber | None = None
        self._diarizer: Diarizer | None = None
        self.registry = TaggerRegistry(settings.tagger_path)
        self._taxonomy: tagging.Taxonomy | None = None
        self._compliance: tagging.ComplianceChecker | None = None
        self._taggers: dict[tuple, object] = {}  # (tenant, override revision, version, stamp) → tagger

    # -- models ----------------------------------------------------------------------------
    @property
    def taxonomy(self) -> tagging.Taxonomy:
        """The base taxonomy (bundled, or EARMARK_TAXONOMY_PATH), before any tenant's overrides."""
        with self._lock:
            if self._taxonomy is None:
                self._taxonomy = tagging.Taxonomy.load(self.settings.taxonomy_path)
            return self._taxonomy

    @property
    def compliance(self) -> tagging.ComplianceChecker:
        with self._lock:
            if self._compliance is None:
                self._compliance = tagging.ComplianceChecker.load()
            return self._compliance

    def tagger_version(self) -> str:
        return self.settings.tagger_version or self.registry.active()

    def _with_overrides(self, row, tenant_id: str) -> tuple[tagging.Taxonomy, int]:
        if row is None or not row.data:
            return self.taxonomy, 0
        return self.taxonomy.with_overrides(row.data, label=f"{tenant_id}.r{row.revision}"), row.revision

    def tenant_taxonomy(self, session, tenant_id: str) -> tuple[tagging.Taxonomy, int]:
        """The taxonomy with the tenant's overrides applied, and their revision (0: none)."""
        row = crud.get_taxonomy_override(session, tenant_id=tenant_id)
        taxonomy, _ = self._with_overrides(row, tenant_id)
        return taxonomy, (row.revision if row else 0)

    def _cached_tagger(self, owner: str, revision: int, taxonomy):
        """The active version over *taxonomy*, built once per (owner, revision, version, switch);
        rebuilt when the active version is switched (``earmark models activate``) or the owner's
        overrides change. One tagger per owner stays in memory."""
        key = (owner, revision, self.tagger_version(), self.registry.stamp())
        with self._lock:
            tagger = self._taggers.get(key)
            if tagger is None:
                taxonomy = taxonomy()
                for k in [k for k in self._taggers if k[0] == owner]:
                    del self._taggers[k]
                tagger = self._taggers[key] = self.registry.load(taxonomy, key[2])
                logger.info("tagger %s loaded (taxonomy %s)", tagger.version, taxonomy.version)
            return tagger

    def tagger_for(self, session, tenant_id: str):
        """The active tagger over the tenant's taxonomy (tenants without overrides share one)."""
        row = crud.get_taxonomy_override(session, tenant_id=tenant_id)
        if row is None or not row.data:
            return self.tagger
        return self._cached_tagger(tenant_id, row.revision, lambda: self._with_overrides(row, tenant_id)[0])

    @property
    def tagger(self):
        """The tagger over the base taxonomy (no tenant's overrides), the active version."""
        return self._cached_tagger("", 0, lambda: self.taxonomy)

    @property
    def transcriber(self) -> asr.Transcriber:
        with self._lock:
            if self._transcriber is None:
                s = self.settings
                model_dir = asr.resolve_model(s.asr_model, s.models_dir)
                self._transcriber = asr.Transcriber(
                    model_dir, device=s.asr_device, compute_type=s.asr_compute_type, cpu_threads=s.asr_cpu_threads
                )
            return self._transcriber

    @property
    def diarizer(self) -> Diarizer | None:
        if not self.settings.diarize:
            return None
        with self._lock:
            if self._diarizer is None:
                self._diarizer = Diarizer(device="cuda" if self.transcriber.device == "cuda" else "cpu")
            return self._diarizer

    def transcribe_options(self) -> asr.TranscribeOptions:
        s = self.settings
        hotwords = self.taxonomy.hotwords() if s.asr_hotwords else None
        zh = s.asr_language in ("zh", "auto")
        return asr.TranscribeOptions(
            language=s.asr_language,
            initial_prompt=asr.DEFAULT_PROMPT_ZH if zh else None,
            hotwords=hotwords if zh else None,
            beam_size=s.asr_beam_size,
            max_duration_s=s.max_audio_seconds,
            block_s=s.asr_block_s,
        )

    # -- stages ----------------------------------------------------------------------------
    def run(self, *, stage: str, recording_id: str, heartbeat=None) -> str | None:
        """Run *stage*; return the stage to queue next (None when the recording is done)."""
        if stage == "transcribe":
            self.transcribe(recording_id, heartbeat=heartbeat)
        elif stage == "speakers":
            self.speakers(recording_id)
        elif stage == "tag":
            self.tag(recording_id)
        else:
            raise ValueError(f"unknown stage {stage!r}")
        return NEXT_STAGE[stage]

    def _set_progress(self, recording_id: str, stage: str, fraction: float) -> None:
        start = {"transcribe": 0.0, "speakers": PROGRESS_AT["transcribe"], "tag": PROGRESS_AT["speakers"]}[stage]
        value = start + (PROGRESS_AT[stage] - start) * min(1.0, max(0.0, fraction))
        with session_scope(self.engine) as s:
            crud.set_recording_state(s, recording_id, progress=round(value, 3))

    def transcribe(self, recording_id: str, *, heartbeat=None) -> None:
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            crud.set_recording_state(s, recording_id, status="processing", error=None)
            checkpoint = rec.asr_checkpoint or 0.0
            # what a crash left after the checkpoint is redone, never duplicated
            next_index = crud.trim_segments(s, recording_id=recording_id, keep_before=checkpoint)
            audio_path = self.store.path(rec.audio_path)
            two_channels = rec.source == "avatar" and rec.channels == 2
            duration = rec.duration
        if duration and checkpoint >= duration - 0.01:
            return  # already complete (a redelivered job)
        opts = self.transcribe_options()
        if two_channels:
            self._transcribe_channels(recording_id, audio_path, opts)
            return
        pending: list[asr.Segment] = []
        last_flush = [time.monotonic()]

        def flush(done: float) -> None:
            with session_scope(self.engine) as s:
                rec = s.get(Recording, recording_id)
                crud.add_segments(s, recording=rec, segments=pending)
                crud.set_recording_state(
                    s, recording_id, asr_checkpoint=done,
                    progress=round(PROGRESS_AT["transcribe"] * done / duration, 3) if duration else 0.0,
                )
            pending.clear()
            last_flush[0] = time.monotonic()
            if heartbeat:
                heartbeat()

        def progress(done: float, total: float | None) -> None:
            # every segment before `done` has been yielded (and sits in `pending`)
            if time.monotonic() - last_flush[0] >= FLUSH_EVERY_S:
                flush(done)

        segments, info = self.transcriber.transcribe(
            audio_path, replace(opts, start_at=checkpoint), progress=progress
        )
        for seg in segments:
            seg.index += next_index
            pending.append(seg)
        flush(info.processed_duration)
        self._finish_transcription(recording_id, info)
        logger.info("transcribed %s: %.0f s of audio in %.1f s", recording_id, info.processed_duration, info.wall_time)

    def _transcribe_channels(self, recording_id: str, audio_path, opts: asr.TranscribeOptions) -> None:
        """Two-channel avatar session: each channel is one speaker."""
        staff_ch = self.settings.avatar_staff_channel
        merged: list[asr.Segment] = []
        info = None
        for ch in (0, 1):
            audio = asr.decode(audio_path, channel=ch, max_seconds=self.settings.max_audio_seconds)
            segs, info = self.transcriber.transcribe(audio, opts)
            for seg in segs:
                seg.speaker = "staff" if ch == staff_ch else "customer"
                merged.append(seg)
        merged.sort(key=lambda s: (s.start, s.end))
        for i, seg in enumerate(merged):
            seg.index = i
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            crud.trim_segments(s, recording_id=recording_id, keep_before=0.0)
            crud.add_segments(s, recording=rec, segments=merged)
            crud.set_recording_state(s, recording_id, asr_checkpoint=info.processed_duration)
        self._finish_transcription(recording_id, info)

    def _finish_transcription(self, recording_id: str, info: asr.TranscriptionInfo) -> None:
        with session_scope(self.engine) as s:
            crud.set_recording_state(
                s,
                recording_id,
                progress=PROGRESS_AT["transcribe"],
                language=info.language,
                asr_model=f"{info.model} ({info.device}/{info.compute_type})",
                asr_info={
                    "model": info.model,
                    "device": info.device,
                    "compute_type": info.compute_type,
                    "language_probability": info.language_probability,
                    "speech_duration": round(info.speech_duration, 3),
                    "regions": info.regions,
                    "discarded": info.discarded,
                    "wall_time": round(info.wall_time, 3),
                    "options": {k: v for k, v in asdict(info.options).items() if k != "start_at"},
                },
                duration=info.duration if info.duration is not None else info.processed_duration,
            )

    def speakers(self, recording_id: str) -> None:
        """Split into conversations, label each kept segment staff/customer, compute talk ratios."""
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            segs = crud.list_segments(s, recording_id=recording_id)
            windows = _appointment_windows(rec)
            audio_path = self.store.path(rec.audio_path)
            channel_labelled = rec.source == "avatar" and rec.channels == 2
            mono_avatar = rec.source == "avatar" and not channel_labelled
            default_customer = rec.customer_id
            refs = {w.customer_ref for w in windows if w.customer_ref}
            customers = {r: crud.get_or_create_customer(s, tenant_id=rec.tenant_id, ref=r).id for r in refs}
        spans = split_conversations([_SegView(g) for g in segs], gap_s=self.settings.conversation_gap_s, windows=windows)
        kept = {g.idx: g for g in segs if not g.discarded}
        labels: dict[int, str | None] = {g.idx: g.speaker for g in segs}
        if mono_avatar:  # the kiosk records the customer; the avatar's side is known text
            labels.update({i: "customer" for i in kept})
        elif not channel_labelled:
            diarizer = self.diarizer
            members = {n: [_SegView(kept[i]) for i in span.segments if i in kept] for n, span in enumerate(spans)}
            turns = {}
            for n, span in enumerate(spans):
                if members[n]:
                    turns[n] = self._diarize_span(diarizer, audio_path, span) if diarizer else []
                self._set_progress(recording_id, "speakers", (n + 1) / max(1, len(spans)))
            # conversations with several voices first: they show the wearer's usual level …
            levels = []
            for n, ts in turns.items():
                if len({t.speaker for t in ts}) >= 2:
                    got = assign_speakers(members[n], ts)
                    labels.update(got)
                    if (level := wearer_level(members[n], got)) is not None:
                        levels.append(level)
            reference = float(np.median(levels)) if levels else None
            # … which places the lone voices (without a diarizer there is no reference: unknown)
            for n, ts in turns.items():
                if len({t.speaker for t in ts}) < 2:
                    one = ts or [SpeakerTurn(members[n][0].start, members[n][-1].end, "_all")]
                    labels.update(assign_speakers(members[n], one, reference_db=reference))
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            crud.replace_conversations(
                s,
                recording=rec,
                spans=spans,
                labels=labels,
                customer_for=lambda span: customers.get(span.customer_ref, default_customer),
            )
            crud.set_recording_state(s, recording_id, progress=PROGRESS_AT["speakers"])

    def _diarize_span(self, diarizer: Diarizer, audio_path, span) -> list:
        turns = []
        chunk = self.settings.diarize_chunk_s
        start = max(0.0, span.start - 0.5)
        while start < span.end:
            end = min(span.end + 0.5, start + chunk)
            audio = asr.decode(audio_path, start=start, end=end)
            turns += diarizer.turns(audio, offset=start)
            start = end
        return turns

    def tag(self, recording_id: str) -> None:
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            segs = [g for g in crud.list_segments(s, recording_id=recording_id) if not g.discarded]
            convs = crud.list_conversations(s, recording_id=recording_id)
            tagger = self.tagger_for(s, rec.tenant_id)
            results, flags = [], []
            for conv in convs:
                text_segments = [
                    tagging.TextSegment(index=g.idx, text=g.text, start=g.start, end=g.end, speaker=g.speaker)
                    for g in segs
                    if g.conversation_idx == conv.idx
                ]
                results.append((conv, tagger.tag(text_segments)))
                flags.append((conv, self.compliance.check(text_segments)))
            changes = crud.replace_tags(s, recording=rec, results=results)
            crud.replace_compliance_flags(s, recording=rec, results=flags)
            crud.set_recording_state(s, recording_id, status="done", progress=1.0, error=None)
        logger.info("tagged %s: %d conversations, %d profile changes", recording_id, len(results), len(changes))


class _SegView:
    """The fields the speaker module reads, under its names."""

    def __init__(self, seg):
        self.index, self.start, self.end, self.loudness_db = seg.idx, seg.start, seg.end, seg.loudness_db
        self.discarded = seg.discarded


def _appointment_windows(rec: Recording) -> list[AppointmentWindow]:
    out = []
    base = crud.as_utc(rec.recorded_at)
    for a in rec.appointments or []:
        start, end = (datetime.fromisoformat(a["start"]), datetime.fromisoformat(a["end"]))
        out.append(
            AppointmentWindow(
                (crud.as_utc(start) - base).total_seconds(),
                (crud.as_utc(end) - base).total_seconds(),
                a.get("customer_ref"),
            )
        )
    return out

