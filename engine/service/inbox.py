"""The inbox: messages accepted over HTTP, durable before the client hears 200, applied by
:meth:`engine.runner.Runner.ingest` (the path ``leadflow ingest`` takes: dedupe by
``messageId``, rejected input kept in ``rejected``) moments later, in large batches.

Accepting is one INSERT per request, so collection keeps up with bursts while workflows
run at their own pace. Every accepted message carries a ``messageId`` (one is assigned
when the client sent none), so applying a row twice, after a crash between applying and
deleting it, changes nothing. Rows are claimed with a lease: several server processes on
one PostgreSQL store share the work, and a dead process's rows are taken over when its
lease runs out.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, event, func, select, update

from engine.clock import Clock
from engine.runner import IngestReport, Runner
from engine.segment import Message, Rejection, parse_message
from engine.store.db import make_engine, writer
from engine.store.sql import is_postgres
from engine.store.tables import inbox

log = logging.getLogger("leadflow.service")

CHUNK_MESSAGES = 250
"""Messages applied per round when no requests are arriving."""
BUSY_CHUNK = 4
"""Messages applied per round while requests arrive: an accept waiting for the SQLite
write lock waits for a round this small at most."""
BUSY_SHARE = 0.2
"""The share of time the applier takes while requests arrive."""
BUSY_WINDOW = 0.1
"""Seconds since the last accept during which requests count as arriving."""
RELOAD_SECONDS = 5.0
MAX_BACKLOG = 2_000_000
"""Messages accepted and not applied yet beyond which requests are refused (503 with
Retry-After; the SDKs retry), so a flood cannot grow the inbox without bound."""
LEASE = timedelta(minutes=5)
MAX_ATTEMPTS = 5
"""A row whose application failed this often is moved to ``rejected`` with the reason."""


class WriteGate:
    """SQLite takes one writer at a time. Within a process, writers queue on this lock
    instead of polling SQLite's busy timeout, and accepts (short) go before the next round
    of applying (long). On PostgreSQL it does nothing."""

    def __init__(self, engine: Engine) -> None:
        self.active = engine.dialect.name == "sqlite"
        self._lock = threading.Lock()
        self._waiting = 0
        self._count_lock = threading.Lock()

    @contextmanager
    def short(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        with self._count_lock:
            self._waiting += 1
        try:
            with self._lock:
                yield
        finally:
            with self._count_lock:
                self._waiting -= 1

    @contextmanager
    def long(self) -> Iterator[None]:
        if not self.active:
            yield
            return
        while True:
            self._lock.acquire()
            if self._waiting == 0:
                break
            self._lock.release()
            threading.Event().wait(0.0005)
        try:
            yield
        finally:
            self._lock.release()


def with_message_id(message: Any) -> Any:
    """The message, given a ``messageId`` when it has none (applying twice is harmless)."""
    if isinstance(message, dict) and message.get("messageId") in (None, ""):
        return {**message, "messageId": f"lf-{uuid.uuid4().hex}"}
    return message


def inbox_store(engine: Engine) -> Engine:
    """Where the inbox lives. On a SQLite file it is a side file beside the store
    (``<file>-inbox``, like SQLite's own ``-wal``), so accepting a request never waits for
    the store's single writer while workflows run; on PostgreSQL (row locks) and in-memory
    SQLite it is the store's own ``inbox`` table."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return engine
    side = make_engine(url.set(database=f"{url.database}-inbox").render_as_string(False))

    @event.listens_for(side, "connect")
    def synced(dbapi_connection: Any, _record: Any) -> None:
        # A 200 says the request is kept. With the WAL's synchronous=NORMAL a commit is
        # fsync'd only at the next checkpoint, so a power cut would roll back requests
        # already answered; FULL fsyncs the WAL at every commit.
        dbapi_connection.execute("PRAGMA synchronous=FULL")

    inbox.create(side, checkfirst=True)
    return side


class Inbox:
    def __init__(self, engine: Engine, clock: Clock, gate: WriteGate) -> None:
        self.engine = engine
        self.clock = clock
        self.gate = gate
        """The store's write gate: held while the inbox is applied."""
        self.store = inbox_store(engine)
        self.side = self.store is not engine
        self.store_gate = WriteGate(self.store) if self.side else gate
        """Held while writing the inbox (the same gate when the inbox is in the store)."""
        self.backlog = self.pending()[1]
        """Messages waiting, as this process knows it (exact again whenever it runs dry)."""

    def close(self) -> None:
        if self.side:
            self.store.dispose()

    def put(
        self, messages: list[Any], source: str, rejected: Sequence[Mapping[str, Any]] = ()
    ) -> int:
        """Store accepted messages durably (one row), with the ones refused at the door
        (``line``, ``raw``, ``reason``) to be kept in ``rejected``; returns the row id."""
        body = {"messages": messages, "rejected": list(rejected)}
        with self.store_gate.short(), writer(self.store).begin() as connection:
            result = connection.execute(
                inbox.insert().values(
                    received_at=self.clock.now(),
                    source=source[:200],
                    count=len(messages) + len(rejected),
                    body=orjson.dumps(body).decode(),
                    attempts=0,
                )
            )
            key = result.inserted_primary_key
        self.backlog += len(messages) + len(rejected)
        return int(key[0]) if key else 0

    def pending(self) -> tuple[int, int]:
        """(rows, messages) waiting to be applied."""
        with self.store.connect() as connection:
            rows, messages = connection.execute(
                select(func.count(), func.coalesce(func.sum(inbox.c.count), 0))
            ).one()
        return int(rows), int(messages)

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction on the inbox, from inside the applier's round (which holds
        the store's gate: the inbox's own gate is only taken when it is another file)."""
        if self.side:
            with self.store_gate.short(), writer(self.store).begin() as connection:
                yield connection
        else:
            with writer(self.store).begin() as connection:
                yield connection

    def _claim(self, owner: str, limit: int) -> list[Any]:
        now = self.clock.now()
        with self._writing() as connection:
            free = (inbox.c.claimed_until.is_(None)) | (inbox.c.claimed_until < now)
            pick = select(inbox.c.id, inbox.c.count).where(free).order_by(inbox.c.id).limit(200)
            if is_postgres(connection):
                pick = pick.with_for_update(skip_locked=True)
            ids: list[int] = []
            total = 0
            for row_id, count in connection.execute(pick):
                if ids and total + count > limit:
                    break
                ids.append(int(row_id))
                total += int(count)
            if not ids:
                return []
            connection.execute(
                update(inbox)
                .where(inbox.c.id.in_(ids))
                .values(
                    claimed_by=owner,
                    claimed_until=now + LEASE,
                    attempts=inbox.c.attempts + 1,
                )
            )
            return list(
                connection.execute(select(inbox).where(inbox.c.id.in_(ids)).order_by(inbox.c.id))
            )

    def apply_once(self, runner: Runner, limit: int = CHUNK_MESSAGES) -> IngestReport:
        """Claim up to ``limit`` messages' rows, apply them, delete them."""
        report = IngestReport()
        with self.gate.long():
            rows = self._claim(runner.owner, limit)
            if not rows:
                self.backlog = self.pending()[1]
                return report
            items: list[Message | Rejection] = []
            given_up: list[Any] = []
            for row in rows:
                if row.attempts > MAX_ATTEMPTS:
                    given_up.append(row)
                else:
                    items.extend(_parse_row(row))
            ids = [row.id for row in rows]
            try:
                # a row that failed too often: its messages one by one, so only the one
                # that cannot be applied is rejected, not every message claimed with it;
                # deleted at once, so a failure of the other rows cannot apply it again
                for row in given_up:
                    report.add(_apply_singly(runner, row))
                    with self._writing() as connection:
                        connection.execute(delete(inbox).where(inbox.c.id == row.id))
                    ids.remove(row.id)
                    self.backlog = max(0, self.backlog - int(row.count))
                report.add(runner.ingest(items, "http"))
            except Exception as exc:
                log.exception("applying inbox rows %s failed", ids)
                with self._writing() as connection:
                    connection.execute(
                        update(inbox)
                        .where(inbox.c.id.in_(ids))
                        .values(claimed_until=None, last_error=repr(exc)[:2000])
                    )
                raise
            with self._writing() as connection:
                connection.execute(delete(inbox).where(inbox.c.id.in_(ids)))
            left = sum(int(row.count) for row in rows if row.id in ids)
            self.backlog = max(0, self.backlog - left)
        return report

    def apply_all(self, runner: Runner) -> IngestReport:
        """Apply until nothing is left that this process may claim."""
        total = IngestReport()
        while True:
            report = self.apply_once(runner)
            if not (report.taken or report.duplicates or report.rejected):
                return total
            total.add(report)


def _parse_row(row: Any) -> Iterator[Message | Rejection]:
    received: datetime = row.received_at
    body = orjson.loads(row.body)
    for item in body["rejected"]:
        yield Rejection(item["line"], item["raw"], item["reason"])
    for index, data in enumerate(body["messages"]):
        line = index + 1
        try:
            yield parse_message(data, received, line)
        except ValueError as exc:
            raw = orjson.dumps(data).decode()
            yield Rejection(line, raw, f"{row.source} #{line}: {exc}")


def _apply_singly(runner: Runner, row: Any) -> IngestReport:
    """A row that failed :data:`MAX_ATTEMPTS` times, applied one message at a time: the
    ones that still fail are rejected with their reason, the others are taken."""
    report = IngestReport()
    body = orjson.loads(row.body)
    refused = [Rejection(i["line"], i["raw"], i["reason"]) for i in body["rejected"]]
    if refused:
        report.add(runner.ingest(refused, "http"))
    for index, data in enumerate(body["messages"]):
        line = index + 1
        raw = orjson.dumps(data).decode()
        item: Message | Rejection
        try:
            item = parse_message(data, row.received_at, line)
        except ValueError as exc:
            item = Rejection(line, raw, f"{row.source} #{line}: {exc}")
        try:
            report.add(runner.ingest([item], "http"))
        except Exception as exc:
            log.exception("applying message %s of inbox row %s failed", line, row.id)
            reason = f"{row.source} #{line}: not applied after {MAX_ATTEMPTS} attempts: {exc!r}"
            report.add(runner.ingest([Rejection(line, raw, reason[:2000])], "http"))
    return report


class Applier:
    """The background thread that applies the inbox: woken by each accept, and every
    second anyway (rows left by another process, leases that ran out).

    Accepting comes first. While requests are arriving, the applier works in small rounds
    and holds the store (and the interpreter) for at most :data:`BUSY_SHARE` of the time,
    so a burst is accepted at full speed and applied right after; when requests stop, it
    applies in large rounds until the inbox is empty."""

    def __init__(self, inbox: Inbox, runner: Runner) -> None:
        self.inbox = inbox
        self.runner = runner
        self.wake = threading.Event()
        self.idle = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leadflow-inbox", daemon=True)
        self.applied = IngestReport()
        self.failures = 0
        self.last_accept = 0.0
        self._reloaded = time.monotonic()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self.wake.set()
        self._thread.join(timeout)

    def accepted(self) -> None:
        self.last_accept = time.monotonic()
        self.wake.set()

    def _busy(self) -> bool:
        return time.monotonic() - self.last_accept < BUSY_WINDOW

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            while not self._stop.is_set():
                self.idle.clear()
                busy = self._busy()
                started = time.monotonic()
                try:
                    report = self.inbox.apply_once(
                        self.runner, BUSY_CHUNK if busy else CHUNK_MESSAGES
                    )
                except Exception:
                    self.failures += 1
                    self._stop.wait(1.0)
                    break
                if not (report.taken or report.duplicates or report.rejected):
                    break
                self.applied.add(report)
                self.applied.rejections.clear()
                if self._busy():
                    spent = time.monotonic() - started
                    self._stop.wait(spent * (1 / BUSY_SHARE - 1))
            if time.monotonic() - self._reloaded > RELOAD_SECONDS:
                self.runner.reload()  # deploys made by other processes
                self._reloaded = time.monotonic()
            self.idle.set()
