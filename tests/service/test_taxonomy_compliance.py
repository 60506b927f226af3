"""The taxonomy API with per-tenant overrides, and compliance flags per conversation and consultant."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from service import crud
from service.db import session_scope
from service.models import Conversation, Recording
from tests.conftest import DATA
from tests.service.conftest import auth, upload


def test_taxonomy_lists_every_family_with_terms(client, keys):
    r = client.get("/v1/taxonomy", headers=auth(keys["crm"]))
    assert r.status_code == 200
    body = r.json()
    assert set(body["families"]) == {"project", "concern", "intent"}
    codes = {c["code"]: c for c in body["families"]["project"]["codes"]}
    assert codes["thermage"]["label"] == "热玛吉"
    assert {"term": "热马吉", "type": "asr_variant"} in codes["thermage"]["terms"]
    assert body["tagger_version"]
    assert client.get("/v1/taxonomy", headers=auth(keys["device"])).status_code == 403


def test_overrides_change_tagging_for_that_tenant_only(client, app, keys):
    overrides = {
        "synonyms": {"project.skin_booster": ["补水神针"]},
        "disabled": ["intent.price_inquiry"],
        "codes": [{"kind": "project", "code": "hydrafacial", "label": "海菲秀", "synonyms": ["hydrafacial", "小气泡plus"]}],
    }
    assert client.put("/v1/taxonomy/overrides", json=overrides, headers=auth(keys["qa"])).status_code == 403
    r = client.put("/v1/taxonomy/overrides", json=overrides, headers=auth(keys["admin"]))
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 1 and r.json()["taxonomy_version"].endswith("+default.r1")
    tax = client.get("/v1/taxonomy", headers=auth(keys["qa"])).json()
    intents = {c["code"] for c in tax["families"]["intent"]["codes"]}
    assert "price_inquiry" not in intents
    assert "hydrafacial" in {c["code"] for c in tax["families"]["project"]["codes"]}
    # the other tenant keeps the bundled taxonomy
    other = client.get("/v1/taxonomy", headers=auth(keys["other_tenant_admin"])).json()
    assert "price_inquiry" in {c["code"] for c in other["families"]["intent"]["codes"]}

    pipeline = app.state.pipeline
    with session_scope(app.state.engine) as s:
        tagger = pipeline.tagger_for(s, "default")
        other_tagger = pipeline.tagger_for(s, "clinic-b")
    from tagging import TextSegment

    seg = [TextSegment(0, "我想了解一下海菲秀，再打个补水神针，多少钱？", speaker="customer")]
    got = {(t.kind, t.code) for t in tagger.tag(seg)}
    assert {("project", "hydrafacial"), ("project", "skin_booster")} <= got and ("intent", "price_inquiry") not in got
    assert ("intent", "price_inquiry") in {(t.kind, t.code) for t in other_tagger.tag(seg)}


@pytest.mark.parametrize(
    "body,message",
    [
        ({"disabled": ["project.nope"]}, "not a code of this taxonomy"),
        ({"codes": [{"kind": "project", "code": "thermage", "label": "x"}]}, "exists already"),
        ({"codes": [{"kind": "intent", "code": "x_y", "label": "x", "patterns": ["(unclosed"]}]}, "not a valid regular expression"),
        ({"codes": [{"kind": "mood", "code": "x", "label": "x"}]}, "kind"),
    ],
)
def test_bad_overrides_are_422_and_change_nothing(client, keys, body, message):
    r = client.put("/v1/taxonomy/overrides", json=body, headers=auth(keys["admin"]))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert message in r.text
    assert client.get("/v1/taxonomy/overrides", headers=auth(keys["admin"])).json()["revision"] == 0


def _recording_with_text(app, keys, client, turns):
    """A real uploaded recording whose transcript is replaced by known turns, then tagged."""
    rid = upload(client, keys["device"], DATA / "zh_thermage.wav", device_id="badge-lin").json()["id"]
    from asr import Segment

    with session_scope(app.state.engine) as s:
        rec = s.get(Recording, rid)
        crud.add_segments(s, recording=rec, segments=[
            Segment(index=i, start=2.0 * i, end=2.0 * i + 1.5, text=text, speaker=speaker)
            for i, (speaker, text) in enumerate(turns)
        ])
        s.add(Conversation(tenant_id=rec.tenant_id, recording_id=rid, idx=0, start=0.0, end=2.0 * len(turns)))
    with session_scope(app.state.engine) as s:
        segs = crud.list_segments(s, recording_id=rid)
        for g in segs:
            g.conversation_idx = 0
            s.add(g)
    app.state.pipeline.tag(rid)
    return rid


def test_compliance_flags_per_conversation_and_consultant(client, app, keys):
    rid = _recording_with_text(app, keys, client, [
        ("customer", "热玛吉会不会有副作用？"),
        ("staff", "放心，我们这个保证效果，绝对没有副作用。"),
        ("staff", "当然我们不能保证百分之百，每个人体质不一样。"),
        ("customer", "保证效果吗？"),
    ])
    r = client.get(f"/v1/recordings/{rid}/compliance", headers=auth(keys["qa"]))
    assert r.status_code == 200, r.text
    flags = r.json()["flags"]
    assert {f["code"] for f in flags} == {"guarantee_effect", "no_side_effects"}
    assert all(f["segment"] == 1 and f["conversation"] == 0 and f["match"] in f["quote"] for f in flags)
    assert client.get(f"/v1/recordings/{rid}/compliance", headers=auth(keys["crm"])).status_code == 403
    assert client.get(f"/v1/recordings/{rid}/compliance", headers=auth(keys["other_tenant_admin"])).status_code == 404

    report = client.get("/v1/reports/compliance", headers=auth(keys["admin"])).json()
    lin = next(c for c in report["consultants"] if c["device_id"] == "badge-lin")
    assert lin["flagged_conversations"] == 1 and lin["total_flags"] == 2
    assert lin["flags"] == {"guarantee_effect": 1, "no_side_effects": 1}
    later = client.get("/v1/reports/compliance", params={"since": datetime(2030, 1, 1, tzinfo=timezone.utc).isoformat()},
                       headers=auth(keys["admin"])).json()
    assert later["consultants"] == []
    # tagging again replaces, never duplicates
    app.state.pipeline.tag(rid)
    assert len(client.get(f"/v1/recordings/{rid}/compliance", headers=auth(keys["qa"])).json()["flags"]) == 2
