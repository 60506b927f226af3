"""Upload → job → transcript → profile → change feed, through the HTTP API, on the real model."""

from tests.audio_utils import corrupt_flac, write_wav
from tests.conftest import DATA
from tests.service.conftest import auth, upload

import asr


def test_upload_to_tagged_profile(client, app, keys, clips):
    r = upload(client, keys["device"], customer_ref="cust-1001", client_ref="badge-007/0001")
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert r.json() == {"id": rid, "status": "queued", "duplicate": False}
    assert r.headers["location"] == f"/v1/recordings/{rid}"

    status = client.get(f"/v1/recordings/{rid}", headers=auth(keys["device"])).json()
    assert status["status"] == "queued" and status["progress"] == 0
    assert status["recorded_at"] == "2026-11-20T02:00:00Z"  # stored as UTC

    assert app.state.worker.drain() == 3  # transcribe, speakers, tag

    status = client.get(f"/v1/recordings/{rid}", headers=auth(keys["qa"])).json()
    assert status["status"] == "done" and status["progress"] == 1 and status["error"] is None
    assert abs(status["duration"] - 24.3) < 0.1 and status["language"] == "zh"

    tr = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()
    assert asr.cer(clips["zh_dialogue.wav"]["reference"], tr["text"]) < 0.35, tr["text"]
    assert len(tr["segments"]) >= 4
    tags = {(t["kind"], t["code"]): t for t in tr["tags"]}
    assert {("project", "ha_filler"), ("intent", "price_inquiry"), ("intent", "undecided")} <= set(tags)
    ev = tags[("project", "ha_filler")]["evidence"][0]
    seg = tr["segments"][ev["segment"]]
    assert ev["match"] in seg["text"] and (ev["start"], ev["end"]) == (seg["start"], seg["end"])

    profile = client.get("/v1/customers/cust-1001", headers=auth(keys["crm"])).json()
    ptags = {(t["kind"], t["code"]): t for t in profile["tags"]}
    assert set(ptags) == set(tags)
    assert ptags[("project", "ha_filler")]["count"] == 1
    assert ptags[("project", "ha_filler")]["recordings"] == [rid]
    assert ptags[("project", "ha_filler")]["first_seen"] == "2026-11-20T02:00:00Z"

    changes = client.get("/v1/changes", params={"after": 0, "limit": 1000}, headers=auth(keys["crm"])).json()
    assert {(c["kind"], c["code"]) for c in changes["data"]} == set(tags)
    assert all(c["action"] == "added" and c["customer_ref"] == "cust-1001" for c in changes["data"])
    cursors = [c["cursor"] for c in changes["data"]]
    assert cursors == sorted(cursors) and changes["next"] == cursors[-1] and not changes["has_more"]
    again = client.get("/v1/changes", params={"after": changes["next"]}, headers=auth(keys["crm"])).json()
    assert again == {"data": [], "next": changes["next"], "has_more": False}


def test_second_recording_updates_profile_and_feed(client, app, keys):
    upload(client, keys["device"], customer_ref="cust-2", client_ref="a")
    app.state.worker.drain()
    first = client.get("/v1/changes", headers=auth(keys["crm"])).json()
    r2 = upload(client, keys["device"], DATA / "zh_thermage.wav", customer_ref="cust-2", client_ref="b")
    app.state.worker.drain()
    later = client.get("/v1/changes", params={"after": first["next"]}, headers=auth(keys["crm"])).json()
    by_code = {c["code"]: c for c in later["data"]}
    assert by_code["thermage"]["action"] == "added"
    assert by_code["price_inquiry"]["action"] == "updated" and by_code["price_inquiry"]["count"] == 2
    assert by_code["price_inquiry"]["recording_id"] == r2.json()["id"]
    profile = client.get("/v1/customers/cust-2", headers=auth(keys["qa"])).json()
    assert {t["code"]: t["count"] for t in profile["tags"]}["price_inquiry"] == 2


def test_rerunning_a_stage_duplicates_nothing(client, app, keys):
    rid = upload(client, keys["device"], DATA / "zh_thermage.wav", customer_ref="cust-3").json()["id"]
    app.state.worker.drain()
    before = client.get("/v1/changes", params={"limit": 1000}, headers=auth(keys["admin"])).json()
    tr_before = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()
    pipeline = app.state.pipeline
    pipeline.transcribe(rid)  # a redelivered job
    pipeline.tag(rid)
    after = client.get("/v1/changes", params={"limit": 1000}, headers=auth(keys["admin"])).json()
    tr_after = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()
    assert after == before
    assert len(tr_after["segments"]) == len(tr_before["segments"])
    assert len(tr_after["tags"]) == len(tr_before["tags"])


def test_same_client_ref_is_stored_once(client, app, keys, settings):
    first = upload(client, keys["device"], client_ref="dup-1")
    second = upload(client, keys["device"], client_ref="dup-1")
    assert first.status_code == 202 and second.status_code == 200
    assert second.json() == {"id": first.json()["id"], "status": "queued", "duplicate": True}
    stored = [p for p in settings.audio_dir.rglob("*") if p.is_file()]
    assert len(stored) == 1
    # another device may use the same client_ref: it is a different file
    third = upload(client, keys["device"], client_ref="dup-1", device_id="badge-008")
    assert third.status_code == 202 and third.json()["id"] != first.json()["id"]
    assert app.state.worker.drain() == 6


def test_undecodable_upload_is_refused_and_nothing_is_kept(client, keys, settings, tmp_path):
    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 20)
    r = upload(client, keys["device"], bad)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == "/problems/undecodable-audio" and "not decodable audio" in body["detail"]
    assert str(settings.data_dir) not in body["detail"]  # no server paths in errors
    assert not [p for p in settings.audio_dir.rglob("*") if p.is_file()]


def test_empty_upload_is_refused(client, keys, tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    r = upload(client, keys["device"], empty)
    assert r.status_code == 422 and r.json()["type"] == "/problems/empty-audio"


def test_size_and_duration_limits(client, app, keys, tmp_path):
    settings = app.state.settings
    settings.max_audio_seconds = 5.0
    r = upload(client, keys["device"], DATA / "zh_thermage.wav")
    assert r.status_code == 413 and r.json()["type"] == "/problems/audio-too-long"
    settings.max_audio_seconds = 3600
    settings.max_upload_bytes = 100_000
    r = upload(client, keys["device"], DATA / "zh_thermage.wav")
    assert r.status_code == 413 and r.json()["type"] == "/problems/upload-too-large"
    assert not [p for p in settings.audio_dir.rglob("*") if p.is_file()]


def test_corrupt_audio_fails_the_job_and_service_keeps_serving(client, app, keys, tmp_path):
    bad = corrupt_flac(asr.decode(DATA / "zh_thermage.wav"), tmp_path / "bad.flac")
    rid = upload(client, keys["device"], bad).json()["id"]
    good = upload(client, keys["device"], DATA / "zh_thermage.wav").json()["id"]
    app.state.worker.drain()
    failed = client.get(f"/v1/recordings/{rid}", headers=auth(keys["qa"])).json()
    assert failed["status"] == "failed" and "no audio samples" in failed["error"]
    assert client.get(f"/v1/recordings/{good}", headers=auth(keys["qa"])).json()["status"] == "done"
    assert client.get("/healthz").json() == {"status": "ok", "pending_jobs": 0}


def test_bad_fields_are_problem_json(client, keys):
    r = upload(client, keys["device"], recorded_at="yesterday")
    assert r.status_code == 422 and r.json()["type"] == "/problems/validation"
    assert "recorded_at" in r.json()["detail"]
    r = upload(client, keys["device"], source="phone")
    assert r.status_code == 422
    r = upload(client, keys["device"], device_id="../../etc/passwd")
    assert r.status_code == 422
    r = client.get("/v1/changes", params={"limit": 10**9}, headers=auth(keys["crm"]))
    assert r.status_code == 422


def test_unknown_things_are_404(client, keys):
    r = client.get("/v1/customers/nobody", headers=auth(keys["crm"]))
    assert r.status_code == 404 and r.json()["type"] == "/problems/customer-not-found"
    r = client.get("/v1/recordings/0123456789abcdef", headers=auth(keys["qa"]))
    assert r.status_code == 404


def test_silence_recording_completes_with_no_tags(client, app, keys, tmp_path):
    import numpy as np

    quiet = write_wav(tmp_path / "quiet.wav", np.zeros(16000 * 10, np.float32))
    rid = upload(client, keys["device"], quiet, customer_ref="cust-quiet").json()["id"]
    app.state.worker.drain()
    tr = client.get(f"/v1/recordings/{rid}/transcript", headers=auth(keys["qa"])).json()
    assert tr["status"] == "done" and tr["segments"] == [] and tr["tags"] == []
    assert client.get("/v1/customers/cust-quiet", headers=auth(keys["crm"])).json()["tags"] == []
