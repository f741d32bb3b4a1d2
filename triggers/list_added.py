"""Fire when the contact is added to the list (by any workflow, import or API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.conditions import Facts
from engine.fragments import LIST_NAME, text
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class ListAdded(TriggerKind):
    type: ClassVar[str] = "list_added"
    title: ClassVar[str] = "On joining a list"
    description: ClassVar[str] = (
        "Fire when the contact is added to the list (by any workflow, import or API)."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {"list": text("List", "Name of the list.", maxLength=LIST_NAME)},
        "required": ["list"],
    }

    list: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["list"])

    def keys(self) -> tuple[SignalKey, ...]:
        return (("list_added", self.list),)

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return True

    def label(self) -> str:
        return f"on added to {self.list}"
