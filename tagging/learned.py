"""The learned tagger, served with onnxruntime, and the hybrid that combines it with the rules.

A tagger version is a directory::

    models/tagger/<version>/
        model.onnx    segment n-gram ids + speaker → per-code probabilities (exported from torch)
        tagger.json   labels, featurizer vocabulary, calibration, per-code thresholds, metrics
        card.md       the model card: data, metrics per tag, parity check

How a conversation is tagged (:class:`HybridTagger`):

1. The rule tagger finds terms, with negation, hypothetical and speaker rules, and gives a
   confidence ``r`` per code with its evidence.
2. The model scores every segment; a code's model probability ``p`` is its best segment's
   (concerns and intents: customer or unknown-speaker segments only).
3. Per family, a logistic calibration fitted on out-of-fold training predictions combines them:
   ``confidence = σ(a·r + b·logit(p) + c·[r > 0] + d)``; a code is tagged when the confidence
   reaches its threshold (chosen per code on the same out-of-fold predictions).
4. Evidence is the rules' when they fired, else the segment the model scored highest.

Only inference lives here: training (torch) is :mod:`tagging.training`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import TaggingError
from .features import SPEAKER_IDS, Featurizer
from .rules import RuleTagger
from .taxonomy import Taxonomy
from .types import Evidence, TagAssignment, TextSegment

__all__ = ["HybridTagger", "LearnedModel", "FORMAT"]

FORMAT = 1
_EPS = 0.01  # the model's probability counts at most ±4.6 in logit: rules are not outvoted by an overconfident no


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


class LearnedModel:
    """A tagger version's ONNX model and metadata (``tagger.json``)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "tagger.json"
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TaggingError(f"cannot read tagger metadata {meta_path}: {exc}") from exc
        if self.meta.get("format") != FORMAT:
            raise TaggingError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT}")
        self.version: str = self.meta["version"]
        self.labels: list[tuple[str, str]] = [tuple(x) for x in self.meta["labels"]]
        self.featurizer = Featurizer.from_dict(self.meta["featurizer"])
        self.calibration: dict[str, dict[str, float]] = self.meta["calibration"]
        self.thresholds: dict[str, float] = self.meta["thresholds"]
        self._session = None
        self._lock = threading.Lock()

    @property
    def session(self):
        with self._lock:
            if self._session is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1  # one conversation per call: threads cost more than they give
                opts.inter_op_num_threads = 1
                path = self.directory / "model.onnx"
                try:
                    self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own exception types
                    raise TaggingError(f"cannot load tagger model {path}: {exc}") from exc
            return self._session

    def segment_probs(self, segments: list[TextSegment]) -> np.ndarray:
        """[len(segments), len(labels)] probabilities."""
        if not segments:
            return np.zeros((0, len(self.labels)), np.float32)
        ids = self.featurizer.ids([s.text for s in segments])
        speakers = np.array([SPEAKER_IDS.get(s.speaker, 0) for s in segments], np.int64)
        return self.session.run(None, {"ids": ids, "speaker": speakers})[0]

    def threshold(self, kind: str, code: str) -> float:
        return float(self.thresholds.get(f"{kind}.{code}", self.thresholds.get(kind, 0.5)))

    def calibrate(self, kind: str, rule_conf: np.ndarray, model_prob: np.ndarray) -> np.ndarray:
        c = self.calibration[kind]
        z = c["rule"] * rule_conf + c["model"] * _logit(model_prob) + c["fired"] * (rule_conf > 0) + c["bias"]
        return 1.0 / (1.0 + np.exp(-z))


def pooled_probs(model: LearnedModel, segments: list[TextSegment]) -> tuple[np.ndarray, np.ndarray]:
    """Per label: the best eligible segment's probability and that segment's position (-1: none)."""
    probs = model.segment_probs(segments)
    n_labels = len(model.labels)
    best = np.zeros(n_labels, np.float32)
    where = np.full(n_labels, -1, np.int64)
    if not segments:
        return best, where
    staff = np.array([s.speaker == "staff" for s in segments])
    speaker_bound = np.array([k != "project" for k, _ in model.labels])
    masked = probs.copy()
    masked[np.ix_(staff, speaker_bound)] = -1.0  # concerns and intents are the customer's
    where = masked.argmax(axis=0)
    best = masked[where, np.arange(n_labels)]
    where = np.where(best < 0, -1, where)
    return np.maximum(best, 0.0).astype(np.float32), where


class HybridTagger:
    """Rules + learned model, calibrated; falls back to the rules for codes the model does not know
    (a tenant's own codes)."""

    method = "hybrid"

    def __init__(self, taxonomy: Taxonomy, model: LearnedModel, *, rules: RuleTagger | None = None):
        self.taxonomy = taxonomy
        self.model = model
        self.rules = rules or RuleTagger(taxonomy)
        self.version = f"hybrid-{model.version}"
        self._index = {label: i for i, label in enumerate(model.labels)}

    def tag(self, segments: Iterable[TextSegment | str]) -> list[TagAssignment]:
        segs = [s if isinstance(s, TextSegment) else TextSegment(i, s, speaker="customer") for i, s in enumerate(segments)]
        rule_tags = {(t.kind, t.code): t for t in self.rules.tag(segs)}
        best, where = pooled_probs(self.model, segs)
        out: list[TagAssignment] = []
        for (kind, code), t in rule_tags.items():  # codes the model has no output for: rules alone
            if (kind, code) not in self._index:
                out.append(t)
        kinds = sorted({k for k, _ in self.model.labels})
        for kind in kinds:
            idx = [i for i, (k, _) in enumerate(self.model.labels) if k == kind]
            codes = [self.model.labels[i][1] for i in idx]
            rule_conf = np.array([rule_tags[(kind, c)].confidence if (kind, c) in rule_tags else 0.0 for c in codes])
            conf = self.model.calibrate(kind, rule_conf, best[idx])
            for j, code in enumerate(codes):
                if conf[j] < self.model.threshold(kind, code):
                    continue
                tc = self.taxonomy.get(kind, code)
                if tc is None:  # disabled for this tenant, or not in this taxonomy
                    continue
                rt = rule_tags.get((kind, code))
                if rt is not None:
                    evidence = rt.evidence
                else:
                    pos = int(where[idx[j]])
                    if pos < 0:
                        continue
                    evidence = [_segment_evidence(segs[pos])]
                out.append(
                    TagAssignment(
                        kind=kind, code=code, label=tc.label, confidence=round(float(conf[j]), 3),
                        method=self.method if rt is not None else "model",
                        taxonomy_version=self.taxonomy.version, tagger_version=self.version, evidence=evidence,
                    )
                )
        redundant = self.taxonomy.drop_subsumed({(t.kind, t.code) for t in out})
        out = [t for t in out if (t.kind, t.code) not in redundant]
        order = {k: i for i, k in enumerate(("project", "concern", "intent"))}
        out.sort(key=lambda t: (order.get(t.kind, 9), -t.confidence, t.code))
        return out


def _segment_evidence(seg: TextSegment) -> Evidence:
    return Evidence(
        segment=seg.index, start=seg.start, end=seg.end, quote=seg.text, match=seg.text,
        char_start=0, char_end=len(seg.text), term="", term_type="model", speaker=seg.speaker,
    )

