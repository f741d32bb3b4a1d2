"""The Alembic migrations and the table metadata must describe the same schema."""

from __future__ import annotations

import calendar
import importlib.util
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from helpers import PAUSE_THEN_SCORE
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, inspect, select

import engine as engine_package
from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.state import _SQLITE_LOAD, Batch
from engine.store import moments
from engine.store.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from engine.store.moments import moment_of, stored_moment
from engine.store.tables import contacts, metadata, runs, scores
from engine.views import deployed_workflows


def test_upgrade_reaches_head_and_matches_the_metadata(store: Engine) -> None:
    assert current_revision(store) == head_revision()
    with store.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_upgrade_twice_changes_nothing(store: Engine) -> None:
    tables = set(inspect(store).get_table_names())
    assert upgrade(store) == head_revision()
    assert set(inspect(store).get_table_names()) == tables
    assert {t.name for t in metadata.sorted_tables} <= tables


def _score_indexes(engine: Engine) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes("scores")}


def test_a_store_from_revision_0001_upgrades_and_keeps_its_scores(store_url: str) -> None:
    """0002 drops scores(name, value) (decay rewrote it on every tick): a store made by the
    first release upgrades in place, its rows kept, and downgrades back."""
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        moment = datetime(2026, 1, 5, tzinfo=UTC)
        with engine.begin() as connection:
            connection.execute(
                insert(contacts).values(
                    id="ann", attributes={}, grades={}, created_at=moment, updated_at=moment
                )
            )
            connection.execute(
                insert(scores).values(
                    contact_id="ann", name="SCORE", value=42.0, peak=42.0, updated_at=moment
                )
            )
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0001")
        assert current_revision(engine) == "0001"
        assert "ix_scores_name_value" in _score_indexes(engine)
        assert upgrade(engine) == head_revision()
        assert "ix_scores_name_value" not in _score_indexes(engine)
        with engine.connect() as connection:
            kept = connection.execute(select(scores.c.contact_id, scores.c.value)).all()
        assert [tuple(row) for row in kept] == [("ann", 42.0)]
    finally:
        upgrade(engine)
        engine.dispose()


def _event_indexes(engine: Engine) -> dict[str, list[str]]:
    return {
        str(index["name"]): [str(column) for column in index["column_names"]]
        for index in inspect(engine).get_indexes("events")
    }


def test_revision_0003_orders_the_events_index_by_time_and_keeps_the_events(
    store_url: str,
) -> None:
    """0003 replaces events(contact, name, time) by events(contact, time, name) (one seek
    per score for decay's quiet test): a revision-0002 store upgrades with its events and
    the runner's per-contact counts still hold; it downgrades back."""
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        # the events go in through today's engine, which needs today's schema, and stay
        # through the downgrade to the revision-0002 store this test upgrades
        flow = Leadflow(engine=engine, clock=VirtualClock(datetime(2026, 1, 20, tzinfo=UTC)))
        flow.send(
            [
                {
                    "type": "track",
                    "userId": "ann",
                    "event": name,
                    "messageId": f"m{day}-{name}",
                    "timestamp": f"2026-01-{day:02d}T10:00:00Z",
                }
                for day in (5, 10, 15)
                for name in ("Page Viewed", "Email Clicked")
            ]
        )
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0002")
        assert current_revision(engine) == "0002"
        assert _event_indexes(engine)["ix_events_contact_name_ts"] == [
            "contact_id",
            "name",
            "timestamp",
        ]
        assert upgrade(engine) == head_revision()
        indexes = _event_indexes(engine)
        assert "ix_events_contact_name_ts" not in indexes
        assert indexes["ix_events_contact_ts_name"] == ["contact_id", "timestamp", "name"]
        with engine.connect() as connection:
            state = Batch(connection)
            since = datetime(2026, 1, 8, tzinfo=UTC)
            now = datetime(2026, 1, 20, tzinfo=UTC)
            assert state.count_events("ann", "Page Viewed", since, now) == 2
            assert state.count_events("ann", "Email Clicked", None, now) == 3
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0002")
        assert "ix_events_contact_name_ts" in _event_indexes(engine)
    finally:
        upgrade(engine)
        engine.dispose()


def test_revision_0007_numbers_the_runs_in_flight_in_entry_order(store_url: str) -> None:
    """0007 adds ``runs.seq``: on PostgreSQL a sequence fills it as runs go in, and the
    runs already in flight get it by entry moment (finished ones keep NULL); on SQLite,
    whose rowid is the order, it stays NULL."""
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        clock = VirtualClock(datetime(2026, 1, 5, 13, tzinfo=UTC))
        flow = Leadflow(engine=engine, clock=clock)
        flow.deploy([PAUSE_THEN_SCORE])
        for hour, who in ((12, "cy"), (10, "ann"), (11, "bob")):  # made out of entry order
            flow.send(
                [
                    {
                        "type": "track",
                        "userId": who,
                        "event": "Signed Up",
                        "messageId": f"m-{who}",
                        "timestamp": f"2026-01-05T{hour}:00:00Z",
                    }
                ]
            )
        postgres = engine.dialect.name == "postgresql"
        with engine.connect() as connection:
            made = dict(connection.execute(select(runs.c.contact_id, runs.c.seq)).all())
        if postgres:  # the order they went in
            assert made["cy"] < made["ann"] < made["bob"]
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0006")
        assert "seq" not in {c["name"] for c in inspect(engine).get_columns("runs")}
        assert upgrade(engine) == head_revision()
        with engine.connect() as connection:
            again = dict(connection.execute(select(runs.c.contact_id, runs.c.seq)).all())
        if postgres:  # the runs in flight by entry moment, then new ones after them
            assert again["ann"] < again["bob"] < again["cy"]
            flow = Leadflow(engine=engine, clock=clock)
            flow.send([{"type": "track", "userId": "dee", "event": "Signed Up"}])
            with engine.connect() as connection:
                dee = connection.scalar(select(runs.c.seq).where(runs.c.contact_id == "dee"))
            assert dee is not None and dee > again["cy"]
        else:
            assert set(again.values()) == {None}
    finally:
        upgrade(engine)
        engine.dispose()


def _run_indexes(engine: Engine) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes("runs")}


def test_revision_0004_indexes_runs_in_flight_and_keeps_them_resumable(store_url: str) -> None:
    """0004 replaces runs(contact, state) and runs(workflow, state) by partial indexes of the
    runs in flight and an index of entries: runs waiting in a revision-0003 store are still
    found, counted and resumed after the upgrade, and the store downgrades back."""
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        # the runs start waiting through today's engine, which needs today's schema, and
        # stay waiting through the downgrade to the revision-0003 store this test upgrades
        clock = VirtualClock(datetime(2026, 1, 5, 10, tzinfo=UTC))
        flow = Leadflow(engine=engine, clock=clock)
        flow.deploy([PAUSE_THEN_SCORE])
        flow.send(
            [
                {
                    "type": "track",
                    "userId": who,
                    "event": "Signed Up",
                    "messageId": f"m-{who}",
                    "timestamp": "2026-01-05T10:00:00Z",
                }
                for who in ("ann", "bob")
            ]
        )
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0003")
        assert {"ix_runs_contact_state", "ix_runs_workflow_state"} <= _run_indexes(engine)
        assert upgrade(engine) == head_revision()
        indexes = _run_indexes(engine)
        assert {"ix_runs_contact_live", "ix_runs_workflow_live", "ix_runs_contact_entries"} <= (
            indexes
        )
        assert not {"ix_runs_contact_state", "ix_runs_workflow_state"} & indexes
        flow = Leadflow(engine=engine, clock=clock)
        assert flow.contact("ann", history=True)["runs"][0]["state"] == "waiting"
        with engine.connect() as connection:
            listed = {w["id"]: w for w in deployed_workflows(connection)}
        assert listed["pause-then-score"]["active_runs"] == 2
        clock.advance_to(datetime(2026, 1, 6, 11, tzinfo=UTC))
        assert flow.run_due() == 2
        assert flow.contact("ann")["scores"]["SCORE"] == 5
        with engine.connect() as connection:
            left = connection.scalar(
                select(func.count()).select_from(runs).where(runs.c.ended_at.is_(None))
            )
        assert left == 0
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0003")
        assert {"ix_runs_contact_state", "ix_runs_workflow_state"} <= _run_indexes(engine)
    finally:
        upgrade(engine)
        engine.dispose()


def test_loading_runs_in_flight_reads_the_partial_index_on_sqlite(tmp_path: Path) -> None:
    """The partial index is only used when a query says ``ended_at IS NULL``: the loader's
    statement must keep saying it (a plain ``state IN (...)`` would scan every run of the
    contact)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        upgrade(engine)
        with engine.connect() as connection:
            plan = connection.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + _SQLITE_LOAD.runs, ('["ann"]',)
            ).all()
        assert any("ix_runs_contact_live" in str(row[-1]) for row in plan), plan
    finally:
        engine.dispose()


OLD_TEXT_MOMENTS = {
    # SQLAlchemy's own form, converted in SQL; .999700 is where strftime('%s') on the whole
    # text would round up to the next second
    "ann": ("2026-01-05 10:02:03.000000", datetime(2026, 1, 5, 10, 2, 3, tzinfo=UTC)),
    "bob": ("2026-01-05 10:02:03.999700", datetime(2026, 1, 5, 10, 2, 3, 999700, tzinfo=UTC)),
    "cid": ("1969-12-31 23:59:59.999999", datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    "dan": ("9999-12-31 23:59:59.999999", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    "hal": ("2026-01-05 10:02:04.200000", datetime(2026, 1, 5, 10, 2, 4, 200000, tzinfo=UTC)),
    # other forms, read with fromisoformat
    "eve": ("2026-01-05T11:02:03.123+01:00", datetime(2026, 1, 5, 10, 2, 3, 123000, tzinfo=UTC)),
    "fay": ("2026-01-05 10:02:03", datetime(2026, 1, 5, 10, 2, 3, tzinfo=UTC)),
}


def _downgrade(engine: Engine, revision: str) -> None:
    with as_file(files("engine").joinpath("migrations")):
        command.downgrade(alembic_config(engine), revision)


def test_revision_0005_turns_sqlite_moment_text_into_integers_and_back(store_url: str) -> None:
    """0005: SQLite moments were SQLAlchemy's 26-byte text, now integer microseconds. A
    revision-0004 store's text becomes integers that read back as the same moments and
    compare in time order (fractions that strftime would round included), other ISO forms
    are read too, text that is no moment is left alone, NULLs stay NULL, and a downgrade
    writes SQLAlchemy's form back. PostgreSQL keeps timestamptz: its rows stay as they were."""
    engine = make_engine(store_url)
    sqlite = engine.dialect.name == "sqlite"
    marker = "?" if sqlite else "%s"
    insert_score = (
        "INSERT INTO scores (contact_id, name, value, peak, updated_at, increased_at) "
        f"VALUES ({marker}, 'SCORE', 1.0, 1.0, {marker}, NULL)"
    )
    try:
        upgrade(engine)
        _downgrade(engine, "0004")
        with engine.begin() as connection:
            for contact, (text, _) in OLD_TEXT_MOMENTS.items():
                zoned = text if sqlite or "+" in text else f"{text}+00"
                connection.exec_driver_sql(insert_score, (contact, zoned))
            if sqlite:
                connection.exec_driver_sql(insert_score, ("gus", "next tuesday"))
        assert upgrade(engine) == head_revision()
        if sqlite:
            with engine.begin() as connection:
                kinds = connection.exec_driver_sql(
                    "SELECT typeof(updated_at), typeof(increased_at), count(*) FROM scores "
                    "GROUP BY 1, 2 ORDER BY 1"
                ).all()
                assert [tuple(kind) for kind in kinds] == [
                    ("integer", "null", len(OLD_TEXT_MOMENTS)),
                    ("text", "null", 1),
                ]
                gus = connection.exec_driver_sql(
                    "SELECT updated_at FROM scores WHERE contact_id = 'gus'"
                ).scalar()
                assert gus == "next tuesday"
                connection.exec_driver_sql("DELETE FROM scores WHERE contact_id = 'gus'")
        with engine.connect() as connection:
            read = {
                contact: (updated, increased)
                for contact, updated, increased in connection.execute(
                    select(scores.c.contact_id, scores.c.updated_at, scores.c.increased_at)
                )
            }
            later = connection.execute(
                select(scores.c.contact_id)
                .where(scores.c.updated_at > OLD_TEXT_MOMENTS["ann"][1])
                .order_by(scores.c.updated_at)
            ).scalars()
            assert list(later) == ["eve", "bob", "hal", "dan"]
        assert read == {
            contact: (moment, None) for contact, (_, moment) in OLD_TEXT_MOMENTS.items()
        }
        _downgrade(engine, "0004")
        if sqlite:
            with engine.connect() as connection:
                back = dict(
                    connection.exec_driver_sql("SELECT contact_id, updated_at FROM scores").all()
                )
            assert back == {
                contact: moment.replace(tzinfo=None).isoformat(" ", "microseconds")
                for contact, (_, moment) in OLD_TEXT_MOMENTS.items()
            }
    finally:
        upgrade(engine)
        engine.dispose()


def test_revision_0005_converts_the_http_inbox_side_file(tmp_path: Path) -> None:
    """A SQLite store keeps the HTTP inbox in a side file Alembic does not see. 0005
    converts it with the store, both ways, so a claim whose lease ran out before the
    upgrade is claimed again after it."""
    from engine.service.inbox import inbox_store
    from engine.store.tables import inbox

    path = tmp_path / "leadflow.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    inbox_store(engine).dispose()
    _downgrade(engine, "0004")
    side = sqlite3.connect(f"{path}-inbox")
    with side:
        side.execute(
            "INSERT INTO inbox (received_at, source, count, body, attempts, claimed_by, "
            "claimed_until) VALUES ('2026-01-05 10:00:00.999900', 'http', 1, '[]', 1, 'old', "
            "'2026-01-05 10:05:00.000000')"
        )
    upgrade(engine)
    with side:
        kinds = side.execute("SELECT typeof(received_at), typeof(claimed_until) FROM inbox")
        assert kinds.fetchall() == [("integer", "integer")]
    store = inbox_store(engine)
    with store.connect() as connection:
        row = connection.execute(select(inbox.c.received_at, inbox.c.claimed_until)).one()
        lapsed = connection.execute(
            select(func.count())
            .select_from(inbox)
            .where(inbox.c.claimed_until < datetime(2026, 1, 6, tzinfo=UTC))
        ).scalar()
    store.dispose()
    assert tuple(row) == (
        datetime(2026, 1, 5, 10, 0, 0, 999900, tzinfo=UTC),
        datetime(2026, 1, 5, 10, 5, tzinfo=UTC),
    )
    assert lapsed == 1
    _downgrade(engine, "0004")
    with side:
        back = side.execute("SELECT received_at, claimed_until FROM inbox").fetchall()
    assert back == [("2026-01-05 10:00:00.999900", "2026-01-05 10:05:00.000000")]
    side.close()
    engine.dispose()


MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)


def _independent_integer(moment: datetime) -> int:
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


@given(MOMENTS, MOMENTS, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_moments_round_trip_through_the_sqlite_integer(
    first: datetime, second: datetime, offset_minutes: int
) -> None:
    """What engine.store.moments keeps: exact to the microsecond, in time order, and the
    same for one instant given in any zone; text from an older store still reads."""
    moments._STORED.clear()  # the arithmetic, not the memo, is under test
    moments._MOMENTS.clear()
    zone = timezone(timedelta(minutes=offset_minutes))
    assert stored_moment(first.astimezone(zone)) == _independent_integer(first)
    kept, other = stored_moment(first), stored_moment(second)
    assert kept == _independent_integer(first)
    assert moment_of(kept) == first
    assert (kept < other) == (first < second) and (kept == other) == (first == second)
    text = first.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert moment_of(text) == first


def _revision_0005() -> Any:
    path = Path(engine_package.__file__).parent / "migrations" / "versions"
    spec = importlib.util.spec_from_file_location(
        "revision_0005", path / "0005_sqlite_moments_as_integers.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REVISION_0005 = _revision_0005()


@given(st.lists(MOMENTS, min_size=1, max_size=20))
def test_revision_0005_sql_agrees_with_engine_store_moments(given_moments: list[datetime]) -> None:
    """The migration's SQL turns SQLAlchemy's text into exactly what stored_moment keeps,
    and its downgrade SQL gives the same text back."""
    texts = [m.replace(tzinfo=None).isoformat(" ", "microseconds") for m in given_moments]
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (c DATETIME)")
    db.executemany("INSERT INTO t (c) VALUES (?)", [(text,) for text in texts])
    assert all(db.execute(f"SELECT {REVISION_0005._is_sqlalchemy_text('c')} FROM t"))
    numbers = [row[0] for row in db.execute(f"SELECT {REVISION_0005._to_integer('c')} FROM t")]
    assert numbers == [_independent_integer(m) for m in given_moments]
    db.execute("UPDATE t SET c = " + REVISION_0005._to_integer("c"))
    back = [row[0] for row in db.execute(f"SELECT {REVISION_0005._to_text('c')} FROM t")]
    assert back == texts


def test_a_moment_written_into_sqlite_sql_text_is_the_stored_integer() -> None:
    """Statements compiled with literal_binds compare a moment the way the column keeps it:
    as the integer on SQLite (text would sort after every integer), as text on PostgreSQL."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects import sqlite as sqlite_dialect

    from engine.store.tables import waits

    moment = datetime(2026, 1, 5, tzinfo=UTC)
    query = select(waits.c.run_id).where(waits.c.due_at <= moment)
    on_sqlite = str(
        query.compile(dialect=sqlite_dialect.dialect(), compile_kwargs={"literal_binds": True})
    )
    on_postgres = str(
        query.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    )
    assert on_sqlite.endswith(f"waits.due_at <= {stored_moment(moment)}")
    assert on_postgres.endswith("waits.due_at <= '2026-01-05 00:00:00+00:00'")
