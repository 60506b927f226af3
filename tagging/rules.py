"""The rule tagger: taxonomy terms matched over transcript segments, with negation and speaker rules.

- All terms of all codes go into one Aho-Corasick automaton; overlapping matches resolve to the
  earliest, then longest (水光针 over 水光; 有没有效果 over 没有效果).
- ASCII terms match on word boundaries only (``ipl`` never inside ``multiple``).
- A match is negated when a negation cue (没有, 不, 从没 …) stands shortly before it in the same
  clause: "我没有痘印" tags nothing, "没有痘印，就是毛孔粗大" still tags large_pores.
- Staff speech: concerns and intents are the customer's, so staff segments give none. A project the
  staff offers counts (lower confidence); a staff segment naming three or more projects is a list,
  not an offer, and counts for nothing.
- A concern after a hypothetical (如果, 万一 …) or about someone else (我妈, 我老公 …) in the same
  clause is not the customer's. A negated intent in a question (不会很疼吧？) is still the intent.
- Recognition errors: terms also match by sound (:mod:`tagging.pinyin`), at a lower weight, where
  no exact term of the same family matched; and codes may carry regular-expression ``patterns``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable

import ahocorasick

from .normalize import normalize
from .pinyin import SoundIndex
from .taxonomy import TERM_TYPES, Taxonomy
from .types import Evidence, TagAssignment, TextSegment

__all__ = ["RuleTagger", "TAGGER_VERSION"]

TAGGER_VERSION = "rules-2"

NEGATION_CUES = ("没有", "没", "不是", "不", "并不", "从没", "无", "别", "未", "不用", "不需要", "不想", "不要", "no ", "not ", "don't ", "never ")
_CLAUSE_BREAK = re.compile(r"[，,。.！!？?；;：:、\n]|但是|可是|不过|就是|只是")
NEGATION_WINDOW = 5  # characters before a match in which a cue negates it
#: degree words people put inside a description ("毛孔有点粗大"); matching also runs on the text
#: without them, so the taxonomy's "毛孔粗大" still matches, with offsets into the original text
FILLERS = re.compile(r"有点儿|有点|有些|比较|特别|非常|真的|超级|很|挺|蛮|太")
HYPOTHETICAL_CUES = ("如果", "要是", "万一", "假如", "假设", "会不会", "怕", "预防", "防止", "if ")
OTHER_PERSON_CUES = (
    "我妈", "我老公", "我朋友", "我闺蜜", "我姐", "我妹", "我女儿", "我儿子", "我同事", "我婆婆", "我爸", "我男朋友",
    "我老婆", "她", "他", "阿姨", "my mom", "my mother", "my friend", "my husband", "my sister", "she ", "he ",
)
_QUESTION_AFTER = re.compile(r"^[^，,。.！!；;\n]*?(?:吗|吧|么|嘛|\?)")
REMOVAL_VERBS = ("去", "祛", "除", "淡", "治")
STAFF_LIST_THRESHOLD = 3
STAFF_PROJECT_FACTOR = 0.65


def _is_ascii_word(term: str) -> bool:
    return term.isascii()


def literal_prefixes(pattern: str) -> set[str] | None:
    """The literal strings any match of *pattern* must begin with, or None when that cannot be
    told (the pattern may begin with any character, or with an optional part)."""
    from re import _constants as c, _parser as sp

    def seq(items: list) -> set[str] | None:
        while items and items[0][0] is c.AT:  # \b, ^: no character
            items = items[1:]
        if not items:
            return None
        op, av = items[0]
        if op is c.LITERAL:
            text = chr(av)
            for op2, av2 in items[1:]:
                if op2 is not c.LITERAL:
                    break
                text += chr(av2)
            return {text}
        if op is c.SUBPATTERN:
            return seq(list(av[-1]))
        if op is c.BRANCH:
            out: set[str] = set()
            for alt in av[1]:
                got = seq(list(alt))
                if got is None:
                    return None
                out |= got
            return out
        if op is c.IN:
            chars = set()
            for op2, av2 in av:
                if op2 is not c.LITERAL:
                    return None
                chars.add(chr(av2))
            return chars
        if op in (c.MAX_REPEAT, c.MIN_REPEAT) and av[0] >= 1:
            return seq(list(av[2]))
        return None

    try:
        return seq(list(sp.parse(pattern)))
    except Exception:  # an unusual construct: scan instead
        return None


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
        # by sound: project and concern terms, exact pinyin (2+ chars) and fuzzy pinyin (3+ chars)
        self._sound = SoundIndex()
        self._sound_automata: list[tuple[bool, ahocorasick.Automaton]] = []
        for fuzzy, min_len in ((False, 2), (True, 3)):
            automaton = ahocorasick.Automaton()
            found = False
            for term, targets in entries.items():
                sound_targets = [t for t in targets if t[0] in ("project", "concern") and t[2] != "asr_variant"]
                if sound_targets and len(term) >= min_len and SoundIndex.eligible(term):
                    key = self._sound.sounds(term, fuzzy=fuzzy)
                    old = automaton.get(key, (term, []))
                    automaton.add_word(key, (old[0], old[1] + [(k, c, "pinyin") for k, c, _ in sound_targets]))
                    found = True
            if found:
                automaton.make_automaton()
                self._sound_automata.append((fuzzy, automaton))
        self._patterns = [
            (re.compile(p), code.kind, code.code) for code in taxonomy.codes.values() for p in code.patterns
        ]
        # characters the taxonomy uses, and for each sound the one it uses most: recognition
        # errors in descriptions (连上有斑 for 脸上有斑) are matched on the text rewritten with them
        used: dict[str, int] = {}
        for code in taxonomy.codes.values():
            for text in [t for t, _ in code.terms] + list(code.patterns):
                for ch in text:
                    used[ch] = used.get(ch, 0) + 1
        self._keep = frozenset(used)
        self._representatives = self._sound.representatives(used)
        # a pattern that must begin with one of a few literals is only tried where one of them
        # occurs (one automaton pass finds them all); the others scan the text
        self._scanned: list[int] = []
        self._triggers = ahocorasick.Automaton()
        triggers: dict[str, list[int]] = {}
        for i, (pattern, _, _) in enumerate(self._patterns):
            prefixes = literal_prefixes(pattern.pattern)
            if prefixes is None:
                self._scanned.append(i)
            else:
                for prefix in prefixes:
                    triggers.setdefault(prefix, []).append(i)
        for prefix, ids in triggers.items():
            self._triggers.add_word(prefix, (len(prefix), ids))
        if triggers:
            self._triggers.make_automaton()
        self._has_triggers = bool(triggers)

    # -- matching --------------------------------------------------------------------------
    def _matches(self, norm: str) -> list[tuple[int, int, str, str, str, str]]:
        """Matches as (start, end, term, kind, code, term type); within each family,
        overlapping matches resolve to the earliest, then the longest. Families resolve
        independently, so 去眼袋 is both a project (eye-bag surgery) and a concern (eye bags)."""
        if self._empty:
            return []
        per_kind: dict[str, set[tuple[int, int, str, str, str]]] = {}
        variants = [(norm, None)]
        fillers = list(FILLERS.finditer(norm))
        if fillers:
            mask = bytearray(len(norm))
            for m in fillers:
                mask[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
            kept = [i for i, skip in enumerate(mask) if not skip]
            variants.append(("".join(norm[i] for i in kept), kept))
        for text, index in variants:
            for end_idx, (term, targets) in self._automaton.iter(text):
                start = end_idx - len(term) + 1
                end = end_idx + 1
                if _is_ascii_word(term):
                    before = text[start - 1] if start > 0 else " "
                    after = text[end] if end < len(text) else " "
                    if after == "s" and term[-1:].isalpha():  # plural: fillers, moles
                        after = text[end + 1] if end + 1 < len(text) else " "
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
        # weaker evidence only where no exact term of the same family matched: sound-alikes first
        # (earliest, longest), then patterns (each code on its own)
        n = len(norm)
        taken = {kind: bytearray(n) for kind in ("project", "concern", "intent")}
        for m in chosen:
            taken.setdefault(m[3], bytearray(n))[m[0] : m[1]] = b"\x01" * (m[1] - m[0])
        for fuzzy, automaton in self._sound_automata:
            sounds = self._sound.sounds(norm, fuzzy=fuzzy)
            for end_idx, (term, targets) in automaton.iter(sounds):
                start, end = end_idx - len(term) + 1, end_idx + 1
                if not SoundIndex.plausible(term, norm[start:end]):
                    continue
                for kind, code, ttype in targets:
                    if 1 not in taken[kind][start:end]:
                        chosen.append((start, end, term, kind, code, ttype))
                        taken[kind][start:end] = b"\x01" * (end - start)
        for pattern, kind, code in self._pattern_matches(norm):
            if m_end := pattern[1]:
                start = pattern[0]
                if m_end > start and 1 not in taken.setdefault(kind, bytearray(n))[start:m_end]:
                    chosen.append((start, m_end, pattern[2], kind, code, "pattern"))
        # the same terms and patterns over the text rewritten by sound, where nothing matched yet
        canon = self._sound.canonical(norm, self._representatives, self._keep)
        if canon != norm:
            found = []
            for end_idx, (term, targets) in self._automaton.iter(canon):
                start, end = end_idx - len(term) + 1, end_idx + 1
                if canon[start:end] != norm[start:end]:
                    found += [(start, end, term, kind, code) for kind, code, _ in targets if kind != "intent"]
            for (start, end, text), kind, code in self._pattern_matches(canon):
                if canon[start:end] != norm[start:end]:
                    found.append((start, end, text, kind, code))
            for start, end, term, kind, code in found:
                if 1 not in taken.setdefault(kind, bytearray(n))[start:end]:
                    chosen.append((start, end, term, kind, code, "pinyin"))
                    taken[kind][start:end] = b"\x01" * (end - start)
        # a concern word inside a treatment's name (眼袋手术, 瘦脸针, 激光祛斑) is not the customer
        # stating the problem, unless the name says to remove it (去眼袋)
        in_name = bytearray(n)
        names = set()
        for m in chosen:
            if m[3] == "project" and m[5] != "pattern" and not norm[m[0] : m[1]].startswith(REMOVAL_VERBS):
                in_name[m[0] : m[1]] = b"\x01" * (m[1] - m[0])
                names.add((m[0], m[1]))
        if names:
            chosen = [
                m for m in chosen
                if m[3] != "concern" or 0 in in_name[m[0] : m[1]] or (m[0], m[1]) in names
            ]
        chosen.sort()
        return chosen

    def _pattern_matches(self, norm: str):
        """((start, end, pattern text), kind, code) for every pattern match, as finditer would
        find them (leftmost, non-overlapping per pattern)."""
        starts: dict[int, list[int]] = {}
        if self._has_triggers:
            for end_idx, (length, ids) in self._triggers.iter(norm):
                for i in ids:
                    starts.setdefault(i, []).append(end_idx - length + 1)
        for i, found in starts.items():
            pattern, kind, code = self._patterns[i]
            last_end = -1
            for start in sorted(set(found)):
                if start < last_end:
                    continue
                m = pattern.match(norm, start)
                if m and m.end() > start:
                    last_end = m.end()
                    yield (start, m.end(), pattern.pattern), kind, code
        for i in self._scanned:
            pattern, kind, code = self._patterns[i]
            for m in pattern.finditer(norm):
                yield (m.start(), m.end(), pattern.pattern), kind, code

    @staticmethod
    def _clause_before(norm: str, start: int) -> str:
        prefix = norm[:start]
        breaks = list(_CLAUSE_BREAK.finditer(prefix))
        return prefix[breaks[-1].end() :] if breaks else prefix

    @classmethod
    def _negated(cls, norm: str, start: int, end: int, kind: str) -> bool:
        clause = cls._clause_before(norm, start)
        window = clause[-NEGATION_WINDOW:] if not clause.isascii() else clause[-16:]
        if not any(cue in window for cue in NEGATION_CUES):
            return False
        # "不会很疼吧？", "没有副作用吧": a worried question, not a denial
        return not (kind == "intent" and _QUESTION_AFTER.match(norm[end:]))

    @classmethod
    def _not_hers(cls, norm: str, start: int) -> bool:
        """A concern after a hypothetical or about someone else, in the same clause."""
        clause = cls._clause_before(norm, start)
        return any(cue in clause for cue in HYPOTHETICAL_CUES + OTHER_PERSON_CUES)

    # -- public ----------------------------------------------------------------------------
    def tag(self, segments: Iterable[TextSegment | str]) -> list[TagAssignment]:
        segs = [s if isinstance(s, TextSegment) else TextSegment(i, s) for i, s in enumerate(segments)]
        hits: dict[tuple[str, str], list[tuple[float, Evidence]]] = {}
        # one pass over the whole conversation (segments joined by line breaks, which end every
        # clause and which no term or pattern crosses), then each match goes back to its segment
        texts = [s.text.replace("\n", " ") for s in segs]
        joined = normalize("\n".join(texts))
        bounds, pos = [], 0
        for t in texts:
            bounds.append(pos)
            pos += len(t) + 1
        per_segment: list[list] = [[] for _ in segs]
        for m in self._matches(joined):
            k = bisect_right(bounds, m[0]) - 1
            per_segment[k].append((m[0] - bounds[k], m[1] - bounds[k], *m[2:]))
        for seg, text, base, matches in zip(segs, texts, bounds, per_segment):
            norm = joined[base : base + len(text)]
            staff = seg.speaker == "staff"
            # a menu: three or more treatments named (开眼角 and 双眼皮 are two names of one code)
            staff_listing = staff and sum(kind == "project" for _, _, _, kind, _, _ in matches) >= STAFF_LIST_THRESHOLD
            for start, end, term, kind, code, ttype in matches:
                if self._negated(norm, start, end, kind):
                    continue
                if kind == "concern" and self._not_hers(norm, start):
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
                    match=text[start:end],
                    char_start=start,
                    char_end=end,
                    term=term,
                    term_type=ttype,
                    speaker=seg.speaker,
                )
                hits.setdefault((kind, code), []).append((weight, ev))
        for key in self.taxonomy.drop_subsumed(set(hits)):
            del hits[key]
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
