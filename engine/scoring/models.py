"""Score models and grade models: declared JSON documents, versioned and deployed like
workflows and validated by the same machinery (schema, pointers, plain sentences).

A score model says what a score means: its sales-ready threshold, its bands (each a list
the contact is moved into and out of), its decay policy and its account roll-up. A grade
model turns attribute rules into points and points into a letter A-F. Grades never touch
scores: fit and engagement stay apart (domain.md 003).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.conditions import Facts, Predicate, compile_condition
from engine.durations import Duration
from engine.fragments import LIST_NAME, MODEL_ID, NAME, SCORE_NAME, condition, duration, text
from engine.model import digest

SCORE_MODEL = "score_model"
GRADE_MODEL = "grade_model"
LETTERS = ("A", "B", "C", "D", "E")
ROLLUPS = ("sum", "max", "average", "top")


def _common(kind: str, title: str, description: str) -> dict[str, Any]:
    return {
        "kind": {"title": "Document kind", "description": description, "const": kind},
        "$schema": {"title": "Schema", "description": "Address of this schema.", "type": "string"},
        "id": text(
            "Id",
            f"Stable id of the {title}.",
            pattern="^[a-z0-9][a-z0-9._-]*$",
            maxLength=MODEL_ID,
        ),
        "version": {
            "title": "Version",
            "description": "Revision number.",
            "type": "integer",
            "minimum": 1,
        },
        "name": text("Name", f"Human name of the {title}.", maxLength=NAME),
        "notes": {
            "title": "Notes",
            "description": "What it is for and why this revision.",
            "type": "string",
        },
    }


def _number(title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "description": description, "type": "number", **extra}


SCORE_MODEL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://leadflow.dev/schema/score-model.json",
    "title": "Leadflow score model",
    "description": "What a score means: threshold, bands, decay and account roll-up.",
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "id", "version", "score"],
    "properties": {
        **_common(SCORE_MODEL, "score model", "Always 'score_model'."),
        "score": text("Score", "The score this model describes, e.g. SCORE.", maxLength=SCORE_NAME),
        "sales_ready": _number(
            "Sales-ready threshold",
            "Score at which a lead is ready for sales (e.g. 100).",
            exclusiveMinimum=0,
        ),
        "bands": {
            "title": "Bands",
            "description": "Score ranges, each with the list its contacts are kept on.",
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["list"],
                "properties": {
                    "list": text(
                        "List", "List holding the contacts in this band.", maxLength=LIST_NAME
                    ),
                    "from": _number("From", "Lower bound, included."),
                    "above": _number("Above", "Lower bound, excluded."),
                    "below": _number("Below", "Upper bound, excluded."),
                    "to": _number("To", "Upper bound, included."),
                },
            },
        },
        "decay": {
            "title": "Decay",
            "description": "Lower the score of contacts that stopped engaging.",
            "type": "object",
            "additionalProperties": False,
            "required": ["after", "every"],
            "properties": {
                "after": duration("Start decaying after this long without engagement."),
                "without": {
                    "title": "Engagements",
                    "description": "Events that count as engagement; left out: any increase "
                    "of the score counts.",
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1},
                },
                "every": duration("Decay again at this interval."),
                "percent": _number(
                    "Percent",
                    "Lower by this percentage of the score.",
                    exclusiveMinimum=0,
                    maximum=100,
                ),
                "points": _number("Points", "Lower by this many points.", exclusiveMinimum=0),
                "floor": _number("Floor", "Never decay below this score."),
                "floor_of_peak": _number(
                    "Floor as share of peak",
                    "Never below this share (0-1) of the contact's peak.",
                    minimum=0,
                    maximum=1,
                ),
                "floor_of_sales_ready": _number(
                    "Floor as share of sales-ready",
                    "Never below this share (0-1) of the sales-ready threshold.",
                    minimum=0,
                    maximum=1,
                ),
            },
        },
        "rollup": {
            "title": "Account roll-up",
            "description": "How an account's score is made from its members' (default: sum).",
            "type": "object",
            "additionalProperties": False,
            "required": ["method"],
            "properties": {
                "method": {
                    "title": "Method",
                    "description": "sum, max, average or top (sum of the top N members).",
                    "enum": list(ROLLUPS),
                },
                "top": {
                    "title": "Top N",
                    "description": "Members counted by 'top'.",
                    "type": "integer",
                    "minimum": 1,
                },
            },
        },
    },
}

GRADE_MODEL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://leadflow.dev/schema/grade-model.json",
    "title": "Leadflow grade model",
    "description": "Fit on attributes: rules give points, points give a letter A-F.",
    "type": "object",
    "additionalProperties": False,
    "required": ["kind", "id", "version", "grade", "rules", "letters"],
    "properties": {
        **_common(GRADE_MODEL, "grade model", "Always 'grade_model'."),
        "grade": text("Grade", "Name of the grade field, e.g. GRADE."),
        "rules": {
            "title": "Rules",
            "description": "Every rule whose condition holds adds its points.",
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["if", "points"],
                "properties": {
                    "if": condition("If", "Condition on the contact's attributes."),
                    "points": _number("Points", "Points when the condition holds."),
                    "label": text("Label", "What the rule means, for explanations."),
                },
            },
        },
        "letters": {
            "title": "Letters",
            "description": "Minimum points for A, B, C, D, E; below the lowest is F.",
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                letter: _number(letter, f"Minimum points for {letter}.") for letter in LETTERS
            },
        },
    },
    "$defs": {},
}


@dataclass(frozen=True, slots=True)
class Band:
    list: str
    low: float | None
    low_included: bool
    high: float | None
    high_included: bool

    def contains(self, value: float) -> bool:
        if self.low is not None and (
            value < self.low or (value == self.low and not self.low_included)
        ):
            return False
        return not (
            self.high is not None
            and (value > self.high or (value == self.high and not self.high_included))
        )

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'≥' if self.low_included else '>'} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'≤' if self.high_included else '<'} {self.high:g}")
        return " and ".join(parts) or "any score"


@dataclass(frozen=True, slots=True)
class Decay:
    after: Duration
    without: tuple[str, ...]
    every: Duration
    percent: float | None
    points: float | None
    floor: float | None
    floor_of_peak: float | None

    def apply(self, value: float, peak: float) -> float:
        """The decayed value of one score (the set-wise statement computes the same)."""
        lowered = (
            value * (1 - self.percent / 100)
            if self.percent is not None
            else value - (self.points or 0.0)
        )
        bound = self.floor_value(peak)
        if value <= bound:
            return value
        return max(lowered, bound)

    @property
    def may_raise(self) -> bool:
        """Whether a tick can raise a score: only a percentage of a negative score does,
        and such a score is over the floor only when the fixed floor is negative."""
        return self.percent is not None and (self.floor or 0.0) < 0

    def floor_value(self, peak: float) -> float:
        """The fixed floor (0 when none is given), or the share of the peak when that is
        higher: what the set-wise statement computes, a negative fixed floor included."""
        fixed = self.floor if self.floor is not None else 0.0
        if self.floor_of_peak is None:
            return fixed
        return max(fixed, peak * self.floor_of_peak)


@dataclass(frozen=True, eq=False)
class ScoreModel:
    id: str
    version: int
    name: str
    notes: str
    score: str
    sales_ready: float | None
    bands: tuple[Band, ...]
    decay: Decay | None
    rollup: str
    top: int | None
    document: Mapping[str, Any]
    digest: str

    def band_of(self, value: float) -> Band | None:
        for band in self.bands:
            if band.contains(value):
                return band
        return None


@dataclass(frozen=True, eq=False)
class GradeModel:
    id: str
    version: int
    name: str
    notes: str
    grade: str
    rules: tuple[tuple[Predicate, float, str], ...]
    letters: tuple[tuple[str, float], ...]
    document: Mapping[str, Any]
    digest: str

    def points(self, facts: Facts) -> float:
        return sum(points for test, points, _ in self.rules if test(facts))

    def letter(self, points: float) -> str:
        for letter, minimum in self.letters:
            if points >= minimum:
                return letter
        return "F"

    def grade_of(self, facts: Facts) -> str:
        return self.letter(self.points(facts))


def compile_score_model(document: Mapping[str, Any]) -> ScoreModel:
    """Parse a schema-valid score model; ValueError(pointer, message) for the rest."""
    bands = []
    for index, spec in enumerate(document.get("bands", [])):
        if "from" in spec and "above" in spec:
            raise ModelError(f"/bands/{index}", "give one lower bound: 'from' or 'above'")
        if "below" in spec and "to" in spec:
            raise ModelError(f"/bands/{index}", "give one upper bound: 'below' or 'to'")
        low = spec.get("from", spec.get("above"))
        high = spec.get("below", spec.get("to"))
        band = Band(spec["list"], low, "from" in spec, high, "to" in spec)
        if (
            low is not None
            and high is not None
            and not (low < high or (low == high and band.low_included and band.high_included))
        ):
            raise ModelError(f"/bands/{index}", f"the band is empty: {band.describe()}")
        bands.append(band)
    _check_overlaps(bands)
    decay = None
    if "decay" in document:
        spec = document["decay"]
        if ("percent" in spec) == ("points" in spec):
            raise ModelError("/decay", "give exactly one of 'percent' or 'points'")
        floors = [k for k in ("floor", "floor_of_peak", "floor_of_sales_ready") if k in spec]
        if len(floors) > 1:
            raise ModelError("/decay", f"give at most one floor, found {', '.join(floors)}")
        floor = spec.get("floor")
        if "floor_of_sales_ready" in spec:
            if "sales_ready" not in document:
                raise ModelError(
                    "/decay/floor_of_sales_ready",
                    "a floor as share of sales-ready needs 'sales_ready'",
                )
            floor = spec["floor_of_sales_ready"] * document["sales_ready"]
        every = Duration.parse(spec["every"])
        if not every.months and not every.delta:
            raise ModelError(
                "/decay/every", f"decay needs a positive interval, found {spec['every']!r}"
            )
        decay = Decay(
            after=Duration.parse(spec["after"]),
            without=tuple(spec.get("without", ())),
            every=every,
            percent=spec.get("percent"),
            points=spec.get("points"),
            floor=floor,
            floor_of_peak=spec.get("floor_of_peak"),
        )
    rollup = document.get("rollup", {"method": "sum"})
    if rollup["method"] == "top" and "top" not in rollup:
        raise ModelError("/rollup", "method 'top' needs 'top': how many members count")
    return ScoreModel(
        id=document["id"],
        version=document["version"],
        name=document.get("name", document["id"]),
        notes=document.get("notes", ""),
        score=document["score"],
        sales_ready=document.get("sales_ready"),
        bands=tuple(bands),
        decay=decay,
        rollup=rollup["method"],
        top=rollup.get("top"),
        document=document,
        digest=digest(document),
    )


def _check_overlaps(bands: list[Band]) -> None:
    probes: set[float] = set()
    for band in bands:
        for bound in (band.low, band.high):
            if bound is not None:
                probes.update((bound - 1e-9, bound, bound + 1e-9))
    for index, band in enumerate(bands):
        for other_index in range(index):
            other = bands[other_index]
            if any(band.contains(p) and other.contains(p) for p in probes) or (not probes):
                raise ModelError(
                    f"/bands/{index}",
                    f"band {band.list!r} ({band.describe()}) overlaps band {other.list!r} "
                    f"({other.describe()}): a score must belong to one band",
                )


def compile_grade_model(document: Mapping[str, Any]) -> GradeModel:
    rules = []
    for index, spec in enumerate(document["rules"]):
        try:
            test = compile_condition(spec["if"])
        except ValueError as exc:
            pointer = getattr(exc, "pointer", "")
            raise ModelError(f"/rules/{index}/if{pointer}", str(exc)) from None
        rules.append((test, float(spec["points"]), spec.get("label", "")))
    letters = sorted(document["letters"].items(), key=lambda item: item[0])
    for (letter, minimum), (next_letter, next_minimum) in itertools.pairwise(letters):
        if next_minimum >= minimum:
            raise ModelError(
                f"/letters/{next_letter}",
                f"{next_letter} needs fewer points than {letter} ({minimum:g}), "
                f"found {next_minimum:g}",
            )
    return GradeModel(
        id=document["id"],
        version=document["version"],
        name=document.get("name", document["id"]),
        notes=document.get("notes", ""),
        grade=document["grade"],
        rules=tuple(rules),
        letters=tuple((k, float(v)) for k, v in letters),
        document=document,
        digest=digest(document),
    )


class ModelError(ValueError):
    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message
