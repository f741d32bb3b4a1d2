"""Fire when a contact attribute takes a new value."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.conditions import Facts
from engine.fragments import text
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class AttributeChanged(TriggerKind):
    type: ClassVar[str] = "attribute_changed"
    title: ClassVar[str] = "On an attribute change"
    description: ClassVar[str] = (
        "Fire when the attribute's value changes, whoever changed it (identify, import or "
        "another workflow)."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {"attribute": text("Attribute", "Contact attribute to watch.")},
        "required": ["attribute"],
    }

    attribute: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["attribute"])

    def keys(self) -> tuple[SignalKey, ...]:
        return (("attribute_changed", self.attribute),)

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return bool(signal.old != signal.new)

    def label(self) -> str:
        return f"on {self.attribute} changed"
