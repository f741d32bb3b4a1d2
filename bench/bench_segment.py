"""``leadflow segment`` exporting from a store of 1,000,000 contacts, as CSV and as JSON
Lines, on SQLite (and PostgreSQL with ``--postgres``).

Measured: what the command runs after parsing its options (``engine.segments``:
``select_contacts`` streaming the contacts sorted by SCORE, best first, in chunks of 1,000,
the ``--where`` condition evaluated per contact on its facts, then ``write_csv`` with
``csv_columns``, or ``write_jsonl``), writing to a file. The condition:

    {"all": [{"score": "SCORE", "gte": 20}, {"grade": "GRADE", "in": ["A", "B", "C", "D"]},
             {"not": {"in_list": "Unsubscribed"}}]}

Baseline, in the same run and store: one plain SELECT with the same filter written in SQL
(json_extract on the grades, NOT EXISTS on the list), the same order and the lists
aggregated in SQL, its rows formatted the same way and written with ``csv.writer`` (for
JSON Lines, with ``json.dumps``). Both sides must produce byte-identical files.

    python bench/bench_segment.py            # 1,000,000 contacts, about 2.5 minutes
    python bench/bench_segment.py --quick    # 100,000 contacts
    python bench/bench_segment.py --quick --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import csv
import json
import random
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
from typing import IO, Any

import psycopg
from machine import machine_line
from sqlalchemy import Connection, Engine, text

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.segments import (
    SegmentQuery,
    Sort,
    csv_columns,
    parse_where,
    select_contacts,
    write_csv,
    write_jsonl,
)
from engine.store.db import open_engine
from engine.store.moments import stored_moment

SEED = 20260105
NOW = datetime(2026, 1, 12, tzinfo=UTC)
CREATED = NOW - timedelta(days=90)
GRADE_MODEL = Path(__file__).resolve().parent.parent / "workflows" / "models" / "b2b-grade.json"
WHERE = (
    '{"all": [{"score": "SCORE", "gte": 20}, {"grade": "GRADE", "in": ["A", "B", "C", "D"]}, '
    '{"not": {"in_list": "Unsubscribed"}}]}'
)
TITLES = ("CEO", "VP Marketing", "Head of Sales", "Marketing Manager", "Analyst", "Student")
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP")
GRADES = ("A", "B", "C", "D", "E", "F")


def band_list(value: float) -> str:
    if value < 20:
        return "New leads"
    if value < 50:
        return "Warm leads"
    if value <= 80:
        return "Qualified leads"
    return "Sales-qualified leads"


def make_rows(count: int) -> dict[str, tuple[str, list[tuple[Any, ...]]]]:
    """Deterministic contacts: an address as id, a title, a country and a size, a grade A-F
    (A-D for about 80 %), a SCORE of 0-150 in tenths (whole for about a tenth), the band
    list of the score, 'Newsletter' for 30 % and 'Unsubscribed' for 3 %, an account for
    40 %."""
    rng = random.Random(SEED)
    contact_rows, score_rows, member_rows = [], [], []
    for number in range(count):
        contact_id = f"c{number:07d}@bench.test"
        attributes = {
            "job_title": rng.choice(TITLES),
            "country": rng.choice(COUNTRIES),
            "company_size": rng.randrange(1, 5000),
        }
        grade = GRADES[min(5, int(rng.random() * 5.1))]
        account = f"acct-{rng.randrange(count // 10 + 1):06d}" if rng.random() < 0.4 else None
        contact_rows.append(
            (
                contact_id,
                json.dumps(attributes),
                json.dumps({"GRADE": grade}),
                account,
                CREATED,
                CREATED,
            )
        )
        value = round(rng.uniform(0, 150), 1)
        if rng.random() < 0.1:
            value = float(round(value))
        score_rows.append((contact_id, "SCORE", value, value, CREATED, CREATED))
        member_rows.append((band_list(value), contact_id, CREATED))
        if rng.random() < 0.3:
            member_rows.append(("Newsletter", contact_id, CREATED))
        if rng.random() < 0.03:
            member_rows.append(("Unsubscribed", contact_id, CREATED))
    return {
        "contacts": (
            "id, attributes, grades, account_id, created_at, updated_at",
            contact_rows,
        ),
        "scores": ("contact_id, name, value, peak, updated_at, increased_at", score_rows),
        "list_members": ("list_name, contact_id, added_at", member_rows),
    }


# --- stores ------------------------------------------------------------------------------


def bulk_load(engine: Engine, tables: dict[str, tuple[str, list[tuple[Any, ...]]]]) -> None:
    """Rows straight into the tables: sqlite3 executemany in one transaction, or COPY."""
    raw = engine.raw_connection()
    db = raw.driver_connection
    if isinstance(db, sqlite3.Connection):
        db.execute("BEGIN IMMEDIATE")
        for table, (columns, rows) in tables.items():
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
def store(backend: str, folder: Path, server: str | None) -> Iterator[Engine]:
    if backend == "sqlite":
        engine = open_engine(f"sqlite:///{folder / 'segment.db'}")
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


# --- the two sides -----------------------------------------------------------------------


def engine_export(connection: Connection, fmt: str, handle: IO[str]) -> int:
    """What ``leadflow segment --where WHERE --sort score:SCORE --format FMT`` runs."""
    query = SegmentQuery(where=parse_where(WHERE), sort=Sort("score", "SCORE"))
    records = select_contacts(connection, query, NOW)
    if fmt == "csv":
        return write_csv(records, csv_columns(connection, query), handle)
    return write_jsonl(records, handle)


BASELINE_SQLITE = """
SELECT c.id, s.value, json_extract(c.grades, '$.GRADE') AS grade, c.account_id,
       (SELECT group_concat(list_name, '|')
          FROM (SELECT m.list_name FROM list_members m
                 WHERE m.contact_id = c.id ORDER BY m.list_name)) AS lists
  FROM contacts c JOIN scores s ON s.contact_id = c.id AND s.name = 'SCORE'
 WHERE c.merged_into IS NULL AND s.value >= 20
   AND json_extract(c.grades, '$.GRADE') IN ('A', 'B', 'C', 'D')
   AND NOT EXISTS (SELECT 1 FROM list_members u
                    WHERE u.contact_id = c.id AND u.list_name = 'Unsubscribed')
 ORDER BY s.value DESC, c.id
"""

BASELINE_POSTGRES = """
SELECT c.id, s.value, c.grades ->> 'GRADE' AS grade, c.account_id,
       (SELECT string_agg(m.list_name, '|' ORDER BY m.list_name)
          FROM list_members m WHERE m.contact_id = c.id) AS lists
  FROM contacts c JOIN scores s ON s.contact_id = c.id AND s.name = 'SCORE'
 WHERE c.merged_into IS NULL AND s.value >= 20
   AND c.grades ->> 'GRADE' IN ('A', 'B', 'C', 'D')
   AND NOT EXISTS (SELECT 1 FROM list_members u
                    WHERE u.contact_id = c.id AND u.list_name = 'Unsubscribed')
 ORDER BY s.value DESC, c.id
"""


def _number(value: float) -> float | int:
    """How the contact views print a score (whole numbers without '.0')."""
    return int(value) if float(value).is_integer() else round(value, 6)


def baseline_export(connection: Connection, fmt: str, handle: IO[str]) -> int:
    sql = BASELINE_POSTGRES if connection.dialect.name == "postgresql" else BASELINE_SQLITE
    rows = connection.execution_options(yield_per=1000).execute(text(sql))
    written = 0
    if fmt == "csv":
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "email", "score:SCORE", "grade:GRADE", "lists", "account"])
        for contact_id, value, grade, account, lists in rows:
            writer.writerow([contact_id, contact_id, _number(value), grade, lists, account or ""])
            written += 1
        return written
    for contact_id, value, grade, account, lists in rows:
        record = {
            "id": contact_id,
            "email": contact_id,
            "scores": {"SCORE": _number(value)},
            "grades": {"GRADE": grade},
            "lists": lists.split("|"),
            "account": account,
        }
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written


@dataclass
class Outcome:
    seconds: float
    cpu: float  # CPU time of this process: all of the work on SQLite, the client's on PG
    written: int
    path: Path


def timed(engine: Engine, export: Any, fmt: str, path: Path) -> Outcome:
    with engine.connect() as connection:
        start, cpu = time.perf_counter(), time.process_time()
        with path.open("w", encoding="utf-8", newline="") as handle:
            written = export(connection, fmt, handle)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Outcome(seconds, cpu, written, path)


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
    tables = make_rows(count)
    print(f"inputs: {count:,} contacts, --where {WHERE}, --sort score:SCORE (best first)")
    failed = False
    for backend in backends:
        print(f"--- {backend}")
        with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
            folder = Path(name)
            with store(backend, folder, args.postgres) as engine:
                bulk_load(engine, tables)
                Leadflow(engine=engine, clock=VirtualClock(CREATED)).deploy([GRADE_MODEL])
                for fmt in ("csv", "jsonl"):
                    ours = timed(engine, engine_export, fmt, folder / f"engine.{fmt}")
                    base = timed(engine, baseline_export, fmt, folder / f"baseline.{fmt}")
                    same = ours.path.read_bytes() == base.path.read_bytes()
                    if not same or ours.written != base.written or not ours.written:
                        print(
                            f"FAIL ({backend}, {fmt}): engine wrote {ours.written:,} contacts, "
                            f"baseline {base.written:,}; files "
                            + ("identical" if same else "differ")
                        )
                        failed = True
                        continue
                    report(backend, fmt, count, ours, base)
    return 1 if failed else 0


def report(backend: str, fmt: str, count: int, ours: Outcome, base: Outcome) -> None:
    sqlite = backend == "sqlite"
    size = ours.path.stat().st_size / 1e6

    def figures(outcome: Outcome) -> str:
        text = f"{outcome.seconds:.2f} s wall, {count / outcome.seconds:,.0f} contacts/s"
        if sqlite:
            text += f"; {outcome.cpu:.2f} s CPU, {count / outcome.cpu:,.0f}/s"
        return text

    print(
        f"{fmt}: {ours.written:,} of {count:,} contacts exported ({size:,.0f} MB), "
        "byte-identical on both sides"
    )
    print(f"  engine (segment): {figures(ours)}")
    print(
        f"  baseline (SELECT + {'csv.writer' if fmt == 'csv' else 'json.dumps'}): {figures(base)}"
    )
    ratio = f"  ratio: {ours.seconds / base.seconds:.2f}x the baseline's wall time"
    if sqlite:
        ratio += f", {ours.cpu / base.cpu:.2f}x its CPU time"
    print(ratio)


if __name__ == "__main__":
    sys.exit(main())
