"""Training the learned tagger (torch) and exporting it (ONNX). Not imported by the service.

``train_version()`` does the whole lifecycle for one version:

1. fit the n-gram vocabulary on the training texts;
2. k-fold: train on k-1 folds, predict the held-out fold → out-of-fold probabilities for every
   training item (honest inputs for calibration and thresholds);
3. per family, fit the logistic calibration that combines rule confidence and model probability;
   per code, pick the threshold that maximises F1 on the out-of-fold predictions (codes with
   fewer than ``MIN_SUPPORT`` positives use their family's threshold);
4. train on everything, export to ONNX, and check the ONNX model against the torch model on every
   training segment (parity);
5. write ``model.onnx``, ``tagger.json`` and ``card.md``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .errors import TaggingError
from .evaluate import EvalReport, GoldItem, Scores
from .features import SPEAKER_IDS, Featurizer
from .learned import FORMAT, _logit
from .rules import RuleTagger
from .taxonomy import Taxonomy
from .types import KINDS

logger = logging.getLogger(__name__)

__all__ = ["TrainOptions", "TrainResult", "train_version", "write_card"]

MIN_SUPPORT = 5
THRESHOLD_GRID = [round(x, 2) for x in np.arange(0.2, 0.81, 0.05)]


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 40
    dim: int = 32
    hidden: int = 96
    lr: float = 0.01
    weight_decay: float = 1e-5
    dropout: float = 0.2
    batch_items: int = 32
    folds: int = 5
    seed: int = 13
    max_n: int = 3
    threads: int = 2


@dataclass
class TrainResult:
    version: str
    directory: Path
    items: int
    segments: int
    positives: dict[str, int]
    oof: EvalReport
    parity_max_abs_diff: float
    seconds: float
    evaluations: dict[str, dict] = field(default_factory=dict)  # name → {"candidate": …, "active": …}


# -- the torch model -------------------------------------------------------------------------------
def _torch_model(vocab_size: int, n_labels: int, opts: TrainOptions):
    import torch
    from torch import nn

    class SegmentModel(nn.Module):
        """Mean of n-gram embeddings + speaker embedding → hidden layer → per-code sigmoid."""

        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab_size, opts.dim, padding_idx=0)
            self.spk = nn.Embedding(len(SPEAKER_IDS), 8)
            self.drop = nn.Dropout(opts.dropout)
            self.hidden = nn.Linear(opts.dim + 8, opts.hidden)
            self.out = nn.Linear(opts.hidden, n_labels)

        def forward(self, ids, speaker):
            mask = (ids > 0).unsqueeze(-1).to(torch.float32)
            h = (self.emb(ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            z = torch.relu(self.hidden(self.drop(torch.cat([h, self.spk(speaker)], -1))))
            return torch.sigmoid(self.out(self.drop(z)))

    return SegmentModel()


def _eligibility(labels: list[tuple[str, str]], speakers: np.ndarray) -> np.ndarray:
    """[segments, labels] 1 where a segment may carry a label (concerns/intents: not staff)."""
    speaker_bound = np.array([k != "project" for k, _ in labels])
    staff = speakers == SPEAKER_IDS["staff"]
    return (~(staff[:, None] & speaker_bound[None, :])).astype(np.float32)


@dataclass
class _Encoded:
    ids: list[np.ndarray]  # per item: [segments, L]
    speakers: list[np.ndarray]  # per item: [segments]
    y: np.ndarray  # [items, labels]


def _encode(items: list[GoldItem], feat: Featurizer, labels: list[tuple[str, str]]) -> _Encoded:
    index = {l: i for i, l in enumerate(labels)}
    y = np.zeros((len(items), len(labels)), np.float32)
    ids, spk = [], []
    for n, item in enumerate(items):
        ids.append(feat.ids([s.text for s in item.segments]))
        spk.append(np.array([SPEAKER_IDS.get(s.speaker, 0) for s in item.segments], np.int64))
        for lab in item.labels:
            if lab in index:
                y[n, index[lab]] = 1.0
    return _Encoded(ids, spk, y)


def _batch(enc: _Encoded, rows: list[int]):
    import torch

    width = max(enc.ids[r].shape[1] for r in rows)
    seg_ids, seg_spk, bounds = [], [], []
    pos = 0
    for r in rows:
        m = enc.ids[r]
        padded = np.zeros((m.shape[0], width), np.int64)
        padded[:, : m.shape[1]] = m
        seg_ids.append(padded)
        seg_spk.append(enc.speakers[r])
        bounds.append((pos, pos + m.shape[0]))
        pos += m.shape[0]
    return torch.from_numpy(np.concatenate(seg_ids)), torch.from_numpy(np.concatenate(seg_spk)), bounds


def _pool(probs, elig, bounds):
    import torch

    masked = probs * elig
    return torch.stack([masked[a:b].max(0).values for a, b in bounds])


def _fit(enc: _Encoded, rows: list[int], vocab_size: int, labels, opts: TrainOptions, seed: int):
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = _torch_model(vocab_size, len(labels), opts)
    optim = torch.optim.Adam(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    y_all = torch.from_numpy(enc.y)
    loss_fn = torch.nn.BCELoss()
    order = list(rows)
    for _ in range(opts.epochs):
        model.train()
        rng.shuffle(order)
        for i in range(0, len(order), opts.batch_items):
            chunk = order[i : i + opts.batch_items]
            ids, spk, bounds = _batch(enc, chunk)
            elig = torch.from_numpy(_eligibility(labels, spk.numpy()))
            pooled = _pool(model(ids, spk), elig, bounds).clamp(1e-6, 1 - 1e-6)
            loss = loss_fn(pooled, y_all[chunk])
            optim.zero_grad()
            loss.backward()
            optim.step()
    model.eval()
    return model


def _predict_pooled(model, enc: _Encoded, rows: list[int], labels) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            chunk = rows[i : i + 64]
            ids, spk, bounds = _batch(enc, chunk)
            elig = torch.from_numpy(_eligibility(labels, spk.numpy()))
            out.append(_pool(model(ids, spk), elig, bounds).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(labels)), np.float32)


# -- calibration and thresholds --------------------------------------------------------------------
def _fit_calibration(r: np.ndarray, p: np.ndarray, y: np.ndarray, steps: int = 1500, lr: float = 0.5) -> dict:
    """Logistic regression of y on [r, logit(p), r>0] (all codes of one family pooled)."""
    x = np.stack([r.ravel(), _logit(p.ravel()), (r.ravel() > 0).astype(np.float64), np.ones(r.size)], 1)
    t = y.ravel().astype(np.float64)
    w = np.array([1.0, 1.0, 1.0, -3.0])
    for _ in range(steps):
        z = np.clip(x @ w, -30, 30)
        s = 1 / (1 + np.exp(-z))
        grad = x.T @ (s - t) / len(t) + 1e-4 * np.r_[w[:3], 0.0]
        w -= lr * grad
    return {"rule": float(w[0]), "model": float(w[1]), "fired": float(w[2]), "bias": float(w[3])}


def _best_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    best, best_f1 = 0.5, -1.0
    for t in THRESHOLD_GRID:
        pred = scores >= t
        tp = float((pred & (y > 0)).sum())
        fp = float((pred & (y == 0)).sum())
        fn = float((~pred & (y > 0)).sum())
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        if f1 > best_f1 + 1e-9 or (abs(f1 - best_f1) <= 1e-9 and abs(t - 0.5) < abs(best - 0.5)):
            best, best_f1 = t, f1
    return best


def _rule_matrix(rules: RuleTagger, items: list[GoldItem], labels) -> np.ndarray:
    index = {l: i for i, l in enumerate(labels)}
    r = np.zeros((len(items), len(labels)), np.float32)
    for n, item in enumerate(items):
        for t in rules.tag(list(item.segments)):
            if (t.kind, t.code) in index:
                r[n, index[(t.kind, t.code)]] = t.confidence
    return r


# -- the whole lifecycle ---------------------------------------------------------------------------
def new_version_name(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.strftime("tg-%Y%m%d-%H%M%S")


def train_version(
    items: list[GoldItem],
    taxonomy: Taxonomy,
    out_dir: str | Path,
    *,
    version: str | None = None,
    options: TrainOptions | None = None,
    sources: dict[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, calibrate, export and check one tagger version into ``out_dir/<version>``."""
    import torch

    opts = options or TrainOptions()
    say = progress or (lambda msg: logger.info(msg))
    if len(items) < max(20, opts.folds * 2):
        raise TaggingError(f"too few training items: {len(items)} (need at least {max(20, opts.folds * 2)})")
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, opts.threads))
    version = version or new_version_name()
    directory = Path(out_dir) / version
    if directory.exists():
        raise TaggingError(f"tagger version {version} already exists at {directory}")
    labels = [(c.kind, c.code) for c in sorted(taxonomy.codes.values(), key=lambda c: (KINDS.index(c.kind), c.code)) if c.kind in KINDS]
    feat = Featurizer(max_n=opts.max_n).fit(s.text for it in items for s in it.segments)
    enc = _encode(items, feat, labels)
    vocab_size = len(feat.vocab) + 2
    rules = RuleTagger(taxonomy)
    r = _rule_matrix(rules, items, labels)

    # out-of-fold model probabilities
    rng = random.Random(opts.seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    folds = [order[i :: opts.folds] for i in range(opts.folds)]
    oof = np.zeros((len(items), len(labels)), np.float32)
    for k, held in enumerate(folds):
        say(f"fold {k + 1}/{opts.folds}: training on {len(items) - len(held)} items")
        held_set = set(held)
        train_rows = [i for i in order if i not in held_set]
        model = _fit(enc, train_rows, vocab_size, labels, opts, seed=opts.seed + k)
        oof[held] = _predict_pooled(model, enc, held, labels)

    y = enc.y
    calibration, thresholds = {}, {}
    kinds = [k for k in KINDS if any(l[0] == k for l in labels)]
    scores = np.zeros_like(oof)
    for kind in kinds:
        cols = [i for i, l in enumerate(labels) if l[0] == kind]
        calibration[kind] = _fit_calibration(r[:, cols], oof[:, cols], y[:, cols])
        c = calibration[kind]
        z = c["rule"] * r[:, cols] + c["model"] * _logit(oof[:, cols]) + c["fired"] * (r[:, cols] > 0) + c["bias"]
        scores[:, cols] = 1 / (1 + np.exp(-z))
        thresholds[kind] = _best_threshold(scores[:, cols], y[:, cols])
        for i in cols:
            if y[:, i].sum() >= MIN_SUPPORT:
                thresholds[f"{labels[i][0]}.{labels[i][1]}"] = _best_threshold(scores[:, i], y[:, i])

    # out-of-fold report (what the calibrated hybrid would have scored on unseen training items)
    report = EvalReport(items=len(items), family={k: Scores() for k in KINDS})
    for n in range(len(items)):
        for kind in kinds:
            cols = [i for i, l in enumerate(labels) if l[0] == kind]
            gold = {labels[i] for i in cols if y[n, i] > 0}
            pred = {
                labels[i] for i in cols
                if scores[n, i] >= thresholds.get(f"{labels[i][0]}.{labels[i][1]}", thresholds[kind])
            }
            report.family[kind].add(gold, pred)
            for key in gold | pred:
                report.code.setdefault(key, Scores()).add({key} & gold, {key} & pred)

    say(f"final model: training on all {len(items)} items")
    model = _fit(enc, order, vocab_size, labels, opts, seed=opts.seed + 100)
    directory.mkdir(parents=True)
    try:
        parity = _export(model, directory / "model.onnx", enc, feat)
        meta = {
            "format": FORMAT,
            "version": version,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "taxonomy_version": taxonomy.version,
            "labels": [list(l) for l in labels],
            "featurizer": feat.to_dict(),
            "calibration": calibration,
            "thresholds": thresholds,
            "options": opts.__dict__,
            "training": {
                "items": len(items),
                "segments": int(sum(len(it.segments) for it in items)),
                "sources": sources or {},
                "positives": {f"{k}.{c}": int(y[:, i].sum()) for i, (k, c) in enumerate(labels)},
            },
            "oof": report.as_dict(),
            "parity_max_abs_diff": parity,
        }
        (directory / "tagger.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
    except BaseException:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
        raise
    return TrainResult(
        version=version,
        directory=directory,
        items=len(items),
        segments=meta["training"]["segments"],
        positives=meta["training"]["positives"],
        oof=report,
        parity_max_abs_diff=parity,
        seconds=round(time.perf_counter() - t0, 1),
    )


def _export(model, path: Path, enc: _Encoded, feat: Featurizer) -> float:
    """ONNX export, then the parity check: ONNX vs torch on every training segment."""
    import warnings

    import onnxruntime as ort
    import torch

    ids = torch.from_numpy(enc.ids[0])
    spk = torch.from_numpy(enc.speakers[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, spk), str(path), input_names=["ids", "speaker"], output_names=["probs"],
            dynamic_axes={"ids": {0: "segments", 1: "ngrams"}, "speaker": {0: "segments"}, "probs": {0: "segments"}},
            opset_version=17, dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for m, s in zip(enc.ids, enc.speakers):
            want = model(torch.from_numpy(m), torch.from_numpy(s)).numpy()
            got = session.run(None, {"ids": m, "speaker": s})[0]
            worst = max(worst, float(np.abs(want - got).max()))
    if worst > 1e-4:
        raise TaggingError(f"ONNX export differs from the trained model by {worst:.2e} (limit 1e-4)")
    return worst


def write_card(directory: Path, result: TrainResult) -> Path:
    """The model card: data, per-tag metrics (out-of-fold and on each evaluation set), parity."""
    meta = json.loads((directory / "tagger.json").read_text(encoding="utf-8"))
    lines = [
        f"# Tagger {result.version}",
        "",
        f"Created {meta['created_at']} on taxonomy {meta['taxonomy_version']}; "
        f"trained in {result.seconds:.0f} s. Rules + learned model (char n-grams → torch → ONNX), "
        "calibrated per family, thresholds per code.",
        "",
        "## Data",
        f"- {result.items} training items ({result.segments} segments); sources: "
        + ", ".join(f"{k} {v}" for k, v in (meta['training'].get('sources') or {}).items()),
        f"- n-gram vocabulary: {len(meta['featurizer']['vocab'])}",
        f"- ONNX vs torch parity on every training segment: max |Δp| = {result.parity_max_abs_diff:.2e}",
        "",
        "## Metrics",
        "",
        "| set | family | precision | recall | F1 | support |",
        "|---|---|---:|---:|---:|---:|",
    ]
    sets = [("training, out-of-fold", meta["oof"])]
    for name, pair in result.evaluations.items():
        sets.append((f"{name} (candidate)", pair["candidate"]))
        if pair.get("active"):
            sets.append((f"{name} (active {pair.get('active_version', '')})", pair["active"]))
        if pair.get("keywords"):
            sets.append((f"{name} (keyword baseline)", pair["keywords"]))
    for name, rep in sets:
        for kind in KINDS:
            f = rep["family"][kind]
            lines.append(f"| {name} | {kind} | {f['precision']:.3f} | {f['recall']:.3f} | {f['f1']:.3f} | {f['support']} |")
    per_code = next(iter(result.evaluations.values()))["candidate"] if result.evaluations else meta["oof"]
    lines += ["", "## Per tag (" + (next(iter(result.evaluations)) if result.evaluations else "out-of-fold") + ")", "",
              "| tag | precision | recall | F1 | support | threshold | training positives |", "|---|---:|---:|---:|---:|---:|---:|"]
    for key, f in sorted(per_code["code"].items()):
        kind = key.split(".")[0]
        th = meta["thresholds"].get(key, meta["thresholds"].get(kind, 0.5))
        lines.append(f"| {key} | {f['precision']:.2f} | {f['recall']:.2f} | {f['f1']:.2f} | {f['support']} | {th:.2f} | {meta['training']['positives'].get(key, 0)} |")
    path = directory / "card.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

