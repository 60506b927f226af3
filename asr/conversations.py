"""Split a badge day into conversations: appointment windows first, then long pauses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["AppointmentWindow", "ConversationSpan", "split_conversations"]


@dataclass(frozen=True)
class AppointmentWindow:
    """A time window (seconds from the recording's start) known to belong to one customer."""

    start: float
    end: float
    customer_ref: str | None = None


@dataclass
class ConversationSpan:
    index: int
    start: float
    end: float
    reason: str  # appointment | pause | start
    customer_ref: str | None = None
    segments: list[int] = field(default_factory=list)  # Segment.index values


def split_conversations(
    segments: Sequence,
    *,
    gap_s: float = 90.0,
    windows: Sequence[AppointmentWindow] = (),
) -> list[ConversationSpan]:
    """Group segments (anything with ``index``, ``start``, ``end``, ``discarded``) into conversations.

    A segment whose midpoint falls in an appointment window belongs to that window's conversation.
    The rest are split wherever the silence between two kept segments is at least ``gap_s``.
    Discarded segments join the conversation they fall in (QA sees them in context) but never
    start or extend one.
    """
    kept = sorted((s for s in segments if not getattr(s, "discarded", None)), key=lambda s: (s.start, s.index))
    spans: list[ConversationSpan] = []
    by_window: dict[int, ConversationSpan] = {}
    current: ConversationSpan | None = None
    for seg in kept:
        mid = (seg.start + seg.end) / 2
        w = next((i for i, w in enumerate(windows) if w.start <= mid < w.end), None)
        if w is not None:
            span = by_window.get(w)
            if span is None:
                span = ConversationSpan(0, seg.start, seg.end, "appointment", windows[w].customer_ref)
                by_window[w] = span
                spans.append(span)
            span.start, span.end = min(span.start, seg.start), max(span.end, seg.end)
            span.segments.append(seg.index)
            current = None  # speech after an appointment window starts a new conversation
            continue
        if current is None or seg.start - current.end >= gap_s:
            reason = "start" if current is None and not spans else "pause"
            current = ConversationSpan(0, seg.start, seg.end, reason)
            spans.append(current)
        current.end = max(current.end, seg.end)
        current.segments.append(seg.index)
    spans.sort(key=lambda c: c.start)
    for i, span in enumerate(spans):
        span.index = i
    for seg in segments:
        if getattr(seg, "discarded", None):
            mid = (seg.start + seg.end) / 2
            home = next((c for c in spans if c.start <= mid <= c.end), None)
            if home is not None:
                home.segments.append(seg.index)
    for span in spans:
        span.segments.sort()
    return spans
