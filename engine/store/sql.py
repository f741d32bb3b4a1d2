"""Small dialect-aware helpers shared by the store modules."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite

T = TypeVar("T")

CHUNK = 500


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """Keep IN (...) lists under SQLite's variable limit."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def insert_for(connection: Connection, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignore(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        connection.execute(insert_for(connection, table).on_conflict_do_nothing(), rows)


def upsert(
    connection: Connection,
    table: Table,
    rows: list[dict[str, Any]],
    keys: Iterable[str],
    update: Iterable[str],
) -> None:
    if not rows:
        return
    statement = insert_for(connection, table)
    statement = statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={column: statement.excluded[column] for column in update},
    )
    connection.execute(statement, rows)


def is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"
