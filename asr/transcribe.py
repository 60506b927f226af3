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
from .guards import guard_text

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
    pack_regions: bool = True  # several regions per Whisper window (faster; see decisions.md)
    window_s: float = 28.0
    pack_gap_s: float = 0.4
    guards: bool = True  # set aside hallucinations (see asr.guards)
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
    discarded: str | None = None  # why a guard set this text aside (phantom, repetition, …)
    loudness_db: float | None = None  # RMS level of the speech it came from (dBFS)

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
    discarded: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class _Raw:
    """A faster-whisper segment placed in source samples (relative to the buffer)."""

    start: int
    end: int
    seg: object
    recovered: bool = False


def _loudness_db(audio: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0
    return round(20 * np.log10(max(rms, 1e-6)), 2)


def _pack(regions: list[tuple[int, int]], opts: TranscribeOptions) -> list[list[tuple[int, int]]]:
    """Group consecutive regions into windows of at most ``window_s`` of audio (gaps shrunk)."""
    if not opts.pack_regions:
        return [[r] for r in regions]
    limit = int(opts.window_s * SAMPLE_RATE)
    gap = int(opts.pack_gap_s * SAMPLE_RATE)
    windows: list[list[tuple[int, int]]] = []
    size = 0
    for r in regions:
        n = r[1] - r[0]
        if windows and size + gap + n <= limit:
            windows[-1].append(r)
            size += gap + n
        else:
            windows.append([r])
            size = n
    return windows


def _join_split_chars(raws: list, model) -> list:
    """Whisper's timestamp tokens can cut a multi-byte character in two segments ("�" at the
    end of one and the start of the next): decode such neighbours' tokens together."""
    out: list = []
    for r in raws:
        if out and out[-1].text.endswith("\ufffd") and r.text.startswith("\ufffd"):
            prev = out[-1]
            eot = model.hf_tokenizer.token_to_id("<|endoftext|>")
            tokens = list(prev.tokens) + list(r.tokens)
            text = model.hf_tokenizer.decode([t for t in tokens if t < eot])
            out[-1] = replace(prev, end=r.end, text=text, tokens=tokens)
        else:
            out.append(r)
    return out


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

    def _whisper(
        self, audio: np.ndarray, language: str | None, opts: TranscribeOptions, *, timestamps: bool, words: bool = False
    ):
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=opts.beam_size,
            initial_prompt=opts.initial_prompt,
            hotwords=opts.hotwords or None,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=not timestamps,
            word_timestamps=words,
        )
        return list(segments)

    def _decode_window(self, buf: np.ndarray, window: list[tuple[int, int]], language, opts) -> list[_Raw]:
        """Decode several speech regions packed into one ≤30 s window (one encoder pass instead
        of one per region), map the segments back to source time, and re-decode alone any region
        Whisper skipped (it sometimes stops after the first speaker's turn)."""
        gap = np.zeros(int(opts.pack_gap_s * SAMPLE_RATE), np.float32)
        pieces, parts, pos = [], [], 0
        for start, end in window:
            if parts:
                parts.append(gap)
                pos += len(gap)
            parts.append(buf[start:end])
            pieces.append((pos, pos + end - start, start))
            pos += end - start
        audio = np.concatenate(parts)

        def to_source(t: float, *, is_end: bool) -> int:
            x = int(round(t * SAMPLE_RATE))
            for i, (w0, w1, src) in enumerate(pieces):
                nxt = pieces[i + 1][0] if i + 1 < len(pieces) else None
                if x < w1 or nxt is None or (x < nxt and is_end):
                    return src + min(max(x - w0, 0), w1 - w0)
                if x < nxt:  # inside a gap: a start belongs to the next piece
                    return pieces[i + 1][2]
            return pieces[-1][2] + pieces[-1][1] - pieces[-1][0]

        out: list[_Raw] = []
        if len(window) == 1:
            raws = self._whisper(audio, language, opts, timestamps=False)
            return [_Raw(window[0][0], window[0][1], r) for r in _join_split_chars(raws, self._model)]
        # word times place every word in its own region: one segment per region (a turn), not
        # Whisper's coarse window-long segments
        by_region: dict[int, list] = {}
        # without timestamp tokens: one pass over the window, no re-decoding of a tiny tail (where
        # Whisper loops: "铸铸铸…" for 18 s); word times come from the alignment instead
        for r in self._whisper(audio, language, opts, timestamps=False, words=True):
            for w in r.words or []:
                mid = to_source((w.start + w.end) / 2, is_end=False)
                k = min(range(len(window)), key=lambda i: 0 if window[i][0] <= mid < window[i][1] else min(abs(mid - window[i][0]), abs(mid - window[i][1])))
                by_region.setdefault(k, []).append((w, r))
        for k, items in sorted(by_region.items()):
            text = "".join(w.word for w, _ in items)
            parents = {id(r): r for _, r in items}.values()
            first = items[0][1]
            start = max(window[k][0], to_source(items[0][0].start, is_end=False))
            end = min(window[k][1], to_source(items[-1][0].end, is_end=True))
            if end <= start:
                start, end = window[k]
            seg = replace(
                first,
                text=text,
                avg_logprob=float(np.mean([r.avg_logprob for r in parents])),
                no_speech_prob=float(max(r.no_speech_prob for r in parents)),
                compression_ratio=float(max(r.compression_ratio for r in parents)),
                words=None,
            )
            out.append(_Raw(start, end, seg))
        for start, end in window:  # coverage: a region with no text overlapping it was skipped
            covered = sum(max(0, min(end, o.end) - max(start, o.start)) for o in out)
            if covered < 0.3 * (end - start) and end - start >= 0.4 * SAMPLE_RATE:
                for r in self._whisper(buf[start:end], language, opts, timestamps=False):
                    out.append(_Raw(start, end, r, recovered=True))
        out.sort(key=lambda o: (o.start, o.end))
        return out

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
            for window in _pack(done, opts):
                with self._lock:
                    if language is None:
                        first = buf[window[0][0] : window[0][1]]
                        language, prob, _ = self._model.detect_language(first)
                        info.language, info.language_probability = language, prob
                    raws = self._decode_window(buf, window, language, opts)
                for start, end in window:
                    info.regions += 1
                    info.speech_duration += (end - start) / SAMPLE_RATE
                for o in raws:
                    text = o.seg.text.replace("\ufffd", "").strip()  # a stray partial byte token
                    if opts.to_simplified and (language or "").startswith("zh"):
                        text = zh_punctuation(to_simplified(text))
                    kept, discards = guard_text(
                        text, language=language, avg_logprob=o.seg.avg_logprob, no_speech_prob=o.seg.no_speech_prob
                    ) if opts.guards else (text, [])
                    common = dict(
                        start=round((offset + o.start) / SAMPLE_RATE, 3),
                        end=round((offset + o.end) / SAMPLE_RATE, 3),
                        avg_logprob=float(o.seg.avg_logprob),
                        no_speech_prob=float(o.seg.no_speech_prob),
                        compression_ratio=float(o.seg.compression_ratio),
                        loudness_db=_loudness_db(buf[o.start : o.end]),
                    )
                    for text_, reason in [(kept, None)] * bool(kept) + [(d.text, d.reason) for d in discards]:
                        info.discarded += reason is not None
                        yield Segment(index=index, text=text_, discarded=reason, **common)
                        index += 1
                if progress is not None:
                    progress((offset + window[-1][1]) / SAMPLE_RATE, info.duration)
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
