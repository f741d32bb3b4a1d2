"""Outbox deliveries per second to a local SMTP server, against bare smtplib.

Set-up (not timed): a store (SQLite in a temporary folder, or ``--db URL``), a workflow that
sends the shipped ``welcome-a`` email on an event, and that event for N contacts, so the
outbox holds N rendered emails. An aiosmtpd server runs in a child process (so it does not
share the GIL with the code being measured) and counts what it accepts.

Measured: ``Deliverer.deliver()`` until the outbox is empty: claim batches of
``delivery.batch`` rows (consent rules, leases, an attempt row each), build each email,
send it over one reused SMTP connection, record each outcome in its own transaction.

Baseline, in the same run: the same N messages (the very bytes the deliverer sends, built
before timing) sent with ``smtplib.SMTP.sendmail`` over one connection, nothing recorded.
It is the floor of any SMTP sender. The ratio is outbox time divided by baseline time.

    python bench/bench_delivery.py            # 2,000 emails, about 10 s
    python bench/bench_delivery.py --quick    # 300 emails, a few seconds
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.utils import parseaddr
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from machine import machine_line
from sqlalchemy import Engine, func, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.messaging.delivery import Deliverer
from engine.messaging.providers import Outgoing, email_bytes
from engine.messaging.settings import MessagingSettings, set_setting
from engine.store.db import open_engine, writer
from engine.store.tables import delivery_attempts, outbox

START = datetime(2026, 1, 5, 10, tzinfo=UTC)
SENDER = "news@bench.test"
WORKFLOW = {
    "id": "bench-mail",
    "version": 1,
    "triggers": [{"type": "event", "event": "Go"}],
    "reentry": "always",
    "start": "mail",
    "nodes": {"mail": {"type": "send_email", "template": "welcome-a"}},
}


def _serve(port: int, count: Synchronized[int], ready: Event, stop: Event) -> None:
    from aiosmtpd.controller import Controller

    class Counter:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            with count.get_lock():
                count.value += 1
            return "250 OK"

    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    stop.wait()
    controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fill(engine: Engine, count: int, port: int) -> VirtualClock:
    clock = VirtualClock(START)
    flow = Leadflow(engine=engine, clock=clock)
    flow.deploy([WORKFLOW])
    with writer(engine).begin() as connection:
        set_setting(connection, "smtp.host", "127.0.0.1")
        set_setting(connection, "smtp.port", port)
        set_setting(connection, "smtp.from", SENDER)
    flow.send(
        {"type": "identify", "userId": f"c{i:06d}@bench.test", "traits": {"FIRSTNAME": f"N{i}"}}
        for i in range(count)
    )
    flow.send(
        {"type": "track", "userId": f"c{i:06d}@bench.test", "event": "Go"} for i in range(count)
    )
    return clock


def raw_messages(engine: Engine, clock: VirtualClock) -> list[tuple[str, bytes]]:
    """The bytes the deliverer will send, built the same way (with the same clock)."""
    settings = MessagingSettings.from_values({"smtp.from": SENDER})
    with engine.connect() as connection:
        rows = list(connection.execute(select(outbox).order_by(outbox.c.id)))
    out = []
    for r in rows:
        item = Outgoing(r.id, r.idempotency_key, "email", r.contact_id, r.contact_id, r.payload, 1)
        out.append((r.contact_id, email_bytes(item, settings, clock)))
    return out


def send_raw(port: int, messages: list[tuple[str, bytes]]) -> float:
    sender = parseaddr(SENDER)[1]
    started = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", port)
    smtp.ehlo()
    for to, data in messages:
        smtp.sendmail(sender, [to], data)
    smtp.quit()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 emails instead of 2,000")
    parser.add_argument("--count", type=int, help="number of emails")
    parser.add_argument("--db", help="SQLAlchemy URL of an empty store (default: SQLite)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.count or (300 if args.quick else 2000)

    port = free_port()
    received: Synchronized[int] = multiprocessing.Value("i", 0)  # type: ignore[assignment]
    ready, stop = multiprocessing.Event(), multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(port, received, ready, stop), daemon=True)
    server.start()
    ready.wait(10)
    problems: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as folder:
            engine = open_engine(args.db or f"sqlite:///{Path(folder) / 'bench.db'}")
            try:
                clock = fill(engine, count, port)
                messages = raw_messages(engine, clock)
                send_raw(port, messages[: min(50, count)])  # warm up both ends
                warm = received.value
                raw = min(send_raw(port, messages), send_raw(port, messages))
                before = received.value
                deliverer = Deliverer(engine, clock, environ={})
                started = time.perf_counter()
                report = deliverer.deliver()
                took = time.perf_counter() - started
                got = received.value - before
                with engine.connect() as connection:
                    statuses = dict(
                        connection.execute(
                            select(outbox.c.status, func.count()).group_by(outbox.c.status)
                        ).all()
                    )
                    attempts = connection.scalar(
                        select(func.count()).select_from(delivery_attempts)
                    )
                    batch = MessagingSettings.load(connection, {}).batch
            finally:
                engine.dispose()
    finally:
        stop.set()
        server.join(10)
    if report.sent != count or got != count:
        problems.append(f"outbox sent {report.sent}, server got {got}, expected {count}")
    if statuses != {"sent": count} or attempts != count:
        problems.append(f"statuses {statuses}, {attempts} attempt rows")
    if before - warm != 2 * count:
        problems.append("the baseline did not deliver every message")
    print(f"emails: {count} (SMTP server in a child process, {engine.url.get_backend_name()})")
    print(f"bare smtplib:     {count / raw:10,.0f} emails/s  ({raw * 1000 / count:.2f} ms each)")
    each = took * 1000 / count
    print(f"outbox delivery:  {count / took:10,.0f} emails/s  ({each:.2f} ms each, batch {batch})")
    print(f"ratio outbox/bare: {took / raw:.2f}x")
    for problem in problems:
        print(f"CHECK FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
