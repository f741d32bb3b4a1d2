"""Account roll-ups kept current while member scores change, on SQLite (and PostgreSQL
with ``--postgres``).

Measured: ``Runner.ingest`` of 200,000 "Email Clicked" track events from the members of
10,000 accounts of 10 contacts each (100,000 contacts), every event entering a workflow that
adds 5 points to SCORE. A score model gives SCORE its account roll-up: once as a ``sum``
(kept incrementally, ``value = value + delta`` per touched account and batch), once as
``top`` 3 (recomputed per touched account and batch). Baseline, in the same run: the same
contacts, scores, model, workflow and events, but no contact belongs to an account, so no
roll-up work is done. Figures: member score changes/s with roll-ups on and off, the ratio,
and account roll-up updates/s.

    python bench/bench_rollup.py --methods sum   # 200,000 events, 100,000 contacts, 3 min
    python bench/bench_rollup.py            # sum and top 3
    python bench/bench_rollup.py --quick    # 20,000 events, 10,000 contacts
    python bench/bench_rollup.py --quick --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from machine import machine_line
from sqlalchemy import Engine, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.runner import BATCH_SIZE, Runner
from engine.segment import Message
from engine.store.db import open_engine
from engine.store.moments import stored_moment
from engine.store.tables import account_scores, scores

SEED = 20260105
START = datetime(2026, 1, 5, tzinfo=UTC)
CREATED = START - timedelta(days=60)
MEMBERS = 10
POINTS = 5.0
TOP = 3

CLICK_POINTS: dict[str, Any] = {
    "id": "click-points",
    "version": 1,
    "name": "Click points",
    "notes": "Bench workflow: every email click adds 5 to SCORE.",
    "triggers": [{"type": "event", "event": "Email Clicked"}],
    "reentry": "always",
    "start": "add",
    "nodes": {"add": {"type": "update_score", "score": "SCORE", "add": POINTS}},
}


def score_model(method: str) -> dict[str, Any]:
    rollup: dict[str, Any] = {"method": method}
    if method == "top":
        rollup["top"] = TOP
    return {
        "kind": "score_model",
        "id": "bench-score",
        "version": 1,
        "name": "Bench score",
        "notes": f"Bench model: SCORE rolled up to accounts by {method}.",
        "score": "SCORE",
        "sales_ready": 100,
        "rollup": rollup,
    }


@dataclass
class Data:
    contacts: list[str]
    account_of: dict[str, str]
    start_scores: dict[str, float]
    messages: list[Message]


def make_data(accounts: int, events: int) -> Data:
    """``accounts`` x 10 contacts with a SCORE of 0-60 in steps of 5; ``events`` clicks,
    one a second, from contacts picked at random (a few busy accounts get more)."""
    rng = random.Random(SEED)
    people, account_of, start = [], {}, {}
    for account in range(accounts):
        for member in range(MEMBERS):
            contact_id = f"c{account:05d}-{member}@bench.test"
            people.append(contact_id)
            account_of[contact_id] = f"acct-{account:05d}"
            start[contact_id] = 5.0 * rng.randrange(13)
    busy = people[: max(1, len(people) // 20)]  # the first 5 % click a third of the time
    messages = []
    for number in range(events):
        who = rng.choice(busy) if rng.random() < 1 / 3 else rng.choice(people)
        messages.append(
            Message(
                type="track",
                contact_id=who,
                timestamp=START + timedelta(seconds=number),
                message_id=f"m{number:08d}",
                event="Email Clicked",
            )
        )
    return Data(people, account_of, start, messages)


def rollup_of(values: list[float], method: str) -> float:
    if method == "top":
        return float(sum(sorted(values, reverse=True)[:TOP]))
    return float(sum(values))


# --- stores ------------------------------------------------------------------------------


def bulk_load(engine: Engine, tables: dict[str, tuple[str, list[tuple[Any, ...]]]]) -> None:
    """Rows straight into the tables: sqlite3 executemany in one transaction, or COPY."""
    raw = engine.raw_connection()
    db = raw.driver_connection
    if isinstance(db, sqlite3.Connection):
        db.execute("BEGIN IMMEDIATE")
        for table, (columns, rows) in tables.items():
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                db.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks})",
                    [
                        tuple(stored_moment(v) if isinstance(v, datetime) else v for v in row)
                        for row in rows
                    ],
                )
        db.execute("COMMIT")
    else:
        assert isinstance(db, psycopg.Connection)
        with db.cursor() as cursor:
            for table, (columns, rows) in tables.items():
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        db.commit()
        db.autocommit = True
        db.execute("VACUUM ANALYZE")
        db.autocommit = False  # the connection goes back to the engine's pool
    raw.close()


def load(engine: Engine, data: Data, method: str | None) -> None:
    """Contacts with their SCORE; with a method, their accounts and the accounts' current
    roll-ups too."""
    contact_rows, score_rows, account_rows, rollup_rows = [], [], [], []
    members: dict[str, list[float]] = defaultdict(list)
    for contact_id in data.contacts:
        account = data.account_of[contact_id] if method else None
        value = data.start_scores[contact_id]
        contact_rows.append((contact_id, "{}", "{}", account, CREATED, CREATED))
        score_rows.append((contact_id, "SCORE", value, value, CREATED, CREATED))
        if account is not None:
            members[account].append(value)
    if method is not None:
        for account, values in members.items():
            account_rows.append((account, "{}", CREATED, CREATED))
            rollup_rows.append((account, "SCORE", rollup_of(values, method), CREATED))
    bulk_load(
        engine,
        {
            "contacts": (
                "id, attributes, grades, account_id, created_at, updated_at",
                contact_rows,
            ),
            "scores": ("contact_id, name, value, peak, updated_at, increased_at", score_rows),
            "accounts": ("id, traits, created_at, updated_at", account_rows),
            "account_scores": ("account_id, name, value, updated_at", rollup_rows),
        },
    )


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


@contextmanager
def store(backend: str, folder: Path, server: str | None, label: str) -> Iterator[Engine]:
    if backend == "sqlite":
        engine = open_engine(f"sqlite:///{folder / label}.db")
        try:
            yield engine
        finally:
            engine.dispose()
        return
    assert server is not None
    with postgres_database(server) as url:
        engine = open_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


# --- one run -------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    cpu: float
    taken: int
    scores: dict[str, float]
    rollups: dict[str, float]


def run(engine: Engine, data: Data, method: str, accounts: bool) -> Outcome:
    load(engine, data, method if accounts else None)
    end = data.messages[-1].timestamp + timedelta(seconds=1)
    flow = Leadflow(engine=engine, clock=VirtualClock(START))
    flow.deploy([score_model(method), CLICK_POINTS])
    runner = Runner(engine, VirtualClock(end))
    runner.catalog  # noqa: B018 - compiled before timing, as a running service has it
    start, cpu = time.perf_counter(), time.process_time()
    report = runner.ingest(data.messages, source="bench")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    with engine.connect() as connection:
        got = dict(
            connection.execute(
                select(scores.c.contact_id, scores.c.value).where(scores.c.name == "SCORE")
            ).all()
        )
        rolled = dict(
            connection.execute(
                select(account_scores.c.account_id, account_scores.c.value).where(
                    account_scores.c.name == "SCORE"
                )
            ).all()
        )
    return Outcome(seconds, cpu, report.taken, got, rolled)


def expected(data: Data, method: str) -> tuple[dict[str, float], dict[str, float], int]:
    clicks = Counter(m.contact_id for m in data.messages)
    final = {c: data.start_scores[c] + POINTS * clicks[c] for c in data.contacts}
    members: dict[str, list[float]] = defaultdict(list)
    for contact_id, value in final.items():
        members[data.account_of[contact_id]].append(value)
    rollups = {a: rollup_of(v, method) for a, v in members.items()}
    # account updates: per batch, each account with a member whose score changed
    updates = 0
    for start in range(0, len(data.messages), BATCH_SIZE):
        batch = data.messages[start : start + BATCH_SIZE]
        updates += len({data.account_of[m.contact_id] for m in batch})
    return final, rollups, updates


def check(
    label: str, outcome: Outcome, data: Data, scores_want: dict[str, float], rolled: Any
) -> list[str]:
    problems = []
    if outcome.taken != len(data.messages):
        problems.append(f"{label}: took {outcome.taken:,} of {len(data.messages):,} events")
    if outcome.scores != scores_want:
        wrong = [c for c in scores_want if outcome.scores.get(c) != scores_want[c]]
        problems.append(f"{label}: SCORE differs for {len(wrong):,} contacts ({wrong[:3]})")
    if rolled is None:
        if outcome.rollups:
            problems.append(f"{label}: {len(outcome.rollups):,} account roll-ups, expected none")
    elif any(abs(outcome.rollups.get(a, -1.0) - v) > 1e-6 for a, v in rolled.items()):
        wrong = [a for a, v in rolled.items() if abs(outcome.rollups.get(a, -1.0) - v) > 1e-6]
        problems.append(f"{label}: roll-up differs for {len(wrong):,} accounts ({wrong[:3]})")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 accounts, 20,000 events")
    parser.add_argument("--accounts", type=int, help="accounts of 10 contacts (default 10,000)")
    parser.add_argument("--events", type=int, help="click events (default 200,000)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="also run on PostgreSQL: a database is created on this server and dropped",
    )
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--methods",
        choices=("both", "sum", "top"),
        default="both",
        help="which roll-ups to measure (default both)",
    )
    args = parser.parse_args()
    print(machine_line(), flush=True)
    accounts = args.accounts or (1_000 if args.quick else 10_000)
    count = args.events or (20_000 if args.quick else 200_000)
    backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres else [])
    if not backends:
        parser.error("nothing to run")
    data = make_data(accounts, count)
    print(
        f"inputs: {accounts:,} accounts x {MEMBERS} members = {len(data.contacts):,} contacts, "
        f"{count:,} 'Email Clicked' events (+{POINTS:g} SCORE each), batches of {BATCH_SIZE:,}"
    )
    failed = False
    for backend in backends:
        print(f"--- {backend}")
        for method in ("sum", "top") if args.methods == "both" else (args.methods,):
            scores_want, rolled, updates = expected(data, method)
            with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
                folder = Path(name)
                with store(backend, folder, args.postgres, f"{method}-on") as engine:
                    ours = run(engine, data, method, accounts=True)
                with store(backend, folder, args.postgres, f"{method}-off") as engine:
                    base = run(engine, data, method, accounts=False)
            problems = check(f"{method} with accounts", ours, data, scores_want, rolled)
            problems += check(f"{method} without accounts", base, data, scores_want, None)
            if problems:
                for problem in problems:
                    print(f"FAIL ({backend}): {problem}")
                failed = True
                continue
            label = "sum" if method == "sum" else f"top-{TOP}"
            sqlite = backend == "sqlite"

            def figures(outcome: Outcome, sqlite: bool = sqlite) -> str:
                text = f"{outcome.seconds:.2f} s wall, {count / outcome.seconds:,.0f}/s"
                if sqlite:
                    text += f"; {outcome.cpu:.2f} s CPU, {count / outcome.cpu:,.0f}/s"
                return text

            print(
                f"{label}: roll-ups agree with the members' scores for all {len(rolled):,} accounts"
            )
            print(f"  with roll-ups: {count:,} member score changes, {figures(ours)}")
            print(f"  without accounts: {count:,} member score changes, {figures(base)}")
            print(
                f"  account roll-up updates: {updates:,} (one per touched account and "
                f"batch), {updates / ours.seconds:,.0f}/s of wall time"
            )
            ratio = f"  ratio: {ours.seconds / base.seconds:.2f}x the wall time without accounts"
            if sqlite:
                ratio += f", {ours.cpu / base.cpu:.2f}x the CPU time"
            print(ratio)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
