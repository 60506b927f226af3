"""Gold sets and tagging metrics: precision, recall and F1 per family and per code.

A gold file is JSON Lines, one item per line::

    {"id": "…", "text": "…", "project": [], "concern": [], "intent": [], "cases": []}
    {"id": "…", "segments": [{"speaker": "staff"|"customer"|null, "text": "…"}], …}

A ``text`` item is one customer utterance. ``cases`` (optional) names what makes an item hard;
metrics are also reported per case so a regression on, say, negations shows. See
``tagging/data/LABELING.md`` for the labelling rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TaggingError
from .types import KINDS, TagAssignment, TextSegment

__all__ = ["GoldItem", "Scores", "EvalReport", "load_gold", "parse_gold_line", "evaluate"]

SPEAKERS = ("staff", "customer", None)


@dataclass(frozen=True)
class GoldItem:
    id: str
    segments: tuple[TextSegment, ...]
    labels: frozenset[tuple[str, str]]  # (kind, code)
    cases: tuple[str, ...] = ()


def parse_gold_line(obj: dict, *, where: str = "item") -> GoldItem:
    """One decoded JSON object → :class:`GoldItem`; raises :class:`TaggingError` saying what is wrong."""
    if not isinstance(obj, dict):
        raise TaggingError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    if "segments" in obj:
        raw = obj["segments"]
        if not isinstance(raw, list) or not raw:
            raise TaggingError(f"{where}: 'segments' must be a non-empty list")
        segs = []
        for i, s in enumerate(raw):
            if not isinstance(s, dict) or not isinstance(s.get("text"), str):
                raise TaggingError(f"{where}: segments[{i}] needs a 'text' string")
            speaker = s.get("speaker")
            if speaker not in SPEAKERS:
                raise TaggingError(f"{where}: segments[{i}].speaker is {speaker!r}; expected staff, customer or null")
            segs.append(TextSegment(index=i, text=s["text"], speaker=speaker))
    elif isinstance(obj.get("text"), str):
        segs = [TextSegment(index=0, text=obj["text"], speaker="customer")]
    else:
        raise TaggingError(f"{where}: needs 'text' (a string) or 'segments' (a list)")
    labels = set()
    for kind in KINDS:
        codes = obj.get(kind, [])
        if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
            raise TaggingError(f"{where}: {kind!r} must be a list of code strings")
        labels.update((kind, c) for c in codes)
    cases = obj.get("cases") or []
    return GoldItem(str(obj.get("id", where)), tuple(segs), frozenset(labels), tuple(str(c) for c in cases))


def load_gold(path: str | Path) -> list[GoldItem]:
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TaggingError(f"cannot read gold file {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaggingError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
        items.append(parse_gold_line(obj, where=f"{path}:{n}"))
    if not items:
        raise TaggingError(f"{path}: no items")
    return items


@dataclass
class Scores:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else (1.0 if not self.fn else 0.0)

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def support(self) -> int:
        return self.tp + self.fn

    def add(self, gold: set, pred: set) -> None:
        self.tp += len(gold & pred)
        self.fp += len(pred - gold)
        self.fn += len(gold - pred)

    def as_dict(self) -> dict:
        return {
            "precision": round(self.precision, 4), "recall": round(self.recall, 4), "f1": round(self.f1, 4),
            "support": self.support, "tp": self.tp, "fp": self.fp, "fn": self.fn,
        }


@dataclass
class EvalReport:
    """Micro-averaged scores per family, per code and per case slice, plus every error."""

    items: int
    family: dict[str, Scores] = field(default_factory=dict)
    code: dict[tuple[str, str], Scores] = field(default_factory=dict)
    case: dict[str, dict[str, Scores]] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)

    def f1(self, kind: str) -> float:
        return self.family[kind].f1 if kind in self.family else 0.0

    def as_dict(self) -> dict:
        return {
            "items": self.items,
            "family": {k: v.as_dict() for k, v in self.family.items()},
            "code": {f"{k}.{c}": v.as_dict() for (k, c), v in sorted(self.code.items())},
            "case": {name: {k: v.as_dict() for k, v in fam.items()} for name, fam in sorted(self.case.items())},
        }


Predict = Callable[[list[TextSegment]], Iterable[TagAssignment]]


def evaluate(predict: Predict, items: Iterable[GoldItem]) -> EvalReport:
    """Run *predict* (e.g. ``tagger.tag``) on every item and score it against the gold labels."""
    items = list(items)
    report = EvalReport(items=len(items), family={k: Scores() for k in KINDS})
    for item in items:
        pred = {(t.kind, t.code) for t in predict(list(item.segments)) if t.kind in KINDS}
        for kind in KINDS:
            g = {x for x in item.labels if x[0] == kind}
            p = {x for x in pred if x[0] == kind}
            report.family[kind].add(g, p)
            for case in item.cases:
                report.case.setdefault(case, {k: Scores() for k in KINDS})[kind].add(g, p)
        for key in item.labels | pred:
            report.code.setdefault(key, Scores()).add({key} & item.labels, {key} & pred)
        if pred != item.labels:
            report.errors.append({
                "id": item.id,
                "missed": sorted(f"{k}.{c}" for k, c in item.labels - pred),
                "extra": sorted(f"{k}.{c}" for k, c in pred - item.labels),
                "text": " | ".join(f"{s.speaker or '?'}: {s.text}" for s in item.segments),
            })
    return report
