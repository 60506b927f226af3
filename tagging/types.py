"""The dataclasses tagging exchanges: text in, tag assignments with evidence out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

KINDS = ("project", "concern", "intent")


@dataclass(frozen=True)
class TextSegment:
    """One piece of transcript. ``speaker`` is ``staff``, ``customer`` or None (unknown)."""

    index: int
    text: str
    start: float | None = None
    end: float | None = None
    speaker: str | None = None


@dataclass(frozen=True)
class Evidence:
    segment: int  # index of the TextSegment
    start: float | None  # seconds, when the segment has times
    end: float | None
    quote: str  # the segment's text (the clause the match sits in)
    match: str  # the matched words as they appear in the text
    char_start: int  # offsets of the match within the segment's text
    char_end: int
    term: str  # the taxonomy term that matched
    term_type: str  # synonym | colloquial | asr_variant | phrase
    speaker: str | None = None


@dataclass
class TagAssignment:
    kind: str
    code: str
    label: str
    confidence: float
    method: str
    taxonomy_version: str
    tagger_version: str
    evidence: list[Evidence] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)
