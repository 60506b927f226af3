"""Compliance phrases in what staff say: outcome promises that advertising rules forbid.

A QA lead reviews consultants for claims such as 保证效果, 无副作用, 零风险, 绝对安全. The rules are
``tagging/taxonomy/compliance.yaml`` (version, codes with label, label_en, terms and patterns).

- Only staff segments and segments of unknown speaker are checked: a customer asking
  "保证效果吗？" has promised nothing.
- Terms go into one Aho-Corasick automaton, patterns are regular expressions; both run over the
  normalised text (simplified script, lower case, half-width), which keeps offsets, so a flag
  points at the words in the original text (保證效果 too). Overlapping matches resolve to the
  earliest, then the longest, across codes.
- ASCII terms match on word boundaries only.
- A claim is not flagged when the same clause denies or hedges it: a cue shortly before it
  (我们不能保证效果, 没有人能保证百分之百, 不敢说零风险, 一般不会有副作用), a denial right after it
  (零风险是不可能的, 效果保证不了), or an A-not-A question (有没有副作用, 会不会有副作用).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import ahocorasick

from .errors import TaxonomyError
from .normalize import normalize
from .taxonomy import load_yaml
from .types import TextSegment

__all__ = ["ComplianceChecker", "ComplianceFlag", "ComplianceRule", "COMPLIANCE_VERSION"]

COMPLIANCE_VERSION = "compliance-1"

#: cues before a claim, in its clause, that deny or hedge it
NEGATION_CUES = (
    "不能", "不敢", "没法", "没办法", "无法", "不会", "不可能", "没有人能", "没人能", "谁也不能", "谁都不能",
    "谁也不敢", "谁都不敢", "没有人敢", "没人敢", "谁能", "谁敢", "哪有", "哪里有", "哪能", "怎么可能", "不是",
    "并不是", "也不是", "不等于", "不代表", "不保证", "不承诺", "很难", "不好说", "不一定", "未必", "从不",
    "从来不", "绝不", "决不", "别信", "不要信", "不要相信", "不存在", "没有所谓", "所谓", "号称", "宣称",
    "有没有", "会不会", "是不是", "能不能",
    # hedges: "一般不会有副作用" states a likelihood, not a promise
    "一般", "基本上", "基本", "大部分", "大多数", "通常", "很少", "极少", "相对",
    "can't", "cannot", "can not", "can’t", "won't", "won’t", "don't", "don’t", "doesn't", "no one can",
    "nobody can", "not ", "never ", "impossible", "no such thing",
)
#: phrases that contain a cue but deny nothing ("不是我吹，保证效果")
NOT_NEGATIONS = (
    "不是我吹", "不是吹", "不是我说", "不骗你", "不骗您", "不瞒你说", "不瞒您说", "毫不夸张", "不夸张", "不用担心",
    "不用怕", "别担心", "别怕", "不会吧", "not only", "don't worry", "don’t worry",
)
#: denials right after a claim, in its clause ("零风险是不可能的")
NEGATION_AFTER = (
    "不了", "还是", "是不可能", "不可能", "不存在", "做不到", "是骗人", "骗人的", "是假的", "是忽悠", "都是忽悠", "不现实",
    "是没有的", "谁也不敢", "谁都不敢", "没人敢", "没有人敢", "谁也做不到", "谁都做不到",
    "is impossible", "is not possible", "doesn't exist", "does not exist", "is a myth",
)
_CLAUSE_BREAK = re.compile(r"[，,。.！!？?；;：:、\n]|但是|可是|不过|只是")
NEGATION_WINDOW = 10  # characters before a claim searched for a cue (ASCII clauses: 30)
AFTER_WINDOW = 8  # characters after a claim searched for a denial (ASCII clauses: 24)
_QUESTION_AFTER = re.compile(r"^[^，,。.！!；;?？]{0,6}吗")
_NEG_CHARS = ("不", "没", "无", "别", "未", "非")


@dataclass(frozen=True)
class ComplianceRule:
    code: str
    label: str
    label_en: str
    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()  # regular expressions over normalised text


@dataclass(frozen=True)
class ComplianceFlag:
    code: str
    label: str
    segment: int  # index of the TextSegment
    start: float | None  # seconds, when the segment has times
    end: float | None
    quote: str  # the segment's text
    match: str  # the matched words as they appear in the text
    char_start: int  # offsets of the match within the segment's text
    char_end: int
    speaker: str | None = None
    rules_version: str = ""  # version of the compliance rules that flagged it

    def to_dict(self) -> dict:
        return asdict(self)


_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_KEYS = {"label", "label_en", "terms", "patterns"}


def _strings(value: object, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) and str(v).strip() for v in value):
        raise TaxonomyError(f"{where}: expected a list of non-empty strings, found {value!r}")
    return tuple(str(v).strip() for v in value)


class ComplianceChecker:
    """Flags compliance phrases in staff speech. Build once; ``check`` is thread-safe."""

    version = COMPLIANCE_VERSION

    def __init__(self, rules: Iterable[ComplianceRule], *, rules_version: str = ""):
        self.rules = {r.code: r for r in rules}
        self.rules_version = rules_version
        self._automaton = ahocorasick.Automaton()
        entries: dict[str, set[str]] = {}
        for rule in self.rules.values():
            for term in rule.terms:
                entries.setdefault(normalize(term), set()).add(rule.code)
        for term, codes in entries.items():
            self._automaton.add_word(term, (term, tuple(sorted(codes))))
        self._empty = not entries
        if entries:
            self._automaton.make_automaton()
        self._patterns = []
        for rule in self.rules.values():
            for p in rule.patterns:
                try:
                    self._patterns.append((re.compile(p), rule.code))
                except re.error as exc:
                    raise TaxonomyError(f"compliance.{rule.code}: pattern {p!r} is not a valid regular expression: {exc}") from exc

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path | None = None) -> ComplianceChecker:
        """Load compliance rules from YAML; the bundled ``taxonomy/compliance.yaml`` when *path* is None."""
        data, where = load_yaml(path, bundled="compliance.yaml", what="compliance rules")
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: object, *, where: str = "compliance rules") -> ComplianceChecker:
        if not isinstance(data, dict) or "version" not in data or "codes" not in data:
            raise TaxonomyError(f"{where}: expected a mapping with 'version' and 'codes'")
        if not isinstance(data["codes"], dict) or not data["codes"]:
            raise TaxonomyError(f"{where}: 'codes' must be a non-empty mapping of code → rule")
        rules = []
        for code, spec in data["codes"].items():
            if not isinstance(code, str) or not _CODE.match(code):
                raise TaxonomyError(f"{where}: code {code!r} is not snake_case ASCII")
            if not isinstance(spec, dict):
                raise TaxonomyError(f"{where}: {code} must be a mapping with label, label_en, terms, patterns")
            unknown = set(spec) - _RULE_KEYS
            if unknown:
                raise TaxonomyError(f"{where}: {code} has unknown keys {sorted(unknown)}; expected {sorted(_RULE_KEYS)}")
            if not str(spec.get("label") or "").strip():
                raise TaxonomyError(f"{where}: {code} has no label")
            terms = _strings(spec.get("terms"), f"{where}: {code}.terms")
            patterns = _strings(spec.get("patterns"), f"{where}: {code}.patterns")
            if not terms and not patterns:
                raise TaxonomyError(f"{where}: {code} has neither terms nor patterns")
            for p in patterns:
                try:
                    if re.compile(p).match(""):
                        raise TaxonomyError(f"{where}: {code} pattern {p!r} matches the empty string")
                except re.error as exc:
                    raise TaxonomyError(f"{where}: {code} pattern {p!r} is not a valid regular expression: {exc}") from exc
            rules.append(ComplianceRule(code, str(spec["label"]).strip(), str(spec.get("label_en") or code), terms, patterns))
        return cls(rules, rules_version=str(data["version"]))

    # -- matching --------------------------------------------------------------------------
    def _matches(self, norm: str) -> list[tuple[int, int, str]]:
        """(start, end, code), overlapping matches resolved to the earliest, then the longest."""
        found: set[tuple[int, int, str]] = set()
        if not self._empty:
            for end_idx, (term, codes) in self._automaton.iter(norm):
                start, end = end_idx - len(term) + 1, end_idx + 1
                if term.isascii():
                    before = norm[start - 1] if start > 0 else " "
                    after = norm[end] if end < len(norm) else " "
                    if (before.isalnum() and before.isascii()) or (after.isalnum() and after.isascii()):
                        continue
                found.update((start, end, code) for code in codes)
        for pattern, code in self._patterns:
            for m in pattern.finditer(norm):
                if m.end() > m.start():
                    found.add((m.start(), m.end(), code))
        chosen = []
        last_end = -1
        for start, end, code in sorted(found, key=lambda m: (m[0], -(m[1] - m[0]), m[2])):
            if start >= last_end:
                chosen.append((start, end, code))
                last_end = end
        return chosen

    @staticmethod
    def _denied(norm: str, start: int, end: int) -> bool:
        """True when the clause around norm[start:end] denies, hedges or asks about the claim."""
        prefix = norm[:start]
        breaks = list(_CLAUSE_BREAK.finditer(prefix))
        clause = prefix[breaks[-1].end() :] if breaks else prefix
        ascii_clause = clause.isascii() and norm[start:end].isascii()
        window = clause[-30:] if ascii_clause else clause[-NEGATION_WINDOW:]
        for phrase in NOT_NEGATIONS:
            window = window.replace(phrase, " ")
        if any(cue in window for cue in NEGATION_CUES):
            return True
        claim = norm[start:end]
        # 有没有副作用, 会不会有副作用: an A-not-A question, not a claim
        if claim[:1] in _NEG_CHARS and clause[-1:] and clause[-1:] == claim[1:2]:
            return True
        # 不保证效果, 没零风险: the claim negated right before it
        if clause[-1:] in _NEG_CHARS and claim[:1] not in _NEG_CHARS:
            return True
        rest = norm[end:]
        m = _CLAUSE_BREAK.search(rest)
        after = rest[: m.start()] if m else rest
        after = after[:24] if ascii_clause else after[:AFTER_WINDOW]
        if any(after.startswith(cue) or (len(cue) > 2 and cue in after) for cue in NEGATION_AFTER):
            return True
        if m and rest[m.end() :].lstrip().startswith("还是"):  # 是一劳永逸的，还是得定期维护？ asks
            return True
        return bool(_QUESTION_AFTER.match(rest))  # 是零风险吗？ asks, does not promise

    # -- public ----------------------------------------------------------------------------
    def check(self, segments: Iterable[TextSegment | str]) -> list[ComplianceFlag]:
        """Flags in staff and unknown-speaker segments, in segment order, then text order."""
        flags: list[ComplianceFlag] = []
        for i, seg in enumerate(segments):
            if not isinstance(seg, TextSegment):
                seg = TextSegment(i, seg)
            if seg.speaker not in ("staff", None):
                continue
            norm = normalize(seg.text)
            for start, end, code in self._matches(norm):
                if self._denied(norm, start, end):
                    continue
                rule = self.rules[code]
                flags.append(
                    ComplianceFlag(
                        code=code, label=rule.label, segment=seg.index, start=seg.start, end=seg.end,
                        quote=seg.text, match=seg.text[start:end], char_start=start, char_end=end,
                        speaker=seg.speaker, rules_version=self.rules_version,
                    )
                )
        return flags
