"""`earmark crm replay` as a real subprocess on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from sqlmodel import Session, select

from service import crud
from service.app import create_app
from service.crm_models import WebhookDelivery, WebhookEndpoint
from service.db import session_scope
from service.settings import Settings
from tests.conftest import REPO


def earmark(data_dir, *args):
    env = {**os.environ, "EARMARK_DATA_DIR": str(data_dir)}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_replay_queues_deliveries_again_and_prints_changes(tmp_path):
    data = tmp_path / "data"
    app = create_app(Settings(data_dir=data, workers=0), start_worker=False)
    with session_scope(app.state.engine) as s:
        from service.auth import ensure_tenant

        ensure_tenant(s)
        s.add(WebhookEndpoint(id="ep_old", tenant_id="default", url="http://127.0.0.1:9/hook"))
        s.flush()
        for code in ("botulinum", "thermage", "ipl"):
            c = crud.get_or_create_customer(s, tenant_id="default", ref="c-1")
            crud.set_manual_tag(s, customer=c, kind="project", code=code, label=code, present=True, actor="t")
        for d in s.exec(select(WebhookDelivery)).all():
            d.status = "delivered"
            s.add(d)
        s.add(WebhookEndpoint(id="ep_new", tenant_id="default", url="http://127.0.0.1:9/new"))  # subscribed later
    with Session(app.state.engine) as s:
        seqs = [c.seq for c in crud.list_changes(s, tenant_id="default", after=0, limit=100)]

    r = earmark(data, "crm", "replay", "--after", str(seqs[0]))
    assert r.returncode == 0, r.stderr
    assert "queued 4 deliveries" in r.stdout  # 2 changes × 2 subscriptions
    with Session(app.state.engine) as s:
        rows = {(d.endpoint_id, d.change_seq): (d.status, d.msg_id) for d in s.exec(select(WebhookDelivery))}
    assert rows == {
        ("ep_old", seqs[0]): ("delivered", f"chg_{seqs[0]}"),
        ("ep_old", seqs[1]): ("pending", f"chg_{seqs[1]}"),
        ("ep_old", seqs[2]): ("pending", f"chg_{seqs[2]}"),
        ("ep_new", seqs[1]): ("pending", f"chg_{seqs[1]}"),
        ("ep_new", seqs[2]): ("pending", f"chg_{seqs[2]}"),
    }

    out = earmark(data, "crm", "replay", "--after", "0", "--stdout")
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["cursor"] for x in lines] == seqs and lines[0]["code"] == "botulinum" and lines[0]["source"] == "manual"
    bad = earmark(data, "crm", "replay", "--after", "0", "--webhook", "ep_nope")
    assert bad.returncode == 1 and "no webhook" in bad.stderr
