"""Webhook subscriptions against real receivers on 127.0.0.1: signatures, order, retries with
backoff, Retry-After, 410, the dead-letter list, redelivery, replay, slow receivers."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from service.app import create_app
from service.auth import ROLES, create_key
from service.db import session_scope
from service.settings import Settings
from service.webhooks import backoff_delay, retry_after_seconds, signed_headers
from tests.service.conftest import auth

CODES = ["botulinum", "thermage", "ha_filler", "ipl", "picosecond", "hifu"]


def make_settings(tmp_path, **kw) -> Settings:
    base = dict(data_dir=tmp_path / "data", workers=0, webhook_backoff_base_s=0.2, webhook_backoff_max_s=1.0,
                webhook_poll_s=0.1, webhook_timeout_s=10.0)
    return Settings(**{**base, **kw})


@pytest.fixture
def env(tmp_path, request):
    """(client, keys) of an app whose worker runs (deliveries on, no job threads)."""
    settings = make_settings(tmp_path, **getattr(request, "param", {}))
    app = create_app(settings, start_worker=True)
    with session_scope(app.state.engine) as s:
        keys = {role: create_key(s, role=role) for role in ROLES}
        keys["other"] = create_key(s, role="admin", tenant_id="clinic-b")
    with TestClient(app) as client:
        yield client, keys


def subscribe(client, key, url) -> dict:
    r = client.post("/v1/webhooks", json={"url": url, "description": "test"}, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()


def tag(client, key, ref, code, present=True):
    if present:
        r = client.post(f"/v1/customers/{ref}/tags", json={"kind": "project", "code": code}, headers=auth(key))
    else:
        r = client.delete(f"/v1/customers/{ref}/tags/project/{code}", headers=auth(key))
    assert r.status_code in (200, 201), r.text


def cursors(client, key) -> list[int]:
    return [c["cursor"] for c in client.get("/v1/changes", params={"limit": 1000}, headers=auth(key)).json()["data"]]


def test_signatures_follow_standard_webhooks():
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = json.dumps({"type": "profile.tag_changed", "data": {"cursor": 1}})
    at = datetime.now(timezone.utc)
    h = signed_headers(secret, "chg_1", body, at)
    assert h["webhook-id"] == "chg_1" and h["webhook-timestamp"] == str(int(at.timestamp()))
    assert h["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, h) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("1", "2"), h)
    old = signed_headers(secret, "chg_1", body, at - timedelta(minutes=10))
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, old)


def test_backoff_and_retry_after():
    rng = random.Random(7)
    delays = [backoff_delay(n, base=5, cap=4 * 3600, rng=rng) for n in range(1, 20)]
    for n, d in enumerate(delays, 1):
        full = min(4 * 3600, 5 * 2 ** (n - 1))
        assert full / 2 <= d <= full
    # jittered exponential backoff reaches "about a day" in under 20 attempts
    assert 12 * 3600 < sum(delays) < 3 * 86400
    now = datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Wed, 25 Nov 2026 03:01:00 GMT", now) == 60
    assert retry_after_seconds("soon", now) is None and retry_after_seconds(None, now) is None


def test_events_arrive_signed_in_order_and_logged(env, receivers):
    client, keys = env
    hook = subscribe(client, keys["crm"], "http://127.0.0.1:9/unused")
    rcv = receivers(secret=hook["secret"])
    assert hook["secret"].startswith("whsec_")
    client.patch(f"/v1/webhooks/{hook['id']}", json={"url": rcv.url}, headers=auth(keys["crm"]))
    for i, code in enumerate(CODES):
        tag(client, keys["crm"], f"c-{i % 2}", code)
    tag(client, keys["crm"], "c-0", CODES[0], present=False)
    seqs = cursors(client, keys["crm"])
    assert len(seqs) == 7
    rcv.wait_acked(7)
    assert rcv.acked == [f"chg_{s}" for s in seqs]  # in order, each once
    assert all(r.verified for r in rcv.requests)
    last = rcv.requests[-1]
    assert json.loads(last.body)["type"] == "profile.tag_changed"
    assert last.data["cursor"] == seqs[-1] and last.data["action"] == "removed" and last.data["customer_ref"] == "c-0"
    assert last.headers["content-type"] == "application/json"

    log = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(keys["crm"])).json()
    assert [d["webhook_id"] for d in log["data"]] == rcv.acked
    assert {(d["status"], d["attempts"], d["last_status"]) for d in log["data"]} == {("delivered", 1, 200)}
    one = client.get(f"/v1/webhooks/{hook['id']}/deliveries/{log['data'][0]['id']}", headers=auth(keys["crm"])).json()
    assert [(a["attempt"], a["status_code"]) for a in one["log"]] == [(1, 200)]
    listed = client.get("/v1/webhooks", headers=auth(keys["admin"])).json()
    assert [(w["id"], w["secret"], w["pending"]) for w in listed] == [(hook["id"], None, 0)]

    # replay: everything after the first change again, same ids, in order
    r = client.post(f"/v1/webhooks/{hook['id']}/replay", json={"after": seqs[0]}, headers=auth(keys["crm"]))
    assert r.status_code == 202 and r.json() == {"queued": 6}
    deadline = time.monotonic() + 10
    while len(rcv.acked) < 13 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rcv.acked[7:] == [f"chg_{s}" for s in seqs[1:]]


def test_retries_honour_retry_after_and_410_disables(env, receivers):
    client, keys = env
    script = iter([(500, {}, 0), (503, {"Retry-After": "2"}, 0)])
    rcv = receivers(respond=lambda r: next(script, (200, {}, 0)))
    hook = subscribe(client, keys["crm"], rcv.url)
    tag(client, keys["crm"], "c-r", "thermage")
    rcv.wait_acked(1)
    times = [r.at for r in rcv.requests]
    assert len(times) == 3 and len(set(r.msg_id for r in rcv.requests)) == 1
    assert 0.09 <= times[1] - times[0] < 3  # backoff base 0.2 s, jittered
    assert times[2] - times[1] >= 1.9  # Retry-After: 2
    d = client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=auth(keys["crm"])).json()["data"][0]
    log = client.get(f"/v1/webhooks/{hook['id']}/deliveries/{d['id']}", headers=auth(keys["crm"])).json()["log"]
    assert [a["status_code"] for a in log] == [500, 503, 200]

    rcv.respond = lambda r: (410, {}, 0)
    tag(client, keys["crm"], "c-r", "ipl")
    deadline = time.monotonic() + 10
    while client.get(f"/v1/webhooks/{hook['id']}", headers=auth(keys["crm"])).json()["enabled"] and time.monotonic() < deadline:
        time.sleep(0.05)
    state = client.get(f"/v1/webhooks/{hook['id']}", headers=auth(keys["crm"])).json()
    assert not state["enabled"] and "410" in state["disabled_reason"] and state["dead"] == 1
    tag(client, keys["crm"], "c-r", "hifu")  # waits while the endpoint is disabled
    time.sleep(0.5)
    n = len(rcv.requests)
    assert rcv.requests[-1].data["code"] == "ipl"
    rcv.respond = lambda r: (200, {}, 0)
    client.patch(f"/v1/webhooks/{hook['id']}", json={"enabled": True}, headers=auth(keys["crm"]))
    rcv.wait_acked(2)
    assert [r.data["code"] for r in rcv.requests[n:]] == ["hifu"]


@pytest.mark.parametrize("env", [{"webhook_max_age_s": 1.0}], indirect=True)
def test_dead_letters_and_redelivery(env, receivers):
    client, keys = env
    rcv = receivers(respond=lambda r: (500, {}, 0))
    hook = subscribe(client, keys["crm"], rcv.url)
    tag(client, keys["crm"], "c-d", "thermage")
    tag(client, keys["crm"], "c-d", "ipl")
    url = f"/v1/webhooks/{hook['id']}/deliveries"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        dead = client.get(url, params={"status": "dead"}, headers=auth(keys["crm"])).json()["data"]
        if len(dead) == 2:
            break
        time.sleep(0.1)
    # the retry window counts from the change: the first was retried, the second (queued behind it
    # for that long) may have had one attempt left
    assert len(dead) == 2 and dead[0]["attempts"] >= 2 and all(d["last_status"] == 500 for d in dead)
    rcv.respond = lambda r: (200, {}, 0)
    r = client.post(f"{url}/{dead[1]['id']}/redeliver", headers=auth(keys["crm"]))
    assert r.status_code == 202
    assert rcv.wait_acked(1) == [dead[1]["webhook_id"]]
    assert client.get(url, params={"status": "dead"}, headers=auth(keys["crm"])).json()["data"] == [dead[0]]
    assert client.post(f"{url}/999999/redeliver", headers=auth(keys["crm"])).status_code == 404


def test_a_slow_receiver_does_not_block_others(env, receivers):
    client, keys = env
    slow = receivers(respond=lambda r: (200, {}, 3.0))
    fast = receivers()
    subscribe(client, keys["crm"], slow.url)
    subscribe(client, keys["admin"], fast.url)
    for code in CODES[:5]:
        tag(client, keys["crm"], "c-s", code)
    fast.wait_acked(5, timeout=10)
    assert len(slow.acked) <= 1  # 3 s per event: the fast one had all five before the slow one had two


def test_webhooks_are_per_tenant_and_role(env, receivers):
    client, keys = env
    rcv = receivers()
    hook = subscribe(client, keys["crm"], rcv.url)
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=auth(keys["other"])).status_code == 404
    assert client.get("/v1/webhooks", headers=auth(keys["other"])).json() == []
    for role in ("qa", "device"):
        assert client.post("/v1/webhooks", json={"url": rcv.url}, headers=auth(keys[role])).status_code == 403
    bad = client.post("/v1/webhooks", json={"url": "ftp://example"}, headers=auth(keys["crm"]))
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    tag(client, keys["other"], "c-x", "thermage")  # another tenant's change: not sent here
    tag(client, keys["crm"], "c-y", "thermage")
    rcv.wait_acked(1)
    time.sleep(0.3)
    assert len(rcv.requests) == 1 and rcv.requests[0].data["customer_ref"] == "c-y"
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=auth(keys["crm"])).status_code == 204
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=auth(keys["crm"])).status_code == 404
