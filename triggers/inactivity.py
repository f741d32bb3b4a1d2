"""Fire once per quiet spell: the contact has sent none of the events for a while."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.durations import Duration
from engine.fragments import EVENT_NAME, duration
from engine.kinds import TriggerKind


@dataclass(frozen=True, slots=True)
class Inactivity(TriggerKind):
    type: ClassVar[str] = "inactivity"
    title: ClassVar[str] = "On inactivity"
    description: ClassVar[str] = (
        "Fire when the contact has sent none of `events` for `for` (counted from its last such "
        "event, or from its creation). Fires once per quiet spell; the next such event ends it."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "events": {
                "title": "Events",
                "description": "Engagement events whose absence counts, e.g. Email Opened.",
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "minLength": 1, "maxLength": EVENT_NAME},
            },
            "for": duration("How long without those events."),
        },
        "required": ["events", "for"],
    }

    events: tuple[str, ...]
    quiet_for: Duration

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(tuple(data["events"]), Duration.parse(data["for"]))

    def label(self) -> str:
        return f"no {' / '.join(self.events)} for {self.quiet_for.describe()}"
