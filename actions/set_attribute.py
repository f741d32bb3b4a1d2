"""Set a contact attribute to a value, increment a counter, or copy an event property."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.errors import ActionFailed
from engine.fragments import NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step

SOURCES = ("value", "increment", "from_property")


@dataclass(frozen=True, slots=True)
class SetAttribute(NodeKind):
    type: ClassVar[str] = "set_attribute"
    title: ClassVar[str] = "Set a contact attribute"
    description: ClassVar[str] = (
        "Write a contact attribute: a fixed value, an increment (counter fields per buying "
        "stage), or a property of the event that woke the run (an NPS answer)."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "attribute": text("Attribute", "Contact attribute to write, e.g. NPS."),
            "value": {"title": "Value", "description": "Value to store (any JSON value)."},
            "increment": {
                "title": "Increment",
                "description": "Add this to the attribute (missing counts as 0).",
                "type": "number",
            },
            "from_property": text(
                "From event property", "Copy this property of the event that woke the run."
            ),
            "next": NEXT,
        },
        "required": ["attribute"],
    }

    attribute: str
    source: str
    argument: Any
    next: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        given = [key for key in SOURCES if key in data]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"expected exactly one of value, increment, from_property; found {found}"
            )
        return cls(data["attribute"], given[0], data[given[0]], data.get("next"))

    def label(self) -> str:
        if self.source == "increment":
            return f"{self.attribute} += {self.argument:g}"
        if self.source == "from_property":
            return f"{self.attribute} = event.{self.argument}"
        return f"{self.attribute} = {json.dumps(self.argument, ensure_ascii=False)}"

    def execute(self, ctx: NodeContext) -> Step:
        if self.source == "value":
            ctx.set_attribute(self.attribute, self.argument)
        elif self.source == "increment":
            current = ctx.attribute(self.attribute)
            if current is None:
                current = 0
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise ActionFailed(
                    f"cannot increment attribute {self.attribute!r}: it holds {current!r}, "
                    "not a number"
                )
            ctx.set_attribute(self.attribute, current + self.argument)
        else:
            properties = ctx.facts.properties
            if self.argument not in properties:
                raise ActionFailed(
                    f"the event that woke this run has no property {self.argument!r} "
                    f"(it has: {', '.join(sorted(properties)) or 'none'})"
                )
            ctx.set_attribute(self.attribute, properties[self.argument])
        return Continue(self.next)
