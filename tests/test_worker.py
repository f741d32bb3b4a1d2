"""The worker across real OS processes: every due wait is resumed exactly once with two
workers on PostgreSQL and on SQLite, a SIGKILLed worker loses nothing (its leases expire and
another worker takes over), SIGTERM finishes the batch in hand and exits 0; plus the
scheduler's job settings.

The multi-process tests start ``tests/worker_child.py`` (the real Worker job in a loop, with a
start barrier so two children really race) or the real ``leadflow worker`` command."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from apscheduler.executors.pool import ThreadPoolExecutor
from helpers import PAUSE_THEN_SCORE
from sqlalchemy import func, select, text

from engine.api import Leadflow
from engine.clock import VirtualClock, format_timestamp
from engine.runner import BATCH_SIZE, Runner, Wake
from engine.state import Batch
from engine.store.db import make_engine, open_engine
from engine.store.sql import chunks
from engine.store.tables import account_scores, audit, metadata, outbox, runs, scores, waits
from engine.templates import TemplateCatalog
from engine.worker import SQLITE_WAIT_BATCH, Worker, WorkerSettings

CHILD = Path(__file__).with_name("worker_child.py")
LEADFLOW = Path(sys.executable).with_name("leadflow")

WORKFLOW = {
    "id": "resume-once",
    "version": 1,
    "name": "Resume once",
    "triggers": [{"type": "event", "event": "Go"}],
    "start": "w",
    "nodes": {
        "w": {"type": "wait", "for": "PT1M", "next": "mark"},
        "mark": {"type": "update_score", "score": "RESUMED", "add": 1},
    },
}


# --- set-up and bookkeeping --------------------------------------------------------------


@pytest.fixture
def pg(pg_url: str) -> str:
    """The session's PostgreSQL database, emptied."""
    engine = make_engine(pg_url)
    with engine.begin() as connection:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    return pg_url


def populate(url: str, count: int, now: datetime, first: int = 0) -> None:
    """Deploy the workflow and send one Go an hour before ``now`` for each of ``count``
    contacts, so every run waits on a wait that is already due."""
    past = format_timestamp(now - timedelta(hours=1))
    with Leadflow(url, VirtualClock(now)) as flow:
        flow.deploy([WORKFLOW])
        if not count:
            return
        report = flow.send(
            {
                "type": "track",
                "userId": f"c{i:05d}",
                "event": "Go",
                "messageId": f"go-{i}",
                "timestamp": past,
            }
            for i in range(first, first + count)
        )
    assert (report.taken, report.rejected) == (count, 0)


def tally(url: str) -> dict[str, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as c:

            def count(table: Any, *where: Any) -> int:
                return int(c.scalar(select(func.count()).select_from(table).where(*where)) or 0)

            return {
                "waits": count(waits),
                "leased": count(waits, waits.c.lease_owner.is_not(None)),
                "waiting": count(runs, runs.c.state == "waiting"),
                "completed": count(runs, runs.c.state == "completed"),
                "other_runs": count(runs, runs.c.state.not_in(("waiting", "completed"))),
                "scored_once": count(scores, scores.c.name == "RESUMED", scores.c.value == 1),
                "scored_otherwise": count(scores, scores.c.name == "RESUMED", scores.c.value != 1),
                "audited": count(audit, audit.c.subject == "score", audit.c.name == "RESUMED"),
            }
    finally:
        engine.dispose()


def assert_consistent(t: dict[str, int], total: int) -> None:
    """Every contact is either still waiting (wait row, waiting run, no score) or resumed
    exactly once (completed run, RESUMED 1, one audit row): nothing half done, nothing twice."""
    assert t["waits"] == t["waiting"], t
    assert t["waiting"] + t["completed"] == total, t
    assert t["scored_once"] == t["audited"] == t["completed"], t
    assert t["scored_otherwise"] == t["other_runs"] == 0, t


def assert_exactly_once(url: str, total: int) -> None:
    t = tally(url)
    assert t == {
        "waits": 0,
        "leased": 0,
        "waiting": 0,
        "completed": total,
        "other_runs": 0,
        "scored_once": total,
        "scored_otherwise": 0,
        "audited": total,
    }


def waits_left(url: str) -> tuple[int, int]:
    """(waits, leased waits), read without blocking on anyone's locks."""
    t = tally(url)
    return t["waits"], t["leased"]


# --- child processes ---------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are read with a timeout (stderr goes to a file)."""

    def __init__(self, args: list[str], log: Path, stdin: bool = False) -> None:
        self.log = log
        self.args = " ".join(args)
        self._err: IO[bytes] = log.open("wb")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def line(self, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output from {self.args} in {timeout} s:\n{self.stderr()}")
        if line is None:
            pytest.fail(f"{self.args} ended (rc {self.proc.wait()}):\n{self.stderr()}")
        return line

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self._err.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.args} still running after {timeout} s:\n{self.stderr()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout, self._err):
            if stream is not None:
                stream.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start children; the ones still running at the end are killed (by their own pid)."""
    children: list[Child] = []

    def start(*args: str, stdin: bool = False) -> Child:
        child = Child(list(args), tmp_path / f"child-{len(children)}.err", stdin)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def leadflow(*args: str) -> list[str]:
    assert LEADFLOW.exists(), f"the leadflow console script is not installed at {LEADFLOW}"
    return [str(LEADFLOW), *args]


def is_stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


def freeze(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while not is_stopped(pid):
        assert time.monotonic() < deadline, "SIGSTOP did not stop the worker"
        time.sleep(0.001)


def wait_for_progress(child: Child, url: str, total: int, done: int, timeout: float = 60) -> int:
    """Poll until at least ``done`` of ``total`` waits are gone; returns the waits left."""
    deadline = time.monotonic() + timeout
    while True:
        left, _ = waits_left(url)
        if total - left >= done:
            return left
        if child.proc.poll() is not None:
            pytest.fail(f"the worker ended early (rc {child.proc.returncode}):\n{child.stderr()}")
        assert time.monotonic() < deadline, f"no progress: {left} of {total} waits left"
        time.sleep(0.01)


def settle(url: str) -> None:
    """Wait until PostgreSQL has finished the statements a frozen worker sent before it was
    stopped (its COMMIT may still be in flight), so what we read next stays true. A query
    waiting on the frozen client (ClientRead in a pipeline, ClientWrite of its rows) cannot
    change anything."""
    engine = make_engine(url)
    busy = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND state = 'active'"
        " AND wait_event_type IS DISTINCT FROM 'Client'"
    )
    deadline = time.monotonic() + 10
    try:
        with engine.connect() as connection:
            while connection.scalar(busy):
                if time.monotonic() > deadline:
                    rows = connection.execute(
                        text(
                            "SELECT pid, backend_type, state, wait_event_type, wait_event,"
                            " left(query, 200) FROM pg_stat_activity"
                            " WHERE datname = current_database()"
                        )
                    ).all()
                    pytest.fail(f"a frozen worker's statement never ended: {rows}")
                time.sleep(0.005)
                connection.rollback()
    finally:
        engine.dispose()


def freeze_after_progress(child: Child, url: str, total: int, done: int) -> int:
    """SIGSTOP the worker once it has resumed ``done`` waits; returns the waits left."""
    wait_for_progress(child, url, total, done)
    freeze(child.pid)
    settle(url)
    return waits_left(url)[0]


def freeze_mid_batch(child: Child, url: str, total: int, batch: int) -> int:
    """SIGSTOP the worker at a moment it holds leases it has not committed the resumption of
    (claimed, not yet done), after it committed at least one batch. Returns its lease count."""
    deadline = time.monotonic() + 60
    wait_for_progress(child, url, total, batch)
    while True:
        freeze(child.pid)
        settle(url)
        _, leased = waits_left(url)
        if leased:
            return leased
        os.kill(child.pid, signal.SIGCONT)  # between two batches: let it claim the next
        assert child.proc.poll() is None, child.stderr()
        assert time.monotonic() < deadline, "never caught the worker mid-batch"
        time.sleep(0.003)


def finish(url: str, now: datetime) -> int:
    """Another worker, in this process, with a clock ``now``: the reaper, then the drain."""
    engine = make_engine(url)
    try:
        worker = Worker(Runner(engine, VirtualClock(now)), WorkerSettings(batch=1000))
        worker.reap()
        worker.resume_waits()
        return worker.resumed
    finally:
        engine.dispose()


def once(spawn: Any, url: str) -> int:
    """``leadflow worker --once`` in its own process; returns the runs it resumed."""
    child = spawn(*leadflow("worker", "--db", url, "--once"))
    line = child.line(60)
    assert child.wait(30) == 0, child.stderr()
    assert line.endswith(" run(s) resumed or entered"), line
    return int(line.split()[0])


# --- exactly once with two processes -----------------------------------------------------


def race(spawn: Any, url: str, batch: int, pause_ms: int = 0) -> list[dict[str, Any]]:
    """Two worker_child drains started together; returns their reports."""
    args = [sys.executable, str(CHILD), "drain", url, str(batch), str(pause_ms)]
    children = [spawn(*args, stdin=True) for _ in range(2)]
    for child in children:
        assert child.line(60) == "ready"
    for child in children:
        child.tell("go")
    reports = [json.loads(child.line(120)) for child in children]
    for child in children:
        assert child.wait(30) == 0, child.stderr()
    return reports


@pytest.mark.slow
def test_two_postgresql_workers_resume_10000_waits_exactly_once(
    pg: str, spawn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 10_000
    populate(pg, total, datetime.now(UTC))
    assert tally(pg)["waits"] == total

    reports = race(spawn, pg, batch=250)

    assert_exactly_once(pg, total)
    assert sum(r["resumed"] for r in reports) == total, reports
    assert len({r["owner"] for r in reports}) == 2
    # Both started at the same moment on 40 batches of 250: SKIP LOCKED shares the work.
    assert all(r["resumed"] > 0 for r in reports), reports
    with capsys.disabled():
        print(f"\nPostgreSQL split of {total} waits: {reports}")


@pytest.mark.slow
def test_two_sqlite_workers_resume_2000_waits_exactly_once(
    tmp_path: Path, spawn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'leadflow.db'}"
    total = 2_000
    populate(url, total, datetime.now(UTC))
    assert tally(url)["waits"] == total

    # SQLite's busy wait is not fair: a worker going straight from one batch to the next
    # can keep the write lock to itself. A pause after each batch lets the other one in.
    reports = race(spawn, url, batch=100, pause_ms=30)

    assert_exactly_once(url, total)
    assert sum(r["resumed"] for r in reports) == total, reports
    assert all(r["resumed"] > 0 for r in reports), reports
    with capsys.disabled():
        print(f"\nSQLite split of {total} waits: {reports}")


# --- SIGKILL -----------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_before_commit_loses_nothing_and_doubles_nothing(pg: str, spawn: Any) -> None:
    total, claimed = 1_000, 400
    now = datetime.now(UTC)
    populate(pg, total, now)
    child = spawn(sys.executable, str(CHILD), "hang", pg, str(claimed), now.isoformat())
    assert child.line(60) == "flushed"
    # Every change of the batch is written but not committed: nobody sees any of it.
    during = tally(pg)
    assert (during["waits"], during["leased"], during["audited"]) == (total, claimed, 0), during

    child.proc.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    after = tally(pg)
    assert (after["waits"], after["leased"], after["completed"]) == (total, claimed, 0), after

    # Another worker at the same moment leaves the dead worker's leases alone ...
    assert finish(pg, now) == total - claimed
    t = tally(pg)
    assert (t["waits"], t["leased"], t["completed"]) == (claimed, claimed, total - claimed), t
    assert_consistent(t, total)
    # ... and once they expired, the reaper frees them and they are resumed, once.
    assert finish(pg, now + timedelta(minutes=11)) == claimed
    assert_exactly_once(pg, total)


@pytest.mark.slow
def test_sigkill_before_commit_on_sqlite_leaves_no_lease_behind(tmp_path: Path, spawn: Any) -> None:
    """SQLite reads and resumes due waits in one write transaction and writes no lease:
    a worker killed before its commit leaves every wait as it was, free at once."""
    url = f"sqlite:///{tmp_path / 'leadflow.db'}"
    total, claimed = 600, 250
    now = datetime.now(UTC)
    populate(url, total, now)
    child = spawn(sys.executable, str(CHILD), "hang", url, str(claimed), now.isoformat())
    assert child.line(60) == "flushed"
    during = tally(url)  # a reader beside the writer sees none of the open transaction
    assert (during["waits"], during["leased"], during["audited"]) == (total, 0, 0), during

    child.proc.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    after = tally(url)
    assert (after["waits"], after["leased"], after["completed"]) == (total, 0, 0), after
    # no lease to expire: another worker at the same moment resumes every wait, once
    assert finish(url, now) == total
    assert_exactly_once(url, total)


@pytest.mark.slow
def test_sigkill_of_a_leadflow_worker_mid_batch(pg: str, spawn: Any) -> None:
    total, batch = 3_000, 100
    populate(pg, total, datetime.now(UTC))
    worker = spawn(*leadflow("worker", "--db", pg, "--batch", str(batch)))
    leased = freeze_mid_batch(worker, pg, total, batch)
    worker.proc.send_signal(signal.SIGKILL)
    assert worker.wait(10) == -signal.SIGKILL

    after = tally(pg)
    assert 0 < after["leased"] == leased <= batch, after
    assert 0 < after["completed"] < total, after
    assert_consistent(after, total)

    # A second real worker takes everything but the dead worker's unexpired leases ...
    assert once(spawn, pg) == after["waits"] - leased
    t = tally(pg)
    assert (t["waits"], t["leased"]) == (leased, leased), t
    assert_consistent(t, total)
    # ... which expire after 5 minutes: then they are resumed exactly once.
    assert finish(pg, datetime.now(UTC) + timedelta(minutes=6)) == leased
    assert_exactly_once(pg, total)


# --- SIGTERM -----------------------------------------------------------------------------


def sigterm(worker: Child, url: str, total: int) -> tuple[dict[str, int], float]:
    """Wake the frozen worker and SIGTERM it; it must exit 0 soon with no batch half done.
    (Not SIGTERM while frozen: the kernel would then hand the signal to whichever thread
    wakes first, possibly the job thread, and the main thread would only run the handler
    at the scheduler's next wake-up; a running worker gets it in the main thread.)"""
    os.kill(worker.pid, signal.SIGCONT)
    worker.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    rc = worker.wait(20)
    took = time.monotonic() - sent
    assert rc == 0, worker.stderr()
    assert took < 10, f"{took:.1f} s to stop"
    assert "finishing the current batch" in worker.stderr()
    t = tally(url)
    assert t["leased"] == 0, t  # the claimed batch was finished, none was claimed after
    assert_consistent(t, total)
    return t, took


@pytest.mark.slow
def test_sigterm_during_the_first_drain_finishes_the_batch_and_exits_0(pg: str, spawn: Any) -> None:
    # Enough waits that a fast worker cannot drain what is left between SIGCONT and
    # the SIGTERM handler running (3,000 were drained first once: ~0.3 s of work).
    total, batch = 20_000, 100
    populate(pg, total, datetime.now(UTC))
    worker = spawn(*leadflow("worker", "--db", pg, "--batch", str(batch)))
    left = freeze_after_progress(worker, pg, total, batch)
    assert left > batch, f"{left} waits left: the worker was not stopped early enough"
    t, _ = sigterm(worker, pg, total)
    # It finished the batch in hand and stopped rather than draining everything.
    assert 0 < t["waits"] <= left, (left, t)

    assert finish(pg, datetime.now(UTC)) == t["waits"]  # no lease was left behind
    assert_exactly_once(pg, total)


@pytest.mark.slow
def test_sigterm_during_a_scheduled_job_finishes_the_batch_and_exits_0(pg: str, spawn: Any) -> None:
    # Enough waits that a fast worker cannot drain what is left between SIGCONT and
    # the SIGTERM handler running (3,000 were drained first once: ~0.3 s of work).
    total, batch = 20_000, 100
    populate(pg, 0, datetime.now(UTC))
    worker = spawn(*leadflow("worker", "--db", pg, "--batch", str(batch)))
    deadline = time.monotonic() + 60
    while "started: due waits every" not in worker.stderr():
        assert worker.proc.poll() is None and time.monotonic() < deadline, worker.stderr()
        time.sleep(0.02)
    # Paused while the waits arrive; on SIGCONT the overdue job runs (no misfire limit).
    freeze(worker.pid)
    populate(pg, total, datetime.now(UTC))
    os.kill(worker.pid, signal.SIGCONT)
    left = freeze_after_progress(worker, pg, total, batch)
    assert left > 2 * batch, f"{left} waits left: the worker was not stopped early enough"
    t, _ = sigterm(worker, pg, total)
    assert 0 < t["waits"] <= left, (left, t)

    assert finish(pg, datetime.now(UTC)) == t["waits"]  # no lease was left behind
    assert_exactly_once(pg, total)


# --- the scheduler -----------------------------------------------------------------------


@pytest.fixture
def sqlite_worker(tmp_path: Path) -> Iterator[Worker]:
    engine = open_engine(f"sqlite:///{tmp_path / 'leadflow.db'}")
    settings = WorkerSettings(
        wait_poll_seconds=2, timers_poll_seconds=3, reaper_seconds=5, catalog_refresh_seconds=7
    )
    yield Worker(Runner(engine, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))), settings)
    engine.dispose()


def test_scheduler_has_fixed_jobs_that_never_skip(sqlite_worker: Worker) -> None:
    scheduler = sqlite_worker.scheduler()
    # Job defaults are applied when the scheduler starts: start it paused so nothing runs.
    thread = threading.Thread(target=scheduler.start, kwargs={"paused": True}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not scheduler.running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs()}
    finally:
        scheduler.shutdown(wait=False)
        thread.join(10)
    assert not thread.is_alive()
    assert set(jobs) == {
        "resume-waits",
        "timers",
        "lease-reaper",
        "catalog-refresh",
        "deliver-outbox",
    }
    for job in jobs.values():
        assert job.max_instances == 1, job
        assert job.coalesce is True, job
        assert job.misfire_grace_time is None, job
    intervals = {i: job.trigger.interval.total_seconds() for i, job in jobs.items()}
    assert intervals == {
        "resume-waits": 2,
        "timers": 3,
        "lease-reaper": 5,
        "catalog-refresh": 7,
        "deliver-outbox": 2,
    }
    funcs = {i: job.func.__name__ for i, job in jobs.items()}
    assert funcs == {
        "resume-waits": "resume_waits",
        "timers": "timers",
        "lease-reaper": "reap",
        "catalog-refresh": "refresh",
        "deliver-outbox": "deliver",
    }
    executor = scheduler._lookup_executor("default")
    assert isinstance(executor, ThreadPoolExecutor)


def test_resume_waits_stops_between_batches(sqlite_worker: Worker) -> None:
    sqlite_worker.stopping.set()
    sqlite_worker.resume_waits()
    assert sqlite_worker.resumed == 0


def test_a_stop_asked_before_the_scheduler_starts_still_stops_it(sqlite_worker: Worker) -> None:
    """SIGTERM while the worker drains at start-up: run() returns instead of scheduling."""
    sqlite_worker.stopping.set()
    started = time.monotonic()
    run_in_this_process(sqlite_worker, 5)
    assert time.monotonic() - started < 3


def run_in_this_process(worker: Worker, at_most: float) -> None:
    """``worker.run()`` here, ended by a SIGINT (which the worker handles) after
    ``at_most`` seconds if it has not ended by itself; the signal handlers are put back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    timer = threading.Timer(at_most, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        worker.run()
    finally:
        timer.cancel()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def test_a_signal_inside_the_scheduler_loop_stops_it_cleanly(
    sqlite_worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM handled while the scheduler's loop was updating its jobs: the handler's
    shutdown emptied the job store under the loop (the lock is re-entrant), and the loop's
    next update raised JobLookupError, so the worker exited 1 with a traceback. Seen once
    in the SIGTERM test under load; here the signal comes at exactly that point."""
    from apscheduler.jobstores.memory import MemoryJobStore

    update = MemoryJobStore.update_job
    sent: list[str] = []

    def update_then_signal(store: MemoryJobStore, job: Any) -> None:
        if not sent:
            sent.append(job.id)
            os.kill(os.getpid(), signal.SIGTERM)  # handled at once, in this thread
        update(store, job)

    monkeypatch.setattr(MemoryJobStore, "update_job", update_then_signal)
    run_in_this_process(sqlite_worker, 20)
    assert sent and sqlite_worker.stopping.is_set()


# --- lock order --------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [True, False], ids=["existing", "new"])
def test_overlapping_batches_lock_contacts_without_deadlock(
    pg: str, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    """Two workers whose batches share contacts (a contact with waits in both) must lock
    them in one global order: with chunks of 500, A = [x, 499 others, y] and B = [y, 499
    others, x] would otherwise deadlock (PostgreSQL then aborts one of the batches)."""
    import engine.state

    orders = {
        "a": ["c-x", *(f"a-{i:03d}" for i in range(499)), "c-y"],
        "b": ["c-y", *(f"b-{i:03d}" for i in range(499)), "c-x"],
    }
    store = make_engine(pg)
    if existing:  # the worker's case: contacts exist, FOR UPDATE; else the INSERT's locks
        with store.begin() as connection:
            engine.state.Batch(connection).load(orders["a"] + orders["b"], datetime.now(UTC))
    gate = threading.Barrier(2, timeout=1)

    def chunks_meeting_between(items: Any, size: int = 500) -> Iterator[Any]:
        for number, part in enumerate(chunks(items, size)):
            if number == 1:  # both hold their first chunk's locks before taking the second
                # a broken barrier: the other one is waiting for our locks, fine
                with contextlib.suppress(threading.BrokenBarrierError):
                    gate.wait()
            yield part

    monkeypatch.setattr(engine.state, "chunks", chunks_meeting_between)
    errors: list[BaseException] = []

    def load(ids: list[str]) -> None:
        try:
            with store.begin() as connection:
                engine.state.Batch(connection).load(ids, datetime.now(UTC))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(ids,)) for ids in orders.values()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    store.dispose()
    assert not errors, errors


def test_the_default_wait_batch_is_by_store(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite has one writer and logs every page a transaction touches: its worker leases
    50,000 due waits a transaction and works through them BATCH_SIZE contacts at a time.
    On PostgreSQL workers share a backlog, 10,000 at a time, in one part (one lock order).
    A batch set by hand wins on both; one under 1 is refused."""
    runner = Runner(store, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC)))
    asked: list[tuple[int, int | None]] = []

    def resume_due(now: datetime, batch: int, lease: timedelta, chunk: int | None) -> int:
        asked.append((batch, chunk))
        return 0

    monkeypatch.setattr(runner, "resume_due", resume_due)
    Worker(runner, WorkerSettings()).resume_waits()
    Worker(runner, WorkerSettings(batch=123)).resume_waits()
    if store.dialect.name == "sqlite":
        assert asked == [(50_000, BATCH_SIZE), (123, BATCH_SIZE)]
    else:
        assert asked == [(BATCH_SIZE, None), (123, None)]
    assert SQLITE_WAIT_BATCH == 50_000 and BATCH_SIZE == 10_000
    for wrong in (0, -1):
        with pytest.raises(ValueError, match="at least 1"):
            WorkerSettings(batch=wrong)


def _parked(store: Any, people: int) -> tuple[Leadflow, datetime]:
    """``people`` contacts p00, p01, ... each with a run parked on a day's wait; the last
    id's wait falls due first, so due order and id order are opposite."""
    entered = datetime(2026, 1, 5, 11, tzinfo=UTC)
    flow = Leadflow(engine=store, clock=VirtualClock(entered))
    flow.deploy([PAUSE_THEN_SCORE])
    flow.send(
        [
            {
                "type": "track",
                "userId": f"p{number:02d}",
                "event": "Signed Up",
                "messageId": f"m{number}",
                "timestamp": f"2026-01-05T10:{59 - number:02d}:00Z",
            }
            for number in range(people)
        ]
    )
    return flow, entered + timedelta(days=2)


AWAIT_CONFIRMATION = {
    "id": "await-confirmation",
    "version": 1,
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "start": "await",
    "nodes": {
        "await": {
            "type": "wait_for_event",
            "event": "Subscription Confirmed",
            "timeout": "P30D",
            "next": "confirmed",
            "on_timeout": "missing",
        },
        "confirmed": {"type": "add_to_list", "list": "Confirmed"},
        "missing": {"type": "add_to_list", "list": "Never confirmed"},
    },
}


def test_taken_waits_are_not_read_twice_and_the_contacts_other_waits_are(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the batch hands the due waits it read to the loader, which then reads
    only the waits of the contact's other runs in flight: every loaded run still has its
    wait, as stored, and the run whose wait is not due goes on waiting for its event."""
    entered = datetime(2026, 1, 5, 11, tzinfo=UTC)
    flow = Leadflow(engine=store, clock=VirtualClock(entered))
    flow.deploy([PAUSE_THEN_SCORE, AWAIT_CONFIRMATION])
    flow.send(
        [
            {
                "type": "track",
                "userId": "ada",
                "event": "Signed Up",
                "messageId": "m1",
                "timestamp": "2026-01-05T10:59:00Z",
            }
        ]
    )
    with store.connect() as connection:
        stored = {
            row.run_id: (row.due_at, row.event_name, row.next_node, row.timeout_node)
            for row in connection.execute(select(waits))
        }
    assert len(stored) == 2
    seen: dict[str, tuple[Any, ...] | None] = {}
    given: list[set[str]] = []
    real_load = Batch.load

    def recording_load(batch: Batch, ids: Any, now: datetime, waits_: Any = None) -> list[str]:
        given.append(set(waits_ or ()))
        new_ids = real_load(batch, ids, now, waits_)
        for run in batch.contacts["ada"].runs:
            wait = run.wait
            seen[run.id] = (
                None
                if wait is None
                else (wait.due_at, wait.event_name, wait.next_node, wait.timeout_node)
            )
        return new_ids

    monkeypatch.setattr(Batch, "load", recording_load)
    due = entered + timedelta(days=2)
    assert Runner(store, VirtualClock(due)).resume_due(due, 100) == 1
    assert seen == stored  # both runs loaded with their waits
    timed = {run_id for run_id, (_, event, _, _) in stored.items() if event is None}
    # SQLite hands over the due wait it took; PostgreSQL leases first and reads them all
    assert given == ([timed] if store.dialect.name == "sqlite" else [set()])
    monkeypatch.undo()
    with store.connect() as connection:
        left = connection.execute(select(waits.c.event_name)).scalars().all()
        states = dict(connection.execute(select(runs.c.workflow_id, runs.c.state)).all())
    assert left == ["Subscription Confirmed"]
    assert states == {"pause-then-score": "completed", "await-confirmation": "waiting"}
    flow.clock = VirtualClock(due)
    flow.send(
        [
            {
                "type": "track",
                "userId": "ada",
                "event": "Subscription Confirmed",
                "messageId": "m2",
                "timestamp": "2026-01-07T12:00:00Z",
            }
        ]
    )
    assert flow.contact("ada")["lists"] == ["Confirmed"]


PAUSE_THEN_MAIL = {
    "id": "pause-then-mail",
    "version": 1,
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "start": "pause",
    "nodes": {
        "pause": {"type": "wait", "for": "P1D", "next": "mail"},
        "mail": {"type": "send_email", "template": "hello"},
    },
}


def test_a_part_is_let_go_before_the_next_part_even_when_a_run_fails_to_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume_due(chunk=N) keeps the memory of one part. A run whose template fails (an
    attribute the contact lacks) leaves a reference cycle: the render's traceback holds
    its frames, and through them the part's Wake and Batch. With the collector paused for
    the whole batch, each earlier part would stay alive until the batch ends. (Found by a
    reviewing helper.)"""
    store = open_engine(f"sqlite:///{tmp_path / 'store.db'}")
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "hello.txt").write_text(
        "Subject: hi\n\nHello {{ contact.attributes.FIRSTNAME }}\n"
    )
    entered = datetime(2026, 1, 5, 11, tzinfo=UTC)
    flow = Leadflow(engine=store, clock=VirtualClock(entered))
    flow.deploy([PAUSE_THEN_MAIL])
    flow.send(
        [
            {
                "type": "track",
                "userId": f"p{n:03d}",
                "event": "Signed Up",
                "messageId": f"m{n}",
                "timestamp": "2026-01-05T10:00:00Z",
            }
            for n in range(900)
        ]
    )
    due = entered + timedelta(days=2)
    runner = Runner(store, VirtualClock(due), TemplateCatalog([templates]))
    batches: list[weakref.ref[Any]] = []
    alive_at_load: list[int] = []
    real_load = Wake.load

    def recording_load(wake: Wake, wanted: Any, waits_: Any = None) -> None:
        alive_at_load.append(sum(1 for ref in batches if ref() is not None))
        real_load(wake, wanted, waits_)
        batches.append(weakref.ref(wake.batch))

    monkeypatch.setattr(Wake, "load", recording_load)
    try:
        assert runner.resume_due(due, 1000, chunk=300) == 900
        with store.connect() as connection:
            assert set(connection.scalars(select(runs.c.state))) == {"failed"}
    finally:
        store.dispose()
    # when a part loads, the parts before it are gone
    assert alive_at_load == [0, 0, 0]


def test_resume_does_not_take_waits_under_a_live_lease(store: Any) -> None:
    """Waits that claim_due (the embedding API) leased are not taken as due until the
    lease runs out, also on SQLite, where resume_due itself leases none. (A contact woken
    for another reason still resumes all its due waits.)"""
    flow, due = _parked(store, 4)
    holder = Runner(store, VirtualClock(due))
    held = holder.claim_due(due, 2, timedelta(minutes=5))
    assert len(held) == 2
    runner = Runner(store, VirtualClock(due))
    assert runner.resume_due(due, 100, timedelta(minutes=5)) == 2
    assert sorted(c for c in ("p00", "p01", "p02", "p03") if flow.contact(c)["scores"]) == sorted(
        {"p00", "p01", "p02", "p03"} - set(held)
    )
    assert runner.resume_due(due + timedelta(minutes=6), 100) == 2


def _park_stray_wait(store: Any, run_id: str, state: str, workflow_id: str) -> None:
    """A wait due before every other, of a run that cannot take it: pinned to a version
    that is not deployed (resuming it raises), or already ended (nothing resumes it)."""
    ended = datetime(2026, 1, 2, tzinfo=UTC) if state != "waiting" else None
    with store.begin() as connection:
        connection.execute(
            runs.insert().values(
                id=run_id,
                contact_id="zz",
                workflow_id=workflow_id,
                version=7 if workflow_id == "gone" else 1,
                state=state,
                node="pause",
                steps=1,
                properties={},
                entered_at=datetime(2026, 1, 1, tzinfo=UTC),
                ended_at=ended,
            )
        )
        connection.execute(
            waits.insert().values(
                run_id=run_id,
                contact_id="zz",
                due_at=datetime(2026, 1, 2, tzinfo=UTC),
                next_node="points",
            )
        )


def test_a_wait_that_fails_its_batch_steps_aside_for_the_lease(store: Any) -> None:
    """A batch that raises is rolled back whole, then its waits are leased (on SQLite,
    where the batch's waits were read inside it, in a transaction of their own): the next
    batches take the waits behind them, and the failing one is tried again once the lease
    runs out, instead of failing every batch from then on."""
    flow, due = _parked(store, 4)
    _park_stray_wait(store, "f" * 32, "waiting", "gone")
    runner = Runner(store, VirtualClock(due))
    with pytest.raises(LookupError):
        runner.resume_due(due, 2)
    assert not any(flow.contact(f"p{n:02d}")["scores"] for n in range(4))
    assert runner.resume_due(due + timedelta(seconds=1), 2) == 2
    assert runner.resume_due(due + timedelta(seconds=2), 2) == 1
    assert runner.resume_due(due + timedelta(seconds=3), 2) == 0
    # p03's wait came due first and shared the failed batch: it waits out the lease too
    assert [bool(flow.contact(f"p{n:02d}")["scores"]) for n in range(4)] == [1, 1, 1, 0]
    with pytest.raises(LookupError):  # the lease ran out: tried again
        runner.resume_due(due + timedelta(minutes=6), 2)


def test_a_wait_no_run_resumes_does_not_hold_up_the_rest(store: Any) -> None:
    """A stray wait (its run already ended) taken with a batch is leased instead of being
    taken again and again at the head of the queue."""
    _, due = _parked(store, 3)
    _park_stray_wait(store, "e" * 32, "completed", "pause-then-score")
    runner = Runner(store, VirtualClock(due))
    got = [runner.resume_due(due + timedelta(seconds=n), 1) for n in range(5)]
    assert got == [0, 1, 1, 1, 0]
    with store.connect() as connection:
        stray = connection.execute(select(waits.c.lease_until)).scalars().all()
    assert len(stray) == 1 and stray[0] is not None


def test_one_resume_transaction_works_through_its_lease_a_part_at_a_time(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume_due(chunk=N) loads, runs and writes N contacts at a time (memory stays that
    of one part) inside the one transaction of its lease, in id order (neighbours share
    pages), whatever order the lease came back in: every wait is resumed once, and a
    failure in a later part takes back the earlier ones, leaving every wait to retry."""
    flow, due = _parked(store, 10)
    runner = Runner(store, VirtualClock(due))
    loads: list[list[str]] = []
    real_load = Wake.load

    def recording_load(wake: Wake, wanted: dict[str, datetime], waits: Any = None) -> None:
        loads.append(list(wanted))
        real_load(wake, wanted, waits)

    monkeypatch.setattr(Wake, "load", recording_load)
    real_claim, real_take = runner.claim_due, runner._take_due  # PostgreSQL, SQLite
    monkeypatch.setattr(runner, "claim_due", lambda *args: list(reversed(real_claim(*args))))
    monkeypatch.setattr(runner, "_take_due", lambda *args: list(reversed(real_take(*args))))
    real_resume = Wake.resume_due_waits

    def fail_on_p09(wake: Wake, state: Any, until: datetime) -> None:
        if state.id == "p09":  # the last id: in the last part
            raise RuntimeError("boom")
        real_resume(wake, state, until)

    monkeypatch.setattr(Wake, "resume_due_waits", fail_on_p09)
    with pytest.raises(RuntimeError):
        runner.resume_due(due, 100, timedelta(minutes=5), chunk=3)
    assert [len(part) for part in loads] == [3, 3, 3, 1]
    assert all("SCORE" not in flow.contact(f"p{n:02d}")["scores"] for n in range(10))
    monkeypatch.setattr(Wake, "resume_due_waits", real_resume)
    loads.clear()
    later = due + timedelta(minutes=10)  # the failed lease has run out (PostgreSQL)
    assert runner.resume_due(later, 100, timedelta(minutes=5), chunk=3) == 10
    assert loads == [["p00", "p01", "p02"], ["p03", "p04", "p05"], ["p06", "p07", "p08"], ["p09"]]
    assert [flow.contact(f"p{n:02d}")["scores"]["SCORE"] for n in range(10)] == [5] * 10
    with store.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(waits)) == 0


def _points(workflow_id: str, event: str, wait: str, add: float) -> dict[str, Any]:
    return {
        "id": workflow_id,
        "version": 1,
        "triggers": [{"type": "event", "event": event}],
        "reentry": "always",
        "start": "pause",
        "nodes": {
            "pause": {"type": "wait", "for": wait, "next": "points"},
            "points": {"type": "update_score", "score": "SCORE", "add": add},
        },
    }


ACCOUNT_READY = {
    "id": "account-ready",
    "version": 1,
    "triggers": [{"type": "score_crossed", "score": "SCORE", "above": 100, "of": "account"}],
    "start": "hook",
    "nodes": {"hook": {"type": "webhook", "url": "https://crm.example.com/ready"}},
}


@pytest.mark.parametrize("chunk", [None, 1])
def test_a_lease_in_parts_rolls_its_accounts_up_once(store: Any, chunk: int | None) -> None:
    """Two members of one account (sum 60): z falls 60 at 11:00, a rises 60 at 12:00. In
    time the account goes 60 -> 0 -> 60 and never crosses 100. Rolled up after each part
    (a's part first, by id) it would be 120 for a moment and send the webhook; a lease in
    parts rolls its accounts up once, at the end, as one wake over the lease does."""
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    flow = Leadflow(engine=store, clock=VirtualClock(start))
    flow.deploy(
        [
            ACCOUNT_READY,
            _points("seed", "Seed", "PT1M", 60),
            _points("down", "Down", "PT1H", -60),
            _points("up", "Up", "PT2H", 60),
        ]
    )
    stamp = "2026-01-05T10:00:00Z"
    flow.send(
        [
            {"type": "group", "userId": who, "groupId": "acme", "messageId": f"g-{who}"}
            | {"timestamp": stamp}
            for who in ("a", "z")
        ]
        + [
            {"type": "track", "userId": who, "event": name, "messageId": f"{name}-{who}"}
            | {"timestamp": stamp}
            for who, name in (("z", "Seed"), ("z", "Down"), ("a", "Up"))
        ]
    )
    runner = Runner(store, VirtualClock(start))
    seeded = start + timedelta(minutes=5)
    assert runner.resume_due(seeded, 100, timedelta(minutes=5), chunk=chunk) == 1
    later = start + timedelta(hours=3)
    assert runner.resume_due(later, 100, timedelta(minutes=5), chunk=chunk) == 2
    with store.connect() as connection:
        hooks = connection.scalar(select(func.count()).select_from(outbox))
        account = connection.scalar(select(account_scores.c.value))
    assert (hooks, account) == (0, 60)
