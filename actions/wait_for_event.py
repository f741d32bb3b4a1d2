"""Park the run until the contact does something, or give up after a timeout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from engine.conditions import Predicate, compile_condition, describe_condition
from engine.durations import Duration, is_positive_duration
from engine.fragments import EVENT_NAME, condition, duration, target, text
from engine.kinds import AwaitEvent, NodeContext, NodeKind, Step


@dataclass(frozen=True, slots=True)
class WaitForEvent(NodeKind):
    type: ClassVar[str] = "wait_for_event"
    title: ClassVar[str] = "Wait for an event"
    description: ClassVar[str] = (
        "Wait until the contact sends an event (optionally matching `where`); go to `next` when "
        "it comes, to `on_timeout` when `timeout` passes first."
    )
    pauses: ClassVar[bool] = True
    edge_keys: ClassVar[tuple[str, ...]] = ("next", "on_timeout")
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "event": text(
                "Event",
                "Event name to wait for, e.g. Subscription Confirmed.",
                maxLength=EVENT_NAME,
            ),
            "where": condition("Where", "Condition the event must meet (property leaves)."),
            "timeout": duration("How long to wait before giving up."),
            "next": target("Node to run when the event comes."),
            "on_timeout": target("Node to run when the timeout passes first."),
        },
        "required": ["event", "timeout", "next", "on_timeout"],
    }

    event: str
    where: Predicate | None = field(compare=False, repr=False)  # compared through where_spec
    where_spec: Any
    timeout: Duration
    next: str
    on_timeout: str

    @classmethod
    def pauses_in(cls, data: Mapping[str, Any]) -> bool:
        # with no time to wait, on_timeout follows at once, in the same instant
        return is_positive_duration(data.get("timeout"))

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        where = compile_condition(data["where"], "/where") if "where" in data else None
        return cls(
            data["event"],
            where,
            data.get("where"),
            Duration.parse(data["timeout"]),
            data["next"],
            data["on_timeout"],
        )

    def label(self) -> str:
        where = f" where {describe_condition(self.where_spec)}" if self.where_spec else ""
        return f"wait for {self.event}{where} (≤ {self.timeout.describe()})"

    def execute(self, ctx: NodeContext) -> Step:
        return AwaitEvent(
            self.event, self.where, self.timeout.after(ctx.now), self.next, self.on_timeout
        )
