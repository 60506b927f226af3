#!/usr/bin/env python3
"""Badge-day benchmark: Earmark against faster-whisper as a user would run it, side by side.

Builds a reproducible badge-like recording from the synthetic per-turn clips in bench/data
(four staff/customer consultations; the wearer loud and close, the customer 8 dB quieter; pauses
of seconds inside a conversation and minutes between them; low background noise; a noise burst),
keeps its reference text, then runs each method in its own process (so peak RSS is its own) on
the same Whisper model with the same thread count:

  fw_default   WhisperModel.transcribe(file)                                   (defaults)
  fw_vad       WhisperModel.transcribe(file, vad_filter=True, language="zh")
  fw_batched   BatchedInferencePipeline(model).transcribe(file, language="zh", batch_size=8)
  earmark      asr.Transcriber.transcribe(file, the service's options)         (1x and 2x file)

  .venv/bin/python bench/badge_day.py [--minutes 20] [--repeat 1] [--out /tmp/earmark-bench]

Prints a table of wall time, CER and peak RSS (medians over --repeat runs) and Earmark's RSS on a
file twice as long.
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
import wave
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO / "bench" / "data"
SR = 16000
THREADS = 2


# -- building the recording -------------------------------------------------------------------
def _load(path: Path) -> np.ndarray:
    import asr

    return asr.decode(path)


def build(out: Path, *, minutes: float, copies: int = 1, seed: int = 7) -> dict:
    """Write a badge-like WAV of about *minutes* × *copies* and return its ground truth."""
    rng = np.random.default_rng(seed)
    rows = list(csv.DictReader(open(DATA / "conversations.tsv", encoding="utf-8"), delimiter="\t"))
    convs: dict[str, list[dict]] = {}
    for r in rows:
        convs.setdefault(r["conversation"], []).append(r)
    pieces: list[np.ndarray] = []
    truth = {"turns": [], "conversations": [], "reference": ""}
    t = 0.0

    def silence(seconds: float) -> None:
        nonlocal t
        pieces.append(np.zeros(int(seconds * SR), np.float32))
        t += seconds

    speech_total = sum(len(_load(DATA / r["file"])) for r in rows) / SR
    total_target = minutes * 60
    n_conv = len(convs) * copies
    gap_budget = max(60.0 * n_conv, total_target - speech_total * copies - 40)
    gaps = rng.dirichlet(np.ones(n_conv + 1)) * gap_budget
    gaps = np.maximum(gaps, 95.0)  # minutes apart, above the conversation gap
    burst_at = None
    for copy in range(copies):
        for k, (cid, turns) in enumerate(sorted(convs.items())):
            n = copy * len(convs) + k
            silence(float(gaps[n]))
            if burst_at is None and n == 1:  # a noise burst in the silence before conversation 2
                burst_at = t - float(gaps[n]) / 2
            conv_start = t
            for r in turns:
                audio = _load(DATA / r["file"]) * (1.0 if r["speaker"] == "staff" else 0.4)
                pieces.append(audio.astype(np.float32))
                truth["turns"].append({"start": round(t, 3), "end": round(t + len(audio) / SR, 3),
                                       "speaker": r["speaker"], "conversation": n, "text": r["text"]})
                truth["reference"] += r["text"]
                t += len(audio) / SR
                silence(float(rng.uniform(0.6, 2.5)))
            truth["conversations"].append({"index": n, "start": round(conv_start, 3), "end": round(t, 3)})
    silence(float(gaps[-1]))
    audio = np.concatenate(pieces)
    # room noise: low-passed white noise around -55 dBFS
    noise = rng.standard_normal(len(audio)).astype(np.float32)
    noise = np.convolve(noise, np.ones(8) / 8, mode="same") * 0.004
    audio = audio + noise
    b0 = int(burst_at * SR)  # 3 s of loud broadband noise (a door, a hair dryer)
    audio[b0 : b0 + 3 * SR] += rng.standard_normal(3 * SR).astype(np.float32) * 0.15
    audio = np.clip(audio, -1, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((audio * 32767).astype(np.int16).tobytes())
    truth.update(duration=round(len(audio) / SR, 2), speech=round(sum(x["end"] - x["start"] for x in truth["turns"]), 2),
                 burst=[round(burst_at, 2), round(burst_at + 3, 2)])
    out.with_suffix(".json").write_text(json.dumps(truth, ensure_ascii=False, indent=1), encoding="utf-8")
    return truth


# -- one method, in its own process ----------------------------------------------------------
def run_method(method: str, path: str) -> dict:
    import asr

    model_dir = asr.resolve_model("whisper-base", Path(os.environ.get("EARMARK_MODEL_CACHE_DIR", "/tmp/earmark-test-models")))
    t0 = time.perf_counter()
    if method.startswith("fw_"):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=THREADS)
        if method == "fw_default":
            segs, _ = model.transcribe(path)
        elif method == "fw_vad":
            segs, _ = model.transcribe(path, vad_filter=True, language="zh")
        else:
            segs, _ = BatchedInferencePipeline(model=model).transcribe(path, language="zh", batch_size=8)
        texts = [s.text for s in segs]
    else:
        import tagging

        tr = asr.Transcriber(model_dir, device="cpu", compute_type="int8", cpu_threads=THREADS)
        # exactly what the service uses (prompt, taxonomy hotwords, guards, packing)
        opts = asr.TranscribeOptions(language="zh", hotwords=tagging.Taxonomy.load().hotwords(),
                                     **json.loads(os.environ.get("EARMARK_BENCH_OPTIONS", "{}")))
        segs, _ = tr.transcribe(path, opts)
        texts = [s.text for s in segs if not s.discarded]
    wall = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a child would report the
    # parent's peak (the parent holds the built recordings in memory)
    hwm_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    rss_mib = hwm_kib / 1024
    return {"method": method, "wall_s": round(wall, 2), "rss_mib": round(rss_mib, 1), "text": "".join(texts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs per method (medians are reported)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/earmark-bench"))
    ap.add_argument("--methods", default="fw_default,fw_vad,fw_batched,earmark")
    ap.add_argument("--method-timeout", type=float, default=1800, help="seconds before a method's run is given up")
    ap.add_argument("--run", nargs=2, metavar=("METHOD", "FILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        print(json.dumps(run_method(*args.run), ensure_ascii=False))
        return
    import asr

    one = args.out / "badge_1x.wav"
    two = args.out / "badge_2x.wav"
    truth = build(one, minutes=args.minutes)
    build(two, minutes=args.minutes * 2, copies=2)
    print(f"badge-like file: {truth['duration'] / 60:.1f} min, {truth['speech']:.0f} s of speech in "
          f"{len(truth['conversations'])} conversations, noise burst at {truth['burst'][0]:.0f} s; "
          f"2x file: {json.loads(two.with_suffix('.json').read_text())['duration'] / 60:.1f} min")

    def measure(method: str, path: Path) -> dict:
        runs = []
        for _ in range(args.repeat):
            try:
                res = subprocess.run([sys.executable, __file__, "--run", method, str(path)], capture_output=True,
                                     text=True, check=True, cwd=REPO, timeout=args.method_timeout)
            except subprocess.TimeoutExpired:
                runs.append({"wall_s": float("inf"), "rss_mib": float("nan"), "text": ""})
                continue
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
        return {
            "method": method,
            "wall_s": statistics.median(r["wall_s"] for r in runs),
            "rss_mib": statistics.median(r["rss_mib"] for r in runs),
            "text": runs[-1]["text"],
        }

    rows = []
    for m in args.methods.split(","):
        r = measure(m, one)
        r["cer"] = asr.cer(truth["reference"], r["text"])
        rows.append(r)
        print(f"  {m:11} wall {r['wall_s']:7.2f} s   CER {r['cer']:.3f}   peak RSS {r['rss_mib']:7.1f} MiB", flush=True)
    e2 = measure("earmark", two)
    print()
    print("| method | wall s | CER | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['wall_s']:.2f} | {r['cer']:.3f} | {r['rss_mib']:.0f} |")
    e1 = next((r for r in rows if r["method"] == "earmark"), None)
    print(f"| earmark, 2x file | {e2['wall_s']:.2f} | {asr.cer(json.loads(two.with_suffix('.json').read_text())['reference'], e2['text']):.3f} | {e2['rss_mib']:.0f} |")
    peers = [r for r in rows if r["method"] != "earmark"]
    if e1 and peers:
        fastest = min(peers, key=lambda r: r["wall_s"])
        best = min(peers, key=lambda r: r["cer"])
        print()
        print(f"wall vs fastest peer ({fastest['method']}): {e1['wall_s'] / fastest['wall_s']:.2f}x (target <= 1)")
        print(f"CER vs best peer ({best['method']}): {e1['cer'] / max(best['cer'], 1e-9):.2f}x (target <= 0.9)")
        print(f"RSS 2x / 1x: {e2['rss_mib'] / e1['rss_mib']:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
