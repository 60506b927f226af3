"""Profiles with provenance, QA reviews, links, merges, manual CRM tags, the customer list and the
change feed under concurrent writers. Real app, real tagger, real SQLite; no speech model needed."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
from sqlmodel import Session, select

from service import crud, schemas
from service.app import create_app
from service.auth import create_key
from service.crm_models import TagReview
from service.db import session_scope
from service.models import Customer, TagAssignment
from service.settings import Settings
from tests.service.conftest import auth
from tests.service.crm_utils import respan, seed_recording

THERMAGE = [("customer", "我想了解一下热玛吉，多少钱？")]
ACNE = [("customer", "我脸上长痘痘，有痘印，想做光子嫩肤")]
FILLER = [("customer", "我想打玻尿酸，下次预约一下")]


@pytest.fixture
def app(tmp_path):
    return create_app(Settings(data_dir=tmp_path / "data", workers=0), start_worker=False)


# client and keys: tests/service/conftest.py (over this module's app, which needs no model)


def profile(client, key, ref) -> dict:
    r = client.get(f"/v1/customers/{ref}", headers=auth(key))
    assert r.status_code == 200, r.text
    return {(t["kind"], t["code"]): t for t in r.json()["tags"]}


def feed(client, key, after=0) -> list[dict]:
    return client.get("/v1/changes", params={"after": after, "limit": 1000}, headers=auth(key)).json()["data"]


def review(client, key, rid, idx, action, kind, code, note=None):
    body = {"action": action, "kind": kind, "code": code, **({"note": note} if note else {})}
    return client.post(f"/v1/recordings/{rid}/conversations/{idx}/reviews", json=body, headers=auth(key))


def key_id(key: str) -> str:
    return key.split("_")[1]


def test_profile_has_provenance(client, app, keys):
    r1 = seed_recording(app, [THERMAGE, ACNE], customer_ref="c-1")
    r2 = seed_recording(app, [THERMAGE], customer_ref="c-1", recorded_at=datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc))
    p = profile(client, keys["crm"], "c-1")
    t = p[("project", "thermage")]
    assert t["count"] == 2 and t["source"] == "conversation"
    assert t["conversations"] == sorted([f"{r1}:0", f"{r2}:0"]) and t["recordings"] == sorted([r1, r2])
    assert t["first_seen"] == "2026-11-20T02:00:00Z" and t["last_seen"] == "2026-11-22T03:00:00Z"
    assert 0 < t["confidence"] <= 1
    assert p[("concern", "acne")]["conversations"] == [f"{r1}:1"]


def test_reject_removes_the_tag_and_retagging_keeps_the_decision(client, app, keys):
    rid = seed_recording(app, [THERMAGE], customer_ref="c-2")
    before = feed(client, keys["crm"])
    r = review(client, keys["qa"], rid, 0, "reject", "project", "thermage", note="staff said it, not her")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["action"] == "reject" and body["actor"] == key_id(keys["qa"]) and body["note"]
    assert [(c["action"], c["code"], c["reason"]) for c in body["changes"]] == [("removed", "thermage", "review")]
    assert ("project", "thermage") not in profile(client, keys["crm"], "c-2")
    new = feed(client, keys["crm"], after=before[-1]["cursor"])
    assert [(c["action"], c["code"]) for c in new] == [("removed", "thermage")]

    app.state.pipeline.tag(rid)  # a re-run of the tag stage
    assert ("project", "thermage") not in profile(client, keys["crm"], "c-2")
    assert feed(client, keys["crm"], after=new[-1]["cursor"]) == []
    tr = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()
    assert [t["status"] for t in tr["tags"] if t["code"] == "thermage"] == ["rejected"]
    with Session(app.state.engine) as s:
        rows = s.exec(select(TagReview)).all()
    assert [(x.action, x.code, x.actor, x.recording_id) for x in rows] == [("reject", "thermage", key_id(keys["qa"]), rid)]


def test_add_and_accept_survive_retagging_and_respanning(client, app, keys):
    rid = seed_recording(app, [THERMAGE], customer_ref="c-3")
    r = review(client, keys["admin"], rid, 0, "add", "concern", "sagging")
    assert r.status_code == 201, r.text
    assert [(c["action"], c["code"]) for c in r.json()["changes"]] == [("added", "sagging")]
    assert review(client, keys["qa"], rid, 0, "accept", "intent", "price_inquiry").status_code == 201
    assert review(client, keys["qa"], rid, 0, "reject", "project", "thermage").status_code == 201
    cursor = feed(client, keys["crm"])[-1]["cursor"]

    respan(app, rid, [THERMAGE])  # the speakers stage ran again …
    app.state.pipeline.tag(rid)  # … and the tag stage
    with Session(app.state.engine) as s:
        got = {(t.code, t.status, t.method) for t in s.exec(select(TagAssignment).where(TagAssignment.recording_id == rid))}
    assert ("sagging", "accepted", "manual") in got
    assert ("price_inquiry", "accepted", "rule") in {(c, st, "rule" if m != "manual" else m) for c, st, m in got}
    assert ("thermage", "rejected") in {(c, st) for c, st, _ in got}
    assert len([g for g in got if g[0] == "price_inquiry"]) == 1  # accepted once, not duplicated
    p = profile(client, keys["crm"], "c-3")
    assert set(p) == {("concern", "sagging"), ("intent", "price_inquiry")}
    assert feed(client, keys["crm"], after=cursor) == []  # nothing changed, nothing emitted


def test_review_errors(client, app, keys):
    rid = seed_recording(app, [THERMAGE], customer_ref="c-4")
    r = review(client, keys["qa"], rid, 0, "add", "project", "time_machine")
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == "/problems/unknown-tag"
    assert review(client, keys["qa"], rid, 0, "reject", "concern", "acne").status_code == 404
    assert review(client, keys["qa"], rid, 7, "reject", "project", "thermage").status_code == 404
    assert review(client, keys["qa"], rid, 0, "maybe", "project", "thermage").status_code == 422
    for role in ("crm", "device"):
        r = review(client, keys[role], rid, 0, "reject", "project", "thermage")
        assert r.status_code == 403 and r.json()["type"] == "/problems/forbidden"
    assert review(client, keys["other_tenant_admin"], rid, 0, "reject", "project", "thermage").status_code == 404


def test_reviewed_conversations(client, app, keys):
    rid = seed_recording(app, [THERMAGE, ACNE + [("staff", "我们也有热玛吉")]], customer_ref="c-5")
    seed_recording(app, [FILLER], customer_ref="c-6")  # never reviewed: not in the list
    tags = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()["tags"]
    auto = {(t["kind"], t["code"]) for t in tags if t["conversation"] == 1}
    assert ("concern", "acne_marks") in auto
    review(client, keys["qa"], rid, 1, "reject", "concern", "acne_marks")
    review(client, keys["qa"], rid, 1, "add", "intent", "booking")
    final = (auto - {("concern", "acne_marks")}) | {("intent", "booking")}
    with Session(app.state.engine) as s:
        got = crud.reviewed_conversations(s)
        assert crud.reviewed_conversations(s, tenant_id="clinic-b") == []
        assert crud.reviewed_conversations(s, tenant_id="default") == got
    assert got == [{
        "id": f"{rid}:1",
        "segments": [{"speaker": "customer", "text": ACNE[0][1]}, {"speaker": "staff", "text": "我们也有热玛吉"}],
        **{kind: sorted(c for k, c in final if k == kind) for kind in ("project", "concern", "intent")},
    }]
    assert {"ipl", "thermage"} <= set(got[0]["project"]) and "acne_marks" not in got[0]["concern"]


def test_linking_a_conversation_moves_its_tags(client, app, keys):
    rid = seed_recording(app, [THERMAGE, FILLER])  # the badge did not know the customer
    assert feed(client, keys["crm"]) == []
    url = f"/v1/recordings/{rid}/conversations/1/customer"
    r = client.put(url, json={"customer_ref": "c-7"}, headers=auth(keys["qa"]))
    assert r.status_code == 200, r.text
    assert {(c["action"], c["code"], c["customer_ref"]) for c in r.json()["changes"]} == {
        ("added", "ha_filler", "c-7"), ("added", "booking", "c-7")}
    r = client.put(url, json={"customer_ref": "c-8"}, headers=auth(keys["crm"]))
    assert {(c["action"], c["customer_ref"]) for c in r.json()["changes"]} == {("removed", "c-7"), ("added", "c-8")}
    assert profile(client, keys["crm"], "c-7") == {}
    assert set(profile(client, keys["crm"], "c-8")) == {("project", "ha_filler"), ("intent", "booking")}
    respan(app, rid, [THERMAGE, FILLER])  # re-processing keeps the link
    app.state.pipeline.tag(rid)
    assert set(profile(client, keys["crm"], "c-8")) == {("project", "ha_filler"), ("intent", "booking")}
    rec = client.get(f"/v1/recordings/{rid}", headers=auth(keys["qa"])).json()
    assert [c["customer_ref"] for c in rec["conversations"]] == [None, "c-8"]
    assert client.put(url, json={"customer_ref": "x"}, headers=auth(keys["device"])).status_code == 403
    assert client.put(url, json={"customer_ref": "x"}, headers=auth(keys["other_tenant_admin"])).status_code == 404
    assert client.put(url, json={"customer_ref": "../x"}, headers=auth(keys["qa"])).status_code == 422


def test_merge_folds_one_customer_into_another(client, app, keys):
    seed_recording(app, [THERMAGE], customer_ref="c-a")
    seed_recording(app, [ACNE], customer_ref="c-b")
    client.post("/v1/customers/c-b/tags", json={"kind": "intent", "code": "booking"}, headers=auth(keys["crm"]))
    cursor = feed(client, keys["crm"])[-1]["cursor"]
    r = client.post("/v1/customers/c-a/merge", json={"from": "c-b"}, headers=auth(keys["crm"]))
    assert r.status_code == 200, r.text
    assert {(t["code"], t["source"]) for t in r.json()["tags"]} >= {
        ("thermage", "conversation"), ("acne", "conversation"), ("booking", "manual")}
    b = client.get("/v1/customers/c-b", headers=auth(keys["crm"])).json()
    assert b["tags"] == [] and b["merged_into"] == "c-a"
    changes = feed(client, keys["crm"], after=cursor)
    assert {c["action"] for c in changes if c["customer_ref"] == "c-b"} == {"removed"}
    assert {c["code"] for c in changes if c["customer_ref"] == "c-a" and c["action"] == "added"} >= {"acne", "booking"}
    assert all(c["reason"] == "merge" for c in changes)
    # later recordings of the old ref land on the survivor
    seed_recording(app, [FILLER], customer_ref="c-b")
    assert ("project", "ha_filler") in profile(client, keys["crm"], "c-a")
    assert client.post("/v1/customers/c-a/merge", json={"from": "c-a"}, headers=auth(keys["crm"])).status_code == 422
    assert client.post("/v1/customers/c-a/merge", json={"from": "nobody"}, headers=auth(keys["crm"])).status_code == 404
    assert client.post("/v1/customers/c-a/merge", json={"from": "c-b"}, headers=auth(keys["qa"])).status_code == 403


def test_manual_tags(client, app, keys):
    h = auth(keys["crm"])
    r = client.post("/v1/customers/c-m/tags", json={"kind": "project", "code": "botulinum"}, headers=h)
    assert r.status_code == 201, r.text
    t = {x["code"]: x for x in r.json()["tags"]}["botulinum"]
    assert (t["source"], t["count"], t["confidence"], t["label"]) == ("manual", 0, 1.0, "肉毒素")
    assert client.post("/v1/customers/c-m/tags", json={"kind": "project", "code": "nope"}, headers=h).status_code == 422
    assert client.post("/v1/customers/c-m/tags", json={"kind": "project", "code": "botulinum"},
                       headers=auth(keys["qa"])).status_code == 403
    r = client.delete("/v1/customers/c-m/tags/project/botulinum", headers=h)
    assert r.status_code == 200 and r.json()["tags"] == []
    changes = feed(client, keys["crm"])
    assert [(c["action"], c["source"], c["reason"]) for c in changes] == [
        ("added", "manual", "manual"), ("removed", "manual", "manual")]
    assert set(changes[0]) == set(schemas.ChangeOut.model_fields)  # the feed's fast path keeps the schema
    assert changes[0]["created_at"].endswith("Z")

    # taking away a tag the conversations gave hides that evidence; a later conversation brings it back
    seed_recording(app, [THERMAGE], customer_ref="c-n")
    client.delete("/v1/customers/c-n/tags/project/thermage", headers=h)
    assert ("project", "thermage") not in profile(client, keys["crm"], "c-n")
    seed_recording(app, [THERMAGE], customer_ref="c-n", recorded_at=datetime(2099, 1, 1, tzinfo=timezone.utc))
    assert profile(client, keys["crm"], "c-n")[("project", "thermage")]["count"] == 1
    assert client.delete("/v1/customers/nobody/tags/project/botulinum", headers=h).status_code == 404


def test_customer_list_pages_and_etags(client, app, keys):
    h = auth(keys["crm"])
    for i in range(5):
        client.post(f"/v1/customers/c-{i}/tags", json={"kind": "project", "code": "botulinum"}, headers=h)
    refs, token = [], None
    while True:
        r = client.get("/v1/customers", params={"limit": 2, **({"page_token": token} if token else {})}, headers=h)
        assert r.status_code == 200, r.text
        refs += [c["customer_ref"] for c in r.json()["data"]]
        token = r.json()["next_page_token"]
        if token is None:
            break
    assert refs == [f"c-{i}" for i in range(5)]
    first = client.get("/v1/customers", headers=h)
    etag = first.headers["etag"]
    assert client.get("/v1/customers", headers={**h, "If-None-Match": etag}).status_code == 304
    one = client.get("/v1/customers/c-1", headers=h)
    assert client.get("/v1/customers/c-1", headers={**h, "If-None-Match": one.headers["etag"]}).status_code == 304
    since = one.json()["updated_at"]
    client.post("/v1/customers/c-1/tags", json={"kind": "project", "code": "thermage"}, headers=h)
    assert client.get("/v1/customers", headers={**h, "If-None-Match": etag}).status_code == 200
    assert client.get("/v1/customers/c-1", headers={**h, "If-None-Match": one.headers["etag"]}).status_code == 200
    later = client.get("/v1/customers", params={"updated_since": since}, headers=h).json()["data"]
    assert [c["customer_ref"] for c in later][-1] == "c-1" and "c-0" not in [c["customer_ref"] for c in later]
    assert client.get("/v1/customers", params={"page_token": "garbage!"}, headers=h).status_code == 400
    assert client.get("/v1/customers", headers=auth(keys["other_tenant_admin"])).json()["data"] == []
    assert client.get("/v1/customers", headers=auth(keys["device"])).status_code == 403


def test_change_feed_with_concurrent_writers_and_a_restart(tmp_path):
    """Eight writer threads change profiles while a consumer pages through the feed with its cursor,
    then the app is rebuilt on the same database (a restart) and the consumer goes on: every
    change is seen exactly once, in cursor order, with no gaps."""
    settings = Settings(data_dir=tmp_path / "data", workers=0)
    app = create_app(settings, start_worker=False)
    engine = app.state.engine
    codes = ["botulinum", "thermage", "ha_filler", "ipl"]
    with session_scope(engine) as s:
        create_key(s, role="crm")
    seen: list[int] = []
    cursor = 0
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(40):
                with session_scope(engine) as s:
                    c = crud.get_or_create_customer(s, tenant_id="default", ref=f"w{n}-{i % 3}")
                    crud.set_manual_tag(s, customer=c, kind="project", code=codes[i % 4], label=codes[i % 4],
                                        present=(i // 4) % 2 == 0, actor="test")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def consume(eng) -> None:
        nonlocal cursor
        with Session(eng) as s:
            rows = [c.seq for c in crud.list_changes(s, tenant_id="default", after=cursor, limit=50)]
        seen.extend(rows)
        if rows:
            cursor = rows[-1]

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        consume(engine)
    for t in threads:
        t.join()
    assert not errors, errors
    half = len(seen)
    engine.dispose()  # "restart": a new app on the same data
    app2 = create_app(settings, start_worker=False)
    for _ in range(100):
        before = cursor
        consume(app2.state.engine)
        if cursor == before:
            break
    with Session(app2.state.engine) as s:
        all_seqs = [c.seq for c in crud.list_changes(s, tenant_id="default", after=0, limit=10**6)]
    assert len(all_seqs) > 8 * 20 and 0 < half <= len(all_seqs)
    assert seen == all_seqs  # each exactly once, in order
    assert all(b > a for a, b in zip(seen, seen[1:]))
    with Session(app2.state.engine) as s:
        assert len(s.exec(select(Customer)).all()) == 24
