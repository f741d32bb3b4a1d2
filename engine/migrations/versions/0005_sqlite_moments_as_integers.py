"""SQLite keeps moments as integer microseconds since the epoch

SQLAlchemy's SQLite DATETIME wrote ``2026-01-12 00:00:00.000000``, 26 bytes of text, where
an integer takes 8: two thirds of a ``scores`` row, and a decay tick rewrites every page
of ``scores`` (bench/bench_decay.py). ``engine.store.moments`` now writes integers; this
revision turns the text already stored into them, in every column declared DATETIME.
Text it cannot read as a moment is left as it is (``engine.store.moments.moment_of``
still reads text). PostgreSQL keeps ``timestamptz`` and is not touched.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 07:40:00.000000

"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _moment_columns() -> list[tuple[str, str]]:
    inspector = sa.inspect(op.get_bind())
    return [
        (table, column["name"])
        for table in inspector.get_table_names()
        for column in inspector.get_columns(table)
        if isinstance(column["type"], sa.DateTime)
    ]


def _to_integer(column: str) -> str:
    # whole seconds from strftime, then the fraction padded to six digits (SQLAlchemy
    # always wrote six; padding also reads a shorter or missing fraction right)
    return (
        f"CAST(strftime('%s', {column}) AS INTEGER) * 1000000"
        f" + CAST(substr({column} || '000000', 21, 6) AS INTEGER)"
    )


def _to_text(column: str) -> str:
    seconds = f"({column} - (((({column} % 1000000) + 1000000) % 1000000))) / 1000000"
    fraction = f"((({column} % 1000000) + 1000000) % 1000000)"
    return f"strftime('%Y-%m-%d %H:%M:%S', {seconds}, 'unixepoch') || printf('.%06d', {fraction})"


def _rewrite(convert: str, stored_as: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return
    for table, column in _moment_columns():
        quoted_table, quoted = f'"{table}"', f'"{column}"'
        bind.exec_driver_sql(
            f"UPDATE {quoted_table} SET {quoted} = coalesce("
            f"{_to_integer(quoted) if convert == 'integer' else _to_text(quoted)}, {quoted})"
            f" WHERE typeof({quoted}) = '{stored_as}'"
        )


def upgrade() -> None:
    _rewrite("integer", stored_as="text")


def downgrade() -> None:
    _rewrite("text", stored_as="integer")
