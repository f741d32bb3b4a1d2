"""Text sorted by code point on every backend.

SQLite compares text with ``memcmp`` (its BINARY collation), which for UTF-8 is the order of
code points, Python's ``sorted`` order. PostgreSQL compares with the database's collation,
which is the server's choice: an ICU ``en-US`` database puts ``c_b`` and ``c-b`` before
``c0`` and ignores case at first. Wherever an order by id reaches a user (a summary's
contacts, a segment's ties, an account's members) or decides which contacts share a
transaction (a schedule's fan-out, decay's follow-up), the same store must give the same
order on both backends, so those ``ORDER BY`` clauses say ``COLLATE "C"`` on PostgreSQL:
byte order, which for UTF-8 is code-point order again.

The clause is compiled per dialect, so queries are written once. On PostgreSQL the sort
cannot use the primary key's index (its collation is the database's). Most of these
queries read every row they match anyway; ``leadflow segment --limit N`` did not, and now
sorts all contacts first: 0.2 s for a million contacts with ``--limit 10``, where the index
gave the first ten in under a millisecond. An expression index on ``id COLLATE "C"`` would
take that back, at one more b-tree write for every contact made.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal


class CodePointOrder(ColumnElement[Any]):
    """``column``, compared by code point (see the module's docstring)."""

    inherit_cache = True
    # the column is part of the statement's cache key: without it every wrapped column
    # would share one compiled form
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column
        self.type = column.type

    @property
    def _from_objects(self) -> list[Any]:  # the column's table, for SELECT ... FROM
        return self.column._from_objects


@compiles(CodePointOrder)
def _plain(element: CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column, **kw)


@compiles(CodePointOrder, "postgresql")
def _byte_order(element: CodePointOrder, compiler: SQLCompiler, **kw: Any) -> str:
    return f'{compiler.process(element.column, **kw)} COLLATE "C"'


def by_code_point(column: ColumnElement[Any]) -> CodePointOrder:
    """``ORDER BY by_code_point(contacts.c.id)``: code-point order on SQLite and PostgreSQL."""
    return CodePointOrder(column)


def code_point_suffix(dialect_name: str) -> str:
    """What SQL written as text puts after a text column to sort it by code point:
    `` COLLATE "C"`` on PostgreSQL, nothing on SQLite."""
    return ' COLLATE "C"' if dialect_name == "postgresql" else ""
