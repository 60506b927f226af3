"""The WeCom connector against a fake WeCom API on 127.0.0.1 (documented shapes): corp tags found
or created per family, mark_tag per contact, token cache and refresh, rate-limit back-off, a
durable cursor, contacts that WeCom does not know."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.app import create_app
from service.auth import ROLES, create_key
from service.crm_models import WecomConfig
from service.db import session_scope
from service.settings import Settings
from tests.service.conftest import auth
from tests.service.crm_utils import seed_recording
from tests.service.fake_wecom import FakeWecom

THERMAGE = [("customer", "我想了解一下热玛吉，多少钱？")]
CONTACT = {"userid": "zhangsan", "external_userid": "wmEXT001"}


@pytest.fixture
def wecom():
    fake = FakeWecom()
    fake.contacts[("zhangsan", "wmEXT001")] = set()
    yield fake
    fake.stop()


def build(tmp_path, start_worker: bool, backoff_s: float = 0.2):
    settings = Settings(data_dir=tmp_path / "data", workers=0, webhook_backoff_base_s=backoff_s, webhook_poll_s=0.1)
    app = create_app(settings, start_worker=start_worker)
    with session_scope(app.state.engine) as s:
        keys = {role: create_key(s, role=role) for role in ROLES}
        keys["other"] = create_key(s, role="admin", tenant_id="clinic-b")
    return app, keys


def configure(client, keys, fake) -> dict:
    r = client.put("/v1/integrations/wecom", json={"corp_id": fake.corp_id, "secret": fake.secret, "base_url": fake.url},
                   headers=auth(keys["admin"]))
    assert r.status_code == 200, r.text
    return r.json()


def config(app) -> WecomConfig:
    with Session(app.state.engine) as s:
        return s.get(WecomConfig, "default")


def test_profile_changes_reach_wecom_through_the_worker(tmp_path, wecom):
    app, keys = build(tmp_path, start_worker=True)
    with TestClient(app) as client:
        out = configure(client, keys, wecom)
        assert out["secret"] != wecom.secret and out["cursor"] == 0
        assert client.put("/v1/customers/c-w/wecom", json=CONTACT, headers=auth(keys["crm"])).status_code == 200
        rid = seed_recording(app, [THERMAGE], customer_ref="c-w")
        app.state.worker.notify_deliveries()
        deadline = time.monotonic() + 15
        while wecom.tag_names(**CONTACT) != {"热玛吉", "问价"} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wecom.tag_names(**CONTACT) == {"热玛吉", "问价"}
        groups = {g["group_name"]: set(g["tag"].values()) for g in wecom.groups.values()}
        assert groups == {"Earmark·项目": {"热玛吉"}, "Earmark·意向": {"问价"}}

        # a QA rejection takes the tag off the contact
        r = client.post(f"/v1/recordings/{rid}/conversations/0/reviews",
                        json={"action": "reject", "kind": "project", "code": "thermage"}, headers=auth(keys["qa"]))
        assert r.status_code == 201
        deadline = time.monotonic() + 15
        while "热玛吉" in wecom.tag_names(**CONTACT) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wecom.tag_names(**CONTACT) == {"问价"}
        state = client.get("/v1/integrations/wecom", headers=auth(keys["admin"])).json()
        last = client.get("/v1/changes", params={"limit": 1000}, headers=auth(keys["crm"])).json()["next"]
        assert state["cursor"] == last and state["tags_mapped"] == 2 and state["last_error"] is None
        assert wecom.calls["gettoken"] == 1  # the token is cached between rounds
        profile = client.get("/v1/customers/c-w", headers=auth(keys["crm"])).json()
        assert profile["wecom"] == CONTACT


def test_token_refresh_rate_limits_and_the_cursor(tmp_path, wecom):
    app, keys = build(tmp_path, start_worker=False, backoff_s=1.5)
    sync = app.state.worker.wecom
    with TestClient(app) as client:
        configure(client, keys, wecom)
        client.put("/v1/customers/c-t/wecom", json=CONTACT, headers=auth(keys["crm"]))
        tag = lambda code: client.post("/v1/customers/c-t/tags", json={"kind": "project", "code": code},  # noqa: E731
                                       headers=auth(keys["crm"]))
        tag("botulinum")
        assert sync.run_tenant("default") == 2  # the new contact's profile, then the one change
        assert wecom.tag_names(**CONTACT) == {"肉毒素"}

        wecom.expire_tokens()  # WeCom answers 42001: fetch a new token and go on
        tag("thermage")
        assert sync.run_tenant("default") == 1
        assert wecom.tag_names(**CONTACT) == {"肉毒素", "热玛吉"} and wecom.calls["gettoken"] == 2

        wecom.fail_next = [45009]  # frequency limit: back off, keep the cursor
        tag("ipl")
        before = config(app).cursor
        assert sync.run_tenant("default") == 0
        cfg = config(app)
        assert cfg.cursor == before and "45009" in cfg.last_error and cfg.next_run_at is not None
        assert sync.run_tenant("default") == 0  # still backing off (1.5 s)
        time.sleep(1.6)
        assert sync.run_tenant("default") == 1
        assert wecom.tag_names(**CONTACT) == {"肉毒素", "热玛吉", "光子嫩肤"}

        # a restart (a new app on the same data) goes on from the stored cursor and token
        app2 = create_app(app.state.settings, start_worker=False)
        client.delete("/v1/customers/c-t/tags/project/botulinum", headers=auth(keys["crm"]))
        assert app2.state.worker.wecom.run_tenant("default") == 1
        assert wecom.tag_names(**CONTACT) == {"热玛吉", "光子嫩肤"} and wecom.calls["gettoken"] == 2
        assert app2.state.worker.wecom.run_tenant("default") == 0


def test_existing_corp_tags_are_reused_and_unknown_contacts_skipped(tmp_path, wecom):
    wecom.groups["pre-group"] = {"group_name": "Earmark·项目", "tag": {"pre-thermage": "热玛吉"}}
    app, keys = build(tmp_path, start_worker=False)
    sync = app.state.worker.wecom
    with TestClient(app) as client:
        configure(client, keys, wecom)
        h = auth(keys["crm"])
        client.put("/v1/customers/c-1/wecom", json=CONTACT, headers=h)
        client.put("/v1/customers/c-2/wecom", json={"userid": "lisi", "external_userid": "wmGONE"}, headers=h)
        client.post("/v1/customers/c-3/tags", json={"kind": "project", "code": "ipl"}, headers=h)  # no contact
        for ref in ("c-1", "c-2"):
            client.post(f"/v1/customers/{ref}/tags", json={"kind": "project", "code": "thermage"}, headers=h)
        while sync.run_tenant("default"):
            pass
        assert wecom.contacts[("zhangsan", "wmEXT001")] == {"pre-thermage"}
        assert wecom.calls["externalcontact/add_corp_tag"] == 0  # found by group and name
        cfg = config(app)
        assert cfg.skipped == 2 and "84061" in cfg.last_error  # c-3 has no contact; WeCom does not know wmGONE
        last = client.get("/v1/changes", params={"limit": 1000}, headers=h).json()["next"]
        assert cfg.cursor == last

        # the contact arrives later: her whole current profile is marked
        client.put("/v1/customers/c-3/wecom", json={"userid": "wangwu", "external_userid": "wmEXT003"}, headers=h)
        wecom.contacts[("wangwu", "wmEXT003")] = set()
        assert sync.run_tenant("default") == 1
        assert wecom.tag_names("wangwu", "wmEXT003") == {"光子嫩肤"}


def test_wecom_configuration_is_admin_only_and_per_tenant(tmp_path, wecom):
    app, keys = build(tmp_path, start_worker=False)
    with TestClient(app) as client:
        body = {"corp_id": "ww", "secret": "x" * 10, "base_url": wecom.url}
        for role in ("crm", "qa", "device"):
            assert client.put("/v1/integrations/wecom", json=body, headers=auth(keys[role])).status_code == 403
        assert client.get("/v1/integrations/wecom", headers=auth(keys["admin"])).status_code == 404
        assert client.put("/v1/integrations/wecom", json={**body, "base_url": "file:///etc"},
                          headers=auth(keys["admin"])).status_code == 422
        assert client.put("/v1/integrations/wecom", json=body, headers=auth(keys["admin"])).status_code == 200
        assert client.get("/v1/integrations/wecom", headers=auth(keys["other"])).status_code == 404
        assert client.put("/v1/customers/c/wecom", json=CONTACT, headers=auth(keys["qa"])).status_code == 403


def test_a_new_contact_without_tags_sends_nothing(tmp_path, wecom):
    """WeCom refuses a mark_tag with nothing to add or remove (errcode 40058): a contact linked
    before her first tagged conversation must not make the connector fail."""
    app, keys = build(tmp_path, start_worker=False)
    sync = app.state.worker.wecom
    with TestClient(app) as client:
        configure(client, keys, wecom)
        assert client.put("/v1/customers/c-empty/wecom", json=CONTACT, headers=auth(keys["crm"])).status_code == 200
        sync.run_tenant("default")
        assert wecom.calls["externalcontact/mark_tag"] == 0
        state = client.get("/v1/integrations/wecom", headers=auth(keys["admin"])).json()
        assert state["last_error"] is None
