"""Evaluate a compiled 5-leaf condition against one contact; compare with hand-written Python.

Measured: the predicate from ``engine.conditions.compile_condition`` for

    all of: attribute job_title in [...], score SCORE >= 50, grade GRADE in [A, B],
            in_list Newsletter, attribute company_size >= 100

called in a tight loop for about 2 s on a contact for which every leaf holds (so all five
are evaluated every time). Baseline, in the same run: the same condition written by hand
as a Python function over the same Facts object. Goal (issue 3): at least 1,000,000
evaluations/s and within 3x of the hand-written function.

    python bench/bench_conditions.py            # about 2 s per side
    python bench/bench_conditions.py --quick    # about 0.3 s per side
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Container, Mapping
from datetime import UTC, datetime
from typing import Any

from machine import machine_line

from engine.conditions import compile_condition

SPEC = {
    "all": [
        {"attribute": "job_title", "in": ["CEO", "CTO", "VP Marketing", "VP Sales"]},
        {"score": "SCORE", "gte": 50},
        {"grade": "GRADE", "in": ["A", "B"]},
        {"in_list": "Newsletter"},
        {"attribute": "company_size", "gte": 100},
    ]
}
GOAL_RATE = 1_000_000
GOAL_RATIO = 3.0


class Contact:
    """A contact's facts, as the runner hands them to a condition (slotted, plain dicts)."""

    __slots__ = ("attributes", "grades", "lists", "now", "properties", "scores")

    def __init__(
        self,
        attributes: dict[str, Any],
        scores: dict[str, float],
        grades: dict[str, str],
        lists: frozenset[str],
    ) -> None:
        self.now = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
        self.attributes: Mapping[str, Any] = attributes
        self.scores: Mapping[str, float] = scores
        self.grades: Mapping[str, str] = grades
        self.lists: Container[str] = lists
        self.properties: Mapping[str, Any] = {}

    def count_events(self, name: str, since: datetime | None) -> int:
        return 0


TITLES = frozenset(["CEO", "CTO", "VP Marketing", "VP Sales"])
GRADES = frozenset(["A", "B"])


def hand_written(facts: Contact) -> bool:
    """The same condition as a Python programmer would write it (safe on wrong types)."""
    title = facts.attributes.get("job_title")
    size = facts.attributes.get("company_size")
    return (
        isinstance(title, str)
        and title in TITLES
        and facts.scores.get("SCORE", 0.0) >= 50
        and facts.grades.get("GRADE") in GRADES
        and "Newsletter" in facts.lists
        and isinstance(size, int | float)
        and size >= 100
    )


HOT = Contact(
    {"job_title": "VP Marketing", "company_size": 500, "industry": "Retail"},
    {"SCORE": 72.0, "PRODUCT_A": 10.0},
    {"GRADE": "A"},
    frozenset({"Newsletter", "Warm leads"}),
)

# Varied contacts for the agreement check: every leaf failing in turn, missing values,
# wrong types (which must never raise), and the all-true contact.
CONTACTS = [
    HOT,
    Contact(
        {"job_title": "Student", "company_size": 500},
        {"SCORE": 90.0},
        {"GRADE": "A"},
        frozenset({"Newsletter"}),
    ),
    Contact(
        {"job_title": "CEO", "company_size": 500},
        {"SCORE": 49.5},
        {"GRADE": "A"},
        frozenset({"Newsletter"}),
    ),
    Contact(
        {"job_title": "CEO", "company_size": 500}, {}, {"GRADE": "A"}, frozenset({"Newsletter"})
    ),
    Contact(
        {"job_title": "CTO", "company_size": 500},
        {"SCORE": 50.0},
        {"GRADE": "C"},
        frozenset({"Newsletter"}),
    ),
    Contact(
        {"job_title": "CTO", "company_size": 500}, {"SCORE": 50.0}, {}, frozenset({"Newsletter"})
    ),
    Contact(
        {"job_title": "CTO", "company_size": 500},
        {"SCORE": 50.0},
        {"GRADE": "B"},
        frozenset({"Customers"}),
    ),
    Contact(
        {"job_title": "CTO", "company_size": 99},
        {"SCORE": 50.0},
        {"GRADE": "B"},
        frozenset({"Newsletter"}),
    ),
    Contact(
        {"job_title": "CTO", "company_size": "500"},
        {"SCORE": 50.0},
        {"GRADE": "B"},
        frozenset({"Newsletter"}),
    ),
    Contact({"job_title": "CTO"}, {"SCORE": 50.0}, {"GRADE": "B"}, frozenset({"Newsletter"})),
    Contact(
        {"job_title": ["CTO"], "company_size": 100.0},
        {"SCORE": 50.0},
        {"GRADE": "B"},
        frozenset({"Newsletter"}),
    ),
    Contact(
        {"job_title": "VP Sales", "company_size": 100.0},
        {"SCORE": 50.0},
        {"GRADE": "B"},
        frozenset({"Newsletter"}),
    ),
    Contact({}, {}, {}, frozenset()),
]


def rate(predicate: Callable[[Any], bool], facts: Contact, seconds: float) -> float:
    """Evaluations per second over about ``seconds`` (loop overhead included)."""
    batch = 10_000
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            predicate(facts)
        calls += batch
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 0.3 s per side")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    seconds = 0.3 if args.quick else 2.0

    compiled = compile_condition(SPEC)
    for i, contact in enumerate(CONTACTS):
        want, got = hand_written(contact), compiled(contact)
        if want is not got:
            print(f"FAIL: contact {i}: compiled gives {got!r}, hand-written {want!r}")
            return 1
    answers = [compiled(contact) for contact in CONTACTS]
    if answers.count(True) < 2 or answers.count(False) < 2:
        print(f"FAIL: the check contacts do not exercise both answers: {answers}")
        return 1

    rate(compiled, HOT, seconds / 10)  # warm up
    ours = rate(compiled, HOT, seconds)
    baseline = rate(hand_written, HOT, seconds)
    ratio = baseline / ours
    print(f"agreement: compiled == hand-written on {len(CONTACTS)} contacts")
    print(f"compiled condition: {ours:,.0f} evaluations/s")
    print(f"hand-written baseline: {baseline:,.0f} evaluations/s")
    print(f"ratio: compiled is {ratio:.2f}x slower than hand-written")
    met = ours >= GOAL_RATE and ratio <= GOAL_RATIO
    print(
        f"goal (>= {GOAL_RATE:,} evaluations/s, within {GOAL_RATIO:g}x): "
        + ("met" if met else "NOT met")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
