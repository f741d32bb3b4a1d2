"""Ingest Segment track events and run a stage-scoring workflow on them, on SQLite.

Measured: ``Leadflow.ingest_lines`` (JSON Lines -> parse -> dedupe -> store events -> load
and lock contacts -> run ``workflows/engagement-stage.json`` -> write scores, attributes,
lists, runs and audit) over 200,000 track events from 20,000 contacts, every one of which
triggers the workflow. Baseline, in the same run: a floor that parses the same lines with
orjson, applies the same changes (ENGAGEMENT_COUNT + 1, SCORE + 15 or + 10, the list
'New qualified leads' once SCORE > 4) to plain dicts and writes events, contacts, scores,
list members and one audit row per change with ``sqlite3`` executemany, as many lines per
transaction as the engine (``engine.runner.BATCH_SIZE``), into a store with the same
schema. The floor is run a second time without its writes (it builds the same rows and
drops them): what its parsing and plain-dict bookkeeping cost before any database work,
so the two floors together show how much of the floor is SQLite's. Goal (issue 4): at
least 50,000 events/s and within 3x of the floor.

    python bench/bench_ingest.py            # 200,000 events, about a minute
    python bench/bench_ingest.py --quick    # 20,000 events, a few seconds
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from machine import machine_line
from sqlalchemy import func, select

from engine.api import Leadflow
from engine.clock import VirtualClock, format_timestamp
from engine.runner import BATCH_SIZE
from engine.store.db import open_engine
from engine.store.moments import stored_moment
from engine.store.tables import audit, contacts, list_members, runs, scores

SEED = 20260105
WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "engagement-stage.json"
START = datetime(2026, 1, 5, tzinfo=UTC)
LIST = "New qualified leads"
BATCH = BATCH_SIZE
GOAL_RATE = 50_000
GOAL_RATIO = 3.0


def make_lines(count: int, people: int) -> list[bytes]:
    """``count`` track events, one a second, from ``people`` contacts picked at random:
    40 % Ebook Downloaded (with an ebook property), 60 % Email Clicked."""
    rng = random.Random(SEED)
    lines = []
    for number in range(count):
        who = rng.randrange(people)
        message: dict[str, Any] = {
            "type": "track",
            "userId": f"c{who:06d}@bench.test",
            "messageId": f"m{number:08d}",
            "timestamp": format_timestamp(START + timedelta(seconds=number)),
        }
        if rng.random() < 0.4:
            message["event"] = "Ebook Downloaded"
            message["properties"] = {"ebook": f"Guide {rng.randrange(5)}"}
        else:
            message["event"] = "Email Clicked"
            message["properties"] = {"campaign": f"cmp-{rng.randrange(20)}"}
        lines.append(orjson.dumps(message))
    return lines


@dataclass
class Outcome:
    seconds: float
    cpu: float
    scores: dict[str, float]
    counts: dict[str, int]
    listed: set[str]
    audit_rows: int
    extra: dict[str, int] = field(default_factory=dict)


def run_engine(folder: Path, lines: list[bytes], now: datetime) -> Outcome:
    flow = Leadflow(f"sqlite:///{folder}/engine.db", VirtualClock(now))
    try:
        flow.deploy([WORKFLOW])
        flow.runner.catalog  # noqa: B018 - compiled before timing, as a running service has it
        start, cpu = time.perf_counter(), time.process_time()
        report = flow.ingest_lines(lines, source="bench")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if report.taken != len(lines) or report.rejected or report.duplicates:
            raise SystemExit(f"FAIL: engine took {report.taken} of {len(lines)} lines")
        with flow.engine.connect() as connection:
            got_scores = {
                c: v
                for c, v in connection.execute(
                    select(scores.c.contact_id, scores.c.value).where(scores.c.name == "SCORE")
                )
            }
            counts = {
                row.id: int(row.attributes.get("ENGAGEMENT_COUNT", 0))
                for row in connection.execute(select(contacts.c.id, contacts.c.attributes))
            }
            listed = set(
                connection.scalars(
                    select(list_members.c.contact_id).where(list_members.c.list_name == LIST)
                )
            )
            audit_rows = int(connection.scalar(select(func.count()).select_from(audit)) or 0)
            run_rows = int(connection.scalar(select(func.count()).select_from(runs)) or 0)
        return Outcome(seconds, cpu, got_scores, counts, listed, audit_rows, {"runs": run_rows})
    finally:
        flow.close()


def _batches(lines: list[bytes]) -> Iterator[list[bytes]]:
    for start in range(0, len(lines), BATCH):
        yield lines[start : start + BATCH]


def run_floor(folder: Path, lines: list[bytes], now: datetime, write: bool = True) -> Outcome:
    """The same changes with plain dicts and sqlite3 executemany, same schema and pragmas.
    ``write=False``: the same rows are built, and dropped instead of written."""
    path = folder / "floor.db"
    store = open_engine(f"sqlite:///{path}")  # the same migrated schema and indexes
    raw = store.raw_connection()  # with the engine's connection pragmas, autocommit mode
    db = raw.driver_connection
    assert isinstance(db, sqlite3.Connection)
    received = stored_moment(now)
    value: dict[str, float] = {}
    peak: dict[str, float] = {}
    count: dict[str, int] = {}
    listed: set[str] = set()
    audit_rows = 0
    start, cpu = time.perf_counter(), time.process_time()
    for batch in _batches(lines):
        events: list[tuple[Any, ...]] = []
        new_contacts: list[tuple[str, str, str]] = []
        touched: dict[str, str] = {}
        audit_out: list[tuple[str, str, str, str, Any, Any]] = []
        list_out: list[tuple[str, str, str]] = []
        for line in batch:
            data = orjson.loads(line)
            contact = data["userId"]
            properties = data.get("properties") or {}
            at = stored_moment(datetime.fromisoformat(data["timestamp"]))
            events.append(
                (
                    data["messageId"],
                    contact,
                    "track",
                    data["event"],
                    orjson.dumps(properties),
                    at,
                    received,
                )
            )
            if contact not in count:
                count[contact] = 0
                value[contact] = peak[contact] = 0.0
                new_contacts.append((contact, at, at))
            old_count = count[contact]
            count[contact] = old_count + 1
            audit_out.append(
                (contact, at, "attribute", "ENGAGEMENT_COUNT", old_count or None, old_count + 1)
            )
            old = value[contact]
            new = old + (15.0 if "ebook" in properties else 10.0)
            value[contact] = new
            peak[contact] = max(peak[contact], new)
            audit_out.append((contact, at, "score", "SCORE", old, new))
            if new > 4 and contact not in listed:
                listed.add(contact)
                list_out.append((LIST, contact, at))
                audit_out.append((contact, at, "list", LIST, False, True))
            touched[contact] = at
        audit_out_rows = [
            (c, at, s, n, orjson.dumps(o), orjson.dumps(w)) for c, at, s, n, o, w in audit_out
        ]
        contact_rows = [
            (orjson.dumps({"ENGAGEMENT_COUNT": count[c]}), at, c) for c, at in touched.items()
        ]
        score_rows = [(c, value[c], peak[c], at) for c, at in touched.items()]
        audit_rows += len(audit_out)
        if not write:
            continue
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO events (message_id, contact_id, type, name, properties, timestamp, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            events,
        )
        db.executemany(
            "INSERT OR IGNORE INTO contacts (id, attributes, grades, created_at, updated_at) "
            "VALUES (?, '{}', '{}', ?, ?)",
            new_contacts,
        )
        db.executemany(
            "UPDATE contacts SET attributes = ?, updated_at = ? WHERE id = ?",
            contact_rows,
        )
        db.executemany(
            "INSERT INTO scores (contact_id, name, value, peak, updated_at) "
            "VALUES (?, 'SCORE', ?, ?, ?) ON CONFLICT (contact_id, name) DO UPDATE SET "
            "value = excluded.value, peak = excluded.peak, updated_at = excluded.updated_at",
            score_rows,
        )
        db.executemany(
            "INSERT OR IGNORE INTO list_members (list_name, contact_id, added_at) VALUES (?, ?, ?)",
            list_out,
        )
        db.executemany(
            "INSERT INTO audit (contact_id, at, subject, name, old, new, cause) "
            "VALUES (?, ?, ?, ?, ?, ?, 'floor')",
            audit_out_rows,
        )
        db.execute("COMMIT")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    raw.close()
    store.dispose()
    return Outcome(seconds, cpu, value, count, listed, audit_rows)


def check(engine: Outcome, floor: Outcome, events: int) -> list[str]:
    problems = []
    if engine.scores != floor.scores:
        differ = [c for c in floor.scores if engine.scores.get(c) != floor.scores[c]]
        problems.append(f"SCORE differs for {len(differ)} contacts (e.g. {differ[:3]})")
    if engine.counts != floor.counts:
        problems.append("ENGAGEMENT_COUNT differs")
    if engine.listed != floor.listed:
        problems.append(f"'{LIST}' differs: {len(engine.listed)} vs {len(floor.listed)}")
    if engine.audit_rows != floor.audit_rows:
        problems.append(f"audit rows: engine {engine.audit_rows}, floor {floor.audit_rows}")
    if engine.extra.get("runs") != events:
        problems.append(f"runs: {engine.extra.get('runs')} for {events} events")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events from 2,000 contacts")
    parser.add_argument("--events", type=int, help="number of events (default 200,000)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.events or (20_000 if args.quick else 200_000)
    people = max(1, count // 10)
    lines = make_lines(count, people)
    now = START + timedelta(seconds=count + 60)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
        folder = Path(name)
        engine = run_engine(folder, lines, now)
        floor = run_floor(folder, lines, now)
        (folder / "bare").mkdir()
        bare = run_floor(folder / "bare", lines, now, write=False)
    problems = check(engine, floor, count)
    if (bare.scores, bare.audit_rows) != (floor.scores, floor.audit_rows):
        problems.append("the floor without writes built other changes than the floor")
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    ours = count / engine.seconds
    base = count / floor.seconds
    ratio = engine.seconds / floor.seconds
    print(
        f"inputs: {count:,} track events from {len(engine.counts):,} contacts, "
        f"engagement-stage on SQLite, batches of {BATCH:,}"
    )
    print(
        f"agreement: same SCORE, ENGAGEMENT_COUNT and list for every contact, "
        f"{engine.audit_rows:,} audit rows on both sides, {count:,} runs"
    )
    print(
        f"engine: {engine.seconds:.2f} s, {ours:,.0f} events/s "
        f"({engine.cpu:.2f} s CPU: {count / engine.cpu:,.0f} events per CPU second)"
    )
    print(
        f"floor (dicts + sqlite3 executemany): {floor.seconds:.2f} s, {base:,.0f} events/s "
        f"({floor.cpu:.2f} s CPU: {count / floor.cpu:,.0f} events per CPU second)"
    )
    print(
        f"floor without its writes (parse, dicts, rows built and dropped): {bare.seconds:.2f} s, "
        f"{count / bare.seconds:,.0f} events/s"
        + (
            " (below the rate goal before any database work)"
            if count / bare.seconds < GOAL_RATE
            else ""
        )
    )
    print(
        f"ratio: engine is {ratio:.2f}x slower than the floor "
        f"({engine.cpu / floor.cpu:.2f}x in CPU time)"
    )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"goal >= {GOAL_RATE:,} events/s: "
        + ("met" if ours >= GOAL_RATE else "NOT met")
        + f"; goal within {GOAL_RATIO:g}x of the floor: "
        + ("met" if ratio <= GOAL_RATIO else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
