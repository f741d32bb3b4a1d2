"""Fire once, when a contact is first seen."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.conditions import Facts
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class ContactCreated(TriggerKind):
    type: ClassVar[str] = "contact_created"
    title: ClassVar[str] = "On a new contact"
    description: ClassVar[str] = "Fire when a contact is first seen (identify, track or import)."
    schema: ClassVar[dict[str, Any]] = {"properties": {}, "required": []}

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls()

    def keys(self) -> tuple[SignalKey, ...]:
        return (("contact_created", ""),)

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return True

    def label(self) -> str:
        return "on new contact"
