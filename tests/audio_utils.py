"""Audio the tests make: encode a clip into the formats badges produce, corrupt files, silence."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return audio
    n = int(round(len(audio) * dst / src))
    return np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype(np.float32)


def encode(audio: np.ndarray, path: Path, *, fmt: str, codec: str, rate: int = 16000) -> Path:
    """Encode 16 kHz mono float32 *audio* with PyAV (the FFmpeg shipped in its wheel)."""
    audio = resample(audio, 16000, rate)
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        step = stream.codec_context.frame_size or 1024
        for i in range(0, len(pcm), step):
            frame = av.AudioFrame.from_ndarray(pcm[i : i + step].reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_wav(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    import wave

    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return path


def corrupt_flac(audio: np.ndarray, path: Path) -> Path:
    """A FLAC whose header is intact (it probes as 16 kHz audio) but whose frames are garbage."""
    encode(audio, path, fmt="flac", codec="flac")
    data = bytearray(path.read_bytes())
    for i in range(200, len(data)):
        data[i] = (i * 7) & 255
    path.write_bytes(bytes(data))
    return path
