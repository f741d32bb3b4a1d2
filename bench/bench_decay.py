"""One decay tick of the sales-ready score model over 1,000,000 contacts, on SQLite
(and on PostgreSQL with ``--postgres``).

Measured: ``Runner.fire_decay`` at the model's first tick, which takes the tick, runs the
set-wise ``decay_once`` (one UPDATE with the "no engagement for 30 days" NOT EXISTS over
events and the floor of 50, one INSERT ... SELECT of the audit rows, one SELECT of the
scores that moved across a band bound or threshold), moves the contacts that fell out of a
band onto their new band list, enters the ones that crossed a ``score_crossed`` trigger
into its workflow, and refreshes account roll-ups. Baseline, in the same run, on a copy of
the same store (same schema: since revision 0002 no index holds ``scores.value``): the
bare ``UPDATE scores SET value = max(value * 0.9, 50) WHERE name = 'SCORE' AND value >
50``, with no audit, no quiet check and no follow-up. Goal (issue 5): 1,000,000 contacts
decayed in under 5 s on SQLite.

    python bench/bench_decay.py                 # 1,000,000 contacts, about 2 minutes
    python bench/bench_decay.py --quick         # 100,000 contacts, about 10 s
    python bench/bench_decay.py --quick --postgres postgresql://postgres@127.0.0.1:5432/test
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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import machine_line
from sqlalchemy import Engine, func, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.runner import Runner
from engine.scoring.decay import TICK_CACHE_KIB
from engine.scoring.models import compile_score_model
from engine.store.db import open_engine
from engine.store.moments import stored_moment
from engine.store.tables import account_scores, audit, list_members, runs, scores

SEED = 20260105
MODEL_PATH = Path(__file__).resolve().parent.parent / "workflows" / "models" / "sales-ready.json"
DEPLOYED = datetime(2026, 1, 5, tzinfo=UTC)
TICK = DEPLOYED + timedelta(days=7)  # the model decays every P7D: its first tick
QUIET_SINCE = TICK - timedelta(days=30)  # after P30D without engagement
CREATED = datetime(2025, 9, 1, tzinfo=UTC)
FLOOR = 50.0  # floor_of_sales_ready 0.5 x sales_ready 100
COOLING = "Cooling leads"
ACCOUNT_SIZE = 10
TOP = 3  # the sales-ready model rolls SCORE up to accounts as the sum of the top 3 members
GOAL_SECONDS = 5.0
GOAL_CONTACTS = 1_000_000

# A sales team wants to hear when a lead cools off below the sales-qualified band.
COOLING_WORKFLOW: dict[str, Any] = {
    "id": "cooling-leads",
    "version": 1,
    "name": "Cooling leads",
    "notes": "Bench workflow: a lead whose SCORE falls below 81 goes on 'Cooling leads'.",
    "triggers": [{"type": "score_crossed", "score": "SCORE", "below": 81}],
    "reentry": "always",
    "start": "cool",
    "nodes": {"cool": {"type": "add_to_list", "list": COOLING}},
}


@dataclass
class Contact:
    id: str
    value: float
    peak: float
    engaged: bool  # an engagement event inside the 30 quiet days before the tick
    account: str | None  # half the contacts belong to an account of 10


def account_of(number: int) -> str | None:
    group = number // ACCOUNT_SIZE
    return f"acct-{group:06d}" if group % 2 == 0 else None


def top_sum(values: list[float]) -> float:
    return float(sum(sorted(values, reverse=True)[:TOP]))


@dataclass
class Data:
    contacts: list[Contact]
    events: list[tuple[str, str, str, datetime]]  # message id, contact, event name, time


def make_data(count: int) -> Data:
    """Deterministic contacts and events. Shares of the contacts:

    * 2 % at or under the floor (10-50: New, Warm or exactly 50): never decayed;
    * 2 % with an engagement event in the last 30 days: quiet check says no;
    * 1 % at 81-88.5 (Sales-qualified): decay takes them under 80, so they change band
      and cross the ``below 81`` trigger of the cooling workflow;
    * 95 % at 50.5-80 or 90-400: decayed, staying in their band.

    A further 30 % of contacts have an old engagement (45-120 days before the tick), and
    every tenth contact a recent event that is not an engagement ("Invoice Paid"), so the
    NOT EXISTS finds rows and has to look at their names and times. Contacts come in groups
    of 10; every other group is an account (half the contacts are account members), whose
    SCORE roll-up (top 3) the tick has to refresh."""
    rng = random.Random(SEED)
    people: list[Contact] = []
    found: list[tuple[str, str, str, datetime]] = []
    engagements = ["Email Clicked", "Ebook Downloaded", "Page Viewed", "Video Watched"]
    for number in range(count):
        contact_id = f"c{number:07d}@bench.test"
        draw = rng.random()
        engaged = False
        if draw < 0.02:
            value = round(rng.uniform(10, 50), 2)
        elif draw < 0.04:
            value = round(rng.uniform(50.5, 400), 2)
            engaged = True
        elif draw < 0.05:
            value = round(rng.uniform(81, 88.5), 2)
        elif rng.random() < 0.3:
            value = round(rng.uniform(50.5, 80), 2)
        else:
            value = round(rng.uniform(90, 400), 2)
        peak = round(value + rng.choice((0.0, 0.0, rng.uniform(0, 50))), 2)
        people.append(Contact(contact_id, value, peak, engaged, account_of(number)))
        if engaged:
            moment = TICK - timedelta(days=rng.randrange(1, 29), seconds=number % 86400)
            found.append((f"r{number:07d}", contact_id, rng.choice(engagements), moment))
        if rng.random() < 0.3:
            moment = TICK - timedelta(days=rng.randrange(45, 120), seconds=number % 86400)
            found.append((f"o{number:07d}", contact_id, rng.choice(engagements), moment))
        if number % 10 == 0:
            moment = TICK - timedelta(days=rng.randrange(1, 29))
            found.append((f"i{number:07d}", contact_id, "Invoice Paid", moment))
    return Data(people, found)


def band_list(value: float) -> str:
    if value < 20:
        return "New leads"
    if value < 50:
        return "Warm leads"
    if value <= 80:
        return "Qualified leads"
    return "Sales-qualified leads"


@dataclass
class Expected:
    values: dict[str, float]
    decayed: int
    crossed: int
    over_floor: int  # rows the bare baseline UPDATE touches
    rollups: dict[str, float]


def expected(data: Data) -> Expected:
    model = compile_score_model(_model_document())
    decay = model.decay
    assert decay is not None
    values: dict[str, float] = {}
    decayed = crossed = over_floor = 0
    for person in data.contacts:
        new = person.value
        if person.value > FLOOR:
            over_floor += 1
            if not person.engaged:
                new = round(decay.apply(person.value, person.peak), 6)
                decayed += 1
                crossed += band_list(new) != band_list(person.value)
        values[person.id] = new
    return Expected(values, decayed, crossed, over_floor, rollups(data, values))


def rollups(data: Data, values: dict[str, float]) -> dict[str, float]:
    members: dict[str, list[float]] = {}
    for person in data.contacts:
        if person.account is not None:
            members.setdefault(person.account, []).append(values[person.id])
    return {account: top_sum(found) for account, found in members.items()}


def _model_document() -> dict[str, Any]:
    import orjson

    document: dict[str, Any] = orjson.loads(MODEL_PATH.read_bytes())
    return document


# --- stores ------------------------------------------------------------------------------


def _rows(data: Data) -> dict[str, list[tuple[Any, ...]]]:
    rng = random.Random(SEED + 1)
    contact_rows, score_rows, member_rows = [], [], []
    for person in data.contacts:
        changed = TICK - timedelta(days=rng.randrange(31, 90), seconds=rng.randrange(86400))
        contact_rows.append((person.id, "{}", "{}", person.account, CREATED, changed))
        score_rows.append((person.id, "SCORE", person.value, person.peak, changed, changed))
        member_rows.append((band_list(person.value), person.id, changed))
    event_rows = [(m, c, "track", n, "{}", t, t) for m, c, n, t in data.events]
    start = rollups(data, {person.id: person.value for person in data.contacts})
    return {
        "contacts": contact_rows,
        "scores": score_rows,
        "list_members": member_rows,
        "events": event_rows,
        "accounts": [(a, "{}", CREATED, CREATED) for a in start],
        "account_scores": [(a, "SCORE", v, CREATED) for a, v in start.items()],
    }


COLUMNS = {
    "contacts": "id, attributes, grades, account_id, created_at, updated_at",
    "scores": "contact_id, name, value, peak, updated_at, increased_at",
    "list_members": "list_name, contact_id, added_at",
    "events": "message_id, contact_id, type, name, properties, timestamp, received_at",
    "accounts": "id, traits, created_at, updated_at",
    "account_scores": "account_id, name, value, updated_at",
}


def load_sqlite(engine: Engine, data: Data) -> None:
    """Bulk rows with sqlite3 executemany, in one transaction, through the engine's own
    connection settings."""
    raw = engine.raw_connection()
    db = raw.driver_connection
    assert isinstance(db, sqlite3.Connection)
    db.execute("BEGIN IMMEDIATE")
    for table, rows in _rows(data).items():
        marks = ", ".join("?" * len(rows[0]))
        db.executemany(
            f"INSERT INTO {table} ({COLUMNS[table]}) VALUES ({marks})",
            [tuple(stored_moment(v) if isinstance(v, datetime) else v for v in r) for r in rows],
        )
    db.execute("COMMIT")  # no ANALYZE: the engine never runs it, so neither does the bench
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()


def load_postgres(engine: Engine, data: Data) -> None:
    """Bulk rows with COPY (PostgreSQL's executemany), then ANALYZE."""
    raw = engine.raw_connection()
    db = raw.driver_connection
    assert isinstance(db, psycopg.Connection)
    with db.cursor() as cursor:
        for table, rows in _rows(data).items():
            with cursor.copy(f"COPY {table} ({COLUMNS[table]}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
    db.commit()
    db.autocommit = True
    db.execute("VACUUM ANALYZE")
    db.autocommit = False
    raw.close()


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    name = f"leadflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def deploy(engine: Engine) -> None:
    flow = Leadflow(engine=engine, clock=VirtualClock(DEPLOYED))
    flow.deploy([MODEL_PATH, COOLING_WORKFLOW])


# --- the two sides -----------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    cpu: float  # CPU time of this process: all of the work on SQLite, the client's on PG
    decayed: int
    values: dict[str, float]
    audit_rows: int = 0
    in_cooling: int = 0
    sales_qualified: int = 0
    band_rows: int = 0
    cooling_runs: int = 0
    rollups: dict[str, float] = field(default_factory=dict)


def settle() -> None:
    """Write the set-up's files out before timing: loading and copying the stores leaves
    about a gigabyte of dirty pages for the kernel to write back, which a timed run would
    otherwise share the disk with (the same call on both sides)."""
    os.sync()


def run_engine(engine: Engine) -> Outcome:
    runner = Runner(engine, VirtualClock(TICK))
    runner.catalog  # noqa: B018 - loaded before timing, as a running worker has it
    settle()
    start, cpu = time.perf_counter(), time.process_time()
    fallen = runner.fire_decay(TICK)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with engine.connect() as connection:
        values = dict(
            connection.execute(
                select(scores.c.contact_id, scores.c.value).where(scores.c.name == "SCORE")
            ).all()
        )
        audit_rows = connection.scalar(
            select(func.count()).select_from(audit).where(audit.c.node == "decay")
        )
        lists: dict[str, int] = dict(
            connection.execute(
                select(list_members.c.list_name, func.count()).group_by(list_members.c.list_name)
            ).all()
        )
        cooling_runs = connection.scalar(
            select(func.count()).select_from(runs).where(runs.c.workflow_id == "cooling-leads")
        )
        rolled = dict(
            connection.execute(
                select(account_scores.c.account_id, account_scores.c.value).where(
                    account_scores.c.name == "SCORE"
                )
            ).all()
        )
    return Outcome(
        seconds,
        cpu,
        fallen,
        values,
        int(audit_rows or 0),
        int(lists.get(COOLING, 0)),
        int(lists.get("Sales-qualified leads", 0)),
        sum(lists.values()) - int(lists.get(COOLING, 0)),
        int(cooling_runs or 0),
        rolled,
    )


def run_baseline(engine: Engine, postgres: bool) -> Outcome:
    greatest = "greatest" if postgres else "max"
    sql = (
        f"UPDATE scores SET value = {greatest}(value * 0.9, 50) WHERE name = 'SCORE' AND value > 50"
    )
    raw = engine.raw_connection()
    db = raw.driver_connection
    settle()
    start, cpu = time.perf_counter(), time.process_time()
    if postgres:
        assert isinstance(db, psycopg.Connection)
        touched = db.execute(sql).rowcount
        db.commit()
    else:
        assert isinstance(db, sqlite3.Connection)
        db.execute(f"PRAGMA cache_size = -{TICK_CACHE_KIB}")  # the cache a tick runs with
        db.execute("BEGIN IMMEDIATE")
        touched = db.execute(sql).rowcount
        db.execute("COMMIT")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    raw.close()
    return Outcome(seconds, cpu, touched, {})


def check(ours: Outcome, base: Outcome, want: Expected, count: int) -> list[str]:
    problems = []
    if ours.decayed != want.decayed:
        problems.append(f"engine decayed {ours.decayed:,}, expected {want.decayed:,}")
    wrong = [c for c, v in want.values.items() if abs(ours.values.get(c, -1.0) - v) > 1e-6]
    if wrong:
        problems.append(f"{len(wrong):,} scores differ from Decay.apply (e.g. {wrong[:3]})")
    if ours.audit_rows != want.decayed:
        problems.append(f"{ours.audit_rows:,} decay audit rows for {want.decayed:,} decays")
    if ours.in_cooling != want.crossed or ours.cooling_runs != want.crossed:
        problems.append(
            f"'{COOLING}': {ours.in_cooling:,} members and {ours.cooling_runs:,} runs, "
            f"expected {want.crossed:,}"
        )
    if ours.band_rows != count:
        problems.append(f"{ours.band_rows:,} band list rows for {count:,} contacts")
    want_sql = sum(1 for v in want.values.values() if v > 80)
    if ours.sales_qualified != want_sql:
        problems.append(f"{ours.sales_qualified:,} sales-qualified, expected {want_sql:,}")
    drift = [a for a, v in want.rollups.items() if abs(ours.rollups.get(a, -1.0) - v) > 1e-6]
    if drift or len(ours.rollups) != len(want.rollups):
        problems.append(f"{len(drift):,} account roll-ups differ from the top 3 (e.g. {drift[:3]})")
    if base.decayed != want.over_floor:
        problems.append(f"baseline updated {base.decayed:,}, expected {want.over_floor:,}")
    return problems


def measure(backend: str, data: Data, folder: Path, server: str | None) -> tuple[Outcome, ...]:
    if backend == "sqlite":
        path = folder / "decay.db"
        engine = open_engine(f"sqlite:///{path}")
        load_sqlite(engine, data)
        deploy(engine)
        engine.dispose()
        shutil.copyfile(path, folder / "baseline.db")
        base_engine = open_engine(f"sqlite:///{folder / 'baseline.db'}")
        base = run_baseline(base_engine, postgres=False)
        base_engine.dispose()
        engine = open_engine(f"sqlite:///{path}")
        ours = run_engine(engine)
        engine.dispose()
        return ours, base
    assert server is not None
    with postgres_database(server) as url:
        engine = open_engine(url)
        load_postgres(engine, data)
        deploy(engine)
        engine.dispose()
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}_base" TEMPLATE "{name}"')
        try:
            base_engine = open_engine(f"{url}_base")
            base = run_baseline(base_engine, postgres=True)
            base_engine.dispose()
        finally:
            with psycopg.connect(server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}_base" WITH (FORCE)')
        engine = open_engine(url)
        ours = run_engine(engine)
        engine.dispose()
        return ours, base


def report(backend: str, ours: Outcome, base: Outcome) -> None:
    """Wall time, and on SQLite the process's CPU time too: every statement runs in this
    process there, so on a busy machine CPU time is what an idle one would take."""
    sqlite = backend == "sqlite"

    def figures(outcome: Outcome) -> str:
        text = f"{outcome.seconds:.2f} s wall, {outcome.decayed / outcome.seconds:,.0f}/s"
        if sqlite:
            text += f"; {outcome.cpu:.2f} s CPU, {outcome.decayed / outcome.cpu:,.0f}/s"
        return text

    print(f"engine (fire_decay): {ours.decayed:,} decayed, {figures(ours)}")
    print(f"baseline (bare UPDATE): {base.decayed:,} updated, {figures(base)}")
    ratio = f"ratio: engine is {ours.seconds / base.seconds:.2f}x the bare UPDATE's wall time"
    if sqlite:
        ratio += f", {ours.cpu / base.cpu:.2f}x its CPU time"
    print(ratio)
    if sqlite:
        wall = ours.seconds * GOAL_CONTACTS / ours.decayed
        cpu = ours.cpu * GOAL_CONTACTS / ours.decayed
        print(
            f"goal (1,000,000 decayed in < {GOAL_SECONDS:g} s on SQLite): {wall:.2f} s wall "
            f"and {cpu:.2f} s CPU per million decayed, "
            + ("met" if wall < GOAL_SECONDS else "NOT met")
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 contacts")
    parser.add_argument("--contacts", type=int, help="number of contacts (default 1,000,000)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run on PostgreSQL: a database is created on this server and dropped",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.contacts or (100_000 if args.quick else 1_000_000)
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    if not backends:
        parser.error("nothing to run")
    data = make_data(count)
    want = expected(data)
    print(
        f"inputs: {count:,} contacts with SCORE ({len(want.rollups):,} accounts of "
        f"{ACCOUNT_SIZE} hold half of them), {len(data.events):,} events; sales-ready model "
        f"(10 % a week after P30D quiet, floor 50, 4 bands, top-3 account roll-up) and one "
        f"score_crossed below 81 workflow"
    )
    print(
        f"expected: {want.decayed:,} decayed, {want.crossed:,} change band and cross 81, "
        f"{count - want.decayed:,} left alone (at the floor or engaged)"
    )
    failed = False
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
            ours, base = measure(backend, data, Path(name), args.postgres)
        problems = check(ours, base, want, count)
        if problems:
            for problem in problems:
                print(f"FAIL ({backend}): {problem}")
            failed = True
            continue
        print(f"--- {backend}")
        print(
            f"agreement: every score as Decay.apply, {ours.audit_rows:,} audit rows, "
            f"{ours.in_cooling:,} band moves and cooling entries, "
            f"{len(ours.rollups):,} account roll-ups (top 3)"
        )
        report(backend, ours, base)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
