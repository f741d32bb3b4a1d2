"""Fire when a score crosses a threshold, once per crossing, not while it stays past it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from engine.conditions import Facts
from engine.fragments import SCORE_NAME, text
from engine.kinds import Signal, SignalKey, TriggerKind


@dataclass(frozen=True, slots=True)
class ScoreCrossed(TriggerKind):
    type: ClassVar[str] = "score_crossed"
    title: ClassVar[str] = "On a score crossing"
    description: ClassVar[str] = (
        "`above: N` fires when the score goes from under N to N or more; `below: N` when it "
        "goes from N or more to under N."
    )
    schema: ClassVar[dict[str, Any]] = {
        "properties": {
            "score": text("Score", "Score to watch.", default="SCORE", maxLength=SCORE_NAME),
            "above": {
                "title": "Rises to",
                "description": "Fire when the score rises from under this to this or more.",
                "type": "number",
            },
            "below": {
                "title": "Falls under",
                "description": "Fire when the score falls from this or more to under this.",
                "type": "number",
            },
            "of": {
                "title": "Whose score",
                "description": "'contact' (default) or 'account': an account crossing enters "
                "every member of the account.",
                "enum": ["contact", "account"],
                "default": "contact",
            },
        },
        "required": [],
    }

    score: str
    threshold: float
    rising: bool
    of: str = "contact"

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        if ("above" in data) == ("below" in data):
            raise ValueError("expected exactly one of above, below")
        rising = "above" in data
        return cls(
            data.get("score", "SCORE"),
            float(data["above" if rising else "below"]),
            rising,
            data.get("of", "contact"),
        )

    def keys(self) -> tuple[SignalKey, ...]:
        kind = "account_score_changed" if self.of == "account" else "score_changed"
        return ((kind, self.score),)

    def crossed(self, old: float, new: float) -> bool:
        if self.rising:
            return old < self.threshold <= new
        return new < self.threshold <= old

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return self.crossed(float(signal.old or 0.0), float(signal.new or 0.0))

    def label(self) -> str:
        whose = "account " if self.of == "account" else ""
        verb = "reaches" if self.rising else "falls under"
        return f"{whose}{self.score} {verb} {self.threshold:g}"
