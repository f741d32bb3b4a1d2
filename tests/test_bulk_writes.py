"""The bulk write helpers of engine.store.sql store exactly what SQLAlchemy's executemany
stores (same datetime text on SQLite, same JSON text), on both backends."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, bindparam, delete, event, select, text, update

from engine.store.db import open_engine
from engine.store.sql import (
    bulk_delete,
    bulk_delete_rows,
    bulk_insert,
    bulk_update,
    bulk_upsert,
    in_values,
    insert_ignore,
    json_text,
    update_rows,
    update_rows_at,
    upsert,
)
from engine.store.tables import audit, list_members, runs, scores

MOMENTS = [
    datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
    datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC),
    datetime(1999, 12, 31, 23, 59, 59, 1, tzinfo=timezone(timedelta(hours=-5))),
    datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=2))),
]
VALUES: list[Any] = [
    None,
    0,
    -3,
    2**70,
    1.5,
    0.1 + 0.2,
    1e16,
    True,
    False,
    "",
    'text with "quotes", é and \u2028',
    {},
    [],
    {"a": 1, "b": [1, 2.5, None], "c": {"d": "é"}},
    {3: "int key"},
]


@pytest.mark.parametrize("value", [*VALUES, float("nan"), float("inf"), float("-inf")])
def test_json_text_is_json_dumps(value: Any) -> None:
    assert json_text(value) == json.dumps(value)


def test_json_text_fails_as_json_dumps_does() -> None:
    loop: dict[str, Any] = {"a": 1}
    loop["self"] = loop
    for bad in (loop, {"when": datetime(2026, 1, 5)}, {"x": object()}):
        with pytest.raises(Exception) as expected:
            json.dumps(bad)
        with pytest.raises(type(expected.value), match=str(expected.value)[:20]):
            json_text(bad)
    assert json_text({"after": "failures", "n": [1, {}]}) == json.dumps(
        {"after": "failures", "n": [1, {}]}
    )


def _audit_rows(tag: str) -> list[dict[str, Any]]:
    return [
        {
            "contact_id": f"{tag}-{i}",
            "at": MOMENTS[i % len(MOMENTS)],
            "subject": "score",
            "name": "SCORE",
            "old": VALUES[i % len(VALUES)],
            "new": VALUES[(i + 3) % len(VALUES)],
            "workflow_id": None if i % 2 else "w",
            "version": None if i % 2 else 1,
            "node": "n",
            "cause": "test",
        }
        for i in range(30)
    ]


def _raw(store: Engine, table: Table) -> list[tuple[Any, ...]]:
    # the numbers the database hands out (autoincrement ids, runs.seq on PostgreSQL)
    # differ between two writes of the same rows; everything written is compared
    columns = [
        c.name for c in table.columns if (c.name != "id" or table is runs) and c.name != "seq"
    ]
    with store.connect() as connection:
        if store.dialect.name == "postgresql":
            listed = ", ".join(f'"{c}"::text' for c in columns)
        else:
            listed = ", ".join(f'"{c}"' for c in columns)
        rows = connection.execute(text(f"SELECT {listed} FROM {table.name}")).all()
    return sorted(tuple(r) for r in rows)


def _both(store: Engine, write: Any) -> None:
    with store.begin() as connection:
        write(connection)


def test_bulk_insert_stores_what_executemany_stores(store: Engine) -> None:
    with store.begin() as connection:
        connection.execute(audit.insert(), _audit_rows("x"))
    expected = _raw(store, audit)
    with store.begin() as connection:
        connection.execute(audit.delete())
        bulk_insert(connection, audit, _audit_rows("x"))
    assert _raw(store, audit) == expected


def test_bulk_upsert_and_ignore(store: Engine) -> None:
    first: list[dict[str, Any]] = [
        {
            "contact_id": f"c{i}",
            "name": "SCORE",
            "value": float(i),
            "peak": float(i),
            "updated_at": MOMENTS[0],
            "increased_at": None,
        }
        for i in range(10)
    ]
    second = [
        {
            **row,
            "value": row["value"] + 0.5,
            "peak": 99.0,
            "updated_at": MOMENTS[1],
            "increased_at": MOMENTS[2],
        }
        for row in first[5:]
    ] + [
        {
            "contact_id": "c-new",
            "name": "SCORE",
            "value": 1,
            "peak": 1,
            "updated_at": MOMENTS[3],
            "increased_at": MOMENTS[3],
        }
    ]
    keep = ("value", "peak", "updated_at", "increased_at")
    with store.begin() as connection:
        upsert(connection, scores, first, ("contact_id", "name"), keep)
        upsert(connection, scores, second, ("contact_id", "name"), keep)
        insert_ignore(
            connection,
            list_members,
            [
                {"list_name": "L", "contact_id": "c1", "added_at": MOMENTS[0]},
                {"list_name": "L", "contact_id": "c1", "added_at": MOMENTS[1]},
            ],
        )
    expected = (_raw(store, scores), _raw(store, list_members))
    with store.begin() as connection:
        connection.execute(scores.delete())
        connection.execute(list_members.delete())
        bulk_upsert(connection, scores, first, ("contact_id", "name"), keep)
        bulk_upsert(connection, scores, second, ("contact_id", "name"), keep)
        bulk_insert(
            connection,
            list_members,
            [
                {"list_name": "L", "contact_id": "c1", "added_at": MOMENTS[0]},
                {"list_name": "L", "contact_id": "c1", "added_at": MOMENTS[1]},
            ],
            ignore=True,
        )
    assert (_raw(store, scores), _raw(store, list_members)) == expected


def _runs(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{i:03d}",
            "contact_id": f"c{i % 4}",
            "workflow_id": "w",
            "version": 1,
            "state": "waiting",
            "node": "wait",
            "steps": 1,
            "properties": {"i": i},
            "entered_at": MOMENTS[i % 4],
            "ended_at": None,
            "end_reason": None,
            "error": None,
        }
        for i in range(count)
    ]


def test_bulk_update_and_delete(store: Engine) -> None:
    changes = [
        {
            "id": f"r{i:03d}",
            "state": "completed",
            "node": None,
            "steps": 3,
            "properties": {"i": i, "done": True},
            "ended_at": MOMENTS[(i + 1) % 4],
            "end_reason": "completed",
            "error": None if i % 3 else 'bad "data"',
        }
        for i in range(0, 20, 2)
    ]
    gone = [{"id": f"r{i:03d}"} for i in range(1, 20, 5)]
    with store.begin() as connection:
        connection.execute(runs.insert(), _runs(20))
        connection.execute(
            update(runs)
            .where(runs.c.id == bindparam("b_id"))
            .values({k: bindparam(k) for k in changes[0] if k != "id"}),
            [{"b_id": c["id"], **{k: v for k, v in c.items() if k != "id"}} for c in changes],
        )
        connection.execute(delete(runs).where(runs.c.id.in_([g["id"] for g in gone])))
    expected = _raw(store, runs)
    with store.begin() as connection:
        connection.execute(runs.delete())
        bulk_insert(connection, runs, _runs(20))
        bulk_update(connection, runs, ("id",), changes)
        bulk_delete(connection, runs, gone)
    assert _raw(store, runs) == expected


def test_update_rows_at_stores_what_the_update_by_key_stores(tmp_path: Path) -> None:
    """SQLite: rows keyed by the rowid read in the same transaction are updated as
    update_rows keyed by id updates them (engine.state updates runs so)."""
    store = open_engine(f"sqlite:///{tmp_path / 'rowid.db'}")
    names = ("id", "state", "node", "steps", "properties", "ended_at", "end_reason", "error")
    changed = [
        (f"r{i:03d}", "failed", "n", i, {"i": i}, MOMENTS[i % 4], "action failed", f"e{i}")
        for i in range(1, 20, 3)
    ]
    try:
        with store.begin() as connection:
            bulk_insert(connection, runs, _runs(20))
            update_rows(connection, runs, ("id",), names, changed)
        expected = _raw(store, runs)
        with store.begin() as connection:
            connection.execute(runs.delete())
            bulk_insert(connection, runs, _runs(20))
            rowids = {r[0]: r[1] for r in connection.execute(text("SELECT id, rowid FROM runs"))}
            update_rows_at(connection, runs, "id", names, [(rowids[r[0]], *r[1:]) for r in changed])
        assert _raw(store, runs) == expected
        assert _raw(store, runs) != _raw_of_fresh_runs(store)
    finally:
        store.dispose()


def _raw_of_fresh_runs(store: Engine) -> list[tuple[Any, ...]]:
    with store.begin() as connection:
        connection.execute(runs.delete())
        bulk_insert(connection, runs, _runs(20))
    return _raw(store, runs)


def test_in_values_any_length(store: Engine) -> None:
    with store.begin() as connection:
        bulk_insert(connection, runs, _runs(40))
        for wanted in ([], ["r001"], [f"r{i:03d}" for i in range(0, 40, 3)] + ["nope"]):
            found = connection.scalars(
                select(runs.c.id).where(in_values(connection, runs.c.id, wanted))
            )
            assert sorted(found) == sorted(w for w in wanted if w != "nope")
        many = [f"x{i}" for i in range(40_000)] + ["r002"]
        found = connection.scalars(select(runs.c.id).where(in_values(connection, runs.c.id, many)))
        assert list(found) == ["r002"]


def test_bulk_insert_returning_names_only_new_rows(store: Engine) -> None:
    from engine.store.sql import bulk_insert_returning
    from engine.store.tables import events

    def rows(ids: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "message_id": i,
                "contact_id": "c",
                "type": "track",
                "name": "E",
                "properties": {"n": i},
                "timestamp": MOMENTS[1],
                "received_at": MOMENTS[0],
            }
            for i in ids
        ]

    with store.begin() as connection:
        first = [f"m{i}" for i in range(5000)]
        assert sorted(bulk_insert_returning(connection, events, rows(first), "message_id")) == (
            sorted(first)
        )
        more = rows(["m1", "new", "m4999"])
        again = bulk_insert_returning(connection, events, more, "message_id")
        assert again == ["new"]


def test_postgres_updates_and_deletes_by_key_probe_the_index(pg_url: str) -> None:
    """Joined to unnest() alone, PostgreSQL's planner read every row of a big table to
    update or delete a few thousand of them (a hash join over a sequential scan)."""
    store = open_engine(pg_url)
    plans: list[str] = []

    @event.listens_for(store, "before_cursor_execute")
    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith(("UPDATE runs", "DELETE FROM runs")):
            cursor.execute("EXPLAIN " + statement, params)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    try:
        with store.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO runs (id, contact_id, workflow_id, version, state, steps, "
                    "properties, entered_at) SELECT 'r' || n, 'c' || n, 'w', 1, 'waiting', 0, "
                    "'{}', now() FROM generate_series(1, 200000) AS n"
                )
            )
        with store.connect() as connection:
            connection.execute(text("ANALYZE runs"))
        names = ("id", "state", "steps")
        changed = [(f"r{n}", "completed", 1) for n in range(1, 200_000, 100)]
        with store.begin() as connection:
            update_rows(connection, runs, ("id",), names, changed)
            bulk_delete_rows(connection, runs, ("id",), [(f"r{n}",) for n in range(2, 200_000, 40)])
        assert len(plans) == 2
        for plan in plans:
            assert "Seq Scan on runs" not in plan, plan
        with store.connect() as connection:
            counted = connection.execute(text("SELECT state, count(*) FROM runs GROUP BY state"))
            states = {state: count for state, count in counted}
        assert states == {"completed": 2_000, "waiting": 193_000}
        # the setting is the caller's again after each statement, whatever it was
        for caller in ("on", "off"):
            with store.begin() as connection:
                connection.execute(text(f"SET LOCAL enable_seqscan = {caller}"))
                update_rows(connection, runs, ("id",), names, [("r1", "failed", 2)])
                assert connection.scalar(text("SHOW enable_seqscan")) == caller
    finally:
        with store.begin() as connection:  # the database is shared by this run's tests
            connection.execute(text("TRUNCATE runs"))
        store.dispose()
