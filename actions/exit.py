"""End the run here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class Exit(NodeKind):
    type: ClassVar[str] = "exit"
    title: ClassVar[str] = "Exit"
    description: ClassVar[str] = "End the run."
    schema: ClassVar[dict[str, Any]] = {"properties": {}, "required": []}
    edge_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls()

    def label(self) -> str:
        return "exit"

    def execute(self, ctx: NodeContext) -> Step:
        return Continue(None)
