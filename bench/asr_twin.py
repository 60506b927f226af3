"""Build the ASR-degraded twin of the tagging development set: text → speech → Earmark's ASR.

The speech is committed (``tagging/data/dev_audio/<id>_<turn>.ogg``: one Opus clip per turn,
synthesised with Kokoro's Mandarin voices, the customer and the staff in different voices). This
script runs Earmark's own recogniser on every clip with the service's default options (Whisper
base, ``language=zh``, the simplified-Chinese prompt, treatment names as hotwords) and writes
``tagging/data/dev_asr.jsonl``: the same items and gold labels, each turn's text replaced by what
the recogniser heard. Text the guards set aside (phantoms, loops) is left out, as in the service.

Items marked ``english`` keep their text: the Mandarin voices cannot pronounce English, so their
audio says nothing a recogniser could get right (the count is printed; see README).

    .venv/bin/python bench/asr_twin.py [--threads 2] [--limit N]

Prints per-item progress, the character error rate of the twin against the written text, and
the time taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import asr  # noqa: E402
import tagging  # noqa: E402

DATA = REPO / "tagging" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gold", default=str(DATA / "dev.jsonl"))
    ap.add_argument("--audio", default=str(DATA / "dev_audio"))
    ap.add_argument("--out", default=str(DATA / "dev_asr.jsonl"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N items (a quick look)")
    a = ap.parse_args()

    cache = Path(tempfile.gettempdir()) / "earmark-test-models"
    cache.mkdir(exist_ok=True)
    transcriber = asr.Transcriber(asr.resolve_model("whisper-base", cache), device="cpu", cpu_threads=a.threads)
    taxonomy = tagging.Taxonomy.load()
    opts = asr.TranscribeOptions(language="zh", initial_prompt=asr.DEFAULT_PROMPT_ZH, hotwords=taxonomy.hotwords())

    lines = [json.loads(x) for x in Path(a.gold).read_text(encoding="utf-8").splitlines() if x.strip()]
    if a.limit:
        lines = lines[: a.limit]
    t0 = time.perf_counter()
    out, refs, hyps, kept_english = [], [], [], 0
    for n, item in enumerate(lines, 1):
        twin = dict(item)
        if "english" in (item.get("cases") or []):
            kept_english += 1
            out.append(twin)
            continue
        turns = item.get("segments") or [{"speaker": "customer", "text": item["text"]}]
        heard = []
        for k, turn in enumerate(turns):
            clip = Path(a.audio) / f"{item['id']}_{k}.ogg"
            if not clip.exists():
                raise SystemExit(f"missing clip {clip}: synthesise the development set's audio first")
            segments, _ = transcriber.transcribe(clip, opts)
            text = "".join(s.text for s in segments if not s.discarded)
            heard.append({"speaker": turn.get("speaker"), "text": text})
            refs.append(turn["text"])
            hyps.append(text)
        if "segments" in item:
            twin["segments"] = heard
        else:
            twin["text"] = heard[0]["text"]
        twin["cases"] = list(item.get("cases") or []) + ["asr"]
        out.append(twin)
        print(f"[{n}/{len(lines)}] {item['id']}: {' | '.join(h['text'] for h in heard)}", flush=True)
    Path(a.out).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in out), encoding="utf-8")
    ref_chars = sum(len(asr.normalize_for_cer(r)) for r in refs)
    errors = sum(asr.cer(r, h) * len(asr.normalize_for_cer(r)) for r, h in zip(refs, hyps))
    print(
        f"wrote {len(out)} items to {a.out}; {len(out) - kept_english} through ASR "
        f"({len(refs)} turns), {kept_english} English items kept as written; "
        f"CER {errors / max(1, ref_chars):.3f}; {time.perf_counter() - t0:.0f} s"
    )


if __name__ == "__main__":
    main()
