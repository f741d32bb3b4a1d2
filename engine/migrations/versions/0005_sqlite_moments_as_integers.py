"""SQLite keeps moments as integer microseconds since the epoch

SQLAlchemy's SQLite DATETIME wrote ``2026-01-12 00:00:00.000000``, 26 bytes of text, where
an integer takes 8: two thirds of a ``scores`` row, and a decay tick rewrites every page
of ``scores`` (bench/bench_decay.py). ``engine.store.moments`` now writes integers; this
revision turns the text already stored into them, in every column declared DATETIME, and
in the HTTP inbox's side file (``<file>-inbox``, which Alembic does not otherwise see).

Text in SQLAlchemy's own form is converted by one UPDATE per table. ``strftime('%s')`` is
given the whole seconds only: on the full text it rounds the fraction to milliseconds
first, which would move a moment at .9995 s or later one second on. Any other text (a
time zone, a shorter fraction) is read with ``datetime.fromisoformat``, naive taken as UTC;
text that is no moment at all is left as it is. The downgrade writes SQLAlchemy's form
back. PostgreSQL keeps ``timestamptz`` and is not touched.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 07:40:00.000000

"""

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DIGIT = "[0-9]"
_SQLALCHEMY_FORM = (
    f"{_DIGIT * 4}-{_DIGIT * 2}-{_DIGIT * 2} {_DIGIT * 2}:{_DIGIT * 2}:{_DIGIT * 2}.{_DIGIT * 6}"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _is_sqlalchemy_text(column: str) -> str:
    return f"(typeof({column}) = 'text' AND {column} GLOB '{_SQLALCHEMY_FORM}')"


def _to_integer(column: str) -> str:
    return (
        f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        f" + CAST(substr({column}, 21, 6) AS INTEGER)"
    )


def _to_text(column: str) -> str:
    fraction = f"((({column} % 1000000) + 1000000) % 1000000)"
    seconds = f"(({column} - {fraction}) / 1000000)"
    return f"strftime('%Y-%m-%d %H:%M:%S', {seconds}, 'unixepoch') || printf('.%06d', {fraction})"


def _moment_columns(execute: Any) -> dict[str, list[str]]:
    """Each table's columns declared DATETIME, read from SQLite's own catalogue (the same
    query for the store and for the side file, which has no SQLAlchemy engine here)."""
    tables = [
        row[0]
        for row in execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    ]
    found: dict[str, list[str]] = {}
    for table in tables:
        described = execute(f'PRAGMA table_info("{table}")')
        moments = [str(row[1]) for row in described if str(row[2]).upper() == "DATETIME"]
        if moments:
            found[table] = moments
    return found


def _odd_text_to_integer(text: str) -> int | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    aware = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
    return (aware - _EPOCH) // timedelta(microseconds=1)


def _rewrite(execute: Any, to_integer: bool) -> None:
    for table, columns in _moment_columns(execute).items():
        quoted = {column: f'"{column}"' for column in columns}
        if to_integer:
            matches = {column: _is_sqlalchemy_text(q) for column, q in quoted.items()}
            converted = {column: _to_integer(q) for column, q in quoted.items()}
        else:
            matches = {column: f"typeof({q}) = 'integer'" for column, q in quoted.items()}
            converted = {column: _to_text(q) for column, q in quoted.items()}
        assignments = ", ".join(
            f"{q} = CASE WHEN {matches[column]} THEN {converted[column]} ELSE {q} END"
            for column, q in quoted.items()
        )
        execute(f'UPDATE "{table}" SET {assignments} WHERE {" OR ".join(matches.values())}')
        if not to_integer:
            continue
        for column, q in quoted.items():
            odd = list(execute(f'SELECT rowid, {q} FROM "{table}" WHERE typeof({q}) = \'text\''))
            for rowid, text in odd:
                number = _odd_text_to_integer(text)
                if number is not None:
                    execute(f'UPDATE "{table}" SET {q} = ? WHERE rowid = ?', (number, rowid))


def _rewrite_store_and_side_file(to_integer: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return

    def in_store(sql: str, parameters: tuple[Any, ...] = ()) -> Any:
        result = bind.exec_driver_sql(sql, parameters)
        return result.all() if result.returns_rows else []

    _rewrite(in_store, to_integer)
    database = bind.engine.url.database
    side = f"{database}-inbox" if database and database != ":memory:" else None
    if side is None or not os.path.exists(side):
        return
    with sqlite3.connect(side, timeout=30) as connection:  # commits on leaving

        def in_side_file(sql: str, parameters: tuple[Any, ...] = ()) -> Any:
            return connection.execute(sql, parameters).fetchall()

        _rewrite(in_side_file, to_integer)
    connection.close()


def upgrade() -> None:
    _rewrite_store_and_side_file(to_integer=True)


def downgrade() -> None:
    _rewrite_store_and_side_file(to_integer=False)
