"""Raw driver values read as the column types would give them.

The hot readers (a batch's load, the simulation summary) fetch rows with plain SQL and
skip SQLAlchemy's per-value result processing. They still have to hand out what the types
give: ``UTCDateTime`` an aware UTC datetime, ``JSON`` the decoded document. SQLite keeps
moments as integers and documents as text; psycopg decodes timestamptz and JSON itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from engine.store.moments import moment_or_none


class RawReader:
    """``moment`` and ``document`` converters for one backend's raw values."""

    __slots__ = ("document", "moment")

    def __init__(self, postgres: bool) -> None:
        self.moment: Callable[[Any], Any] = _pg_moment if postgres else moment_or_none
        self.document: Callable[[Any], Any] = _pg_document if postgres else sqlite_document


def _pg_moment(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_document(text: str | None) -> Any:
    """The stored JSON text decoded (a new object each time: callers change them), as
    ``json.loads`` decodes it. orjson does it in a third of the time. What it refuses and
    the standard library accepts (NaN, the infinities, lone surrogates) goes to the
    standard library, and so does any text with 19 digits in a row: orjson reads an
    integer past 64 bits as a float, where ``json.loads`` keeps it exact."""
    if text is None:
        return None
    if text == "{}":
        return {}
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


_LONG_NUMBER = re.compile(r"\d{19}")


def _pg_document(value: Any) -> Any:
    """A fresh copy of what psycopg decoded, as the loader hands documents out to change."""
    return dict(value) if type(value) is dict else value
