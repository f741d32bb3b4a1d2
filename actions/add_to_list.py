"""Put the contact on a list (a no-op when it is already there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import LIST_NAME, NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class AddToList(NodeKind):
    type: ClassVar[str] = "add_to_list"
    title: ClassVar[str] = "Add the contact to a list"
    description: ClassVar[str] = "Put the contact on a list (a no-op when it is already there)."
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "list": text("List", "Name of the list.", maxLength=LIST_NAME),
            "next": NEXT,
        },
        "required": ["list"],
    }

    list: str
    next: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["list"], data.get("next"))

    def label(self) -> str:
        return f"+ list {self.list}"

    def execute(self, ctx: NodeContext) -> Step:
        ctx.add_to_list(self.list)
        return Continue(self.next)
