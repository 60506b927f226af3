#!/usr/bin/env python3
"""Tagging speed: conversations/s on one core and latency per conversation, for each tagger.

Target (issue): ≥ 200 conversations/s per core for a 10-minute conversation transcript, i.e. at
most 5 ms per conversation.

Builds 10-minute conversation transcripts from the development set (tagging/data/dev.jsonl): the
items' turns (staff/customer exchanges, and single customer segments) are concatenated in a seeded
random order until a conversation holds about --minutes of speech at --chars-per-second
(4 Chinese characters a second → about 2,400 characters, 120-150 segments), with start/end times.
Then, on one pinned core with one thread, after a warm-up, each round runs every tagger on every
conversation, interleaved (A B C D on conversation 1, then on conversation 2 …, the order rotated
each round) so that drift on a busy machine hits all taggers alike:

  keywords     tagging.keyword.KeywordTagger (the baseline a keyword tracker gives)
  rules        tagging.RuleTagger
  hybrid       tagging.learned.HybridTagger (rules + the learned ONNX model) from --model DIR;
               default: the newest models/tagger/<version>/ holding a tagger.json (skipped if none)
  compliance   tagging.ComplianceChecker (the bundled compliance rules)

Reports per tagger: conversations/s (median over rounds of conversations ÷ time in that round),
p50 and p95 latency per conversation in ms, and the throughput relative to the rules tagger.

  .venv/bin/python bench/tagging_speed.py [--rounds 5] [--conversations 30] [--model DIR] [--json]
"""

from __future__ import annotations

import os

# one thread everywhere, before numpy / onnxruntime are imported
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tagging import ComplianceChecker, RuleTagger, Taxonomy, TextSegment  # noqa: E402
from tagging.keyword import KeywordTagger  # noqa: E402

DEV = REPO / "tagging" / "data" / "dev.jsonl"
TARGET_PER_S = 200.0
GAP_S = 0.4  # pause between turns


# -- building conversations -------------------------------------------------------------------
def _turn_groups(path: Path) -> list[list[tuple[str | None, str]]]:
    """Each dev item as a list of (speaker, text) turns; a single-text item is a customer turn."""
    groups = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if item.get("segments"):
            groups.append([(s.get("speaker"), s["text"]) for s in item["segments"] if s.get("text")])
        elif item.get("text"):
            groups.append([("customer", item["text"])])
    return [g for g in groups if g]


def build_conversations(
    n: int, *, minutes: float, chars_per_second: float, seed: int, path: Path = DEV
) -> list[list[TextSegment]]:
    """*n* conversations of about *minutes* of speech each, from the dev set's turns."""
    groups = _turn_groups(path)
    rng = random.Random(seed)
    target_chars = minutes * 60 * chars_per_second
    order: list[list[tuple[str | None, str]]] = []
    convs = []
    for _ in range(n):
        segs: list[TextSegment] = []
        chars = 0
        t = 0.0
        while chars < target_chars:
            if not order:
                order = groups[:]
                rng.shuffle(order)
            for speaker, text in order.pop():
                dur = len(text) / chars_per_second
                segs.append(TextSegment(len(segs), text, round(t, 2), round(t + dur, 2), speaker))
                t += dur + GAP_S
                chars += len(text)
        convs.append(segs)
    return convs


# -- taggers -----------------------------------------------------------------------------------
def default_model_dir() -> Path | None:
    """The newest models/tagger/<version>/ that holds a tagger.json, or None."""
    root = REPO / "models" / "tagger"
    if not root.is_dir():
        return None
    found = [d for d in root.iterdir() if (d / "tagger.json").is_file()]
    return max(found, key=lambda d: (d / "tagger.json").stat().st_mtime) if found else None


def build_taggers(model_dir: Path | None) -> tuple[dict, str]:
    taxonomy = Taxonomy.load()
    rules = RuleTagger(taxonomy)
    taggers = {"keywords": KeywordTagger(taxonomy).tag, "rules": rules.tag}
    note = ""
    if model_dir is None:
        note = "hybrid skipped: no models/tagger/<version>/tagger.json (train one, or pass --model DIR)"
    else:
        from tagging.learned import HybridTagger, LearnedModel

        model = LearnedModel(model_dir)
        taggers["hybrid"] = HybridTagger(taxonomy, model, rules=RuleTagger(taxonomy)).tag
        note = f"hybrid model: {model_dir} (version {model.version})"
    taggers["compliance"] = ComplianceChecker.load().check
    return taggers, note


# -- measuring ---------------------------------------------------------------------------------
def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def measure(taggers: dict, convs: list[list[TextSegment]], *, rounds: int, warmup: int) -> dict:
    names = list(taggers)
    for conv in convs[:warmup]:  # loads OpenCC, the ONNX session, fills caches
        for name in names:
            taggers[name](conv)
    latencies = {name: [] for name in names}
    per_round = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        spent = dict.fromkeys(names, 0.0)
        for conv in convs:
            for name in order:
                t0 = time.perf_counter()
                taggers[name](conv)
                dt = time.perf_counter() - t0
                latencies[name].append(dt)
                spent[name] += dt
        for name in names:
            per_round[name].append(len(convs) / spent[name])
    out = {}
    for name in names:
        out[name] = {
            "conversations_per_s": statistics.median(per_round[name]),
            "p50_ms": 1000 * _percentile(latencies[name], 0.50),
            "p95_ms": 1000 * _percentile(latencies[name], 0.95),
            "rounds_per_s": [round(x, 1) for x in per_round[name]],
        }
    base = out.get("rules", {}).get("conversations_per_s")
    for name in names:
        out[name]["vs_rules"] = out[name]["conversations_per_s"] / base if base else None
        out[name]["meets_target"] = out[name]["conversations_per_s"] >= TARGET_PER_S
    return out


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        try:
            cpu = min(os.sched_getaffinity(0))
            os.sched_setaffinity(0, {cpu})
            return f"pinned to core {cpu}"
        except OSError as exc:
            return f"not pinned ({exc})"
    return "not pinned (no sched_setaffinity on this platform)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Target: ≥ 200 conversations/s per core for a 10-minute transcript.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds; each runs every tagger on every conversation")
    ap.add_argument("--conversations", type=int, default=30, help="distinct conversations built from the dev set")
    ap.add_argument("--warmup", type=int, default=3, help="conversations run by every tagger before measuring")
    ap.add_argument("--minutes", type=float, default=10.0, help="speech per conversation")
    ap.add_argument("--chars-per-second", type=float, default=4.0, help="speaking rate in Chinese characters per second")
    ap.add_argument("--model", type=Path, default=None,
                    help="tagger version directory (model.onnx + tagger.json) for the hybrid; default: newest under models/tagger/")
    ap.add_argument("--seed", type=int, default=7, help="seed for the order in which dev items are joined")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.conversations < 1:
        ap.error("--rounds and --conversations must be at least 1")

    pinned = pin_one_core()
    model_dir = args.model if args.model is not None else default_model_dir()
    if args.model is not None and not (args.model / "tagger.json").is_file():
        ap.error(f"--model {args.model}: no tagger.json there")
    t0 = time.perf_counter()
    convs = build_conversations(args.conversations, minutes=args.minutes, chars_per_second=args.chars_per_second, seed=args.seed)
    taggers, note = build_taggers(model_dir)
    results = measure(taggers, convs, rounds=args.rounds, warmup=min(args.warmup, len(convs)))
    chars = [sum(len(s.text) for s in c) for c in convs]
    segs = [len(c) for c in convs]
    report = {
        "target_conversations_per_s": TARGET_PER_S,
        "conversations": len(convs),
        "rounds": args.rounds,
        "avg_chars": statistics.mean(chars),
        "avg_segments": statistics.mean(segs),
        "avg_speech_minutes": statistics.mean(c[-1].end for c in convs) / 60,
        "pinning": pinned,
        "threads": 1,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "note": note,
        "results": results,
        "wall_s": time.perf_counter() - t0,
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(f"{len(convs)} conversations × {args.rounds} rounds; per conversation on average "
          f"{report['avg_chars']:.0f} characters, {report['avg_segments']:.0f} segments, "
          f"{report['avg_speech_minutes']:.1f} min of speech")
    print(f"{pinned}, 1 thread, load average {report['load_average']}; {note}")
    print(f"{'tagger':<12}{'conv/s':>10}{'p50 ms':>10}{'p95 ms':>10}{'vs rules':>10}  target ≥ {TARGET_PER_S:.0f}/s")
    for name, r in results.items():
        ratio = f"{r['vs_rules']:.2f}×" if r["vs_rules"] is not None else "-"
        print(f"{name:<12}{r['conversations_per_s']:>10.1f}{r['p50_ms']:>10.2f}{r['p95_ms']:>10.2f}{ratio:>10}  "
              f"{'meets' if r['meets_target'] else 'MISSES'}")
    print(f"wall {report['wall_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
