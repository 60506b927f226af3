"""The rule tagger: taxonomy terms matched over transcript segments, with negation and speaker rules.

- All terms of all codes go into one Aho-Corasick automaton; overlapping matches resolve to the
  earliest, then longest (水光针 over 水光; 有没有效果 over 没有效果).
- ASCII terms match on word boundaries only (``ipl`` never inside ``multiple``).
- A match is negated when a negation cue (没有, 不, 从没 …) stands shortly before it in the same
  clause: "我没有痘印" tags nothing, "没有痘印，就是毛孔粗大" still tags large_pores.
- Staff speech: concerns and intents are the customer's, so staff segments give none. A project the
  staff offers counts (lower confidence); a staff segment naming three or more projects is a list,
  not an offer, and counts for nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import ahocorasick

from .normalize import normalize
from .taxonomy import TERM_TYPES, Taxonomy
from .types import Evidence, TagAssignment, TextSegment

__all__ = ["RuleTagger", "TAGGER_VERSION"]

TAGGER_VERSION = "rules-1"

NEGATION_CUES = ("没有", "没", "不是", "不", "并不", "从没", "无", "别", "未", "不用", "不需要", "不想", "不要", "no ", "not ", "don't ", "never ")
_CLAUSE_BREAK = re.compile(r"[，,。.！!？?；;：:、\n]|但是|可是|不过|就是|只是")
NEGATION_WINDOW = 5  # characters before a match in which a cue negates it
#: degree words people put inside a description ("毛孔有点粗大"); matching also runs on the text
#: without them, so the taxonomy's "毛孔粗大" still matches, with offsets into the original text
FILLERS = re.compile(r"有点儿|有点|有些|比较|特别|非常|真的|超级|很|挺|蛮|太")
STAFF_LIST_THRESHOLD = 3
STAFF_PROJECT_FACTOR = 0.65


def _is_ascii_word(term: str) -> bool:
    return term.isascii()


class RuleTagger:
    """Synonym/phrase matching over segments. Build once per taxonomy; ``tag`` is thread-safe."""

    method = "rules"
    version = TAGGER_VERSION

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, list[tuple[str, str, str]]] = {}
        for code in taxonomy.codes.values():
            for term, ttype in code.terms:
                entries.setdefault(normalize(term), []).append((code.kind, code.code, ttype))
        for term, targets in entries.items():
            self._automaton.add_word(term, (term, targets))
        if entries:
            self._automaton.make_automaton()
        self._empty = not entries

    # -- matching --------------------------------------------------------------------------
    def _matches(self, norm: str) -> list[tuple[int, int, str, str, str, str]]:
        """Matches as (start, end, term, kind, code, term type); within each family,
        overlapping matches resolve to the earliest, then the longest. Families resolve
        independently, so 去眼袋 is both a project (eye-bag surgery) and a concern (eye bags)."""
        if self._empty:
            return []
        per_kind: dict[str, set[tuple[int, int, str, str, str]]] = {}
        kept = [i for i, _ in enumerate(norm)]
        for m in reversed(list(FILLERS.finditer(norm))):
            del kept[m.start() : m.end()]
        variants = [(norm, None)]
        if len(kept) != len(norm):
            variants.append(("".join(norm[i] for i in kept), kept))
        for text, index in variants:
            for end_idx, (term, targets) in self._automaton.iter(text):
                start = end_idx - len(term) + 1
                end = end_idx + 1
                if _is_ascii_word(term):
                    before = text[start - 1] if start > 0 else " "
                    after = text[end] if end < len(text) else " "
                    if before.isalnum() and before.isascii() or after.isalnum() and after.isascii():
                        continue
                if index is not None:
                    start, end = index[start], index[end - 1] + 1
                for kind, code, ttype in targets:
                    per_kind.setdefault(kind, set()).add((start, end, term, code, ttype))
        chosen = []
        for kind in per_kind:
            found = sorted(per_kind[kind], key=lambda m: (m[0], -(m[1] - m[0]), m[3]))
            last_end = -1
            for start, end, term, code, ttype in found:
                if start >= last_end:
                    chosen.append((start, end, term, kind, code, ttype))
                    last_end = end
        chosen.sort()
        return chosen

    @staticmethod
    def _negated(norm: str, start: int) -> bool:
        prefix = norm[:start]
        breaks = list(_CLAUSE_BREAK.finditer(prefix))
        clause = prefix[breaks[-1].end() :] if breaks else prefix
        window = clause[-NEGATION_WINDOW:] if not clause.isascii() else clause[-16:]
        return any(cue in window for cue in NEGATION_CUES)

    # -- public ----------------------------------------------------------------------------
    def tag(self, segments: Iterable[TextSegment | str]) -> list[TagAssignment]:
        segs = [s if isinstance(s, TextSegment) else TextSegment(i, s) for i, s in enumerate(segments)]
        hits: dict[tuple[str, str], list[tuple[float, Evidence]]] = {}
        for seg in segs:
            norm = normalize(seg.text)
            matches = self._matches(norm)
            staff = seg.speaker == "staff"
            staff_projects = {code for _, _, _, kind, code, _ in matches if kind == "project"}
            staff_listing = staff and len(staff_projects) >= STAFF_LIST_THRESHOLD
            for start, end, term, kind, code, ttype in matches:
                if self._negated(norm, start):
                    continue
                weight = TERM_TYPES[ttype]
                if staff:
                    if kind != "project" or staff_listing:
                        continue
                    weight *= STAFF_PROJECT_FACTOR
                ev = Evidence(
                    segment=seg.index,
                    start=seg.start,
                    end=seg.end,
                    quote=seg.text,
                    match=seg.text[start:end],
                    char_start=start,
                    char_end=end,
                    term=term,
                    term_type=ttype,
                    speaker=seg.speaker,
                )
                hits.setdefault((kind, code), []).append((weight, ev))
        out = []
        for (kind, code), items in hits.items():
            miss = 1.0
            for w, _ in items:
                miss *= 1.0 - w
            tc = self.taxonomy.get(kind, code)
            out.append(
                TagAssignment(
                    kind=kind,
                    code=code,
                    label=tc.label if tc else code,
                    confidence=round(min(0.99, 1.0 - miss), 3),
                    method=self.method,
                    taxonomy_version=self.taxonomy.version,
                    tagger_version=self.version,
                    evidence=[ev for _, ev in items],
                )
            )
        order = {k: i for i, k in enumerate(("project", "concern", "intent"))}
        out.sort(key=lambda t: (order.get(t.kind, 9), -t.confidence, t.code))
        return out
