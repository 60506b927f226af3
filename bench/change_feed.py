"""Change-feed read benchmark: 1 million tag changes on SQLite, a real `earmark serve` subprocess
on 127.0.0.1, open-loop load at a fixed rate with httpx, then a short closed-loop run for the
ceiling. Bounded: every phase has a time limit and the server is stopped at the end.

    .venv/bin/python bench/change_feed.py                      # 1M changes, 200 req/s for 30 s
    .venv/bin/python bench/change_feed.py --changes 100000 --seconds 10 --json

Each request reads `GET /v1/changes?after=<cursor>&limit=<n>` with a cursor drawn uniformly over
the stored changes (many CRM consumers at different positions). Open-loop latency is measured from
the moment a request was due, so a slow server cannot hide queueing (no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed(data_dir: Path, n_changes: int, n_customers: int) -> tuple[str, float]:
    """Create the schema, a crm key, customers and *n_changes* change rows; return (key, seconds)."""
    from service.auth import create_key
    from service.db import init_db, make_engine, session_scope

    t0 = time.perf_counter()
    engine = make_engine(f"sqlite:///{data_dir / 'earmark.db'}")
    init_db(engine)
    with session_scope(engine) as s:
        key = create_key(s, role="crm", name="bench")
    engine.dispose()
    con = sqlite3.connect(data_dir / "earmark.db")
    con.execute("PRAGMA synchronous=OFF")
    codes = [("project", "thermage", "热玛吉"), ("project", "ha_filler", "玻尿酸"), ("concern", "acne", "痘痘"),
             ("intent", "price_inquiry", "问价"), ("intent", "booking", "预约"), ("concern", "eye_bags", "眼袋")]
    now = "2026-11-25 03:00:00.000000"
    with con:
        con.executemany(
            "INSERT INTO customer (id, tenant_id, ref, created_at, updated_at) VALUES (?, 'default', ?, ?, ?)",
            ((i, f"cust-{i:06d}", now, now) for i in range(1, n_customers + 1)),
        )
    rng = random.Random(1)
    batch = 100_000
    for start in range(0, n_changes, batch):
        rows = []
        for i in range(start, min(n_changes, start + batch)):
            cid = rng.randint(1, n_customers)
            kind, code, label = codes[i % len(codes)]
            action = ("added", "updated", "removed")[i % 3]
            rows.append(("default", cid, f"cust-{cid:06d}", action, kind, code, label, 1 + i % 4, 0.9,
                         "0123456789abcdef0123456789abcdef", "conversation", "tagging", now))
        with con:
            con.executemany(
                "INSERT INTO tag_change (tenant_id, customer_id, customer_ref, action, kind, code, label, count, "
                "confidence, recording_id, source, reason, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
    plan = con.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM tag_change WHERE tenant_id='default' AND seq > 5 ORDER BY seq LIMIT 100"
    ).fetchall()
    con.close()
    print(f"query plan: {[p[-1] for p in plan]}", file=sys.stderr)
    return key, time.perf_counter() - t0


def start_server(data_dir: Path, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "EARMARK_DATA_DIR": str(data_dir),
        "EARMARK_MODEL_CACHE_DIR": os.environ.get(
            "EARMARK_MODEL_CACHE_DIR", str(Path(tempfile.gettempdir()) / "earmark-test-models")
        ),
        "EARMARK_WORKERS": "0",
        "EARMARK_DIARIZE": "0",
    }
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], cwd=REPO, env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("server did not start in 180 s")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


async def open_loop(url: str, key: str, *, rate: float, seconds: float, limit: int, top: int) -> dict:
    """Send `rate` requests per second for `seconds`, whatever the answers' pace."""
    rng = random.Random(2)
    lat: list[float] = []
    rows = errors = 0
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)  # a bounded pool, like a real client
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        n = int(rate * seconds)

        async def one(due: float, after: int) -> None:
            nonlocal rows, errors
            try:
                r = await client.get("/v1/changes", params={"after": after, "limit": limit})
                if r.status_code != 200:
                    errors += 1
                    return
                rows += len(r.json()["data"])
            except httpx.HTTPError:
                errors += 1
                return
            lat.append(time.perf_counter() - due)

        tasks = []
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, rng.randint(0, max(0, top - limit)))))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return {
        "mode": "open-loop", "target_rps": rate, "requests": n, "errors": errors, "wall_s": round(wall, 2),
        "achieved_rps": round(len(lat) / wall, 1), "changes_per_s": round(rows / wall),
        "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
    }


def open_loop_threads(url: str, key: str, *, rate: float, seconds: float, limit: int, top: int,
                      threads: int = 32) -> dict:
    """The same open loop with blocking httpx clients on a thread pool (cheaper per request than
    the async client on a small machine). A request waits for a free thread when all are busy; its
    latency still counts from when it was due."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(2)
    lat: list[float] = []
    counters = {"rows": 0, "errors": 0}
    local = threading.local()
    lock = threading.Lock()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        return local.c

    def one(due: float, after: int) -> None:
        try:
            r = client().get("/v1/changes", params={"after": after, "limit": limit})
            ok = r.status_code == 200
            n = len(r.json()["data"]) if ok else 0
        except httpx.HTTPError:
            ok, n = False, 0
        done = time.perf_counter()
        with lock:
            if ok:
                lat.append(done - due)
                counters["rows"] += n
            else:
                counters["errors"] += 1

    n = int(rate * seconds)
    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, due, rng.randint(0, max(0, top - limit)))
    wall = time.perf_counter() - t0
    return {
        "mode": "open-loop (threads)", "target_rps": rate, "requests": n, "errors": counters["errors"],
        "wall_s": round(wall, 2), "achieved_rps": round(len(lat) / wall, 1),
        "changes_per_s": round(counters["rows"] / wall),
        "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
    }


async def closed_loop(url: str, key: str, *, concurrency: int, seconds: float, limit: int, top: int) -> dict:
    """`concurrency` clients back to back for `seconds`: the ceiling on this machine."""
    rng = random.Random(3)
    lat: list[float] = []
    rows = 0
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker() -> None:
            nonlocal rows
            while time.perf_counter() < end:
                s = time.perf_counter()
                r = await client.get("/v1/changes", params={"after": rng.randint(0, max(0, top - limit)), "limit": limit})
                rows += len(r.json()["data"])
                lat.append(time.perf_counter() - s)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"mode": "closed-loop", "concurrency": concurrency, "requests": len(lat), "wall_s": round(wall, 2),
            "rps": round(len(lat) / wall, 1), "changes_per_s": round(rows / wall),
            "p50_ms": round(pct(lat, 50) * 1000, 2), "p99_ms": round(pct(lat, 99) * 1000, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=1_000_000)
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop requests per second")
    ap.add_argument("--seconds", type=float, default=30.0, help="open-loop duration")
    ap.add_argument("--limit", type=int, default=100, help="changes per request")
    ap.add_argument("--ceiling-seconds", type=float, default=10.0, help="closed-loop duration (0: skip)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--client", choices=("threads", "async"), default="threads",
                    help="open-loop client: blocking httpx on threads, or httpx.AsyncClient")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="earmark-bench-feed-"))
    data = work / "data"
    data.mkdir()
    proc = None
    try:
        key, seed_s = seed(data, args.changes, args.customers)
        db_mb = sum(p.stat().st_size for p in data.glob("earmark.db*")) / 2**20
        port = free_port()
        proc = start_server(data, port, work / "server.log")
        url = f"http://127.0.0.1:{port}"
        # warm up: the OS page cache (a serving box keeps its database cached), connections, the key
        for f in data.glob("earmark.db*"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
        run = (lambda **kw: open_loop_threads(url, key, **kw)) if args.client == "threads" else (
            lambda **kw: asyncio.run(open_loop(url, key, **kw)))
        run(rate=args.rate, seconds=5, limit=args.limit, top=args.changes)
        result = {
            "changes_stored": args.changes, "db_mb": round(db_mb), "seed_s": round(seed_s, 1),
            "load_average_before": os.getloadavg()[0],
            "open_loop": run(rate=args.rate, seconds=args.seconds, limit=args.limit, top=args.changes),
        }
        if args.ceiling_seconds > 0:
            result["ceiling"] = asyncio.run(closed_loop(url, key, concurrency=args.concurrency,
                                                        seconds=args.ceiling_seconds, limit=args.limit,
                                                        top=args.changes))
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    o = result["open_loop"]
    print(f"{result['changes_stored']:,} changes stored ({result['db_mb']} MB, seeded in {result['seed_s']} s); "
          f"1-minute load average before the run {result['load_average_before']:.1f} on {os.cpu_count()} CPUs")
    print(f"{o['mode']} at {o['target_rps']:.0f} req/s for {o['wall_s']} s, limit={args.limit}: "
          f"{o['achieved_rps']} req/s answered, {o['changes_per_s']:,} changes/s, "
          f"p50 {o['p50_ms']} ms, p99 {o['p99_ms']} ms, max {o['max_ms']} ms, errors {o['errors']}")
    if "ceiling" in result:
        c = result["ceiling"]
        print(f"ceiling ({c['concurrency']} clients back to back, {c['wall_s']} s): {c['rps']} req/s, "
              f"{c['changes_per_s']:,} changes/s, p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms")


if __name__ == "__main__":
    main()
