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
