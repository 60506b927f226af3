#!/usr/bin/env python3
"""CER and wall time of `earmark transcribe --json` on the committed clips (tests/data/clips.tsv).

Each clip is run as a whole process REPEAT times (model load included, as a user runs it); the
table shows the median wall time, the in-process transcription time and the real-time factor.

    .venv/bin/python bench/transcribe_clips.py [--repeat 3] [--manifest tests/data/clips.tsv]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asr  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--manifest", type=Path, default=REPO / "tests/data/clips.tsv")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows = list(csv.DictReader(open(args.manifest, encoding="utf-8"), delimiter="\t"))
    env = {**os.environ}
    print(f"{'clip':22} {'lang':4} {'audio s':>7} {'CER':>6} {'process s':>9} {'asr s':>6} {'RTF':>6}  text")
    total_ref = total_err = 0.0
    for row in rows:
        path = args.manifest.parent / row["file"]
        walls, asr_times, out = [], [], None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = subprocess.run(
                [sys.executable, "-m", "service.cli", "transcribe", "--json", "--language", row["language"], str(path)],
                cwd=REPO, env=env, capture_output=True, text=True, check=True,
            )
            walls.append(time.perf_counter() - t0)
            out = json.loads(res.stdout)
            asr_times.append(out["wall_time"])
        c = asr.cer(row["reference"], out["text"])
        n = len(asr.normalize_for_cer(row["reference"]))
        total_ref += n
        total_err += c * n
        asr_s = statistics.median(asr_times)
        print(
            f"{row['file']:22} {row['language']:4} {out['duration']:7.1f} {c:6.3f} {statistics.median(walls):9.2f} "
            f"{asr_s:6.2f} {asr_s / out['duration']:6.3f}  {out['text'][:60]}"
        )
    print(f"overall CER (character-weighted): {total_err / total_ref:.3f}  ({args.repeat} runs per clip, medians)")


if __name__ == "__main__":
    main()
