"""The condition language, compiled once into plain Python closures.

A condition is parsed when its workflow is loaded; evaluating it afterwards is a chain of
closure calls over a :class:`Facts` object and never looks at JSON again.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Container, Mapping
from datetime import datetime
from typing import Any, Protocol

from engine.durations import Duration


class Facts(Protocol):
    """What a condition may look at: one contact, at one moment, woken by one event."""

    now: datetime
    attributes: Mapping[str, Any]
    scores: Mapping[str, float]
    grades: Mapping[str, str]
    lists: Container[str]
    properties: Mapping[str, Any]

    def count_events(self, name: str, since: datetime | None) -> int: ...


Predicate = Callable[[Facts], bool]

OPERATORS: dict[str, str] = {
    "eq": "equal to the value",
    "ne": "not equal to the value (also true when the value is missing)",
    "gt": "greater than the value",
    "gte": "greater than or equal to the value",
    "lt": "less than the value",
    "lte": "less than or equal to the value",
    "in": "one of the listed values",
    "contains": "a list holding the value, or a text containing it",
    "matches": "a text matching the glob pattern (* any text, ? one character)",
    "exists": "true: the value is present; false: it is missing",
}
SUBJECTS: dict[str, str] = {
    "attribute": "Contact attribute to test (e.g. job_title, company_size).",
    "property": "Property of the event that woke the run (e.g. url, percent).",
    "score": "Score to test (e.g. SCORE); a contact without it has 0.",
    "grade": "Grade to test (e.g. GRADE, letters A-F).",
    "in_list": "True when the contact is on this list.",
    "event": "Count of this event for the contact, compared with the operator.",
}
GROUPS = ("all", "any", "not")


class ConditionError(ValueError):
    """A condition that cannot be compiled; ``pointer`` is relative to the condition."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


def compile_condition(spec: Any) -> Predicate:
    """Turn a JSON condition into a predicate; raises :class:`ConditionError`."""
    return _compile(spec, "")


def _compile(spec: Any, pointer: str) -> Predicate:
    if not isinstance(spec, dict) or not spec:
        raise ConditionError(pointer, f"expected a condition object, found {spec!r}")
    keys = set(spec)
    if keys & set(GROUPS):
        if len(keys) != 1:
            raise ConditionError(
                pointer, f"a group condition has exactly one key, found {sorted(keys)}"
            )
        (key,) = keys
        if key == "not":
            inner = _compile(spec["not"], f"{pointer}/not")
            return lambda facts: not inner(facts)
        items = spec[key]
        if not isinstance(items, list) or not items:
            raise ConditionError(f"{pointer}/{key}", "expected a non-empty list of conditions")
        parts = tuple(_compile(item, f"{pointer}/{key}/{i}") for i, item in enumerate(items))
        return _all(parts) if key == "all" else _any(parts)
    subjects = [k for k in spec if k in SUBJECTS]
    if len(subjects) != 1:
        expected = ", ".join([*GROUPS, *SUBJECTS])
        raise ConditionError(
            pointer, f"expected exactly one of {expected}; found keys {sorted(keys)}"
        )
    subject = subjects[0]
    name = spec[subject]
    ops = [k for k in spec if k != subject and k != "within"]
    if subject == "in_list":
        if ops:
            raise ConditionError(pointer, f"in_list takes no operator, found {ops}")
        return lambda facts: name in facts.lists
    if len(ops) != 1 or ops[0] not in OPERATORS:
        raise ConditionError(
            pointer,
            f"expected exactly one operator ({', '.join(OPERATORS)}) beside "
            f"'{subject}', found {ops or 'none'}",
        )
    op = ops[0]
    test = _operator(op, spec[op], f"{pointer}/{op}")
    if subject == "event":
        within = Duration.parse(spec["within"]) if "within" in spec else None

        def event_count(facts: Facts) -> bool:
            since = within.before(facts.now) if within is not None else None
            return test(facts.count_events(name, since))

        return event_count
    if subject == "attribute":
        return lambda facts: test(facts.attributes.get(name))
    if subject == "property":
        return lambda facts: test(facts.properties.get(name))
    if subject == "score":
        return lambda facts: test(facts.scores.get(name, 0.0))
    return lambda facts: test(facts.grades.get(name))


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda facts: a(facts) and b(facts)
    return lambda facts: all(p(facts) for p in parts)


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda facts: a(facts) or b(facts)
    return lambda facts: any(p(facts) for p in parts)


def _operator(op: str, value: Any, pointer: str) -> Callable[[Any], bool]:
    """A test on one value; missing values fail every test but ``ne`` and ``exists: false``."""
    if op == "exists":
        if not isinstance(value, bool):
            raise ConditionError(pointer, f"expected true or false, found {value!r}")
        return (lambda x: x is not None) if value else (lambda x: x is None)
    if op == "eq":
        return lambda x: x == value
    if op == "ne":
        return lambda x: x != value
    if op == "in":
        if not isinstance(value, list):
            raise ConditionError(pointer, f"expected a list of values, found {value!r}")
        try:
            members: Container[Any] = frozenset(value)
        except TypeError:
            members = tuple(value)
        return lambda x: x is not None and _safe_in(x, members)
    if op == "contains":
        return lambda x: _contains(x, value)
    if op == "matches":
        if not isinstance(value, str):
            raise ConditionError(pointer, f"expected a glob pattern text, found {value!r}")
        regex = re.compile(fnmatch.translate(value))
        return lambda x: isinstance(x, str) and regex.match(x) is not None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConditionError(pointer, f"expected a number or text to compare, found {value!r}")
    compare = _COMPARE[op]
    return lambda x: compare(x, value)


def _safe_in(x: Any, members: Container[Any]) -> bool:
    try:
        return x in members
    except TypeError:
        return False


def _contains(x: Any, value: Any) -> bool:
    if isinstance(x, str):
        return isinstance(value, str) and value in x
    if isinstance(x, list | tuple | set | frozenset):
        return value in x
    return False


def _guarded(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(x: Any, value: Any) -> bool:
        if x is None:
            return False
        try:
            return compare(x, value)
        except TypeError:
            return False

    return test


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "gt": _guarded(lambda x, v: bool(x > v)),
    "gte": _guarded(lambda x, v: bool(x >= v)),
    "lt": _guarded(lambda x, v: bool(x < v)),
    "lte": _guarded(lambda x, v: bool(x <= v)),
}

_SYMBOLS = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}


def describe_condition(spec: Any) -> str:
    """Plain words for a condition, for graph labels and explanations."""
    if not isinstance(spec, dict) or not spec:
        return "?"
    if "all" in spec and isinstance(spec["all"], list):
        return " and ".join(_bracket(s) for s in spec["all"])
    if "any" in spec and isinstance(spec["any"], list):
        return " or ".join(_bracket(s) for s in spec["any"])
    if "not" in spec:
        return f"not {_bracket(spec['not'])}"
    if "in_list" in spec:
        return f"in list {spec['in_list']}"
    subject = next((k for k in spec if k in SUBJECTS), None)
    if subject is None:
        return "?"
    ops = [k for k in spec if k not in (subject, "within")]
    op = ops[0] if ops else "?"
    value = spec.get(op)
    name = spec[subject]
    if subject == "event":
        window = f" in {Duration.parse(spec['within']).describe()}" if "within" in spec else ""
        name = f"#{name}{window}"
    if op in _SYMBOLS:
        return f"{name} {_SYMBOLS[op]} {value}"
    if op == "exists":
        return f"{name} {'is set' if value else 'is not set'}"
    return f"{name} {op} {value}"


def _bracket(spec: Any) -> str:
    text = describe_condition(spec)
    return f"({text})" if isinstance(spec, dict) and ("all" in spec or "any" in spec) else text
