"""Branch on a condition: `then` when it holds, `else` otherwise."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from engine.conditions import Predicate, compile_condition, describe_condition
from engine.fragments import condition, target
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class Condition(NodeKind):
    type: ClassVar[str] = "condition"
    title: ClassVar[str] = "If / else"
    description: ClassVar[str] = "Go to `then` when the condition holds, to `else` otherwise."
    edge_keys: ClassVar[tuple[str, ...]] = ("then", "else")
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "if": condition("If", "The condition to test."),
            "then": target("Node to run when the condition holds."),
            "else": target("Node to run when it does not."),
        },
        "required": ["if", "then", "else"],
    }

    test: Predicate = field(compare=False, repr=False)  # compared through spec
    spec: Any
    then: str
    otherwise: str

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(compile_condition(data["if"], "/if"), data["if"], data["then"], data["else"])

    def edges(self) -> tuple[Any, ...]:
        return tuple(self.raw_edges({"then": self.then, "else": self.otherwise}))

    def label(self) -> str:
        return f"if {describe_condition(self.spec)}"

    def execute(self, ctx: NodeContext) -> Step:
        return Continue(self.then if self.test(ctx.facts) else self.otherwise)
