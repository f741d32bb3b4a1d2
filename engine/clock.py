"""Time is injected: the runner asks a clock, never the system, so tests and simulation
are deterministic and a simulation can jump over months of waits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time, for the worker and the service."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class VirtualClock:
    """A clock the caller moves; it never goes backwards."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> None:
        moment = ensure_utc(moment)
        if moment > self._now:
            self._now = moment


def ensure_utc(moment: datetime) -> datetime:
    """Aware UTC inside; a naive datetime at the edge is taken to be UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_timestamp(text: str) -> datetime:
    """ISO-8601 / RFC 3339 text to aware UTC; raises ValueError with the text on failure."""
    if not isinstance(text, str):
        raise ValueError(f"expected an ISO-8601 timestamp string, found {text!r}")
    try:
        moment = ensure_utc(datetime.fromisoformat(text))
    except (ValueError, OverflowError):  # overflow: a year 1 or 9999 moment moved to UTC
        raise ValueError(f"expected an ISO-8601 timestamp, found {text!r}") from None
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(
            f"expected a timestamp between the years {EARLIEST_YEAR} and {LATEST_YEAR}, "
            f"found {text!r}"
        )
    return moment


EARLIEST_YEAR = 1900
LATEST_YEAR = 2999
"""Timestamps outside these years are typos, and waits counted from them would overflow."""


def format_timestamp(moment: datetime) -> str:
    """UTC with a ``Z``, to the second when there are no fractions (as Segment writes)."""
    moment = ensure_utc(moment)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")
