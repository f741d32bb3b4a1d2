"""Enter the contact into another workflow (its own entry rules apply)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import NEXT, text
from engine.kinds import Continue, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class StartWorkflow(NodeKind):
    type: ClassVar[str] = "start_workflow"
    title: ClassVar[str] = "Start another workflow"
    description: ClassVar[str] = (
        "Enter the contact into another workflow, subject to that workflow's re-entry rule."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "workflow": text("Workflow", "Id of the workflow to start."),
            "next": NEXT,
        },
        "required": ["workflow"],
    }

    workflow: str
    next: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        return cls(data["workflow"], data.get("next"))

    def label(self) -> str:
        return f"start {self.workflow}"

    def execute(self, ctx: NodeContext) -> Step:
        ctx.start_workflow(self.workflow)
        return Continue(self.next)
