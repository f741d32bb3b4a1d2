"""Park the run for a duration or until a moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from engine.clock import format_timestamp, parse_timestamp
from engine.durations import Duration, is_positive_duration
from engine.fragments import NEXT, duration
from engine.kinds import Continue, NodeContext, NodeKind, Sleep, Step


@dataclass(frozen=True, slots=True)
class Wait(NodeKind):
    type: ClassVar[str] = "wait"
    title: ClassVar[str] = "Wait"
    description: ClassVar[str] = (
        "Wait for a duration, or until a date (a past date goes on at once)."
    )
    pauses: ClassVar[bool] = True
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "for": duration("How long to wait."),
            "until": {
                "title": "Until",
                "description": "RFC 3339 date-time to wait for, e.g. 2026-03-01T09:00:00Z.",
                "type": "string",
                "format": "date-time",
            },
            "next": NEXT,
        },
        "required": [],
    }

    span: Duration | None
    until: datetime | None
    next: str | None

    @classmethod
    def pauses_in(cls, data: Mapping[str, Any]) -> bool:
        # a wait until a date goes on at once once the date is past: on a loop it would
        # then run the loop over and over in one instant; so would a wait of no time
        return "until" not in data and is_positive_duration(data.get("for"))

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        if ("for" in data) == ("until" in data):
            raise ValueError("expected exactly one of for, until")
        span = Duration.parse(data["for"]) if "for" in data else None
        # RFC 3339 (the schema's check) allows a lower-case t and z; fromisoformat does not.
        until = parse_timestamp(data["until"].upper()) if "until" in data else None
        return cls(span, until, data.get("next"))

    def label(self) -> str:
        if self.span is not None:
            return f"wait {self.span.describe()}"
        assert self.until is not None
        return f"wait until {format_timestamp(self.until)}"

    def execute(self, ctx: NodeContext) -> Step:
        due = self.span.after(ctx.now) if self.span is not None else self.until
        assert due is not None
        if due <= ctx.now:
            return Continue(self.next)
        return Sleep(due, self.next)
