import numpy as np
import pytest

import asr
from tests.audio_utils import corrupt_flac, encode, write_wav
from tests.conftest import DATA

FORMATS = [
    ("wav", "wav", "pcm_s16le", 16000),
    ("mp3", "mp3", "libmp3lame", 16000),
    ("m4a", "ipod", "aac", 16000),
    ("ogg", "ogg", "libopus", 48000),
    ("flac", "flac", "flac", 16000),
    ("amr", "amr", "libopencore_amrnb", 8000),
]


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return asr.decode(DATA / "zh_thermage.wav")


def test_decode_wav_is_16k_mono_float(clip):
    assert clip.dtype == np.float32
    assert abs(len(clip) / asr.SAMPLE_RATE - 7.05) < 0.05
    assert 0.05 < float(np.abs(clip).max()) <= 1.0


@pytest.mark.parametrize("ext,fmt,codec,rate", FORMATS, ids=[f[0] for f in FORMATS])
def test_badge_formats_decode_to_the_same_length(tmp_path, clip, ext, fmt, codec, rate):
    path = encode(clip, tmp_path / f"clip.{ext}", fmt=fmt, codec=codec, rate=rate)
    info = asr.probe(path)
    assert info.channels == 1 and info.duration is not None
    audio = asr.decode(path)
    # codecs pad a little (AAC priming, Opus pre-skip): within 0.2 s of the original
    assert abs(len(audio) - len(clip)) / asr.SAMPLE_RATE < 0.2
    assert float(np.abs(audio).max()) > 0.05


def test_iter_decode_blocks_are_bounded(clip, tmp_path):
    path = write_wav(tmp_path / "long.wav", np.tile(clip, 5))
    blocks = list(asr.iter_decode(path, block_seconds=4.0))
    assert all(len(b) <= 4 * asr.SAMPLE_RATE for b in blocks)
    assert sum(len(b) for b in blocks) == len(clip) * 5


def test_random_bytes_are_rejected_with_a_clear_error(tmp_path):
    bad = tmp_path / "noise.mp3"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(asr.AudioDecodeError, match="not a readable audio file"):
        asr.probe(bad)


def test_empty_file_is_rejected(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(asr.AudioDecodeError):
        asr.decode(empty)


def test_corrupt_frames_fail_at_decode_not_probe(tmp_path, clip):
    path = corrupt_flac(clip, tmp_path / "bad.flac")
    assert asr.probe(path).sample_rate == 16000  # the header looks fine …
    with pytest.raises(asr.AudioDecodeError, match="no audio samples"):
        asr.decode(path)  # … the frames are not


def test_too_long_is_refused_while_decoding(tmp_path, clip):
    path = write_wav(tmp_path / "long.wav", np.tile(clip, 3))
    with pytest.raises(asr.AudioTooLongError):
        asr.decode(path, max_seconds=10)
