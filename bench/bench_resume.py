"""Resume 1,000,000 due waits, on SQLite and on PostgreSQL, as the worker does.

Setup (not timed): a store with one deployed workflow (wait a day, +5 SCORE, exit) and
1,000,000 contacts, each with one run parked on that wait, due at a random moment of the
past 30 days; each run entered a day before it is due, and the runs and waits are inserted
in entry order with the engine's time-ordered run ids (``--random-ids``: random ones, as
before session 9; see ``make_rows``). The rows are bulk-inserted with the plain driver
(executemany on SQLite, COPY on PostgreSQL) in one transaction; a second, identical store
is made for the baseline (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL).

Measured: ``Runner.resume_due(now, *wait_lease(dialect))`` called until it returns
0, which is what ``Worker.resume_waits`` does, on the store opened as ``leadflow worker``
opens it (``engine.store.db.WORKER_CHECKPOINT_PAGES``): take a batch of due waits (on PostgreSQL
leased in a transaction of its own; on SQLite read inside the next one), load and lock their
contacts, run the rest of each run (+5 SCORE with its audit row, then exit) and write it
all back in one transaction. Baseline, in the same run and on the identical copy:
the least that resuming needs, batch by batch in one transaction each with the plain driver:
select the next batch of due waits, ``DELETE`` those waits and ``UPDATE`` their runs to
completed; on SQLite with the page cache and checkpoint interval of the worker's store.
Goal (issue 4): at least 20,000 waits/s on SQLite and 50,000/s on PostgreSQL.

    python bench/bench_resume.py                      # 1,000,000 waits, both backends
    python bench/bench_resume.py --quick              # 100,000 waits
    python bench/bench_resume.py --backend sqlite     # or postgresql

PostgreSQL: the server in LEADFLOW_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test);
the script creates its own databases (leadflow_bench_<pid>...) and drops them at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import machine_line
from sqlalchemy import Engine, func, select

from engine.catalog import deploy
from engine.clock import VirtualClock
from engine.model import compile_workflow
from engine.runner import Runner, new_run_id
from engine.store.db import (
    DURABLE_CACHE_KIB,
    WORKER_CHECKPOINT_PAGES,
    open_engine,
    writer,
)
from engine.store.moments import stored_moment
from engine.store.tables import audit, runs, scores, waits
from engine.worker import WorkerSettings, wait_lease

SEED = 20260105
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ENTERED = NOW - timedelta(days=31)
"""When the contacts were created: before any of their runs entered."""
WAIT = timedelta(days=1)
PG_SERVER = os.environ.get("LEADFLOW_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
GOALS = {"sqlite": 20_000, "postgresql": 50_000}
WORKFLOW: dict[str, Any] = {
    "id": "bench-resume",
    "version": 1,
    "name": "Bench: wait, then score",
    "triggers": [{"type": "event", "event": "Bench Started"}],
    "reentry": "always",
    "start": "wait",
    "nodes": {
        "wait": {"type": "wait", "for": "P1D", "next": "points"},
        "points": {"type": "update_score", "score": "SCORE", "add": 5, "next": "done"},
        "done": {"type": "exit"},
    },
}


@dataclass
class Rows:
    """The setup rows as plain lists: every contact, and per wait (in the order the rows
    are inserted) its run id, contact, due moment and the moment its run entered."""

    contacts: list[str]
    run_ids: list[str]
    owners: list[str]
    due: list[datetime]
    entered: list[datetime]
    finished: list[tuple[str, str, datetime]]
    """Runs of another workflow that ended when they entered: (id, contact, moment)."""

    def run_rows(self) -> list[tuple[Any, ...]]:
        """Every run row, in entry order: (id, contact, workflow, state, node, steps,
        entered, ended)."""
        live = [
            (r, c, "bench-resume", "waiting", "wait", 1, e, None)
            for r, c, e in zip(self.run_ids, self.owners, self.entered, strict=True)
        ]
        done = [(r, c, "bench-earlier", "completed", None, 2, e, e) for r, c, e in self.finished]
        return sorted(live + done, key=lambda row: row[6])


def make_rows(count: int, random_ids: bool = False, finished: int = 0) -> Rows:
    """One run per contact, parked on the workflow's one-day wait and due at a random
    moment of the past 30 days. As the engine writes them: each run entered a day before
    it is due, the rows inserted in the order the runs entered, each id made from its
    entry moment (``engine.runner.new_run_id``, UUID version 7; seeded). ``random_ids``:
    the same rows with random version 4 ids, as releases before session 9 made them.

    ``finished``: that many runs of another workflow per wait, which ended as they
    entered, at random moments of the same 30 days, for random contacts, inserted among
    the live ones in entry order, as a production store holds mostly finished runs.

    Even so this store is kinder than a production one: one workflow and one wait length,
    so due order, entry order and id order are the same (bench/README.md, "Ninth
    round")."""
    rng = random.Random(SEED)
    span = 30 * 86_400
    contacts = [f"c{i:07d}@bench.test" for i in range(count)]
    due = sorted(NOW - timedelta(seconds=rng.randrange(1, span)) for _ in range(count))
    owners = contacts[:]
    rng.shuffle(owners)  # which contact's run comes due when: no relation to the ids
    entered = [moment - WAIT for moment in due]

    def run_id(moment: datetime, source: random.Random) -> str:
        if random_ids:
            return uuid.UUID(int=source.getrandbits(128), version=4).hex
        return new_run_id(moment, source.randbytes)

    run_ids = [run_id(moment, rng) for moment in entered]
    ended = []
    # the same finished runs whatever kind of id: their moments and contacts, and their
    # ids, from sources of their own
    place, draw = random.Random(SEED + 1), random.Random(SEED + 2)
    for _ in range(count * finished):
        moment = NOW - WAIT - timedelta(seconds=place.randrange(1, span))
        ended.append((run_id(moment, draw), contacts[place.randrange(count)], moment))
    return Rows(contacts, run_ids, owners, due, entered, ended)


def deploy_workflow(engine: Engine) -> None:
    with writer(engine).begin() as connection:
        deploy(connection, [compile_workflow(WORKFLOW)], ENTERED)


def fill_sqlite(path: Path, rows: Rows) -> None:
    engine = open_engine(f"sqlite:///{path}")
    deploy_workflow(engine)
    engine.dispose()
    db = sqlite3.connect(path, isolation_level=None)
    entered = stored_moment(ENTERED)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO contacts (id, attributes, grades, created_at, updated_at) "
        "VALUES (?, '{}', '{}', ?, ?)",
        ((c, entered, entered) for c in rows.contacts),
    )
    db.executemany(
        "INSERT INTO runs (id, contact_id, workflow_id, version, state, node, steps, "
        "properties, entered_at, ended_at) VALUES (?, ?, ?, 1, ?, ?, ?, '{}', ?, ?)",
        (
            (*row[:6], stored_moment(row[6]), row[7] and stored_moment(row[7]))
            for row in rows.run_rows()
        ),
    )
    db.executemany(
        "INSERT INTO waits (run_id, contact_id, due_at, next_node) VALUES (?, ?, ?, 'points')",
        (
            (r, c, stored_moment(d))
            for r, c, d in zip(rows.run_ids, rows.owners, rows.due, strict=True)
        ),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def fill_postgres(url: str, rows: Rows) -> None:
    engine = open_engine(url)
    deploy_workflow(engine)
    engine.dispose()
    entered = ENTERED.isoformat()
    with psycopg.connect(_plain(url)) as db, db.cursor() as cursor:
        with cursor.copy(
            "COPY contacts (id, attributes, grades, created_at, updated_at) FROM STDIN"
        ) as copy:
            for contact in rows.contacts:
                copy.write_row((contact, "{}", "{}", entered, entered))
        with cursor.copy(
            "COPY runs (id, contact_id, workflow_id, version, state, node, steps, properties, "
            "entered_at, ended_at) FROM STDIN"
        ) as copy:
            for run_id, contact, workflow, state, node, steps, moment, ended in rows.run_rows():
                copy.write_row(
                    (run_id, contact, workflow, 1, state, node, steps, "{}", moment, ended)
                )
        with cursor.copy("COPY waits (run_id, contact_id, due_at, next_node) FROM STDIN") as copy:
            for run_id, contact, due in zip(rows.run_ids, rows.owners, rows.due, strict=True):
                copy.write_row((run_id, contact, due, "points"))
        cursor.execute("ANALYZE")


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class Measured:
    seconds: float
    resumed: int
    batches: int
    cpu: float


def run_engine(url: str, expected: int, batch: int) -> Measured:
    engine = open_engine(url, checkpoint_pages=WORKER_CHECKPOINT_PAGES)  # as `leadflow worker`
    try:
        runner = Runner(engine, VirtualClock(NOW))
        runner.catalog  # noqa: B018 - compiled before timing, as a running worker has it
        settings = WorkerSettings()
        _, chunk = wait_lease(engine.dialect.name)  # the worker's parts
        resumed = batches = 0
        start, cpu = time.perf_counter(), time.process_time()
        while True:
            done = runner.resume_due(NOW, batch, settings.lease, chunk=chunk)
            if not done:
                break
            resumed += done
            batches += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        with engine.connect() as connection:
            left = connection.scalar(select(func.count()).select_from(waits))
            completed = connection.scalar(
                select(func.count())
                .select_from(runs)
                .where(runs.c.state == "completed", runs.c.workflow_id == WORKFLOW["id"])
            )
            fives = connection.scalar(
                select(func.count()).select_from(scores).where(scores.c.value == 5.0)
            )
            audited = connection.scalar(select(func.count()).select_from(audit))
        counts = {"left": left, "completed": completed, "scored": fives, "audited": audited}
        wanted = {"left": 0, "completed": expected, "scored": expected, "audited": expected}
        if resumed != expected or counts != wanted:
            raise SystemExit(f"FAIL: resumed {resumed} of {expected}; store holds {counts}")
        return Measured(seconds, resumed, batches, cpu)
    finally:
        engine.dispose()


def baseline_sqlite(path: Path, batch: int, expected: int) -> Measured:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    # the page cache and checkpoint interval of the worker's store, so the ratio is the
    # engine's own work, not its settings
    db.execute(f"PRAGMA cache_size=-{DURABLE_CACHE_KIB}")
    db.execute(f"PRAGMA wal_autocheckpoint={WORKER_CHECKPOINT_PAGES}")
    now, ended = stored_moment(NOW), stored_moment(NOW)
    done = batches = 0
    start, cpu = time.perf_counter(), time.process_time()
    while True:
        db.execute("BEGIN IMMEDIATE")
        ids = [
            r
            for (r,) in db.execute(
                "SELECT run_id FROM waits WHERE due_at <= ? ORDER BY due_at LIMIT ?", (now, batch)
            )
        ]
        if not ids:
            db.execute("COMMIT")
            break
        marks = ", ".join("?" * len(ids))
        db.execute(f"DELETE FROM waits WHERE run_id IN ({marks})", ids)
        db.execute(
            "UPDATE runs SET state = 'completed', node = 'done', steps = 3, ended_at = ?, "
            f"end_reason = 'completed' WHERE id IN ({marks})",
            [ended, *ids],
        )
        db.execute("COMMIT")
        done += len(ids)
        batches += 1
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    db.close()
    if done != expected:
        raise SystemExit(f"FAIL: baseline resumed {done} of {expected}")
    return Measured(seconds, done, batches, cpu)


def baseline_postgres(url: str, batch: int, expected: int) -> Measured:
    done = batches = 0
    with psycopg.connect(_plain(url)) as db:
        start, cpu = time.perf_counter(), time.process_time()
        while True:
            with db.transaction():
                ids = [
                    r
                    for (r,) in db.execute(
                        "SELECT run_id FROM waits WHERE due_at <= %s ORDER BY due_at LIMIT %s "
                        "FOR UPDATE SKIP LOCKED",
                        (NOW, batch),
                    )
                ]
                if not ids:
                    break
                db.execute("DELETE FROM waits WHERE run_id = ANY(%s)", (ids,))
                db.execute(
                    "UPDATE runs SET state = 'completed', node = 'done', steps = 3, "
                    "ended_at = %s, end_reason = 'completed' WHERE id = ANY(%s)",
                    (NOW, ids),
                )
            done += len(ids)
            batches += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if done != expected:
        raise SystemExit(f"FAIL: baseline resumed {done} of {expected}")
    return Measured(seconds, done, batches, cpu)


@contextmanager
def sqlite_stores(rows: Rows) -> Iterator[tuple[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
        folder = Path(name)
        fill_sqlite(folder / "engine.db", rows)
        shutil.copyfile(folder / "engine.db", folder / "baseline.db")
        yield f"sqlite:///{folder}/engine.db", folder / "baseline.db"


@contextmanager
def postgres_stores(rows: Rows) -> Iterator[tuple[str, str]]:
    name = f"leadflow_bench_{os.getpid()}"
    base = PG_SERVER.rsplit("/", 1)[0]
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'DROP DATABASE IF EXISTS "{name}_base" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        fill_postgres(f"{base}/{name}", rows)
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}_base" TEMPLATE "{name}"')
        yield f"{base}/{name}", f"{base}/{name}_base"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}_base" WITH (FORCE)')


def report(backend: str, batch: int, setup: float, ours: Measured, base: Measured) -> bool:
    rate, base_rate = ours.resumed / ours.seconds, base.resumed / base.seconds
    goal = GOALS[backend]
    where = "in this process" if backend == "sqlite" else "here; the server's is not counted"
    print(f"{backend}: setup {setup:.1f} s (not timed)")
    print(
        f"{backend}: engine resumed {ours.resumed:,} waits in {ours.seconds:.2f} s "
        f"({ours.batches:,} batches of {batch:,}): {rate:,.0f} waits/s "
        f"({ours.cpu:.2f} s CPU {where})"
    )
    print(
        f"{backend}: baseline (plain DELETE waits + UPDATE runs): {base.seconds:.2f} s, "
        f"{base_rate:,.0f} waits/s ({base.cpu:.2f} s CPU)"
    )
    print(f"{backend}: ratio: engine is {ours.seconds / base.seconds:.2f}x slower than baseline")
    print(f"{backend}: load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    met = rate >= goal
    print(f"{backend}: goal (>= {goal:,} waits/s): " + ("met" if met else "NOT met"))
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 waits")
    parser.add_argument("--waits", type=int, help="number of due waits (default 1,000,000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument(
        "--batch", type=int, help="waits per resume_due call (default: engine.worker.wait_lease)"
    )
    parser.add_argument(
        "--random-ids",
        action="store_true",
        help="random version 4 run ids, as releases before session 9 made them",
    )
    parser.add_argument(
        "--finished",
        type=int,
        default=0,
        help="finished runs of another workflow per wait, among the live ones (default 0)",
    )
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.waits or (100_000 if args.quick else 1_000_000)
    rows = make_rows(count, args.random_ids, args.finished)
    made = "random version 4" if args.random_ids else "time-ordered version 7"
    print(f"inputs: {count:,} due waits, one per contact, rows in entry order, {made} run ids")
    if args.finished:
        print(f"inputs: {count * args.finished:,} finished runs among them")
    if args.backend in ("sqlite", "both"):
        start = time.perf_counter()
        with sqlite_stores(rows) as (url, copy):
            setup = time.perf_counter() - start
            batch, _ = wait_lease("sqlite", args.batch)
            ours = run_engine(url, count, batch)
            base = baseline_sqlite(copy, batch, count)
        report("sqlite", batch, setup, ours, base)
    if args.backend in ("postgresql", "both"):
        start = time.perf_counter()
        with postgres_stores(rows) as (url, copy):
            setup = time.perf_counter() - start
            batch, _ = wait_lease("postgresql", args.batch)
            ours = run_engine(url, count, batch)
            base = baseline_postgres(copy, batch, count)
        report("postgresql", batch, setup, ours, base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
