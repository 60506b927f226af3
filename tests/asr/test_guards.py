import pytest

import asr
from asr.guards import guard_text
from tests.conftest import DATA


def g(text, **kw):
    opts = {"language": "zh", "avg_logprob": -0.3, "no_speech_prob": 0.05, **kw}
    return guard_text(text, **opts)


@pytest.mark.parametrize(
    "text,kept,reason",
    [
        ("字幕由Amara.org社群提供", "", "phantom"),
        ("我想做热玛吉。请不吝点赞 订阅 转发 打赏支持明镜与点点栏目", "我想做热玛吉。", "phantom"),
        ("请布林点赞订阅传发、打赏支持明镜，与点点栏目。", "", "phantom"),  # misrecognised phantom
        ("多少钱？谢谢观看。", "多少钱？", "phantom"),
        ("想做个水光针。肥脂肥脂肥脂肥脂肪", "想做个水光针。", "repetition"),
        ("铸铸铸铸铸", "", "repetition"),
        ("Narjak", "", "language"),
    ],
)
def test_known_failures_are_set_aside_with_a_reason(text, kept, reason):
    got, discards = g(text)
    assert got == kept
    assert [d.reason for d in discards] == [reason]
    assert all(d.text for d in discards)


@pytest.mark.parametrize("text", ["对对对，好的好的好的，商量商量", "OK，那就这样", "一次2.8万，打八折", "热玛吉 Thermage 多少钱"])
def test_ordinary_speech_passes(text):
    assert g(text) == (text, [])


def test_whisper_says_no_speech():
    assert g("嗯", avg_logprob=-1.2, no_speech_prob=0.9)[1][0].reason == "no_speech"
    assert g("乱码", avg_logprob=-1.8)[1][0].reason == "low_confidence"


def test_english_deployment_flags_a_flip_to_chinese():
    assert g("我想问问价格多少", language="en")[1][0].reason == "language"
    assert g("How much is it?", language="en") == ("How much is it?", [])


def test_spoken_phantom_is_discarded_not_lost(transcriber, zh_options, clips):
    """Real audio: a customer line, then a voice reading a video outro (a phantom Whisper knows)."""
    segments = list(transcriber.transcribe(DATA / "zh_phantom.wav", zh_options)[0])
    kept = "".join(s.text for s in segments if not s.discarded)
    discarded = [s for s in segments if s.discarded]
    assert asr.cer(clips["zh_phantom.wav"]["reference"], kept) < 0.3, kept
    assert discarded and {s.discarded for s in discarded} == {"phantom"}
    assert any("点赞" in s.text or "栏目" in s.text for s in discarded)
    assert all(s.start >= 4.0 for s in discarded)  # the outro, not the customer


def test_noise_and_hum_yield_no_text(transcriber, zh_options):
    import numpy as np

    rng = np.random.default_rng(0)
    sr = asr.SAMPLE_RATE
    noise = np.concatenate([
        rng.standard_normal(4 * sr) * 0.1,
        0.2 * np.sin(2 * np.pi * 120 * np.arange(6 * sr) / sr),
        np.convolve(rng.standard_normal(6 * sr), np.ones(30) / 30, "same") * 0.5,
    ]).astype(np.float32)
    segments, info = transcriber.transcribe(noise, zh_options)
    assert [s for s in segments if not s.discarded] == []
