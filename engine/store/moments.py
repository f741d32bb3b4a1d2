"""How a moment is kept in SQLite: whole microseconds since 1970-01-01 UTC, an integer.

SQLAlchemy's own SQLite DATETIME keeps ``2026-01-12 00:00:00.000000``: 26 bytes of text
where an integer takes 8 (SQLite stores integers in 1 to 8 bytes). A score row carries
three moments, an event, a run or an outbox row two to four, and the audit index is keyed
by one: as text they were two thirds of a ``scores`` row (152 bytes), and a decay tick
that rewrites every score wrote every page of that width (bench/bench_decay.py).
Integers order like the moments they stand for, so comparisons and indexes are unchanged.
PostgreSQL keeps ``timestamptz`` and never comes here.

Revision 0005 turns the text of older stores into these integers. :func:`moment_of` still
reads text, but SQLite orders every integer before every text, so text written after the
upgrade (by a process still on an older release) would compare wrongly: a due wait kept as
text is never due. Processes on a store are stopped before it is upgraded (README).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_MEMO_LIMIT = 20_000

_STORED: dict[datetime, int] = {}
_MOMENTS: dict[int, datetime] = {}


def stored_moment(value: datetime) -> int:
    """The integer kept for ``value``. A naive ``value`` is taken as local time, as
    ``datetime.astimezone`` takes it. Memoised: the rows of one batch share a few moments
    (a message's event, run and audit rows all carry its timestamp)."""
    number = _STORED.get(value)
    if number is None:
        aware = value if value.tzinfo is not None else value.astimezone(UTC)
        number = (aware - EPOCH) // _MICROSECOND
        if value.tzinfo is not None:  # a naive moment's meaning depends on the local zone
            if len(_STORED) >= _MEMO_LIMIT:
                _STORED.clear()
            _STORED[value] = number
    return number


def moment_of(stored: int | str) -> datetime:
    """The aware UTC moment for what SQLite returned: the integer, or text written as
    SQLAlchemy's DATETIME writes it (a store from before revision 0005)."""
    if type(stored) is not int:
        return _moment_of_text(str(stored))
    moment = _MOMENTS.get(stored)
    if moment is None:
        moment = EPOCH + stored * _MICROSECOND
        if len(_MOMENTS) >= _MEMO_LIMIT:
            _MOMENTS.clear()
        _MOMENTS[stored] = moment
        # a moment read is often written back (a resumed wait's due moment stamps its
        # run, score and audit rows): the way back is known already, where there is room
        # (reads never clear what writes memoised)
        if len(_STORED) < _MEMO_LIMIT:
            _STORED[moment] = stored
    return moment


def stored_or_none(value: datetime | None) -> int | None:
    """:func:`stored_moment`, passing NULL through: the bind step of every SQLite moment
    (the column type, the bulk writers). The memo is looked up here first: this runs for
    every moment of every row written."""
    if value is None:
        return None
    number = _STORED.get(value)
    return number if number is not None else stored_moment(value)


def moment_or_none(stored: int | str | None) -> datetime | None:
    """:func:`moment_of`, passing NULL through: the read step of every SQLite moment (the
    column type, the batch loader). The memo is looked up here first, as above."""
    if stored is None:
        return None
    moment = _MOMENTS.get(stored) if isinstance(stored, int) else None
    return moment if moment is not None else moment_of(stored)


def _moment_of_text(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
