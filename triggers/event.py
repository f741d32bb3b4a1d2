"""Fire when the contact sends an event, optionally filtered on its properties."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from engine.conditions import Facts, Predicate, compile_condition, describe_condition
from engine.fragments import EVENT_NAME, condition, text
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class EventTrigger(TriggerKind):
    type: ClassVar[str] = "event"
    title: ClassVar[str] = "On an event"
    description: ClassVar[str] = "Fire when the contact sends this track event."
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "event": text("Event", "Track event name, e.g. Page Viewed.", maxLength=EVENT_NAME),
            "where": condition(
                "Where",
                'Condition on the event (e.g. {"property": "url", "matches": "/pricing*"}).',
            ),
        },
        "required": ["event"],
    }

    event: str
    where: Predicate | None = field(compare=False, repr=False)  # compared through where_spec
    where_spec: Any

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        where = compile_condition(data["where"], "/where") if "where" in data else None
        return cls(data["event"], where, data.get("where"))

    def keys(self) -> tuple[SignalKey, ...]:
        return (("event", self.event),)

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return self.where is None or self.where(facts)

    def label(self) -> str:
        if self.where_spec is None:
            return f"on {self.event}"
        return f"on {self.event} where {describe_condition(self.where_spec)}"
