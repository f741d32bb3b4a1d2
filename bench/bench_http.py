"""Events accepted over HTTP by one ``leadflow serve`` process, against a bare ASGI handler.

Measured, on loopback only:

1. Batches: ``POST /v1/batch`` with 100 track events each (about 28 KB, like a Segment SDK's
   batch), several keep-alive connections at once, as fast as the server answers. Reported:
   events accepted per second (a 200 means the batch is durable in the store's inbox) and,
   separately, how long the server took to apply them all through ``Runner.ingest`` (dedupe,
   events stored, workflows run) after the first was accepted.
2. Single calls: ``POST /v1/track`` one at a time on one connection; p50 and p99 latency.

Baseline, in the same run: a bare ASGI app (it reads the body and answers
``{"success": true}``) under the same uvicorn settings and the same load. The ratio is its
rate divided by Leadflow's (and Leadflow's latency divided by its).

Goal (issue 7): at least 10,000 events/s accepted in batches, p99 of a single track under
20 ms.

    python bench/bench_http.py            # 100,000 events, about two minutes (mostly applying)
    python bench/bench_http.py --quick    # 20,000 events, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson
from machine import machine_line

ROOT = Path(__file__).resolve().parent.parent
BATCH = 100
CONNECTIONS = 4
TRACK_CALLS = 2000
GOAL_RATE = 10_000
GOAL_P99_MS = 20.0

BARE_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"16")]})
    await send({"type": "http.response.body", "body": b'{"success":true}'})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""

SERVE = """
import sys
from engine.cli import run
port, url, *extra = sys.argv[1:]
sys.argv = ["leadflow", "serve", "--host", "127.0.0.1", "--port", port, "--db", url, *extra]
run()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def request_bytes(path: str, body: bytes, key: str) -> bytes:
    auth = base64.b64encode(f"{key}:".encode()).decode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def blast(port: int, requests: list[bytes], connections: int) -> float:
    """Send every request over ``connections`` keep-alive connections; seconds taken."""
    queue = list(reversed(requests))
    failures: list[int] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                writer.write(queue.pop())
                status = await read_response(reader)
                if status != 200:
                    failures.append(status)
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    return elapsed


async def latencies(port: int, requests: list[bytes]) -> list[float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    found = []
    try:
        for data in requests:
            started = time.perf_counter()
            writer.write(data)
            status = await read_response(reader)
            found.append(time.perf_counter() - started)
            if status != 200:
                raise SystemExit(f"track call failed with HTTP {status}")
    finally:
        writer.close()
        await writer.wait_closed()
    return found


def make_batches(count: int, key: str, prefix: str) -> list[bytes]:
    requests = []
    for start in range(0, count, BATCH):
        batch = [
            {
                "type": "track",
                "userId": f"c{(n * 7919) % 5000:05d}@bench.test",
                "event": "Page Viewed" if n % 3 else "Email Clicked",
                "properties": {"url": f"/docs/page-{n % 50}", "referrer": "https://example.test/"},
                "context": {"library": {"name": "bench", "version": "1"}, "ip": "127.0.0.1"},
                "timestamp": "2026-01-05T10:00:00Z",
                "messageId": f"{prefix}-{n:08d}",
            }
            for n in range(start, min(start + BATCH, count))
        ]
        requests.append(request_bytes("/v1/batch", orjson.dumps({"batch": batch}), key))
    return requests


def make_tracks(count: int, key: str, prefix: str) -> list[bytes]:
    return [
        request_bytes(
            "/v1/track",
            orjson.dumps(
                {
                    "userId": f"t{n % 500:04d}@bench.test",
                    "event": "Page Viewed",
                    "properties": {"url": "/pricing"},
                    "messageId": f"{prefix}-{n:06d}",
                }
            ),
            key,
        )
        for n in range(count)
    ]


def pending(port: int, admin: str) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/inbox", headers={"api-key": admin}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(json.load(response)["messages"])


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


RUN_CLI = "import sys; from engine.cli import run; sys.argv[0] = 'leadflow'; run()"


def cli(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return out.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events, 500 track calls")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument(
        "--db", default=None, help="an empty store to use (default: a new SQLite file)"
    )
    args = parser.parse_args()
    print(machine_line(), flush=True)
    events = args.events or (20_000 if args.quick else 100_000)
    tracks = 500 if args.quick else TRACK_CALLS
    folder = tempfile.mkdtemp(prefix="bench-http-")
    url = args.db or f"sqlite:///{folder}/leadflow.db"
    cli("db", "upgrade", "--db", url)
    cli("deploy", str(ROOT / "workflows"), "--db", url)
    ingest = cli("keys", "create", "--scope", "ingest", "--db", url).strip().splitlines()[-1]
    admin = cli("keys", "create", "--scope", "admin", "--db", url).strip().splitlines()[-1]
    print(
        f"inputs: {events:,} track events in batches of {BATCH} over {CONNECTIONS} "
        f"connections; {tracks:,} single track calls; {url.split(':')[0]} store, "
        "shipped workflows deployed"
    )

    results: dict[str, dict[str, float]] = {}
    for name in ("bare", "leadflow"):
        port = free_port()
        script = BARE_APP if name == "bare" else SERVE
        argv = [sys.executable, "-c", script, str(port)] + ([] if name == "bare" else [url])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(argv, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_ready(port, server)
            warm = make_tracks(50, ingest, f"{name}-warm")
            asyncio.run(latencies(port, warm))
            batches = make_batches(events, ingest, f"{name}-b")
            seconds = asyncio.run(blast(port, batches, CONNECTIONS))
            accepted_at = time.perf_counter()
            applied = 0.0
            if name == "leadflow":
                while pending(port, admin):
                    time.sleep(0.05)
                applied = seconds + time.perf_counter() - accepted_at
            timings = asyncio.run(latencies(port, make_tracks(tracks, ingest, f"{name}-t")))
            results[name] = {
                "rate": events / seconds,
                "applied": events / applied if applied else 0.0,
                "p50": p(timings, 0.5) * 1000,
                "p99": p(timings, 0.99) * 1000,
                "mean": statistics.fmean(timings) * 1000,
            }
        finally:
            server.terminate()
            server.wait(30)

    # what the store holds: every batch event once
    from sqlalchemy import func, select

    from engine.store.db import open_engine
    from engine.store.tables import events as events_table

    engine = open_engine(url)
    with engine.connect() as connection:
        stored = connection.scalar(
            select(func.count())
            .select_from(events_table)
            .where(events_table.c.message_id.like("leadflow-b-%"))
        )
    engine.dispose()
    if stored != events:
        print(f"check failed: {stored:,} batch events stored, expected {events:,}")
        return 1
    lf, bare = results["leadflow"], results["bare"]
    print(f"check: all {events:,} batch events stored once")
    print(
        f"leadflow: {lf['rate']:,.0f} events/s accepted; all applied (Runner.ingest, "
        f"workflows run) at {lf['applied']:,.0f} events/s"
    )
    print(f"bare ASGI: {bare['rate']:,.0f} events/s")
    print(f"ratio: the bare handler is {bare['rate'] / lf['rate']:.2f}x Leadflow's rate")
    print(
        f"single /v1/track: leadflow p50 {lf['p50']:.2f} ms, p99 {lf['p99']:.2f} ms; "
        f"bare p50 {bare['p50']:.2f} ms, p99 {bare['p99']:.2f} ms "
        f"(p99 ratio {lf['p99'] / bare['p99']:.1f}x)"
    )
    met = lf["rate"] >= GOAL_RATE and lf["p99"] < GOAL_P99_MS
    print(
        f"goal (>= {GOAL_RATE:,} events/s accepted, p99 < {GOAL_P99_MS:g} ms): "
        f"{'met' if met else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
