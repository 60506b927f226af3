"""A fake WeCom (企业微信) API on 127.0.0.1 speaking the documented request/response shapes of
``gettoken``, ``externalcontact/get_corp_tag_list``, ``add_corp_tag`` and ``mark_tag``.

Faults on demand: ``expire_tokens()`` makes every issued token answer 42001; ``fail_next``
queues errcodes (e.g. 45009, the frequency limit) for the next API calls."""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeWecom:
    def __init__(self, corp_id: str = "ww-test", secret: str = "s3cret"):
        self.corp_id, self.secret = corp_id, secret
        self.tokens: set[str] = set()
        self.calls: Counter[str] = Counter()
        self.fail_next: list[int] = []
        self.groups: dict[str, dict] = {}  # group_id → {"group_name", "tag": {tag_id: name}}
        self.contacts: dict[tuple[str, str], set[str]] = {}  # (userid, external_userid) → tag ids
        self.mark_log: list[dict] = []
        self._n = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, body: dict) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json; charset=utf-8")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if u.path != "/cgi-bin/gettoken":
                    return self._reply({"errcode": 404, "errmsg": "not found"})
                fake.calls["gettoken"] += 1
                if (q.get("corpid"), q.get("corpsecret")) != (fake.corp_id, fake.secret):
                    return self._reply({"errcode": 40001, "errmsg": "invalid credential"})
                token = fake._next("tok")
                fake.tokens.add(token)
                self._reply({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200})

            def do_POST(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                api = u.path.removeprefix("/cgi-bin/")
                fake.calls[api] += 1
                token = q.get("access_token")
                if not token:
                    return self._reply({"errcode": 41001, "errmsg": "access_token missing"})
                if token not in fake.tokens:
                    return self._reply({"errcode": 42001, "errmsg": "access_token expired"})
                with fake._lock:
                    if fake.fail_next:
                        code = fake.fail_next.pop(0)
                        return self._reply({"errcode": code, "errmsg": "injected"})
                    handler = {"externalcontact/get_corp_tag_list": fake._list,
                               "externalcontact/add_corp_tag": fake._add,
                               "externalcontact/mark_tag": fake._mark}.get(api)
                    self._reply(handler(body) if handler else {"errcode": 404, "errmsg": "unknown api"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def _next(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def tag_names(self, userid: str, external_userid: str) -> set[str]:
        names = {tid: name for g in self.groups.values() for tid, name in g["tag"].items()}
        return {names[t] for t in self.contacts.get((userid, external_userid), set())}

    # -- the documented APIs -------------------------------------------------------------------
    def _list(self, body: dict) -> dict:
        return {"errcode": 0, "errmsg": "ok", "tag_group": [
            {"group_id": gid, "group_name": g["group_name"], "create_time": 1700000000, "order": 0, "deleted": False,
             "tag": [{"id": tid, "name": name, "create_time": 1700000000, "order": 0, "deleted": False}
                     for tid, name in g["tag"].items()]}
            for gid, g in self.groups.items()
        ]}

    def _add(self, body: dict) -> dict:
        gid = body.get("group_id")
        if gid:
            if gid not in self.groups:
                return {"errcode": 40071, "errmsg": "invalid group id"}
        else:
            if not body.get("group_name"):
                return {"errcode": 40058, "errmsg": "group_name missing"}
            gid = self._next("et-group-")
            self.groups[gid] = {"group_name": body["group_name"], "tag": {}}
        g = self.groups[gid]
        created = []
        for t in body.get("tag", []):
            if t["name"] in g["tag"].values():
                return {"errcode": 40071, "errmsg": "tag name exists"}
            tid = self._next("et-tag-")
            g["tag"][tid] = t["name"]
            created.append({"id": tid, "name": t["name"], "create_time": 1700000000, "order": 0})
        return {"errcode": 0, "errmsg": "ok", "tag_group": {
            "group_id": gid, "group_name": g["group_name"], "create_time": 1700000000, "order": 0, "tag": created}}

    def _mark(self, body: dict) -> dict:
        key = (body.get("userid"), body.get("external_userid"))
        if key not in self.contacts:
            return {"errcode": 84061, "errmsg": "not external contact"}
        if not body.get("add_tag") and not body.get("remove_tag"):
            return {"errcode": 40058, "errmsg": "add_tag and remove_tag both empty"}
        known = {tid for g in self.groups.values() for tid in g["tag"]}
        if not set(body.get("add_tag", [])) | set(body.get("remove_tag", [])) <= known:
            return {"errcode": 40068, "errmsg": "invalid tagid"}
        self.contacts[key] |= set(body.get("add_tag", []))
        self.contacts[key] -= set(body.get("remove_tag", []))
        self.mark_log.append(body)
        return {"errcode": 0, "errmsg": "ok"}
