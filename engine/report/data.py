"""What ``leadflow report`` shows, read from a store into plain figures.

Bands are the score model's band lists; read as buying stages (domain.md 000: reporting is
the share of leads in each buying stage, to predict stage conversion), they make the funnel:
the contacts that ever reached each band (from the audit), lowest band first.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from engine.catalog import Catalog
from engine.clock import SystemClock, format_timestamp
from engine.durations import Duration
from engine.scoring.models import Band, GradeModel, ScoreModel
from engine.store.tables import audit, contacts, events, list_members, outbox, scores

NO_BAND = "no band"
NO_GRADE = "no grade"
TIMES = "\u00d7"
GRADE_LETTERS = ("A", "B", "C", "D", "E", "F")
DEFAULT_COLD = "P30D"


@dataclass
class BandFigure:
    list: str
    range: str
    contacts: int
    """On the band list now."""
    reached: int = 0
    """Ever on the band list (audit) or on it now."""
    at_least: int = 0
    """Ever on this band or a higher one: the funnel's count."""


@dataclass
class Bin:
    low: float
    high: float
    contacts: int
    open: bool = False
    """The last bin of a long tail: every score from ``low`` up."""

    def label(self) -> str:
        return f"{self.low:g} and more" if self.open else f"{self.low:g} to < {self.high:g}"


@dataclass
class Report:
    as_of: datetime
    score: str
    contacts: int
    model: ScoreModel | None
    grade_name: str
    bands: list[BandFigure]
    no_band: int
    histogram: list[Bin]
    scored: int
    score_stats: dict[str, float]
    grades: list[str]
    matrix: dict[str, dict[str, int]]
    cold_after: Duration
    cold: int
    cold_never_scored: int
    quiet_days: list[float]
    lists: list[tuple[str, int]]
    weeks: list[date]
    channels: list[str]
    messages: dict[str, list[int]] = field(default_factory=dict)
    """Channel -> messages created per week (same order as ``weeks``)."""

    @property
    def columns(self) -> list[str]:
        """The grade-by-band matrix's columns: band lists, then contacts on none."""
        return [band.list for band in self.bands] + [NO_BAND]

    @property
    def sales_ready(self) -> float | None:
        return self.model.sales_ready if self.model is not None else None

    @property
    def funnel(self) -> list[tuple[str, int]]:
        """(stage, contacts that reached it or a later one), all contacts first."""
        return [("all contacts", self.contacts)] + [(b.list, b.at_least) for b in self.bands]

    def share(self, count: int) -> float:
        return count / self.contacts if self.contacts else 0.0

    def as_json(self) -> dict[str, Any]:
        funnel = self.funnel
        return {
            "as_of": format_timestamp(self.as_of),
            "score": self.score,
            "contacts": self.contacts,
            "score_model": None
            if self.model is None
            else {
                "id": self.model.id,
                "version": self.model.version,
                "name": self.model.name,
                "sales_ready": self.model.sales_ready,
            },
            "bands": [
                {
                    "list": band.list,
                    "range": band.range,
                    "contacts": band.contacts,
                    "share": round(self.share(band.contacts), 6),
                    "ever_reached": band.reached,
                }
                for band in self.bands
            ],
            "no_band": self.no_band,
            "score_distribution": {
                "scored": self.scored,
                "no_score": self.contacts - self.scored,
                **{k: _plain(v) for k, v in self.score_stats.items()},
                "bins": [
                    {
                        "from": _plain(b.low),
                        "below": None if b.open else _plain(b.high),
                        "contacts": b.contacts,
                    }
                    for b in self.histogram
                ],
            },
            "grade": self.grade_name,
            "grade_by_band": {grade: dict(self.matrix[grade]) for grade in self.grades},
            "cold": {
                "after": self.cold_after.text,
                "contacts": self.cold,
                "share": round(self.share(self.cold), 6),
                "never_scored": self.cold_never_scored,
            },
            "lists": dict(self.lists),
            "funnel": [
                {
                    "stage": name,
                    "contacts": count,
                    "of_previous": None
                    if index == 0 or not funnel[index - 1][1]
                    else round(count / funnel[index - 1][1], 6),
                    "of_all": round(self.share(count), 6),
                }
                for index, (name, count) in enumerate(funnel)
            ],
            "messages_per_week": [
                {
                    "week": week.isoformat(),
                    **{channel: self.messages[channel][i] for channel in self.channels},
                }
                for i, week in enumerate(self.weeks)
            ],
        }


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def gather(
    connection: Connection,
    score: str = "SCORE",
    cold_after: Duration | None = None,
    now: datetime | None = None,
) -> Report:
    """Read the report's figures. ``now`` defaults to the newest event in the store (the
    end of a replayed history), or the current time when there are none."""
    cold_after = cold_after or Duration.parse(DEFAULT_COLD)
    if now is None:
        newest = connection.scalar(select(func.max(events.c.timestamp)))
        now = newest if newest is not None else SystemClock().now()
    catalog = Catalog.load(connection)
    model = _score_model(catalog, score)
    grade_model = _grade_model(catalog)
    grade_name = grade_model.grade if grade_model is not None else "GRADE"

    people: dict[str, tuple[datetime, str | None]] = {}
    for contact_id, created_at, grades in connection.execute(
        select(contacts.c.id, contacts.c.created_at, contacts.c.grades).where(
            contacts.c.merged_into.is_(None)
        )
    ):
        letter = (grades or {}).get(grade_name)
        people[contact_id] = (created_at, letter if isinstance(letter, str) else None)

    values: dict[str, float] = {}
    increased: dict[str, datetime | None] = {}
    for contact_id, value, increased_at in connection.execute(
        select(scores.c.contact_id, scores.c.value, scores.c.increased_at).where(
            scores.c.name == score
        )
    ):
        if contact_id in people:
            values[contact_id] = float(value)
            increased[contact_id] = increased_at

    bands = sorted(model.bands, key=_low) if model is not None else []
    names = [band.list for band in bands]
    members: dict[str, set[str]] = defaultdict(set)
    list_counts: dict[str, int] = defaultdict(int)
    for name, contact_id in connection.execute(
        select(list_members.c.list_name, list_members.c.contact_id)
    ):
        if contact_id in people:
            list_counts[name] += 1
            if name in names:
                members[name].add(contact_id)
    ever: dict[str, set[str]] = {name: set(members[name]) for name in names}
    if names:
        rows = connection.execute(
            select(audit.c.name, audit.c.contact_id)
            .where(audit.c.subject == "list", audit.c.name.in_(names))
            .distinct()
        )
        for name, contact_id in rows:  # any row means the contact was on the list
            if contact_id in people:
                ever[name].add(contact_id)

    band_of: dict[str, str] = {}
    for name in names:  # the lowest band list that holds the contact
        for contact_id in members[name]:
            band_of.setdefault(contact_id, name)
    highest: dict[str, int] = {}
    for index, name in enumerate(names):
        for contact_id in ever[name]:
            highest[contact_id] = max(highest.get(contact_id, -1), index)
    figures = [
        BandFigure(
            band.list,
            band.describe(),
            len(members[band.list]),
            len(ever[band.list]),
            sum(1 for top in highest.values() if top >= index),
        )
        for index, band in enumerate(bands)
    ]

    letters = [*GRADE_LETTERS, NO_GRADE]
    matrix: dict[str, dict[str, int]] = {
        letter: dict.fromkeys([*names, NO_BAND], 0) for letter in letters
    }
    for contact_id, (_, letter) in people.items():
        row = letter if letter in matrix else NO_GRADE
        matrix[row][band_of.get(contact_id, NO_BAND)] += 1
    grades = [letter for letter in letters if any(matrix[letter].values())]

    since = cold_after.before(now)
    cold = never = 0
    quiet_days: list[float] = []
    for contact_id, (created_at, _) in people.items():
        last = increased.get(contact_id) or created_at
        quiet_days.append(max(0.0, (now - last).total_seconds() / 86400))
        if last < since:
            cold += 1
            if increased.get(contact_id) is None:
                never += 1

    weeks, channels, per_week = _messages(connection, now)
    stats: dict[str, float] = {}
    if values:
        numbers = list(values.values())
        stats = {
            "min": min(numbers),
            "median": statistics.median(numbers),
            "mean": round(statistics.fmean(numbers), 2),
            "max": max(numbers),
        }
    return Report(
        as_of=now,
        score=score,
        contacts=len(people),
        model=model,
        grade_name=grade_name,
        bands=figures,
        no_band=len(people) - len(band_of),
        histogram=histogram(list(values.values())),
        scored=len(values),
        score_stats=stats,
        grades=grades,
        matrix=matrix,
        cold_after=cold_after,
        cold=cold,
        cold_never_scored=never,
        quiet_days=quiet_days,
        lists=sorted(list_counts.items(), key=lambda item: (-item[1], item[0])),
        weeks=weeks,
        channels=channels,
        messages=per_week,
    )


def _low(band: Band) -> float:
    return band.low if band.low is not None else -math.inf


def _score_model(catalog: Catalog, score: str) -> ScoreModel | None:
    models = sorted(catalog.score_models.get(score, ()), key=lambda m: m.id)
    return models[0] if models else None


def _grade_model(catalog: Catalog) -> GradeModel | None:
    models = sorted(catalog.grade_models, key=lambda m: m.id)
    return models[0] if models else None


def nice_width(span: float, most: int = 20) -> float:
    """A round bin width (1, 2, 2.5, 5 times a power of ten) giving at most ``most`` bins."""
    if span <= 0:
        return 1.0
    raw = span / most
    power = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= raw:
            return float(step * power)
    return float(10 * power)


def histogram(values: list[float], most: int = 12) -> list[Bin]:
    """Equal bins of a round width from 0 (or the lowest score, when below) to the highest:
    bin ``i`` holds ``low <= score < high``. A long tail (scores above the 99th percentile
    that would stretch the bins) goes into one last open bin."""
    if not values:
        return []
    ordered = sorted(values)
    start_at, top = min(ordered[0], 0.0), ordered[-1]
    cap = ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]
    width = nice_width(cap - start_at, most)
    start = math.floor(start_at / width) * width
    count = max(1, math.floor((cap - start) / width) + 1)
    tail = top >= start + count * width
    bins = [Bin(start + i * width, start + (i + 1) * width, 0) for i in range(count)]
    if tail:
        bins.append(Bin(start + count * width, math.inf, 0, open=True))
    for value in ordered:
        bins[min(len(bins) - 1, int((value - start) // width))].contacts += 1
    return bins


def _messages(connection: Connection, now: datetime) -> tuple[list[date], list[str], Any]:
    """Outbox messages created per channel and week (weeks start on Monday, UTC)."""
    counts: dict[tuple[date, str], int] = defaultdict(int)
    for channel, created_at in connection.execute(select(outbox.c.channel, outbox.c.created_at)):
        day = created_at.astimezone(UTC).date()
        counts[(day - timedelta(days=day.weekday()), channel)] += 1
    if not counts:
        return [], [], {}
    first = min(week for week, _ in counts)
    last = max(week for week, _ in counts)
    weeks = [first + timedelta(weeks=i) for i in range((last - first).days // 7 + 1)]
    channels = sorted({channel for _, channel in counts})
    per_week = {channel: [counts.get((week, channel), 0) for week in weeks] for channel in channels}
    return weeks, channels, per_week
