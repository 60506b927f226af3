"""Decode what badges and kiosks produce into 16 kHz mono float32.

PyAV (FFmpeg's libraries, shipped in the wheel) reads wav, mp3, m4a/aac, ogg/opus, flac and, where
the bundled FFmpeg has the decoder, amr. Anything it cannot read raises :class:`AudioDecodeError`
with the decoder's own reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioDecodeError, AudioTooLongError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

__all__ = ["SAMPLE_RATE", "AudioInfo", "probe", "decode", "iter_decode", "loudness_db"]


@dataclass(frozen=True)
class AudioInfo:
    """What the container says about a file, read without decoding it."""

    format: str
    codec: str
    sample_rate: int
    channels: int
    duration: float | None  # seconds, None when the container does not say


def loudness_db(audio: np.ndarray) -> float:
    """The level of the voice in *audio*, in dBFS (-120 for silence).

    The 90th percentile of 30 ms frame RMS levels, not the RMS of the whole stretch: pauses inside
    a segment (a hesitation, padding around a short word) must not make a close voice read as a
    distant one. Stretches shorter than a frame fall back to the plain RMS.
    """
    if not audio.size:
        return -120.0
    frame = int(0.03 * SAMPLE_RATE)
    n = audio.size // frame
    if n < 2:
        rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    else:
        frames = audio[: n * frame].reshape(n, frame).astype(np.float64)
        rms = float(np.percentile(np.sqrt(np.mean(frames * frames, axis=1)), 90))
    return round(20 * np.log10(max(rms, 1e-6)), 2)


def _reason(exc: Exception) -> str:
    """The decoder's reason without the file path (paths are internal)."""
    return str(getattr(exc, "strerror", None) or exc.__class__.__name__)


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise AudioDecodeError(f"not a readable audio file ({_reason(exc)})") from exc


def probe(path: str | Path) -> AudioInfo:
    """Read container headers: format, codec, rate, channels and declared duration."""
    with _open(path) as container:
        if not container.streams.audio:
            raise AudioDecodeError("the file holds no audio stream")
        stream = container.streams.audio[0]
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        ctx = stream.codec_context
        return AudioInfo(
            format=container.format.name,
            codec=ctx.name if ctx is not None else "unknown",
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            duration=duration,
        )


def iter_decode(
    path: str | Path,
    *,
    block_seconds: float = 30.0,
    max_seconds: float | None = None,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> Iterator[np.ndarray]:
    """Decode *path* to 16 kHz float32 in blocks of about *block_seconds*.

    Mono (channels mixed) unless *channel* picks one channel of a stereo file. With *start* the
    decoder seeks there first and *end* stops it, so a span of a long file costs only that span.
    Memory stays bounded by the block size whatever the file's length. Raises
    :class:`AudioTooLongError` as soon as more than *max_seconds* have been decoded.
    """
    import av

    block = int(block_seconds * SAMPLE_RATE)
    limit = None if max_seconds is None else int(max_seconds * SAMPLE_RATE)
    layout = "mono" if channel is None else "stereo"
    resampler = av.audio.resampler.AudioResampler(format="s16", layout=layout, rate=SAMPLE_RATE)
    skip = 0  # samples to drop after a seek (seeks land on a frame before the target)
    stop = None if end is None else int(round((end - start) * SAMPLE_RATE))
    pending: list[np.ndarray] = []
    pending_len = 0
    total = 0
    with _open(path) as container:
        if not container.streams.audio:
            raise AudioDecodeError("the file holds no audio stream")
        stream = container.streams.audio[0]
        if start > 0:
            try:
                container.seek(int(start / stream.time_base), stream=stream, any_frame=False, backward=True)
            except av.error.FFmpegError:  # not seekable: decode from the start and drop
                pass
            first_ts: list[float | None] = [None]
        try:
            for frame in container.decode(audio=0):
                if start > 0 and first_ts[0] is None:
                    t0 = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                    first_ts[0] = t0
                    skip = max(0, int(round((start - t0) * SAMPLE_RATE)))
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    if channel is not None:
                        arr = arr[channel::2]
                    if skip:
                        drop = min(skip, arr.size)
                        arr, skip = arr[drop:], skip - drop
                    if stop is not None:
                        arr = arr[: max(0, stop - total)]
                    pending.append(arr)
                    pending_len += arr.size
                    total += arr.size
                    if limit is not None and total > limit:
                        raise AudioTooLongError(
                            f"audio is longer than the limit of {max_seconds:.0f} s"
                        )
                if pending_len >= block:
                    data = np.concatenate(pending)
                    yield data[:block].astype(np.float32) / 32768.0
                    rest = data[block:]
                    pending, pending_len = ([rest], rest.size) if rest.size else ([], 0)
                if stop is not None and total >= stop:
                    break
            else:
                for out in resampler.resample(None):
                    arr = out.to_ndarray().reshape(-1)
                    pending.append(arr[channel::2] if channel is not None else arr)
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(f"the audio could not be decoded ({_reason(exc)})") from exc
    if pending:
        data = np.concatenate(pending)
        if data.size:
            yield data.astype(np.float32) / 32768.0


def decode(
    path: str | Path,
    *,
    max_seconds: float | None = None,
    channel: int | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> np.ndarray:
    """Decode the file (or the span *start*..*end* seconds) to one 16 kHz float32 array.

    Raises :class:`AudioDecodeError` when nothing could be decoded.
    """
    blocks = list(iter_decode(path, max_seconds=max_seconds, channel=channel, start=start, end=end))
    if not blocks:
        raise AudioDecodeError("the file decoded to no audio samples")
    audio = np.concatenate(blocks)
    logger.debug("decoded %s: %.1f s", path, audio.size / SAMPLE_RATE)
    return audio
