"""Fire on a cron schedule for every contact of a segment (weekly decay, digests)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from apscheduler.triggers.cron import CronTrigger

from engine.conditions import Predicate, compile_condition, describe_condition
from engine.fragments import condition, text
from engine.kinds import TriggerKind

_EPSILON = timedelta(microseconds=1)


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
                "minute hour day-of-month month day-of-week, in UTC, e.g. '0 3 * * 1'.",
                pattern=r"^\S+(\s+\S+){4}$",
            ),
            "segment": condition("Segment", "Only contacts meeting this condition."),
        },
        "required": ["cron"],
    }

    cron: str
    segment: Predicate | None
    segment_spec: Any
    trigger: CronTrigger = field(compare=False, repr=False)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        try:
            trigger = CronTrigger.from_crontab(data["cron"], timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"bad cron expression {data['cron']!r}: {exc}") from None
        segment = compile_condition(data["segment"]) if "segment" in data else None
        return cls(data["cron"], segment, data.get("segment"), trigger)

    def next_fire_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment``."""
        fire: datetime | None = self.trigger.get_next_fire_time(None, moment + _EPSILON)
        return fire

    def label(self) -> str:
        who = f" for {describe_condition(self.segment_spec)}" if self.segment_spec else ""
        return f"cron {self.cron}{who}"
