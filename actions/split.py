"""Send contacts down weighted branches, the same branch every time for one contact."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import target
from engine.kinds import Continue, Edge, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class Split(NodeKind):
    type: ClassVar[str] = "split"
    title: ClassVar[str] = "A/B split"
    description: ClassVar[str] = (
        "Choose a branch by weight. The choice is seeded by contact, workflow and node, so a "
        "contact always takes the same branch and a simulation is repeatable."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "branches": {
                "title": "Branches",
                "description": "Weighted branches; weights need not add up to 100.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["weight", "next"],
                    "properties": {
                        "weight": {
                            "title": "Weight",
                            "description": "Relative weight of this branch (> 0).",
                            "type": "number",
                            "exclusiveMinimum": 0,
                        },
                        "next": target("Node this branch goes to."),
                    },
                },
            },
        },
        "required": ["branches"],
    }
    edge_keys: ClassVar[tuple[str, ...]] = ()

    branches: tuple[tuple[float, str], ...]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        branches = tuple((float(b["weight"]), b["next"]) for b in data["branches"])
        if any(weight <= 0 for weight, _ in branches):
            raise ValueError("every branch weight must be greater than 0")
        return cls(branches)

    @classmethod
    def raw_edges(cls, data: Mapping[str, Any]) -> Iterator[Edge]:
        branches = data.get("branches")
        if isinstance(branches, list):
            for index, branch in enumerate(branches):
                if isinstance(branch, dict) and isinstance(branch.get("next"), str):
                    yield Edge(f"branches/{index}/next", branch["next"])

    def edges(self) -> tuple[Edge, ...]:
        return tuple(Edge(f"branches/{i}/next", nxt) for i, (_, nxt) in enumerate(self.branches))

    def label(self) -> str:
        total = sum(weight for weight, _ in self.branches)
        return "split " + " / ".join(f"{100 * w / total:.0f}%" for w, _ in self.branches)

    def choose(self, point: float) -> str:
        """The branch for a point in [0, 1)."""
        total = sum(weight for weight, _ in self.branches)
        cumulative = 0.0
        for weight, nxt in self.branches:
            cumulative += weight / total
            if point < cumulative:
                return nxt
        return self.branches[-1][1]

    def execute(self, ctx: NodeContext) -> Step:
        return Continue(self.choose(ctx.split_point()))
