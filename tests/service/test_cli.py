"""The CLI contracts scripts rely on, run as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import asr
from tests.conftest import DATA, REPO


@pytest.fixture
def env(tmp_path, model_cache):
    return {**os.environ, "EARMARK_DATA_DIR": str(tmp_path / "data"), "EARMARK_MODEL_CACHE_DIR": str(model_cache)}


def earmark(env, *args, stdin: str | None = None, check=True):
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, input=stdin,
        capture_output=True, text=True, timeout=300, check=check,
    )


def test_transcribe_json_contract(env, clips):
    out = json.loads(earmark(env, "transcribe", str(DATA / "zh_thermage.wav"), "--json").stdout)
    assert set(out) >= {"language", "duration", "text", "segments", "tags"}
    assert out["language"] == "zh" and abs(out["duration"] - 7.05) < 0.05
    assert asr.cer(clips["zh_thermage.wav"]["reference"], out["text"]) < 0.35
    assert all(set(s) >= {"start", "end", "text"} for s in out["segments"])
    tags = {t["code"]: t for t in out["tags"]}
    assert "thermage" in tags
    t = tags["thermage"]
    assert set(t) >= {"kind", "code", "label", "confidence", "evidence"} and t["kind"] == "project"
    assert all(set(e) == {"start", "end", "quote"} for e in t["evidence"])


def test_transcribe_text_output_and_bad_file(env, tmp_path):
    out = earmark(env, "transcribe", str(DATA / "zh_negation.wav"))
    assert "→" in out.stdout and "large_pores" in out.stdout
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    r = earmark(env, "transcribe", str(bad), check=False)
    assert r.returncode == 1 and "not a readable audio file" in r.stderr


def test_tag_jsonl_contract(env):
    lines = [
        {"id": "a", "text": "我想了解一下热玛吉，多少钱？"},
        {"id": "b", "segments": [{"speaker": "staff", "text": "我们有热玛吉、超声刀、水光针"},
                                 {"speaker": "customer", "text": "我没有痘印，就是怕疼"}]},
    ]
    stdin = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\nnot json\n"
    out = [json.loads(line) for line in earmark(env, "tag", stdin=stdin).stdout.splitlines()]
    assert [o["id"] for o in out] == ["a", "b", None]
    assert {(t["kind"], t["code"]) for t in out[0]["tags"]} == {("project", "thermage"), ("intent", "price_inquiry")}
    assert {(t["kind"], t["code"]) for t in out[1]["tags"]} == {("intent", "objection_pain")}
    assert "error" in out[2]


def test_keys_and_models_and_config(env):
    key = earmark(env, "keys", "create", "--role", "crm").stdout.strip()
    assert key.startswith("em_") and len(key) > 30
    r = earmark(env, "keys", "create", "--role", "root", check=False)
    assert r.returncode == 2 and "unknown role" in r.stderr
    models = json.loads(earmark(env, "models", "--json").stdout)
    assert any(m["name"] == "whisper-base" and m["ok"] and m["active"] for m in models)
    cfg = earmark(env, "config").stdout
    assert "EARMARK_ASR_MODEL" in cfg and "whisper-base" in cfg
    assert "Usage" in earmark(env, "--help").stdout


# -- tagging: evaluation, training, versions --------------------------------------------------------
TAGGING_DATA = REPO / "tagging" / "data"


def test_eval_tagging_prints_families_codes_and_the_keyword_baseline(env):
    out = json.loads(earmark(env, "eval", "tagging", "--gold", str(TAGGING_DATA / "dev.jsonl"), "--tagger", "rules",
                             "--json", "--errors", "3").stdout)
    assert out["tagger"] == "rules"
    fam = out["report"]["family"]
    assert set(fam) == {"project", "concern", "intent"} and all(0 < f["f1"] <= 1 for f in fam.values())
    assert all(fam[k]["f1"] > out["keyword_baseline"]["family"][k]["f1"] for k in fam)
    assert "project.thermage" in out["report"]["code"] and len(out["errors"]) == 3
    table = earmark(env, "eval", "tagging", "--gold", str(TAGGING_DATA / "dev.jsonl"), "--tagger", "rules").stdout
    assert "keyword F1" in table and "project.thermage" in table
    bad = earmark(env, "eval", "tagging", "--gold", str(REPO / "README.md"), check=False)
    assert bad.returncode == 2 and "not valid JSON" in bad.stderr


def test_train_activate_refuse_force_and_rollback(env, tmp_path):
    every = [json.loads(x) for x in (TAGGING_DATA / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    items = every[:60]
    data = tmp_path / "small.jsonl"
    data.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items), encoding="utf-8")
    quiet = [x for x in every if not (x["project"] or x["concern"] or x["intent"])][:20]  # chatter: nothing to tag
    gold = tmp_path / "quiet.jsonl"
    gold.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in quiet), encoding="utf-8")
    env = {**env, "EARMARK_TAGGER_DIR": str(tmp_path / "tagger"), "EARMARK_TAGGER_VERSION": ""}
    # the rules alone score below the bundled version: switching to them needs --force
    refused = earmark(env, "models", "activate", "rules", check=False)
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert earmark(env, "models", "activate", "rules", "--force").returncode == 0

    r = earmark(env, "train", "--no-bundled", "--data", str(data), "--gold", str(gold), "--epochs", "3", "--folds", "2",
                "--version", "tg-small", check=False)
    assert r.returncode == 0, r.stderr
    version_dir = tmp_path / "tagger" / "tg-small"
    card = (version_dir / "card.md").read_text(encoding="utf-8")
    assert "60 training items" in card and "parity" in card and "quiet.jsonl" in card
    listed = {m["name"]: m for m in json.loads(earmark(env, "models", "--json").stdout)}
    assert listed["tg-small"]["kind"] == "tagger" and not listed["tg-small"]["active"]

    # a version that tags nothing scores below the active rules on the development set: refused
    meta = json.loads((version_dir / "tagger.json").read_text(encoding="utf-8"))
    meta["thresholds"] = {k: 1.01 for k in meta["thresholds"]}
    (version_dir / "tagger.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    refused = earmark(env, "models", "activate", "tg-small", check=False)
    assert refused.returncode == 1 and "refused" in refused.stderr
    assert earmark(env, "models", "activate", "tg-small", "--force").returncode == 0
    assert json.loads((tmp_path / "tagger" / "active.json").read_text())["active"] == "tg-small"
    back = earmark(env, "models", "rollback").stdout
    assert "active tagger: rules" in back
    assert json.loads((tmp_path / "tagger" / "active.json").read_text())["active"] == "rules"
    assert "active tagger: tg-" in earmark(env, "models", "rollback").stdout  # and back to the bundled one
