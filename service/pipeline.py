"""The pipeline's stages, composed from :mod:`asr` and :mod:`tagging`.

Each stage is safe to run twice: outputs are replaced per recording, never appended, and the
profile diff makes a repeated tagging emit no second change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

from sqlalchemy.engine import Engine

import asr
import tagging

from . import crud
from .db import session_scope
from .models import Recording
from .settings import Settings
from .store import LocalStore

logger = logging.getLogger(__name__)

#: errors that will not go away by trying again: the job fails at once with the reason
PERMANENT_ERRORS = (asr.AudioError, tagging.TaggingError)


class Pipeline:
    """Loads models once (lazily, thread-safe) and runs stages against the database."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.store = LocalStore(settings.audio_dir)
        self._lock = threading.Lock()
        self._transcriber: asr.Transcriber | None = None
        self._tagger: tagging.RuleTagger | None = None

    # -- models ----------------------------------------------------------------------------
    @property
    def tagger(self) -> tagging.RuleTagger:
        with self._lock:
            if self._tagger is None:
                self._tagger = tagging.RuleTagger(tagging.Taxonomy.load(self.settings.taxonomy_path))
            return self._tagger

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

    def transcribe_options(self) -> asr.TranscribeOptions:
        s = self.settings
        hotwords = self.tagger.taxonomy.hotwords() if s.asr_hotwords else None
        zh = s.asr_language in ("zh", "auto")
        return asr.TranscribeOptions(
            language=s.asr_language,
            initial_prompt=asr.DEFAULT_PROMPT_ZH if zh else None,
            hotwords=hotwords if zh else None,
            beam_size=s.asr_beam_size,
            max_duration_s=s.max_audio_seconds,
        )

    # -- stages ----------------------------------------------------------------------------
    def run(self, *, stage: str, recording_id: str, heartbeat=None) -> None:
        if stage == "transcribe":
            self.transcribe(recording_id, heartbeat=heartbeat)
        elif stage == "tag":
            self.tag(recording_id)
        else:
            raise ValueError(f"unknown stage {stage!r}")

    def transcribe(self, recording_id: str, *, heartbeat=None) -> None:
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            crud.set_recording_state(s, recording_id, status="processing", error=None)
            audio_path = self.store.path(rec.audio_path)
            tenant_id = rec.tenant_id
        opts = self.transcribe_options()
        last = [0.0]

        def progress(done: float, total: float | None) -> None:
            now = time.monotonic()
            if total and now - last[0] > 1.0:
                last[0] = now
                with session_scope(self.engine) as s:
                    crud.set_recording_state(s, recording_id, progress=round(min(0.95, 0.95 * done / total), 3))
                if heartbeat:
                    heartbeat()

        segments, info = self.transcriber.transcribe(audio_path, opts, progress=progress)
        collected = list(segments)
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            crud.replace_segments(s, recording=rec, segments=collected)
            crud.set_recording_state(
                s,
                recording_id,
                progress=0.95,
                language=info.language,
                asr_model=f"{info.model} ({info.device}/{info.compute_type})",
                asr_info={
                    "model": info.model,
                    "device": info.device,
                    "compute_type": info.compute_type,
                    "language_probability": info.language_probability,
                    "speech_duration": round(info.speech_duration, 3),
                    "regions": info.regions,
                    "wall_time": round(info.wall_time, 3),
                    "options": asdict(info.options),
                },
                duration=info.duration if info.duration is not None else info.processed_duration,
            )
            crud.enqueue(s, tenant_id=tenant_id, recording_id=recording_id, stage="tag")
        logger.info("transcribed %s: %d segments in %.1f s", recording_id, len(collected), info.wall_time)

    def tag(self, recording_id: str) -> None:
        with session_scope(self.engine) as s:
            rec = s.get(Recording, recording_id)
            segs = crud.list_segments(s, recording_id=recording_id)
            text_segments = [
                tagging.TextSegment(index=g.idx, text=g.text, start=g.start, end=g.end, speaker=g.speaker) for g in segs
            ]
            assignments = self.tagger.tag(text_segments)
            changes = crud.replace_tags(s, recording=rec, assignments=assignments)
            crud.set_recording_state(s, recording_id, status="done", progress=1.0, error=None)
        logger.info("tagged %s: %d tags, %d profile changes", recording_id, len(assignments), len(changes))
