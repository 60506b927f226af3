from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import ROLES, create_key
from service.db import session_scope
from service.settings import Settings
from tests.conftest import DATA
from tests.service.receiver import Receiver


@pytest.fixture
def settings(tmp_path, model_cache) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_cache_dir=model_cache, tagger_dir=tmp_path / "tagger", workers=0)


@pytest.fixture
def app(settings, transcriber, diarizer):
    application = create_app(settings, start_worker=False)
    application.state.pipeline._transcriber = transcriber  # one loaded model for the whole session
    application.state.pipeline._diarizer = diarizer
    return application


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


@pytest.fixture
def keys(app) -> dict[str, str]:
    with session_scope(app.state.engine) as s:
        out = {role: create_key(s, role=role) for role in ROLES}
        out["other_tenant_admin"] = create_key(s, role="admin", tenant_id="clinic-b")
        out["other_tenant_device"] = create_key(s, role="device", tenant_id="clinic-b")
    return out


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client, key, path: Path = DATA / "zh_dialogue.wav", **fields):
    data = {"device_id": "badge-007", "recorded_at": "2026-11-20T10:00:00+08:00", "source": "badge"}
    data.update({k: v for k, v in fields.items() if v is not None})
    with open(path, "rb") as f:
        return client.post("/v1/recordings", headers=auth(key), files={"file": (path.name, f, "audio/wav")}, data=data)


@pytest.fixture
def receivers():
    """Webhook receivers on loopback (tests/service/receiver.py), stopped after the test."""
    made: list[Receiver] = []

    def make(**kw) -> Receiver:
        r = Receiver(**kw).start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()

