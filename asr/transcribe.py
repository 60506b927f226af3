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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, iter_decode, loudness_db, probe
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
    batch_size: int = 4  # windows decoded together (1 = one at a time); 8 raised peak RSS by ~100 MiB
    prompt_max_s: float = 10.0  # prompt and hotwords only for windows up to this long
    block_s: float = 600.0
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


@dataclass
class _Raw:
    """A faster-whisper segment placed in source samples (relative to the buffer)."""

    start: int
    end: int
    seg: object


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
        self._batched = None  # BatchedInferencePipeline, made on first use

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

    def _batched_whisper(self, clips: list[np.ndarray], language, opts: TranscribeOptions, *, words: bool):
        """Decode independent clips (each ≤ 30 s) in batches; returns one segment list per clip,
        times relative to the clip."""
        if not clips:
            return []
        if opts.batch_size <= 1 or len(clips) == 1:
            # With word times faster-whisper seeks to the last word and decodes the rest of the
            # window again; that tail is silence and comes back as random text ("我都想回来",
            # "许语语字幕"), different each run. A clip is ≤ 30 s: the first pass is all there is
            # to keep; a region it missed is decoded again alone (the coverage check).
            return [self._whisper(c, language, opts, timestamps=False, words=words)[:1] for c in clips]
        from faster_whisper import BatchedInferencePipeline

        if self._batched is None:
            self._batched = BatchedInferencePipeline(model=self._model)
        slot = 30 * SAMPLE_RATE  # each clip in its own 30 s slot: one encoder window, no spill-over
        audio = np.zeros(slot * len(clips), np.float32)
        stamps = []
        for i, c in enumerate(clips):
            audio[i * slot : i * slot + len(c)] = c
            stamps.append({"start": i * 30.0, "end": i * 30.0 + len(c) / SAMPLE_RATE})
        segments, _ = self._batched.transcribe(
            audio,
            language=language,
            clip_timestamps=stamps,
            batch_size=opts.batch_size,
            beam_size=opts.beam_size,
            initial_prompt=opts.initial_prompt,
            hotwords=opts.hotwords or None,
            without_timestamps=True,
            word_timestamps=words,
        )
        out: list[list] = [[] for _ in clips]
        for seg in segments:
            k = min(len(clips) - 1, int((seg.start + 0.01) // 30))
            shift = 30.0 * k
            moved = [replace(w, start=w.start - shift, end=w.end - shift) for w in seg.words or []] or None
            out[k].append(replace(seg, start=seg.start - shift, end=seg.end - shift, words=moved))
        return out

    def _decode_windows(self, buf: np.ndarray, windows: list[list[tuple[int, int]]], language, opts) -> list[_Raw]:
        """Decode speech regions packed into ≤30 s windows (one encoder pass per window, windows
        batched), put each word back in the region it came from (one segment per region, a turn),
        and decode again, alone, any region Whisper skipped (it can stop after the first turn)."""
        gap = np.zeros(int(opts.pack_gap_s * SAMPLE_RATE), np.float32)
        audios, maps = [], []
        for window in windows:
            pieces, parts, pos = [], [], 0
            for start, end in window:
                if parts:
                    parts.append(gap)
                    pos += len(gap)
                parts.append(buf[start:end])
                pieces.append((pos, pos + end - start, start, end))
                pos += end - start
            audios.append(np.concatenate(parts))
            maps.append(pieces)

        # The prompt and hotwords help a short utterance but make Whisper stop early in a long
        # packed window (badge-day benchmark: CER 0.27 with them, 0.20 without; short clips: 0.19
        # with, 0.28 without): windows longer than prompt_max_s are decoded without them.
        bare = replace(opts, initial_prompt=None, hotwords=None)
        limit = opts.prompt_max_s * SAMPLE_RATE
        multi = [i for i, a in enumerate(audios) if len(a) > limit]
        single = [i for i, a in enumerate(audios) if len(a) <= limit]
        if multi:  # long speech around: decode the short windows in the same batches, bare
            multi, single = multi + single, []
            multi.sort()
        decoded: dict[int, list] = {}
        for group, o in ((multi, bare), (single, opts)):
            lone = [i for i in group if len(windows[i]) == 1]  # one region: no word times needed
            packed = [i for i in group if len(windows[i]) > 1]
            for sub, words in ((packed, True), (lone, False)):
                for i, segs in zip(sub, self._batched_whisper([audios[i] for i in sub], language, o, words=words)):
                    decoded[i] = segs
        out: list[_Raw] = []
        for window, pieces, segs in zip(windows, maps, [decoded[i] for i in range(len(windows))]):
            if len(window) == 1:  # the whole text is the region's
                for r in segs:
                    out.append(_Raw(window[0][0], window[0][1], replace(r, words=None)))
                continue
            by_region: dict[int, list] = {}
            for r in segs:
                for w in r.words or []:
                    mid = int(round((w.start + w.end) / 2 * SAMPLE_RATE))
                    # the piece the word's middle falls in (or the nearest one)
                    k = min(range(len(pieces)), key=lambda i: 0 if pieces[i][0] <= mid < pieces[i][1] else min(abs(mid - pieces[i][0]), abs(mid - pieces[i][1])))
                    by_region.setdefault(k, []).append((w, r))
            for k, items in sorted(by_region.items()):
                w0, w1, src0, src1 = pieces[k]
                parents = list({id(r): r for _, r in items}.values())
                start = src0 + max(0, int(items[0][0].start * SAMPLE_RATE) - w0)
                end = src0 + min(w1 - w0, int(items[-1][0].end * SAMPLE_RATE) - w0)
                if end <= start:
                    start, end = src0, src1
                seg = replace(
                    parents[0],
                    text="".join(w.word for w, _ in items),
                    avg_logprob=float(np.mean([r.avg_logprob for r in parents])),
                    no_speech_prob=float(max(r.no_speech_prob for r in parents)),
                    compression_ratio=float(max(r.compression_ratio for r in parents)),
                    words=None,
                )
                out.append(_Raw(min(max(start, src0), src1), min(max(end, src0), src1), seg))
        # coverage: a region with (almost) no words in it was skipped; decode those alone
        skipped = []
        for window in windows:
            for start, end in window:
                covered = sum(max(0, min(end, o.end) - max(start, o.start)) for o in out)
                if covered < 0.3 * (end - start) and end - start >= 0.4 * SAMPLE_RATE:
                    skipped.append((start, end))
        if skipped:
            clips = [buf[s:e] for s, e in skipped]
            for (start, end), segs in zip(skipped, self._batched_whisper(clips, language, opts, words=False)):
                for r in segs:
                    out.append(_Raw(start, end, r))
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
            windows = _pack(done, opts)
            if windows:
                with self._lock:
                    if language is None:
                        first = buf[windows[0][0][0] : windows[0][0][1]]
                        language, prob, _ = self._model.detect_language(first)
                        info.language, info.language_probability = language, prob
                    raws = self._decode_windows(buf, windows, language, opts)
                for window in windows:
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
                        loudness_db=loudness_db(buf[o.start : o.end]),
                    )
                    for text_, reason in [(kept, None)] * bool(kept) + [(d.text, d.reason) for d in discards]:
                        info.discarded += reason is not None
                        yield Segment(index=index, text=text_, discarded=reason, **common)
                        index += 1
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

