"""QA decisions become training data for the next tagger version."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from service import crud
from service.db import session_scope
from tests.conftest import REPO
from tests.service.conftest import auth, upload


def test_qa_corrections_become_training_data(client, app, keys, settings, tmp_path, model_cache):
    rid = upload(client, keys["device"], customer_ref="cust-qa").json()["id"]
    assert app.state.worker.drain() == 3
    tags = {(t["kind"], t["code"]) for t in client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()["tags"]}
    assert ("intent", "undecided") in tags
    url = f"/v1/recordings/{rid}/conversations/0/reviews"
    assert client.post(url, json={"action": "reject", "kind": "intent", "code": "undecided"}, headers=auth(keys["qa"])).status_code == 201
    assert client.post(url, json={"action": "add", "kind": "concern", "code": "wrinkles"}, headers=auth(keys["qa"])).status_code == 201

    with session_scope(app.state.engine) as s:
        items = crud.reviewed_conversations(s)
    assert len(items) == 1 and items[0]["id"] == f"{rid}:0"
    assert "wrinkles" in items[0]["concern"] and "undecided" not in items[0]["intent"]
    assert ("project", "ha_filler") in {("project", c) for c in items[0]["project"]}
    assert {s["speaker"] for s in items[0]["segments"]} <= {"staff", "customer", None} and items[0]["segments"]

    # `earmark train` reads them from the same database beside the other training data
    data = tmp_path / "small.jsonl"
    data.write_text("".join(line + "\n" for line in (REPO / "tagging" / "data" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]), encoding="utf-8")
    env = {**os.environ, "EARMARK_DATA_DIR": str(settings.data_dir), "EARMARK_MODEL_CACHE_DIR": str(model_cache),
           "EARMARK_TAGGER_DIR": str(tmp_path / "tagger")}
    r = subprocess.run(
        [sys.executable, "-m", "service.cli", "train", "--no-bundled", "--data", str(data), "--gold", str(data),
         "--epochs", "2", "--folds", "2", "--version", "tg-qa"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    said = " ".join(r.stderr.split())
    assert "1 from QA-reviewed conversations" in said, r.stderr
    if r.returncode == 0:  # kept (it may also lose to the active version on this tiny set: then nothing is kept)
        meta = json.loads((tmp_path / "tagger" / "tg-qa" / "tagger.json").read_text(encoding="utf-8"))
        assert meta["training"]["items"] == 41 and meta["training"]["sources"]["QA-reviewed conversations"] == 1
    else:
        assert "not kept" in said and not (tmp_path / "tagger" / "tg-qa").exists()
