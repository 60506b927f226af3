"""Speech to text with faster-whisper, decoded per speech region.

Silero VAD (shipped inside faster-whisper) finds speech regions first; each region is decoded on
its own. Decoding a whole dialogue in one call drops later turns (measured: a second speaker after
a 1 s pause vanished), and silence costs nothing. Audio is read in blocks, so memory does not grow
with the file's length, and segments stream out as each region is done.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, iter_decode, probe
from .errors import AudioDecodeError, ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_PROMPT_ZH",
    "Segment",
    "TranscribeOptions",
    "Transcriber",
    "TranscriptionInfo",
    "to_simplified",
    "zh_punctuation",
]

#: A punctuated, simplified-Chinese prompt: Whisper imitates the prompt's script and punctuation.
DEFAULT_PROMPT_ZH = "以下是医美机构里的普通话咨询对话，使用简体中文，带标点符号。"

ProgressCallback = Callable[[float, "float | None"], None]


@dataclass(frozen=True)
class TranscribeOptions:
    """How to transcribe. The options actually used are recorded in :class:`TranscriptionInfo`."""

    language: str | None = "zh"  # None or "auto": detect from the first speech
    initial_prompt: str | None = DEFAULT_PROMPT_ZH
    hotwords: str | None = None
    beam_size: int = 5
    to_simplified: bool = True
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    max_region_s: float = 25.0
    block_s: float = 60.0
    max_duration_s: float | None = None
    start_at: float = 0.0  # skip audio before this time (resume)

    def __post_init__(self) -> None:
        if self.language == "auto":
            object.__setattr__(self, "language", None)


@dataclass
class Segment:
    index: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    speaker: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TranscriptionInfo:
    model: str
    device: str
    compute_type: str
    options: TranscribeOptions
    duration: float | None
    language: str | None = None
    language_probability: float | None = None
    speech_duration: float = 0.0
    processed_duration: float = 0.0
    wall_time: float = 0.0
    regions: int = 0
    extra: dict = field(default_factory=dict)


@lru_cache(maxsize=1)
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


_CJK = r"[\u3400-\u9fff]"
_HALF_TO_FULL = {",": "，", "?": "？", "!": "！", ":": "：", ";": "；", ".": "。"}
_PUNCT_AFTER_CJK = re.compile(rf"(?<={_CJK})\s*([,?!:;.])(?!\d)\s*")
_PUNCT_BEFORE_CJK = re.compile(rf"\s*([,?!:;])\s*(?={_CJK})")


def zh_punctuation(text: str) -> str:
    """Half-width punctuation next to Chinese characters → full-width (Whisper mixes them)."""
    text = _PUNCT_AFTER_CJK.sub(lambda m: _HALF_TO_FULL[m.group(1)], text)
    return _PUNCT_BEFORE_CJK.sub(lambda m: _HALF_TO_FULL[m.group(1)], text)


def to_simplified(text: str) -> str:
    """Traditional → simplified Chinese (OpenCC t2s); other scripts pass through."""
    return _t2s().convert(text)


def _auto_device() -> tuple[str, str]:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        return "cuda", "float16"
    return "cpu", "int8"


class Transcriber:
    """A loaded Whisper model. Thread-safe: one decode at a time per instance."""

    def __init__(
        self,
        model_dir: str | Path,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        cpu_threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        auto_device, auto_compute = _auto_device()
        self.device = auto_device if device == "auto" else device
        if compute_type == "auto":
            compute_type = auto_compute if self.device == auto_device else (
                "float16" if self.device == "cuda" else "int8"
            )
        self.compute_type = compute_type
        self.model_dir = Path(model_dir)
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"cannot load Whisper model from {self.model_dir}: {exc}") from exc
        self._lock = threading.Lock()

    # -- regions ---------------------------------------------------------------------------
    def _regions(self, audio: np.ndarray, opts: TranscribeOptions) -> list[tuple[int, int]]:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        vad = VadOptions(
            threshold=opts.vad_threshold,
            min_silence_duration_ms=opts.min_silence_ms,
            speech_pad_ms=opts.speech_pad_ms,
            max_speech_duration_s=opts.max_region_s,
        )
        return [(r["start"], r["end"]) for r in get_speech_timestamps(audio, vad)]

    def _blocks(self, source: str | Path | np.ndarray, opts: TranscribeOptions) -> Iterator[np.ndarray]:
        if isinstance(source, np.ndarray):
            block = int(opts.block_s * SAMPLE_RATE)
            for i in range(0, len(source), block):
                yield source[i : i + block].astype(np.float32, copy=False)
        else:
            yield from iter_decode(source, block_seconds=opts.block_s, max_seconds=opts.max_duration_s)

    def _decode_region(self, audio: np.ndarray, language: str | None, opts: TranscribeOptions):
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=opts.beam_size,
            initial_prompt=opts.initial_prompt,
            hotwords=opts.hotwords or None,
            vad_filter=False,
            condition_on_previous_text=False,
            # one segment per region: Whisper's timestamp tokens can split a multi-byte character
            # between two segments (seen: "�" in Chinese output); regions are short anyway
            without_timestamps=True,
        )
        return list(segments), info

    # -- public ----------------------------------------------------------------------------
    def transcribe(
        self,
        source: str | Path | np.ndarray,
        options: TranscribeOptions | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> tuple[Iterator[Segment], TranscriptionInfo]:
        """Transcribe a file path or a 16 kHz mono float32 array.

        Returns a lazy generator of :class:`Segment` (decoding happens as it is consumed) and a
        :class:`TranscriptionInfo` that is filled in as decoding proceeds.
        """
        opts = options or TranscribeOptions()
        if isinstance(source, np.ndarray):
            duration = len(source) / SAMPLE_RATE
        else:
            duration = probe(source).duration
        info = TranscriptionInfo(
            model=self.model_dir.name,
            device=self.device,
            compute_type=self.compute_type,
            options=opts,
            duration=duration,
            language=opts.language,
        )
        return self._run(source, opts, info, progress), info

    def _run(self, source, opts: TranscribeOptions, info: TranscriptionInfo, progress) -> Iterator[Segment]:
        t0 = time.perf_counter()
        tail_keep = int(1.0 * SAMPLE_RATE)
        skip = int(opts.start_at * SAMPLE_RATE)
        buf = np.zeros(0, np.float32)
        offset = 0  # samples of the source before buf[0]
        index = 0
        language = opts.language
        blocks = self._blocks(source, opts)
        nxt = next(blocks, None)
        any_audio = nxt is not None
        while nxt is not None:
            block, nxt = nxt, next(blocks, None)
            last = nxt is None
            if skip > 0:  # resume: drop audio already processed
                drop = min(skip, len(block))
                block, skip, offset = block[drop:], skip - drop, offset + drop
            buf = np.concatenate([buf, block]) if buf.size else block
            if not buf.size:
                continue
            regions = self._regions(buf, opts)
            if last:
                done, keep_from = regions, len(buf)
            else:
                cutoff = len(buf) - tail_keep
                done = [r for r in regions if r[1] < cutoff]
                pending = [r for r in regions if r[1] >= cutoff]
                keep_from = pending[0][0] if pending else cutoff
            for start, end in done:
                with self._lock:
                    if language is None:
                        language, prob, _ = self._model.detect_language(buf[start:end])
                        info.language, info.language_probability = language, prob
                    raw, _ = self._decode_region(buf[start:end], language, opts)
                info.regions += 1
                info.speech_duration += (end - start) / SAMPLE_RATE
                base = (offset + start) / SAMPLE_RATE
                region_end = (offset + end) / SAMPLE_RATE
                for s in raw:
                    text = s.text.replace("\ufffd", "").strip()  # a stray partial byte token
                    if not text:
                        continue
                    if opts.to_simplified and (language or "").startswith("zh"):
                        text = zh_punctuation(to_simplified(text))
                    yield Segment(
                        index=index,
                        start=round(base + s.start, 3),
                        end=round(min(base + s.end, region_end), 3),
                        text=text,
                        avg_logprob=float(s.avg_logprob),
                        no_speech_prob=float(s.no_speech_prob),
                        compression_ratio=float(s.compression_ratio),
                    )
                    index += 1
                if progress is not None:
                    progress((offset + end) / SAMPLE_RATE, info.duration)
            buf = buf[keep_from:]
            offset += keep_from
            info.processed_duration = offset / SAMPLE_RATE
            info.wall_time = time.perf_counter() - t0
            if progress is not None:
                progress(offset / SAMPLE_RATE, info.duration)
        if not any_audio:
            raise AudioDecodeError("the file decoded to no audio samples")
        info.processed_duration = offset / SAMPLE_RATE
        info.wall_time = time.perf_counter() - t0


def with_options(base: TranscribeOptions, **changes) -> TranscribeOptions:
    """A copy of *base* with *changes* (keyword-only convenience for callers)."""
    return replace(base, **changes)
