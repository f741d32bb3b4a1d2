"""The Alembic migrations and the table metadata must describe the same schema."""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.resources import as_file, files

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect, select

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.state import Batch
from engine.store.db import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    upgrade,
)
from engine.store.tables import contacts, metadata, scores


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
        assert upgrade(engine) == head_revision() == "0003"
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
