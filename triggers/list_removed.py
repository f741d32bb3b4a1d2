"""Fire when the contact is removed from the list."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.conditions import Facts
from engine.fragments import LIST_NAME, text
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class ListRemoved(TriggerKind):
    type: ClassVar[str] = "list_removed"
    title: ClassVar[str] = "On leaving a list"
    description: ClassVar[str] = "Fire when the contact is removed from the list."
    schema: ClassVar[dict[str, Any]] = {
        "properties": {"list": text("List", "Name of the list.", maxLength=LIST_NAME)},
        "required": ["list"],
    }

    list: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["list"])

    def keys(self) -> tuple[SignalKey, ...]:
        return (("list_removed", self.list),)

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return True

    def label(self) -> str:
        return f"on removed from {self.list}"
