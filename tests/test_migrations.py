"""The Alembic migrations and the table metadata must describe the same schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import as_file, files
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, insert, inspect, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.state import _SQLITE_LOAD, Batch
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
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0002")
        assert current_revision(engine) == "0002"
        assert _event_indexes(engine)["ix_events_contact_name_ts"] == [
            "contact_id",
            "name",
            "timestamp",
        ]
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


def _run_indexes(engine: Engine) -> set[str]:
    return {str(index["name"]) for index in inspect(engine).get_indexes("runs")}


PAUSE_THEN_SCORE = {
    "id": "pause-then-score",
    "version": 1,
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "reentry": "always",
    "start": "pause",
    "nodes": {
        "pause": {"type": "wait", "for": "P1D", "next": "points"},
        "points": {"type": "update_score", "score": "SCORE", "add": 5},
    },
}


def test_revision_0004_indexes_runs_in_flight_and_keeps_them_resumable(store_url: str) -> None:
    """0004 replaces runs(contact, state) and runs(workflow, state) by partial indexes of the
    runs in flight and an index of entries: runs waiting in a revision-0003 store are still
    found, counted and resumed after the upgrade, and the store downgrades back."""
    engine = make_engine(store_url)
    try:
        upgrade(engine)
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0003")
        assert {"ix_runs_contact_state", "ix_runs_workflow_state"} <= _run_indexes(engine)
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
    "ann": ("2026-01-05 10:02:03.000000", datetime(2026, 1, 5, 10, 2, 3, tzinfo=UTC)),
    "bob": ("2026-01-05 10:02:03.250001", datetime(2026, 1, 5, 10, 2, 3, 250001, tzinfo=UTC)),
    "cid": ("1969-12-31 23:59:59.500000", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
}


def test_revision_0005_turns_sqlite_moment_text_into_integers_and_back(store_url: str) -> None:
    """0005: SQLite moments were SQLAlchemy's 26-byte text, now integer microseconds. A
    revision-0004 store's text becomes integers that read back as the same moments and
    compare in time order, NULLs stay NULL, and a downgrade gives back the same text.
    PostgreSQL keeps timestamptz: the same steps leave its rows as they were."""
    engine = make_engine(store_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        upgrade(engine)
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0004")
        with engine.begin() as connection:
            for contact, (text, _) in OLD_TEXT_MOMENTS.items():
                stored = text if sqlite else f"{text}+00"
                connection.exec_driver_sql(
                    "INSERT INTO scores (contact_id, name, value, peak, updated_at, "
                    "increased_at) VALUES (?, 'SCORE', 1.0, 1.0, ?, NULL)"
                    if sqlite
                    else "INSERT INTO scores (contact_id, name, value, peak, updated_at, "
                    "increased_at) VALUES (%s, 'SCORE', 1.0, 1.0, %s, NULL)",
                    (contact, stored),
                )
        assert upgrade(engine) == head_revision()
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
            assert list(later) == ["bob"]
            if sqlite:
                kinds = connection.exec_driver_sql(
                    "SELECT DISTINCT typeof(updated_at), typeof(increased_at) FROM scores"
                ).all()
                assert [tuple(kind) for kind in kinds] == [("integer", "null")]
        assert read == {
            contact: (moment, None) for contact, (_, moment) in OLD_TEXT_MOMENTS.items()
        }
        with as_file(files("engine").joinpath("migrations")):
            command.downgrade(alembic_config(engine), "0004")
        if sqlite:
            with engine.connect() as connection:
                back = dict(
                    connection.exec_driver_sql("SELECT contact_id, updated_at FROM scores").all()
                )
            assert back == {contact: text for contact, (text, _) in OLD_TEXT_MOMENTS.items()}
    finally:
        upgrade(engine)
        engine.dispose()


MOMENTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(9000, 1, 1), timezones=st.just(UTC)
)


@given(
    MOMENTS,
    MOMENTS,
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_moments_round_trip_through_the_sqlite_integer(
    first: datetime, second: datetime, offset_minutes: int
) -> None:
    """What engine.store.moments keeps: exact to the microsecond, in time order, and the
    same for one instant given in any zone; text from an older store still reads."""
    kept, other = stored_moment(first), stored_moment(second)
    assert moment_of(kept) == first
    assert (kept < other) == (first < second) and (kept == other) == (first == second)
    zone = timezone(timedelta(minutes=offset_minutes))
    assert stored_moment(first.astimezone(zone)) == kept
    text = first.replace(tzinfo=None).isoformat(" ", "microseconds")
    assert moment_of(text) == first
