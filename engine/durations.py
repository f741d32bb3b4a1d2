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
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class Duration:
    """A span of calendar months plus an exact time span."""

    months: int
    delta: timedelta
    text: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _PATTERN.match(text) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"expected an ISO-8601 duration such as P30D, PT2H or P1M, found {text!r}"
            )
        part = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
        delta = timedelta(
            weeks=part["weeks"],
            days=part["days"],
            hours=part["hours"],
            minutes=part["minutes"],
            seconds=part["seconds"],
        )
        return cls(months=int(part["years"]) * 12 + int(part["months"]), delta=delta, text=text)

    def after(self, moment: datetime) -> datetime:
        """The moment this long after ``moment``."""
        return _add_months(moment, self.months) + self.delta

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


def is_duration(text: object) -> bool:
    """Format checker for JSON Schema: True when ``text`` is not a string or parses."""
    return not isinstance(text, str) or _PATTERN.match(text) is not None
