from dataclasses import dataclass

from asr.conversations import AppointmentWindow, split_conversations


@dataclass
class S:
    index: int
    start: float
    end: float
    discarded: str | None = None


def test_long_pauses_split_conversations():
    segs = [S(0, 0, 5), S(1, 6, 10), S(2, 200, 205), S(3, 207, 210), S(4, 400, 401)]
    spans = split_conversations(segs, gap_s=90)
    assert [(c.start, c.end, c.segments, c.reason) for c in spans] == [
        (0, 10, [0, 1], "start"), (200, 210, [2, 3], "pause"), (400, 401, [4], "pause"),
    ]


def test_a_pause_shorter_than_the_gap_keeps_one_conversation():
    spans = split_conversations([S(0, 0, 5), S(1, 80, 85)], gap_s=90)
    assert len(spans) == 1 and spans[0].segments == [0, 1]


def test_appointment_windows_take_precedence_and_carry_the_customer():
    segs = [S(0, 10, 12), S(1, 14, 20), S(2, 21, 25), S(3, 300, 310)]
    windows = [AppointmentWindow(0, 20.5, "cust-a"), AppointmentWindow(20.5, 60, "cust-b")]
    spans = split_conversations(segs, gap_s=90, windows=windows)
    assert [(c.segments, c.customer_ref, c.reason) for c in spans] == [
        ([0, 1], "cust-a", "appointment"), ([2], "cust-b", "appointment"), ([3], None, "pause"),
    ]


def test_discarded_segments_join_but_never_shape_a_conversation():
    segs = [S(0, 0, 5), S(1, 6, 8, "phantom"), S(2, 9, 12), S(3, 150, 152, "phantom")]
    spans = split_conversations(segs, gap_s=90)
    assert len(spans) == 1 and spans[0].segments == [0, 1, 2] and spans[0].end == 12


def test_no_speech_no_conversation():
    assert split_conversations([S(0, 0, 3, "no_speech")], gap_s=90) == []
