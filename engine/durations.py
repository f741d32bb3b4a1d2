"""ISO-8601 durations (``P30D``, ``PT2H``, ``P1M``) as exact calendar arithmetic.

Months and years are kept apart from days so that ``P1M`` from 31 January lands on the
last day of February, as a marketer means it, instead of 30 days later.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_PATTERN = re.compile(
    r"P(?!\Z)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?",
    re.ASCII,
)
_LONGEST = timedelta(days=1000 * 366)
"""Longer spans (and more than 1000 years of months) are refused: arithmetic on them would
leave the range of datetime."""


@dataclass(frozen=True, slots=True)
class Duration:
    """A span of calendar months plus an exact time span."""

    months: int
    delta: timedelta
    text: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"expected an ISO-8601 duration such as P30D, PT2H or P1M, found {text!r}"
            )
        part = {k: v or "0" for k, v in match.groupdict().items()}
        try:
            months = int(part["years"]) * 12 + int(part["months"])
            whole = {unit: int(part[unit]) for unit in ("weeks", "days", "hours", "minutes")}
        except ValueError:  # more digits than int() takes
            raise ValueError(
                f"a duration longer than 1000 years is not supported: {text!r}"
            ) from None
        seconds = float(part["seconds"])
        total = (
            ((whole["weeks"] * 7 + whole["days"]) * 24 + whole["hours"]) * 60 + whole["minutes"]
        ) * 60 + seconds
        if months > 12 * 1000 or total > _LONGEST.total_seconds():
            raise ValueError(f"a duration longer than 1000 years is not supported: {text!r}")
        delta = timedelta(**whole, seconds=seconds)
        return cls(months=months, delta=delta, text=text)

    def after(self, moment: datetime) -> datetime:
        """The moment this long after ``moment``."""
        return _add_months(moment, self.months) + self.delta

    def first_after(self, start: datetime, moment: datetime) -> datetime:
        """The first of ``start`` plus one, two, three... of this span that is later than
        ``moment``. Each is counted from ``start``, not from the one before it: one month
        after 31 January is 28 February, two months 31 March (chained, 28 March, and the
        28th from then on)."""
        if not self.months:  # exact spans chain without drift: no need to count
            if moment < start:
                return start + self.delta
            steps = (moment - start) // self.delta + 1 if self.delta else 1
            return start + self.delta * steps
        # a month is 28-31 days: start at a count that cannot be past the answer
        longest = timedelta(days=31 * self.months) + self.delta
        count = max(1, (moment - start) // longest) if moment > start else 1
        while True:
            tick = _add_months(start, self.months * count) + self.delta * count
            if tick > moment:
                return tick
            count += 1

    def before(self, moment: datetime) -> datetime:
        """The moment this long before ``moment``."""
        return _add_months(moment, -self.months) - self.delta

    def approximate(self) -> timedelta:
        """A fixed-length stand-in (30-day months), for sorting and SQL thresholds only."""
        return timedelta(days=30 * self.months) + self.delta

    def describe(self) -> str:
        """Plain words for graph labels: ``P3D`` -> ``3 days``."""
        parts: list[str] = []
        years, months = divmod(self.months, 12)
        for amount, unit in ((years, "year"), (months, "month")):
            if amount:
                parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
        days = self.delta.days
        seconds = int(self.delta.total_seconds()) - days * 86400
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        for amount, unit in ((days, "day"), (hours, "hour"), (minutes, "minute"), (secs, "second")):
            if amount:
                parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
        return " ".join(parts) or "0 seconds"

    def __str__(self) -> str:
        return self.text


def _add_months(moment: datetime, months: int) -> datetime:
    if not months:
        return moment
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def is_positive_duration(text: object) -> bool:
    """True for a duration text that spans some time; False for ``PT0S`` and the like
    (and for text that is no duration: the schema reports those)."""
    try:
        span = Duration.parse(text)  # type: ignore[arg-type]
    except ValueError:
        return False
    return bool(span.months or span.delta)


def is_duration(text: object) -> bool:
    """Format checker for JSON Schema: True when ``text`` is not a string or parses."""
    if not isinstance(text, str):
        return True
    try:
        Duration.parse(text)
    except ValueError:
        return False
    return True


def check_duration(text: object) -> bool:
    """Like :func:`is_duration`, but a well-formed duration that is out of range raises
    ValueError saying so (a format checker then reports why, not just "expected P30D")."""
    if not isinstance(text, str) or _PATTERN.fullmatch(text) is None:
        return not isinstance(text, str)
    Duration.parse(text)
    return True
