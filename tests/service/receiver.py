"""A webhook receiver for the tests: a real HTTP server on 127.0.0.1 (a fake of a CRM endpoint).

It records every request (webhook-id, headers, body, time), verifies Standard Webhooks signatures
when given the secret, and answers what ``respond`` says (status, headers, delay)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass
class Received:
    msg_id: str
    headers: dict[str, str]
    body: str
    at: float
    verified: bool | None = None

    @property
    def data(self) -> dict:
        return json.loads(self.body)["data"]


@dataclass
class Receiver:
    port: int = 0
    secret: str | None = None
    respond: Callable[[Received], tuple[int, dict, float]] = lambda r: (200, {}, 0.0)
    requests: list[Received] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)  # ids answered 2xx, in order, duplicates kept

    def __post_init__(self):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                got = Received(headers.get("webhook-id", ""), headers, body, time.monotonic())
                if receiver.secret:
                    try:
                        Webhook(receiver.secret).verify(body, headers)
                        got.verified = True
                    except Exception:
                        got.verified = False
                receiver.requests.append(got)
                code, extra, delay = receiver.respond(got)
                if delay:
                    time.sleep(delay)
                self.send_response(code)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                try:
                    self.wfile.write(b"ok")
                except OSError:
                    return
                if 200 <= code < 300:
                    receiver.acked.append(got.msg_id)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_acked(self, n: int, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(set(self.acked)) >= n:
                return self.acked
            time.sleep(0.05)
        raise AssertionError(f"{len(set(self.acked))} of {n} events acknowledged: {self.acked}")
