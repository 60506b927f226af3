"""The real server as a subprocess: first-run admin key, restart with a queued job, SIGKILL mid-job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import DATA, REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, model_cache: Path, log: Path):
        self.data_dir, self.model_cache, self.log = data_dir, model_cache, log
        self.proc: subprocess.Popen | None = None
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, workers: int) -> None:
        env = {
            **os.environ,
            "EARMARK_DATA_DIR": str(self.data_dir),
            "EARMARK_MODEL_CACHE_DIR": str(self.model_cache),
            "EARMARK_WORKERS": str(workers),
            "EARMARK_ASR_CPU_THREADS": "2",
            "EARMARK_DIARIZE": "0",  # restarts are the point here; speakers are tested elsewhere
            "PYTHONUNBUFFERED": "1",
        }
        out = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wait_for(self, key: str, rid: str, statuses: set[str], timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.url}/v1/recordings/{rid}", headers={"Authorization": f"Bearer {key}"}).json()
            if body["status"] in statuses:
                return body
            time.sleep(0.2)
        raise AssertionError(f"recording stayed {body['status']}")


@pytest.fixture
def server(tmp_path, model_cache):
    srv = Server(tmp_path / "data", model_cache, tmp_path / "server.log")
    yield srv
    srv.kill()


def post(srv: Server, key: str, path: Path, **fields):
    data = {"device_id": "badge-1", "recorded_at": "2026-11-21T09:30:00+08:00", **fields}
    with open(path, "rb") as f:
        return httpx.post(f"{srv.url}/v1/recordings", headers={"Authorization": f"Bearer {key}"},
                          files={"file": (path.name, f, "audio/wav")}, data=data, timeout=30)


def test_restart_resumes_queued_and_interrupted_jobs(server):
    server.start(workers=0)
    key_file = server.data_dir / "initial-admin-key"
    key = key_file.read_text().strip()
    assert key.startswith("em_") and oct(key_file.stat().st_mode)[-3:] == "600"
    assert key in server.log.read_text()  # printed once …
    r = post(server, key, DATA / "zh_thermage.wav", customer_ref="c-restart", client_ref="r1")
    assert r.status_code == 202
    queued = r.json()["id"]
    server.kill()  # no worker ran: the job waits in the database

    server.start(workers=1)
    assert server.log.read_text().count(key) == 1  # … and not again on restart
    assert server.wait_for(key, queued, {"done", "failed"})["status"] == "done"
    # a re-sent upload after the restart is still recognised
    assert post(server, key, DATA / "zh_thermage.wav", client_ref="r1").json()["id"] == queued

    long_id = post(server, key, DATA / "zh_60s.wav", customer_ref="c-restart").json()["id"]
    server.wait_for(key, long_id, {"processing"}, timeout=30)
    server.kill()  # SIGKILL in the middle of transcription

    server.start(workers=1)
    final = server.wait_for(key, long_id, {"done", "failed"})
    assert final["status"] == "done", final
    h = {"Authorization": f"Bearer {key}"}
    tr = httpx.get(f"{server.url}/v1/recordings/{long_id}/transcript", headers=h).json()
    starts = [s["start"] for s in tr["segments"]]
    assert starts == sorted(starts) and len(set(s["index"] for s in tr["segments"])) == len(starts)
    codes = {t["code"] for t in tr["tags"]}
    assert {"picosecond", "booking"} & codes, codes
    profile = httpx.get(f"{server.url}/v1/customers/c-restart", headers=h).json()
    assert {"thermage"} <= {t["code"] for t in profile["tags"]}
    docs = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/recordings" in docs["paths"] and httpx.get(f"{server.url}/docs").status_code == 200
