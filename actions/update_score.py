"""Add to, subtract from, set or scale a score, optionally bounded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.fragments import NEXT, SCORE_NAME, text
from engine.kinds import Continue, NodeContext, NodeKind, Step

OPERATIONS = ("add", "subtract", "set", "percent")


@dataclass(frozen=True, slots=True)
class UpdateScore(NodeKind):
    type: ClassVar[str] = "update_score"
    title: ClassVar[str] = "Update a score"
    description: ClassVar[str] = (
        "Change a score by a number of points or a percentage. `min`/`max` bound the result "
        "but never push a score against the change (a decrease never lifts a score that is "
        "already under `min`)."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "score": text(
                "Score name", "Which score to change.", default="SCORE", maxLength=SCORE_NAME
            ),
            "add": {"title": "Add", "description": "Points to add.", "type": "number"},
            "subtract": {
                "title": "Subtract",
                "description": "Points to take away.",
                "type": "number",
            },
            "set": {"title": "Set", "description": "New value of the score.", "type": "number"},
            "percent": {
                "title": "Percent",
                "description": (
                    "Change by this percentage of the current score (-10 = lower by 10 %)."
                ),
                "type": "number",
                "minimum": -100,
            },
            "min": {"title": "Floor", "description": "Never go below this.", "type": "number"},
            "max": {"title": "Ceiling", "description": "Never go above this.", "type": "number"},
            "next": NEXT,
        },
        "required": [],
    }

    score: str
    operation: str
    amount: float
    min: float | None
    max: float | None
    next: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        given = [op for op in OPERATIONS if op in data]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"expected exactly one of add, subtract, set, percent; found {found}")
        low, high = data.get("min"), data.get("max")
        if low is not None and high is not None and low > high:
            raise ValueError(f"min ({low}) is greater than max ({high})")
        op = given[0]
        return cls(data.get("score", "SCORE"), op, float(data[op]), low, high, data.get("next"))

    def apply(self, old: float) -> float:
        """The new value; pure, so the runner and explanations agree."""
        if self.operation == "add":
            new = old + self.amount
        elif self.operation == "subtract":
            new = old - self.amount
        elif self.operation == "set":
            new = self.amount
        else:
            new = old * (1 + self.amount / 100)
        if self.min is not None and new < self.min:
            new = max(new, min(old, self.min))
        if self.max is not None and new > self.max:
            new = min(new, max(old, self.max))
        return round(new, 6)

    def label(self) -> str:
        amount = f"{self.amount:g}"
        text_ = {
            "add": f"+{amount} {self.score}",
            "subtract": f"-{amount} {self.score}",
            "set": f"{self.score} = {amount}",
            "percent": f"{'+' if self.amount >= 0 else ''}{amount}% {self.score}",
        }[self.operation]
        bounds = []
        if self.min is not None:
            bounds.append(f"min {self.min:g}")
        if self.max is not None:
            bounds.append(f"max {self.max:g}")
        return f"{text_} ({', '.join(bounds)})" if bounds else text_

    def execute(self, ctx: NodeContext) -> Step:
        ctx.set_score(self.score, self.apply(ctx.score(self.score)))
        return Continue(self.next)
