"""Fire on a cron schedule for every contact of a segment (weekly decay, digests)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from apscheduler.triggers.cron import CronTrigger

from engine.conditions import Predicate, compile_condition, describe_condition
from engine.fragments import condition, text
from engine.kinds import TriggerKind

_EPSILON = timedelta(microseconds=1)


FIELDS = ("minute", "hour", "day", "month", "day_of_week")
FIELD_WORDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SOMETIME = datetime(2000, 1, 1, tzinfo=UTC)
_APSCHEDULER_PREFIX = re.compile(r"^Error validating expression '[^']*': ")


def crontab_trigger(expression: str) -> CronTrigger:
    """An APScheduler trigger for a standard 5-field crontab, read as cron reads it.

    APScheduler numbers weekdays from Monday = 0, crontab from Sunday = 0 (7 is Sunday too),
    so the day-of-week field is translated to day names. Cron fires when *either* a
    restricted day-of-month or a restricted day-of-week matches, APScheduler when both do;
    rather than silently differ, restricting both is refused.
    Raises ValueError naming the field at fault.
    """
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}"
        )
    values = dict(zip(FIELDS, fields, strict=True))
    if values["day"] != "*" and values["day_of_week"] != "*":
        raise ValueError(
            "give a day-of-month or a day-of-week, not both (cron would fire on either); "
            "use two schedule triggers"
        )
    try:
        values["day_of_week"] = _weekdays(values["day_of_week"])
    except ValueError as exc:
        raise ValueError(f"day-of-week field {fields[4]!r}: {exc}") from None
    for name, word, given in zip(FIELDS, FIELD_WORDS, fields, strict=True):
        try:
            CronTrigger(**{name: values[name]}, timezone=UTC)
        except ValueError as exc:
            reason = _APSCHEDULER_PREFIX.sub("", str(exc))
            raise ValueError(f"{word} field {given!r}: {reason}") from None
    trigger = CronTrigger(**values, timezone=UTC)
    if trigger.get_next_fire_time(None, _SOMETIME) is None:
        raise ValueError("it never fires (no such date)")
    return trigger


def is_cron(value: object) -> bool:
    """Format checker: True for non-text (the type check reports those) and good crontabs;
    raises ValueError with the reason otherwise."""
    if isinstance(value, str):
        crontab_trigger(value)
    return True


def _weekdays(field: str) -> str:
    """A crontab day-of-week field as APScheduler day names (``1-5`` -> ``mon,...,fri``)."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = _number(step_text, "step") if slash else 1
        if step < 1:
            raise ValueError(f"step {step_text!r} must be at least 1")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, last = base.split("-", 1)
            low, high = _day(first), _day(last)
        else:
            low = _day(base)
            high = 7 if slash else low
        if low > high:
            raise ValueError(f"range {base!r} runs backwards")
        days.update(day % 7 for day in range(low, high + 1, step))
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def _day(text: str) -> int:
    if text.lower() in DAY_NAMES:
        return DAY_NAMES.index(text.lower())
    if text.isascii() and text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"expected 0-7 (0 and 7 are Sunday) or sun-sat, found {text!r}")


def _number(text: str, what: str) -> int:
    if text.isascii() and text.isdigit() and len(text) < 4:
        return int(text)
    raise ValueError(f"expected a whole number as {what}, found {text!r}")


@dataclass(frozen=True, slots=True)
class Schedule(TriggerKind):
    type: ClassVar[str] = "schedule"
    title: ClassVar[str] = "On a schedule"
    description: ClassVar[str] = (
        "Fire at every time of a 5-field crontab (UTC) for each contact matching `segment` "
        "(every contact when it is left out). The worker and simulate compute the times with "
        "the same APScheduler CronTrigger."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "cron": text(
                "Cron",
                "minute hour day-of-month month day-of-week, in UTC, e.g. '0 3 * * 1' (Mondays "
                "at 03:00). Day-of-week counts as crontab does: 0 or 7 is Sunday, 1 Monday.",
                format="cron",
            ),
            "segment": condition("Segment", "Only contacts meeting this condition."),
        },
        "required": ["cron"],
    }

    formats: ClassVar[dict[str, Callable[[object], bool]]] = {"cron": is_cron}
    """Format checkers this fragment uses (``format: cron``), added to the schema validator."""

    cron: str
    segment: Predicate | None = field(compare=False, repr=False)  # compared through segment_spec
    segment_spec: Any
    trigger: CronTrigger = field(compare=False, repr=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        try:
            trigger = crontab_trigger(data["cron"])
        except ValueError as exc:
            raise ValueError(f"bad cron expression {data['cron']!r}: {exc}") from None
        segment = compile_condition(data["segment"], "/segment") if "segment" in data else None
        return cls(data["cron"], segment, data.get("segment"), trigger)

    def next_fire_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment``."""
        fire: datetime | None = self.trigger.get_next_fire_time(None, moment + _EPSILON)
        return fire

    def label(self) -> str:
        who = f" for {describe_condition(self.segment_spec)}" if self.segment_spec else ""
        return f"cron {self.cron}{who}"
