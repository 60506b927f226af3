"""CRM write-back faults for real: the server is a subprocess, receivers are HTTP servers on
127.0.0.1. A receiver down for a while, a slow receiver beside a fast one, SIGKILL mid-delivery,
and a change-feed consumer that persists its cursor across the restart."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.service.test_server_process import Server, free_port

FAST_RETRIES = {
    "EARMARK_WEBHOOK_BACKOFF_BASE_S": "0.3",
    "EARMARK_WEBHOOK_BACKOFF_MAX_S": "1",
    "EARMARK_WEBHOOK_POLL_S": "0.2",
}
CODES = ["botulinum", "thermage", "ha_filler", "ipl", "picosecond"]


@pytest.fixture
def server(tmp_path, model_cache, monkeypatch):
    for k, v in FAST_RETRIES.items():
        monkeypatch.setenv(k, v)
    srv = Server(tmp_path / "data", model_cache, tmp_path / "server.log")
    yield srv
    srv.kill()


def admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {(server.data_dir / 'initial-admin-key').read_text().strip()}"}


def subscribe(server: Server, url: str) -> dict:
    r = httpx.post(f"{server.url}/v1/webhooks", json={"url": url}, headers=admin(server), timeout=10)
    assert r.status_code == 201, r.text
    return r.json()


def make_changes(server: Server, n: int) -> list[int]:
    for i in range(n):
        ref, code = f"c-{i % 3}", CODES[i % len(CODES)]
        r = httpx.post(f"{server.url}/v1/customers/{ref}/tags", json={"kind": "project", "code": code},
                       headers=admin(server), timeout=10)
        assert r.status_code == 201, r.text
    feed = httpx.get(f"{server.url}/v1/changes", params={"limit": 1000}, headers=admin(server), timeout=10).json()
    return [c["cursor"] for c in feed["data"]]


def test_receiver_down_then_back_and_a_slow_receiver_beside_a_fast_one(server, receivers):
    server.start(workers=0)
    down_port = free_port()
    fast, slow = receivers(), receivers(respond=lambda r: (200, {}, 2.0))
    hooks = {name: subscribe(server, url) for name, url in
             (("fast", fast.url), ("slow", slow.url), ("down", f"http://127.0.0.1:{down_port}/hook"))}
    seqs = make_changes(server, 10)
    expected = [f"chg_{s}" for s in seqs]

    fast.wait_acked(10, timeout=15)
    assert fast.acked == expected
    assert len(slow.acked) <= 3, "the slow receiver (2 s per event) is still on its first events"

    time.sleep(2.0)  # the down receiver has been failing: connection refused, retried with backoff
    d = httpx.get(f"{server.url}/v1/webhooks/{hooks['down']['id']}/deliveries", headers=admin(server)).json()["data"]
    assert d and d[0]["status"] in ("pending", "sending") and d[0]["attempts"] >= 2 and "Connect" in d[0]["last_error"]
    assert [x["status"] for x in d[1:]] == ["pending"] * 9  # the rest wait their turn

    back = receivers(port=down_port, secret=hooks["down"]["secret"])
    back.wait_acked(10, timeout=30)
    assert back.acked == expected  # every event, in order, none twice
    assert all(r.verified for r in back.requests)


def test_sigkill_mid_delivery_then_restart_completes_it(server, receivers, tmp_path):
    server.start(workers=0)
    release = threading.Event()
    first = {}

    def respond(r):
        if not first:  # hold the very first request until the server has been killed
            first["id"] = r.msg_id
            release.wait(20)
        return (200, {}, 0.0)

    rcv = receivers(respond=respond)
    hook = subscribe(server, rcv.url)
    rcv.secret = hook["secret"]
    seqs = make_changes(server, 5)
    expected = [f"chg_{s}" for s in seqs]

    # a CRM consumer of the pull feed persists its cursor as it goes
    cursor_file = tmp_path / "crm-cursor"
    got: list[int] = []

    def pull(limit: int) -> None:
        after = int(cursor_file.read_text()) if cursor_file.exists() else 0
        page = httpx.get(f"{server.url}/v1/changes", params={"after": after, "limit": limit}, headers=admin(server)).json()
        got.extend(c["cursor"] for c in page["data"])
        cursor_file.write_text(str(page["next"]))

    pull(limit=2)
    deadline = time.monotonic() + 15
    while not first and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first["id"] == expected[0]
    server.kill()  # SIGKILL while the first delivery is in flight
    release.set()

    server.start(workers=0)
    rcv.wait_acked(5, timeout=30)
    ids = [r.msg_id for r in rcv.requests]
    assert ids.count(expected[0]) >= 2  # sent again after the restart, with the same webhook-id …
    assert list(dict.fromkeys(rcv.acked)) == expected  # … so de-duplicating by id gives each event once, in order
    bodies = {r.body for r in rcv.requests if r.msg_id == expected[0]}
    assert len(bodies) == 1 and all(r.verified for r in rcv.requests)
    states = httpx.get(f"{server.url}/v1/webhooks/{hook['id']}/deliveries", headers=admin(server)).json()["data"]
    assert {s["status"] for s in states} == {"delivered"}

    for _ in range(5):
        pull(limit=2)
    assert got == seqs  # the consumer saw every change exactly once across the restart
