"""Real transcription with the shipped Whisper base model on the committed clips (no mocks)."""

import numpy as np
import pytest

import asr
from tests.conftest import DATA


def kept(segments):
    return [s for s in segments if s.discarded is None]

# Whisper base on Japanese-accented synthetic Mandarin measures CER 0.09–0.24 per clip (README);
# the bound leaves room for CPU/thread nondeterminism, not for a broken pipeline.
ZH_CER_BOUND = 0.35


@pytest.mark.parametrize("name", ["zh_thermage.wav", "zh_acne.wav", "zh_negation.wav", "zh_dialogue.wav"])
def test_mandarin_clips_transcribe_within_cer_bound(transcriber, zh_options, clips, name):
    segments, info = transcriber.transcribe(DATA / name, zh_options)
    segments = kept(segments)
    text = "".join(s.text for s in segments)
    assert info.language == "zh"
    assert asr.cer(clips[name]["reference"], text) < ZH_CER_BOUND, text
    assert text == asr.to_simplified(text), "output must be simplified Chinese"


def test_segments_are_ordered_and_inside_the_audio(transcriber, zh_options):
    segments, info = transcriber.transcribe(DATA / "zh_dialogue.wav", zh_options)
    segments = list(segments)
    assert [s.index for s in segments] == list(range(len(segments)))
    for a, b in zip(segments, segments[1:]):
        assert a.end <= b.start + 1e-3
    assert all(0 <= s.start < s.end <= info.duration + 0.01 for s in segments)
    assert all(s.avg_logprob < 0 and 0 <= s.no_speech_prob <= 1 for s in segments)


def test_every_dialogue_turn_is_kept(transcriber, zh_options):
    """Decoding the whole dialogue in one call drops the second speaker; per-region keeps all four turns."""
    text = "".join(s.text for s in kept(transcriber.transcribe(DATA / "zh_dialogue.wav", zh_options)[0]))
    for words in ["了解什么项目", "多少钱", "三千八", "商量"]:
        assert words in text, text


def test_hotwords_bring_the_brand_name(transcriber, zh_options):
    text = "".join(s.text for s in kept(transcriber.transcribe(DATA / "zh_thermage.wav", zh_options)[0]))
    assert "热玛吉" in text


def test_english_clip(transcriber, clips):
    opts = asr.TranscribeOptions(language="en", initial_prompt=None)
    segments, info = transcriber.transcribe(DATA / "en_hair_removal.wav", opts)
    text = " ".join(s.text for s in kept(segments))
    assert asr.cer(clips["en_hair_removal.wav"]["reference"], text) < 0.2, text


def test_auto_language_detects_mandarin(transcriber):
    opts = asr.TranscribeOptions(language="auto")
    segments, info = transcriber.transcribe(DATA / "zh_negation.wav", opts)
    list(segments)
    assert info.language == "zh" and info.language_probability > 0.5


def test_silence_costs_nothing_and_yields_nothing(transcriber, zh_options):
    segments, info = transcriber.transcribe(np.zeros(20 * asr.SAMPLE_RATE, np.float32), zh_options)
    assert list(segments) == []
    assert info.regions == 0


def test_streaming_progress_and_array_input(transcriber, zh_options):
    clip = asr.decode(DATA / "zh_thermage.wav")
    audio = np.concatenate([clip, np.zeros(5 * asr.SAMPLE_RATE, np.float32), clip])
    seen = []
    opts = asr.TranscribeOptions(language="zh", hotwords=zh_options.hotwords, block_s=6.0)
    segments, info = transcriber.transcribe(audio, opts, progress=lambda done, total: seen.append((done, total)))
    segments = kept(segments)
    assert sum("热玛吉" in s.text for s in segments) == 2  # both copies, across block boundaries
    assert seen and seen[-1][0] == pytest.approx(len(audio) / asr.SAMPLE_RATE, abs=0.01)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_start_at_skips_what_was_done(transcriber, zh_options):
    clip = asr.decode(DATA / "zh_thermage.wav")
    audio = np.concatenate([clip, np.zeros(3 * asr.SAMPLE_RATE, np.float32), clip])
    start = (len(clip) + 2 * asr.SAMPLE_RATE) / asr.SAMPLE_RATE
    opts = asr.TranscribeOptions(language="zh", hotwords=zh_options.hotwords, start_at=start)
    segments = kept(transcriber.transcribe(audio, opts)[0])
    assert len(segments) >= 1 and all(s.start >= start - 0.3 for s in segments)
    assert sum("热玛吉" in s.text for s in segments) == 1


def test_undecodable_file_raises(transcriber, zh_options, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(100))
    with pytest.raises(asr.AudioDecodeError):
        list(transcriber.transcribe(bad, zh_options)[0])


def test_punctuation_is_full_width_next_to_chinese():
    assert asr.transcribe.zh_punctuation("你好,多少钱?一次2.8万.") == "你好，多少钱？一次2.8万。"
