"""The condition language, compiled once into plain Python closures.

A condition is parsed when its workflow is loaded; evaluating it afterwards is a chain of
closure calls over a :class:`Facts` object and never looks at JSON again.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Container, Mapping
from datetime import datetime
from typing import Any, Protocol

from engine.durations import Duration
from engine.problems import describe_json, suggest


class Facts(Protocol):
    """What a condition may look at: one contact, at one moment, woken by one event."""

    @property
    def now(self) -> datetime: ...

    @property
    def attributes(self) -> Mapping[str, Any]: ...

    @property
    def scores(self) -> Mapping[str, float]: ...

    @property
    def grades(self) -> Mapping[str, str]: ...

    @property
    def lists(self) -> Container[str]: ...

    @property
    def properties(self) -> Mapping[str, Any]: ...

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
_NUMERIC_OPS = ("gt", "gte", "lt", "lte")
_KNOWN_KEYS = (*GROUPS, *SUBJECTS, *OPERATORS, "within")


class ConditionError(ValueError):
    """A condition that cannot be compiled; ``pointer`` is relative to the condition."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message


def compile_condition(spec: Any, at: str = "") -> Predicate:
    """Turn a JSON condition into a predicate; raises :class:`ConditionError`.

    ``at`` is the condition's own pointer inside the object being parsed (``/if`` for a
    condition node), put in front of every error pointer so problems point at the leaf."""
    return _compile(spec, at)


def _compile(spec: Any, pointer: str) -> Predicate:
    if not isinstance(spec, dict) or not spec:
        raise ConditionError(pointer, f"expected a condition object, found {describe_json(spec)}")
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
        unknown = [k for k in sorted(keys) if k not in _KNOWN_KEYS]
        hint = f"; unknown key {unknown[0]!r}{suggest(unknown[0], _KNOWN_KEYS)}" if unknown else ""
        raise ConditionError(
            pointer, f"expected exactly one of {expected}; found keys {sorted(keys)}{hint}"
        )
    subject = subjects[0]
    name = spec[subject]
    if not isinstance(name, str) or not name:
        raise ConditionError(
            f"{pointer}/{subject}",
            f"expected the {subject} name as text, found {describe_json(name)}",
        )
    if "within" in spec and subject != "event":
        raise ConditionError(
            f"{pointer}/within", f"'within' goes with an event count, not with '{subject}'"
        )
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
    operand = spec[op]
    if subject in ("score", "event") and op in _NUMERIC_OPS and isinstance(operand, str):
        # a score and an event count are numbers: a text to compare with is never met
        raise ConditionError(
            f"{pointer}/{op}", f"a {subject} is compared with a number, found text {operand!r}"
        )
    test = _operator(op, operand, f"{pointer}/{op}")
    if subject == "event":
        within = None
        if "within" in spec:
            try:
                within = Duration.parse(spec["within"])
            except ValueError as exc:
                raise ConditionError(f"{pointer}/within", str(exc)) from None

        def event_count(facts: Facts) -> bool:
            since = within.before(facts.now) if within is not None else None
            return test(facts.count_events(name, since))

        return event_count
    # One closure per leaf around one flat operator test: two calls per evaluation.
    if subject == "attribute":
        return lambda facts: test(facts.attributes.get(name))
    if subject == "property":
        return lambda facts: test(facts.properties.get(name))
    if subject == "score":
        return lambda facts: test(facts.scores.get(name, 0.0))
    return lambda facts: test(facts.grades.get(name))


# Groups of up to five are spelt out: a chain of ``and``/``or`` is several times faster
# than ``all()``/``any()`` over a generator. Every predicate returns a bool, so the chain
# gives the same answers (and stops at the same part).


def _all(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda facts: a(facts) and b(facts)
    if len(parts) == 3:
        a, b, c = parts
        return lambda facts: a(facts) and b(facts) and c(facts)
    if len(parts) == 4:
        a, b, c, d = parts
        return lambda facts: a(facts) and b(facts) and c(facts) and d(facts)
    if len(parts) == 5:
        a, b, c, d, e = parts
        return lambda facts: a(facts) and b(facts) and c(facts) and d(facts) and e(facts)
    return lambda facts: all(p(facts) for p in parts)


def _any(parts: tuple[Predicate, ...]) -> Predicate:
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        a, b = parts
        return lambda facts: a(facts) or b(facts)
    if len(parts) == 3:
        a, b, c = parts
        return lambda facts: a(facts) or b(facts) or c(facts)
    if len(parts) == 4:
        a, b, c, d = parts
        return lambda facts: a(facts) or b(facts) or c(facts) or d(facts)
    if len(parts) == 5:
        a, b, c, d, e = parts
        return lambda facts: a(facts) or b(facts) or c(facts) or d(facts) or e(facts)
    return lambda facts: any(p(facts) for p in parts)


def _operator(op: str, value: Any, pointer: str) -> Callable[[Any], bool]:
    """A test on one value; missing values fail every test but ``ne`` and ``exists: false``.

    Each test is a single closure (no helper calls on the hot path); a type mismatch such
    as ``"abc" >= 5`` or an unhashable value tested with ``in`` is False, never an error.
    """
    if op == "exists":
        if not isinstance(value, bool):
            raise ConditionError(pointer, f"expected true or false, found {describe_json(value)}")
        return (lambda x: x is not None) if value else (lambda x: x is None)
    if op == "eq":
        return lambda x: x == value
    if op == "ne":
        return lambda x: x != value
    if op == "in":
        if not isinstance(value, list):
            raise ConditionError(
                pointer, f"expected a list of values, found {describe_json(value)}"
            )
        try:
            members: Container[Any] = frozenset(value)
        except TypeError:
            members = tuple(value)

        def is_in(x: Any) -> bool:
            if x is None:
                return False
            try:
                return x in members
            except TypeError:
                return False

        return is_in
    if op == "contains":
        return _contains(value)
    if op == "matches":
        if not isinstance(value, str):
            raise ConditionError(
                pointer, f"expected a glob pattern text, found {describe_json(value)}"
            )
        try:
            match = re.compile(fnmatch.translate(value)).match
        except re.error as exc:
            raise ConditionError(pointer, f"bad glob pattern {value!r}: {exc}") from None
        return lambda x: isinstance(x, str) and match(x) is not None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConditionError(
            pointer, f"expected a number or text to compare, found {describe_json(value)}"
        )
    return _COMPARE[op](value)


def _contains(value: Any) -> Callable[[Any], bool]:
    """A list holding the value, or a text containing it (only when the value is text)."""
    is_text = isinstance(value, str)

    def contains(x: Any) -> bool:
        if isinstance(x, str):
            return is_text and value in x
        if isinstance(x, list | tuple | set | frozenset):
            try:
                return value in x
            except TypeError:  # an unhashable value asked of a set
                return False
        return False

    return contains


def _gt(value: Any) -> Callable[[Any], bool]:
    def gt(x: Any) -> bool:
        if x is None:
            return False
        try:
            return bool(x > value)
        except TypeError:
            return False

    return gt


def _gte(value: Any) -> Callable[[Any], bool]:
    def gte(x: Any) -> bool:
        if x is None:
            return False
        try:
            return bool(x >= value)
        except TypeError:
            return False

    return gte


def _lt(value: Any) -> Callable[[Any], bool]:
    def lt(x: Any) -> bool:
        if x is None:
            return False
        try:
            return bool(x < value)
        except TypeError:
            return False

    return lt


def _lte(value: Any) -> Callable[[Any], bool]:
    def lte(x: Any) -> bool:
        if x is None:
            return False
        try:
            return bool(x <= value)
        except TypeError:
            return False

    return lte


_COMPARE: dict[str, Callable[[Any], Callable[[Any], bool]]] = {
    "gt": _gt,
    "gte": _gte,
    "lt": _lt,
    "lte": _lte,
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
    value = _show(spec.get(op))
    name = _show(spec[subject])
    if subject == "event":
        window = f" in {_describe_duration(spec['within'])}" if "within" in spec else ""
        name = f"#{name}{window}"
    if op in _SYMBOLS:
        return f"{name} {_SYMBOLS[op]} {value}"
    if op == "exists":
        return f"{name} {'is set' if spec.get(op) else 'is not set'}"
    return f"{name} {op} {value}"


def _show(value: Any) -> str:
    """A value as the workflow's author wrote it: text bare, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False, default=str)


def _describe_duration(text: Any) -> str:
    try:
        return Duration.parse(text).describe()
    except ValueError:
        return _show(text)


def _bracket(spec: Any) -> str:
    text = describe_condition(spec)
    return f"({text})" if isinstance(spec, dict) and ("all" in spec or "any" in spec) else text
