"""Take the contact off a list (a no-op when it is not there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import LIST_NAME, NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class RemoveFromList(NodeKind):
    type: ClassVar[str] = "remove_from_list"
    title: ClassVar[str] = "Remove the contact from a list"
    description: ClassVar[str] = "Take the contact off a list (a no-op when it is not there)."
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
        return f"\N{MINUS SIGN} list {self.list}"

    def execute(self, ctx: NodeContext) -> Step:
        ctx.remove_from_list(self.list)
        return Continue(self.next)
