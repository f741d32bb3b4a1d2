"""Small dialect-aware helpers shared by the store modules."""

from __future__ import annotations

import json
import json.encoder
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import (
    ARRAY,
    JSON,
    ColumnElement,
    Connection,
    Select,
    Table,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from engine.store.moments import stored_or_none
from engine.store.tables import UTCDateTime

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


# --- bulk writes ------------------------------------------------------------------------
#
# SQLAlchemy's executemany converts every row through compiled parameters and type
# processors, which costs more than the database does for the many small rows a batch
# writes (events, runs, audit, scores). The helpers below write the same values with one
# statement per call: on SQLite the driver's executemany over tuples converted once per
# column, on PostgreSQL one statement over unnest()ed text arrays, cast server-side. The
# stored values are the ones SQLAlchemy would store (the same moment integers on SQLite, same
# JSON text on both), so everything reading the rows back sees no difference.

Row = Mapping[str, Any]
Converter = Callable[[Any], Any]


def json_text(value: Any) -> str:
    """``json.dumps(value)`` (what SQLAlchemy's JSON type stores), with a fast path for the
    scalars and empty objects that most audit values and properties are."""
    kind = type(value)
    if kind is str:
        return str(encode_basestring_ascii(value))
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and math.isfinite(value):
        return float.__repr__(value)
    if kind is dict and not value:
        return "{}"
    if _C_ENCODER is None:  # pragma: no cover - CPython has the C encoder
        return json.dumps(value)
    # what json.dumps does with its defaults, minus building a JSONEncoder per call: one C
    # encoder per thread, reused while it succeeds (after a failure its circular-reference
    # markers may hold ids of the failed value, so it is dropped)
    encode = getattr(_ENCODERS, "encode", None)
    if encode is None:
        encode = _C_ENCODER({}, _DEFAULT, encode_basestring_ascii, None, ": ", ", ", *_FLAGS)
    _ENCODERS.encode = None
    text = "".join(encode(value, 0))
    _ENCODERS.encode = encode
    return text


_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_DEFAULT = json.JSONEncoder().default
_FLAGS = (False, False, True)  # sort_keys, skipkeys, allow_nan: json.dumps' defaults
_ENCODERS = threading.local()


def _pg_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat() if value.tzinfo is UTC else value.astimezone(UTC).isoformat()


def _pg_text(value: Any) -> str | None:
    """A Python value as PostgreSQL input text, for a ``text[]`` element cast server-side."""
    if value is None or type(value) is str:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return float.__repr__(value)
    return str(value)


def _each(convert: Converter) -> Callable[[Iterable[Any]], list[Any]]:
    """A whole column through ``convert``, converting each run of the same object once
    (a batch's rows carry the same moment or document object many times in a row)."""

    def column(values: Iterable[Any]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        last: Any = _NOTHING
        converted: Any = None
        for value in values:
            if value is not last:
                last = value
                converted = convert(value)
            append(converted)
        return out

    return column


def _texts(values: Iterable[Any]) -> list[Any]:
    """:func:`_pg_text` over a column, strings (most values) passed through as they are."""
    return [v if type(v) is str or v is None else _pg_text(v) for v in values]


_NOTHING = object()
ColumnConverter = Callable[[Iterable[Any]], list[Any]]


def _converter(table: Table, name: str, dialect: Dialect) -> ColumnConverter | None:
    kind = table.c[name].type
    if isinstance(kind, JSON):
        return _each(json_text)
    if dialect.name == "postgresql":
        return _each(_pg_datetime) if isinstance(kind, UTCDateTime) else _texts
    if isinstance(kind, UTCDateTime):
        return _each(stored_or_none)
    # None for the plain types (text, numbers) the driver takes as they are
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    return None if process is None else _each(process)


class _Plan:
    """One compiled bulk statement: its SQL and how to turn rows into parameters. Rows are
    tuples in the order of ``given`` (the caller's column order); ``names`` is the order of
    the statement's parameters."""

    def __init__(
        self,
        table: Table,
        names: Sequence[str],
        dialect: Dialect,
        given: Sequence[str] | None = None,
    ) -> None:
        self.names = tuple(names)
        self.given = tuple(given) if given is not None else self.names
        self.order = None if self.given == self.names else [self.given.index(n) for n in self.names]
        self.getter = itemgetter(*self.given)
        converters = [_converter(table, n, dialect) for n in self.names]
        self.converters = [(i, c) for i, c in enumerate(converters) if c is not None]
        self.sql = ""
        self.by_key = False
        """PostgreSQL: an UPDATE or DELETE joined to unnest() by the table's key columns."""

    def row_tuples(self, rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        """Row dicts as tuples in ``given`` order."""
        getter = self.getter
        if len(self.given) == 1:
            return [(getter(row),) for row in rows]
        return [getter(row) for row in rows]

    def columns(self, rows: Sequence[tuple[Any, ...]]) -> list[Any]:
        """The converted values column by column, in statement order."""
        columns: list[Any] = list(zip(*rows, strict=True))
        if self.order is not None:
            columns = [columns[i] for i in self.order]
        for index, convert in self.converters:
            columns[index] = convert(columns[index])
        return columns

    def tuples(self, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Row-wise parameter tuples, for the driver's executemany."""
        if not self.converters and self.order is None:
            return list(rows)
        return list(zip(*self.columns(rows), strict=True))

    def arrays(self, rows: Sequence[tuple[Any, ...]]) -> tuple[list[Any], ...]:
        """Column-wise text arrays, for PostgreSQL's unnest()."""
        return tuple(list(column) for column in self.columns(rows))


_PLANS: dict[tuple[Any, ...], _Plan] = {}


def _quote(dialect: Dialect, name: str) -> str:
    return str(dialect.identifier_preparer.quote(name))


def _pg_type(table: Table, name: str, dialect: Dialect) -> str:
    return str(table.c[name].type.compile(dialect=dialect))


def _unnest(table: Table, names: Sequence[str], dialect: Dialect, alias: str = "u") -> str:
    """``unnest(%b::text[], ...) AS u(c1, c2, ...)``. The arrays go in binary: psycopg
    dumps a text array in its text format through a quoting check per element, five
    times the client CPU of the binary format (and the server parses less)."""
    arrays = ", ".join("%b::text[]" for _ in names)
    columns = ", ".join(_quote(dialect, n) for n in names)
    return f"unnest({arrays}) AS {alias}({columns})"


def _cast(table: Table, name: str, dialect: Dialect, alias: str = "u") -> str:
    return f"{alias}.{_quote(dialect, name)}::{_pg_type(table, name, dialect)}"


def _plan(
    connection: Connection, kind: str, table: Table, names: Sequence[str], extra: Any = None
) -> _Plan:
    dialect = connection.dialect
    key = (dialect.name, kind, table.name, tuple(names), extra)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    plan = _Plan(table, names, dialect)
    q = _quote
    name = q(dialect, table.name)
    columns = ", ".join(q(dialect, n) for n in names)
    pg = dialect.name == "postgresql"
    if kind in ("insert", "ignore", "upsert"):
        if pg:
            casts = ", ".join(_cast(table, n, dialect) for n in names)
            body = f"SELECT {casts} FROM {_unnest(table, names, dialect)}"
        else:
            body = "VALUES (" + ", ".join("?" for _ in names) + ")"
        sql = f"INSERT INTO {name} ({columns}) {body}"
        if kind == "ignore":
            sql += " ON CONFLICT DO NOTHING"
        elif kind == "upsert":
            keys, update = extra
            target = ", ".join(q(dialect, k) for k in keys)
            sets = ", ".join(f"{q(dialect, c)} = excluded.{q(dialect, c)}" for c in update)
            sql += f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
    elif kind in ("update", "rowid_update"):  # rowid_update: SQLite only, update_rows_at
        keys = extra
        values = [n for n in names if n not in keys]
        if pg:
            sets = ", ".join(f"{q(dialect, c)} = {_cast(table, c, dialect)}" for c in values)
            match = " AND ".join(
                f"{name}.{q(dialect, k)} = {_cast(table, k, dialect)}" for k in keys
            )
            plan.by_key = True
            sql = f"UPDATE {name} SET {sets} FROM {_unnest(table, names, dialect)} WHERE {match}"
        else:
            sets = ", ".join(f"{q(dialect, c)} = ?" for c in values)
            if kind == "rowid_update":  # the key column's place holds the rowid
                match = "rowid = ?"
            else:
                match = " AND ".join(f"{q(dialect, k)} = ?" for k in keys)
            sql = f"UPDATE {name} SET {sets} WHERE {match}"
            plan = _Plan(table, [*values, *keys], dialect, given=names)
    elif kind == "delete":
        if pg:
            match = " AND ".join(
                f"{name}.{q(dialect, k)} = {_cast(table, k, dialect)}" for k in names
            )
            plan.by_key = True
            sql = f"DELETE FROM {name} USING {_unnest(table, names, dialect)} WHERE {match}"
        else:
            match = " AND ".join(f"{q(dialect, k)} = ?" for k in names)
            sql = f"DELETE FROM {name} WHERE {match}"
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    plan.sql = sql
    _PLANS[key] = plan
    return plan


_SEQSCAN_OFF = (
    "SELECT s.before FROM (SELECT current_setting('enable_seqscan') AS before OFFSET 0) AS s "
    "CROSS JOIN LATERAL set_config('enable_seqscan', 'off', s.before IS NOT NULL)"
)
"""Turns sequential scans off for the rest of the transaction; returns the setting before.
The LATERAL call names ``s`` (always true: ``is_local``), so it runs after the read."""
_SEQSCAN_BACK = "SELECT set_config('enable_seqscan', %s, true)"


def _run(connection: Connection, plan: _Plan, rows: Sequence[tuple[Any, ...]]) -> None:
    if connection.dialect.name == "postgresql":
        if plan.by_key:
            # Joined to unnest(), the planner costs thousands of index probes above one
            # pass over the table: for a worker's 10,000 runs it hashed all 1,000,000 of
            # them (0.71 s; by the index 0.16 s, and the pass grows with the table). Once
            # psycopg has prepared the statement and PostgreSQL has moved to its generic
            # plan (from about the eleventh run on a connection), that plan probes the
            # index anyway; before that, and behind a pooler that does not keep prepared
            # statements, this is what keeps it off the table.
            # The caller's own setting is put back after the statement.
            before = connection.exec_driver_sql(_SEQSCAN_OFF).scalar_one()
            connection.exec_driver_sql(plan.sql, plan.arrays(rows))
            connection.exec_driver_sql(_SEQSCAN_BACK, (before,))
            return
        connection.exec_driver_sql(plan.sql, plan.arrays(rows))
    else:
        connection.exec_driver_sql(plan.sql, plan.tuples(rows))


def _unique(rows: Sequence[tuple[Any, ...]], positions: Sequence[int]) -> bool:
    pick = itemgetter(*positions)
    return len({pick(row) for row in rows}) == len(rows)


def bulk_insert(
    connection: Connection, table: Table, rows: Sequence[Row], ignore: bool = False
) -> None:
    """INSERT every row (all with the keys of the first); ``ignore``: ON CONFLICT DO NOTHING."""
    if rows:
        names = list(rows[0])
        plan = _plan(connection, "ignore" if ignore else "insert", table, names)
        _run(connection, plan, plan.row_tuples(rows))


def insert_rows(
    connection: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    ignore: bool = False,
) -> None:
    """:func:`bulk_insert` of rows given as tuples of the ``names`` columns."""
    if rows:
        _run(connection, _plan(connection, "ignore" if ignore else "insert", table, names), rows)


def bulk_insert_returning(
    connection: Connection, table: Table, rows: Sequence[Row], column: str
) -> list[Any]:
    """INSERT ... ON CONFLICT DO NOTHING; returns ``column`` of the rows really inserted."""
    if not rows:
        return []
    names = list(rows[0])
    plan = _plan(connection, "ignore", table, names)
    return _insert_returning(connection, plan, plan.row_tuples(rows), column)


def insert_rows_returning(
    connection: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    column: str,
) -> list[Any]:
    """:func:`bulk_insert_returning` of rows given as tuples of the ``names`` columns."""
    if not rows:
        return []
    return _insert_returning(connection, _plan(connection, "ignore", table, names), rows, column)


def _insert_returning(
    connection: Connection, plan: _Plan, rows: Sequence[tuple[Any, ...]], column: str
) -> list[Any]:
    dialect = connection.dialect
    if dialect.name == "postgresql":
        sql = f"{plan.sql} RETURNING {_quote(dialect, column)}"
        return list(connection.exec_driver_sql(sql, plan.arrays(rows)).scalars())
    names = plan.names
    values = plan.tuples(rows)
    per = max(1, 30_000 // len(names))  # under SQLite's 32,766 variables per statement
    row_marks = "(" + ", ".join("?" for _ in names) + ")"
    head, _, tail = plan.sql.partition("VALUES ")
    tail = tail.removeprefix(row_marks)
    taken: list[Any] = []
    for start in range(0, len(values), per):
        part = values[start : start + per]
        sql = f"{head}VALUES {', '.join([row_marks] * len(part))}{tail}"
        sql += f" RETURNING {_quote(dialect, column)}"
        flat = tuple(v for row in part for v in row)
        taken.extend(connection.exec_driver_sql(sql, flat).scalars())
    return taken


def bulk_upsert(
    connection: Connection,
    table: Table,
    rows: Sequence[Row],
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET the ``update`` columns, row by row."""
    if rows:
        names = list(rows[0])
        plan = _plan(connection, "upsert", table, names, (tuple(keys), tuple(update)))
        _upsert(connection, table, plan, plan.row_tuples(rows), keys, update)


def upsert_rows(
    connection: Connection,
    table: Table,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    """:func:`bulk_upsert` of rows given as tuples of the ``names`` columns."""
    if rows:
        plan = _plan(connection, "upsert", table, names, (tuple(keys), tuple(update)))
        _upsert(connection, table, plan, rows, keys, update)


def _upsert(
    connection: Connection,
    table: Table,
    plan: _Plan,
    rows: Sequence[tuple[Any, ...]],
    keys: Sequence[str],
    update: Sequence[str],
) -> None:
    names = plan.given
    if connection.dialect.name == "postgresql" and not _unique(
        rows, [names.index(k) for k in keys]
    ):
        # one statement cannot insert and update the same row: SQLAlchemy's executemany
        dicts = [dict(zip(names, row, strict=True)) for row in rows]
        upsert(connection, table, dicts, keys, update)
        return
    _run(connection, plan, rows)


def bulk_update(
    connection: Connection, table: Table, keys: Sequence[str], rows: Sequence[Row]
) -> None:
    """UPDATE the row matching ``keys`` with the other values of each row dict."""
    if rows:
        names = list(rows[0])
        update_rows(
            connection,
            table,
            keys,
            names,
            _plan(connection, "update", table, names, tuple(keys)).row_tuples(rows),
        )


def update_rows(
    connection: Connection,
    table: Table,
    keys: Sequence[str],
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """:func:`bulk_update` of rows given as tuples of the ``names`` columns."""
    if not rows:
        return
    if connection.dialect.name == "postgresql" and not _unique(
        rows, [list(names).index(k) for k in keys]
    ):
        for row in rows:
            update_rows(connection, table, keys, names, [row])
        return
    _run(connection, _plan(connection, "update", table, names, tuple(keys)), rows)


def update_rows_at(
    connection: Connection,
    table: Table,
    key: str,
    names: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """SQLite: :func:`update_rows` of rows that carry their rowid in the place of the
    ``key`` column, read by the same transaction. SQLite then goes straight to the row
    instead of searching the key's index first: a third less time for the runs a worker's
    lease resumes, whose ids are random (bench/README.md, "Seventh round"). A rowid is
    only stable within a transaction (``VACUUM`` may renumber a table without an INTEGER
    PRIMARY KEY), hence read and used in the same one."""
    if rows:
        _run(connection, _plan(connection, "rowid_update", table, names, (key,)), rows)


def bulk_delete(connection: Connection, table: Table, rows: Sequence[Row]) -> None:
    """DELETE the rows matching each row dict (all its keys)."""
    if rows:
        plan = _plan(connection, "delete", table, list(rows[0]))
        _run(connection, plan, plan.row_tuples(rows))


def bulk_delete_rows(
    connection: Connection, table: Table, names: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """:func:`bulk_delete` of rows given as tuples of the ``names`` columns."""
    if rows:
        _run(connection, _plan(connection, "delete", table, names), rows)


def in_values(
    connection: Connection, column: ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """``column IN values`` as one parameter whatever the number of values (an array on
    PostgreSQL, a JSON array read with json_each on SQLite): the statement text stays the
    same, so it is compiled and prepared once, and needs no chunking under SQLite's limit."""
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    listed: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(None, json.dumps(list(values))))
    )
    return column.in_(listed.scalar_subquery())
