"""Roles are enforced and tenants are isolated: wrong role 403, another tenant's data reads as 404."""

import pytest

from tests.service.conftest import auth, upload

ROUTES = [  # (method, path template, roles allowed)
    ("GET", "/v1/recordings/{rid}", {"device", "crm", "qa", "admin"}),
    ("GET", "/v1/recordings/{rid}/transcript", {"qa", "admin"}),
    ("GET", "/v1/customers/cust-auth", {"crm", "qa", "admin"}),
    ("GET", "/v1/changes", {"crm", "admin"}),
    ("GET", "/v1/customers", {"crm", "qa", "admin"}),
    ("GET", "/v1/webhooks", {"crm", "admin"}),
    ("GET", "/v1/recordings/{rid}/conversations/0/reviews", {"qa", "admin"}),
]


@pytest.fixture
def rid(client, app, keys):
    rid = upload(client, keys["device"], customer_ref="cust-auth").json()["id"]
    app.state.worker.drain()
    return rid


@pytest.mark.parametrize("role", ["device", "crm", "qa", "admin"])
def test_read_matrix(client, keys, rid, role):
    for method, path, allowed in ROUTES:
        r = client.request(method, path.format(rid=rid), headers=auth(keys[role]))
        expected = 200 if role in allowed else 403
        assert r.status_code == expected, (role, path, r.text)
        if expected == 403:
            assert r.json()["type"] == "/problems/forbidden"


@pytest.mark.parametrize("role", ["crm", "qa"])
def test_only_device_and_admin_upload(client, keys, role):
    assert upload(client, keys[role]).status_code == 403


def test_other_tenant_sees_nothing(client, keys, rid):
    for path in (f"/v1/recordings/{rid}", f"/v1/recordings/{rid}/transcript", "/v1/customers/cust-auth"):
        assert client.get(path, headers=auth(keys["other_tenant_admin"])).status_code == 404
    feed = client.get("/v1/changes", headers=auth(keys["other_tenant_admin"])).json()
    assert feed["data"] == []


def test_client_ref_is_per_tenant(client, keys):
    a = upload(client, keys["device"], client_ref="same")
    b = upload(client, keys["other_tenant_device"], client_ref="same")
    assert a.status_code == b.status_code == 202 and a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    "header", [None, "Basic abc", "Bearer", "Bearer em_nope_nope", "Bearer garbage"]
)
def test_missing_or_bad_keys_are_401(client, header):
    headers = {"Authorization": header} if header else {}
    r = client.get("/v1/changes", headers=headers)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")


def test_a_key_with_the_wrong_secret_is_refused(client, keys):
    prefix = keys["admin"].rsplit("_", 1)[0]
    assert client.get("/v1/changes", headers=auth(prefix + "_wrongsecret")).status_code == 401


def test_keys_are_stored_hashed(app, keys):
    from sqlmodel import Session, select

    from service.models import ApiKey

    with Session(app.state.engine) as s:
        stored = [k.secret_hash for k in s.exec(select(ApiKey))]
    for key in keys.values():
        assert not any(key.split("_", 2)[2] in h for h in stored)
