"""The keyword baseline: what a keyword tracker does, for comparison in every evaluation.

The keywords are what a clinic would type into a keyword tracker: each code's label and synonyms
(for intents, which have no synonyms, their phrases). A keyword found anywhere in the text tags its
code. No colloquial forms, no ASR variants, no negation, no speaker, no hypotheticals, no pinyin. Text is normalised the same way as for the real tagger (simplified
script, lower case, half-width), so the comparison is about understanding, not about script.
"""

from __future__ import annotations

from collections.abc import Iterable

import ahocorasick

from .normalize import normalize
from .taxonomy import Taxonomy
from .types import TagAssignment, TextSegment

__all__ = ["KeywordTagger", "KEYWORD_TYPES"]

KEYWORD_TYPES = ("synonym", "phrase")


class KeywordTagger:
    method = "keywords"
    version = "keywords-1"

    def __init__(self, taxonomy: Taxonomy):
        self.taxonomy = taxonomy
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, set[tuple[str, str]]] = {}
        for code in taxonomy.codes.values():
            for term, ttype in code.terms:
                if ttype not in KEYWORD_TYPES:
                    continue
                entries.setdefault(normalize(term), set()).add((code.kind, code.code))
        for term, targets in entries.items():
            self._automaton.add_word(term, targets)
        self._automaton.make_automaton()

    def tag(self, segments: Iterable[TextSegment | str]) -> list[TagAssignment]:
        found: set[tuple[str, str]] = set()
        for seg in segments:
            text = normalize(seg.text if isinstance(seg, TextSegment) else seg)
            for _, targets in self._automaton.iter(text):
                found |= targets
        out = []
        for kind, code in sorted(found):
            tc = self.taxonomy.get(kind, code)
            out.append(TagAssignment(kind, code, tc.label if tc else code, 1.0, self.method,
                                     self.taxonomy.version, self.version))
        return out
