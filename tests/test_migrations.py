"""The Alembic migrations and the table metadata must describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect

from engine.store.db import current_revision, head_revision, upgrade
from engine.store.tables import metadata


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
