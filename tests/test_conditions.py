"""The condition language: every operator on every subject, groups, event counts, errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.conditions import (
    GROUPS,
    OPERATORS,
    SUBJECTS,
    ConditionError,
    compile_condition,
    describe_condition,
)

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


@dataclass
class Facts:
    """A stand-in for one contact at one moment; records the windows it was asked about."""

    now: datetime = NOW
    attributes: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    grades: Mapping[str, str] = field(default_factory=dict)
    lists: set[str] = field(default_factory=set)
    properties: Mapping[str, Any] = field(default_factory=dict)
    events: list[tuple[str, datetime]] = field(default_factory=list)
    asked: list[tuple[str, datetime | None]] = field(default_factory=list)

    def count_events(self, name: str, since: datetime | None) -> int:
        self.asked.append((name, since))
        return sum(
            1 for event, at in self.events if event == name and (since is None or at >= since)
        )


def holds(spec: Any, facts: Facts) -> bool:
    result = compile_condition(spec)(facts)
    assert isinstance(result, bool)
    return result


# --- one value under each subject -----------------------------------------------------


def with_value(subject: str, value: Any) -> Facts:
    """Facts in which the subject named ``X`` has ``value``."""
    if subject == "attribute":
        return Facts(attributes={"X": value})
    if subject == "property":
        return Facts(properties={"X": value})
    if subject == "score":
        return Facts(scores={"X": value})
    if subject == "grade":
        return Facts(grades={"X": value})
    assert subject == "event"
    return Facts(events=[("X", NOW - timedelta(hours=i)) for i in range(value)])


VALUE_SUBJECTS = ("attribute", "property", "score", "grade", "event")

# (operator, operand, value, expected): numbers, which every subject can hold
NUMBER_CASES = [
    ("eq", 5, 5, True),
    ("eq", 5, 6, False),
    ("ne", 5, 6, True),
    ("ne", 5, 5, False),
    ("gt", 5, 6, True),
    ("gt", 5, 5, False),
    ("gte", 5, 5, True),
    ("gte", 5, 4, False),
    ("lt", 5, 4, True),
    ("lt", 5, 5, False),
    ("lte", 5, 5, True),
    ("lte", 5, 6, False),
    ("in", [1, 5], 5, True),
    ("in", [1, 5], 4, False),
    ("exists", True, 5, True),
    ("exists", False, 5, False),
    ("contains", 5, 5, False),  # a number holds nothing
    ("matches", "5", 5, False),  # globs match text only
]


@pytest.mark.parametrize("subject", VALUE_SUBJECTS)
@pytest.mark.parametrize(("op", "operand", "value", "expected"), NUMBER_CASES)
def test_operators_on_numbers(
    subject: str, op: str, operand: Any, value: int, expected: bool
) -> None:
    assert holds({subject: "X", op: operand}, with_value(subject, value)) is expected


# text, lists and booleans: the subjects that hold any JSON value
TEXT_CASES = [
    ("eq", "VP", "VP", True),
    ("eq", "VP", "vp", False),
    ("ne", "VP", "CEO", True),
    ("gt", "b", "c", True),
    ("gt", "b", "a", False),
    ("lte", "b", "b", True),
    ("in", ["CEO", "VP"], "VP", True),
    ("in", ["CEO", "VP"], "CTO", False),
    ("contains", "VP", "VP Marketing", True),
    ("contains", "CEO", "VP Marketing", False),
    ("contains", "b", ["a", "b"], True),
    ("contains", "c", ["a", "b"], False),
    ("contains", 2, [1, 2], True),
    ("contains", 2, "12", False),  # a number is not looked for inside text
    ("matches", "/pricing*", "/pricing/plans", True),
    ("matches", "/pricing*", "/about/pricing", False),
    ("matches", "/p?icing", "/pricing", True),
    ("matches", "?", "ab", False),
    ("matches", "*.pdf", "guide.PDF", False),  # case-sensitive
    ("exists", True, "", True),
    ("exists", True, False, True),
    ("exists", False, 0, False),
    ("eq", True, True, True),
    ("eq", False, 0, True),  # JSON equality as Python sees it: false == 0
    ("eq", [1, 2], [1, 2], True),
]


@pytest.mark.parametrize("subject", ["attribute", "property", "grade"])
@pytest.mark.parametrize(("op", "operand", "value", "expected"), TEXT_CASES)
def test_operators_on_other_values(
    subject: str, op: str, operand: Any, value: Any, expected: bool
) -> None:
    assert holds({subject: "X", op: operand}, with_value(subject, value)) is expected


# missing values fail every operator but ne and exists:false
MISSING_CASES = [
    ("eq", 5, False),
    ("eq", None, True),  # JSON null equals a missing value
    ("ne", 5, True),
    ("gt", 5, False),
    ("gte", 5, False),
    ("lt", 5, False),
    ("lte", 5, False),
    ("gt", "a", False),
    ("lt", "z", False),
    ("in", [1, 5], False),
    ("in", [None], False),
    ("contains", "a", False),
    ("matches", "*", False),
    ("exists", True, False),
    ("exists", False, True),
]


@pytest.mark.parametrize("subject", ["attribute", "property", "grade"])
@pytest.mark.parametrize(("op", "operand", "expected"), MISSING_CASES)
def test_missing_values(subject: str, op: str, operand: Any, expected: bool) -> None:
    assert holds({subject: "X", op: operand}, Facts()) is expected


@pytest.mark.parametrize(
    ("op", "operand", "expected"),
    [("eq", 0, True), ("gte", 0, True), ("gt", 0, False), ("lt", 1, True), ("exists", True, True)],
)
def test_a_missing_score_is_zero(op: str, operand: Any, expected: bool) -> None:
    assert holds({"score": "SCORE", op: operand}, Facts()) is expected


@pytest.mark.parametrize(
    ("op", "operand", "expected"), [("eq", 0, True), ("gte", 1, False), ("lt", 1, True)]
)
def test_an_event_never_sent_counts_zero(op: str, operand: Any, expected: bool) -> None:
    assert holds({"event": "Email Clicked", op: operand}, Facts()) is expected


def test_in_list() -> None:
    facts = Facts(lists={"Customers"})
    assert holds({"in_list": "Customers"}, facts) is True
    assert holds({"in_list": "Nurture"}, facts) is False
    assert holds({"not": {"in_list": "Nurture"}}, facts) is True


# --- type mismatches are False, never an error -----------------------------------------


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ({"attribute": "X", "gt": 5}, "abc"),
        ({"attribute": "X", "lte": "abc"}, 5),
        ({"attribute": "X", "gte": 5}, {"a": 1}),
        ({"attribute": "X", "lt": 5}, [1]),
        ({"attribute": "X", "gt": 5}, True),  # True > 5 is False in Python, not an error
        ({"attribute": "X", "matches": "*"}, 5),
        ({"attribute": "X", "matches": "*"}, ["a"]),
        ({"attribute": "X", "contains": "a"}, {"a": 1}),
        ({"attribute": "X", "contains": ["a"]}, {"x", "y"}),  # unhashable asked of a set
        ({"attribute": "X", "contains": {"a": 1}}, "abc"),
        ({"attribute": "X", "in": ["a", "b"]}, ["a"]),  # unhashable against a set
        ({"attribute": "X", "in": [1, 2]}, {"a": 1}),
        ({"attribute": "X", "eq": 5}, float("nan")),
        ({"attribute": "X", "gt": 5}, float("nan")),
    ],
)
def test_type_mismatches_are_false(spec: dict[str, Any], value: Any) -> None:
    assert holds(spec, Facts(attributes={"X": value})) is False


def test_in_with_unhashable_members() -> None:
    spec = {"attribute": "X", "in": [[1, 2], {"a": 1}, 3]}
    assert holds(spec, Facts(attributes={"X": [1, 2]})) is True
    assert holds(spec, Facts(attributes={"X": {"a": 1}})) is True
    assert holds(spec, Facts(attributes={"X": 3})) is True
    assert holds(spec, Facts(attributes={"X": [2, 1]})) is False


def test_numbers_compare_across_int_and_float() -> None:
    assert holds({"score": "SCORE", "gt": 80}, Facts(scores={"SCORE": 80.5})) is True
    assert holds({"score": "SCORE", "eq": 80}, Facts(scores={"SCORE": 80.0})) is True
    assert holds({"property": "percent", "gte": 74.9}, Facts(properties={"percent": 75})) is True


# --- groups ----------------------------------------------------------------------------

TRUE = {"in_list": "yes"}
FALSE = {"in_list": "no"}
GROUP_FACTS = Facts(lists={"yes"})


@pytest.mark.parametrize("size", range(1, 8))
def test_all_of_every_size(size: int) -> None:
    assert holds({"all": [TRUE] * size}, GROUP_FACTS) is True
    for position in range(size):
        parts = [TRUE] * size
        parts[position] = FALSE
        assert holds({"all": parts}, GROUP_FACTS) is False, position


@pytest.mark.parametrize("size", range(1, 8))
def test_any_of_every_size(size: int) -> None:
    assert holds({"any": [FALSE] * size}, GROUP_FACTS) is False
    for position in range(size):
        parts = [FALSE] * size
        parts[position] = TRUE
        assert holds({"any": parts}, GROUP_FACTS) is True, position


def test_not_and_nesting() -> None:
    assert holds({"not": TRUE}, GROUP_FACTS) is False
    assert holds({"not": FALSE}, GROUP_FACTS) is True
    assert holds({"not": {"not": TRUE}}, GROUP_FACTS) is True
    nested = {"all": [TRUE, {"any": [FALSE, {"not": FALSE}]}, {"not": {"all": [TRUE, FALSE]}}]}
    assert holds(nested, GROUP_FACTS) is True


def test_groups_stop_at_the_first_decisive_part() -> None:
    facts = Facts(lists={"yes"})
    assert holds({"any": [TRUE, {"event": "E", "gte": 1}]}, facts) is True
    assert holds({"all": [FALSE, {"event": "E", "gte": 1}]}, facts) is False
    assert facts.asked == []


# --- event counts --------------------------------------------------------------------


def test_event_count_within_a_window() -> None:
    facts = Facts(
        events=[
            ("Email Clicked", NOW - timedelta(days=1)),
            ("Email Clicked", NOW - timedelta(days=10)),
            ("Email Clicked", NOW - timedelta(days=40)),
            ("Email Opened", NOW - timedelta(days=2)),
        ]
    )
    assert holds({"event": "Email Clicked", "within": "P30D", "gte": 2}, facts) is True
    assert holds({"event": "Email Clicked", "within": "P30D", "gte": 3}, facts) is False
    assert holds({"event": "Email Clicked", "within": "P7D", "eq": 1}, facts) is True
    assert holds({"event": "Email Clicked", "gte": 3}, facts) is True  # no window: all time
    assert holds({"event": "Email Opened", "within": "PT1H", "eq": 0}, facts) is True
    assert facts.asked == [
        ("Email Clicked", NOW - timedelta(days=30)),
        ("Email Clicked", NOW - timedelta(days=30)),
        ("Email Clicked", NOW - timedelta(days=7)),
        ("Email Clicked", None),
        ("Email Opened", NOW - timedelta(hours=1)),
    ]


def test_event_window_in_months_is_calendar_exact() -> None:
    facts = Facts()  # NOW is 31 March
    holds({"event": "Order Completed", "within": "P1M", "gte": 1}, facts)
    assert facts.asked == [("Order Completed", datetime(2026, 2, 28, 12, 0, tzinfo=UTC))]


def test_event_window_moves_with_now() -> None:
    predicate = compile_condition({"event": "E", "within": "P1D", "gte": 1})
    sent = [("E", NOW)]
    assert predicate(Facts(now=NOW, events=sent)) is True
    assert predicate(Facts(now=NOW + timedelta(days=1), events=sent)) is True
    assert predicate(Facts(now=NOW + timedelta(days=1, seconds=1), events=sent)) is False


# --- compile errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "pointer", "message"),
    [
        ([], "", "expected a condition object"),
        ({}, "", "expected a condition object"),
        ("SCORE > 5", "", 'expected a condition object, found text "SCORE > 5"'),
        ({"all": []}, "/all", "non-empty list"),
        ({"any": {"in_list": "x"}}, "/any", "non-empty list"),
        ({"all": [TRUE], "any": [TRUE]}, "", "exactly one key"),
        ({"not": TRUE, "score": "S"}, "", "exactly one key"),
        ({"all": [TRUE, {"score": "S"}]}, "/all/1", "found none"),
        ({"not": {"gt": 1}}, "/not", "expected exactly one of all, any, not"),
        ({"gt": 80}, "", "found keys ['gt']"),
        ({"scor": "SCORE", "gt": 80}, "", "did you mean 'score'?"),
        ({"score": "S", "attribute": "a", "eq": 1}, "", "expected exactly one of"),
        ({"score": "S", "gt": 1, "lt": 5}, "", "found ['gt', 'lt']"),
        ({"score": "S", "gtt": 1}, "", "found ['gtt']"),
        ({"score": "S", "gt": [1]}, "/gt", "expected a number or text"),
        (
            {"score": "S", "gt": True},
            "/gt",
            "expected a number or text to compare, found a boolean true",
        ),
        ({"score": "S", "lte": None}, "/lte", "expected a number or text to compare, found null"),
        (
            {"attribute": "a", "exists": "yes"},
            "/exists",
            'expected true or false, found text "yes"',
        ),
        ({"attribute": "a", "in": "CEO"}, "/in", "expected a list of values"),
        ({"property": "url", "matches": 5}, "/matches", "expected a glob pattern"),
        ({"in_list": "L", "eq": 1}, "", "in_list takes no operator"),
        ({"in_list": ["L"]}, "/in_list", "expected the in_list name as text, found a list"),
        ({"attribute": 5, "eq": 1}, "/attribute", "expected the attribute name as text"),
        ({"score": "", "gt": 1}, "/score", "expected the score name as text"),
        ({"event": "E", "within": "30 days", "gte": 1}, "/within", "ISO-8601 duration"),
        ({"event": "E", "within": 30, "gte": 1}, "/within", "ISO-8601 duration"),
        ({"score": "S", "within": "P1D", "gt": 1}, "/within", "goes with an event count"),
        ({"in_list": "L", "within": "P1D"}, "/within", "goes with an event count"),
    ],
)
def test_compile_errors(spec: Any, pointer: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(spec)
    assert caught.value.pointer == pointer
    assert message in caught.value.message
    assert str(caught.value) == caught.value.message


def test_compile_error_pointer_is_prefixed_with_where_the_condition_sits() -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition({"all": [TRUE, {"not": {"score": "S", "gt": "x", "lt": 1}}]}, "/if")
    assert caught.value.pointer == "/if/all/1/not"


def test_compile_condition_is_a_value_error() -> None:
    assert issubclass(ConditionError, ValueError)


# --- describe_condition -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"score": "SCORE", "gt": 80}, "SCORE > 80"),
        ({"score": "SCORE", "gte": 50}, "SCORE ≥ 50"),
        ({"score": "SCORE", "lt": 20}, "SCORE < 20"),
        ({"score": "SCORE", "lte": 80}, "SCORE ≤ 80"),
        ({"attribute": "CONSENT", "eq": True}, "CONSENT = true"),
        ({"attribute": "CONSENT", "ne": None}, "CONSENT ≠ null"),
        ({"attribute": "job_title", "eq": "CEO"}, "job_title = CEO"),
        ({"grade": "GRADE", "in": ["A", "B"]}, "GRADE in [A, B]"),
        ({"property": "url", "matches": "/pricing*"}, "url matches /pricing*"),
        ({"attribute": "tags", "contains": "vip"}, "tags contains vip"),
        ({"property": "ebook", "exists": True}, "ebook is set"),
        ({"property": "ebook", "exists": False}, "ebook is not set"),
        ({"in_list": "Customers"}, "in list Customers"),
        ({"event": "Email Clicked", "within": "P7D", "gte": 1}, "#Email Clicked in 7 days ≥ 1"),
        ({"event": "Email Clicked", "gte": 3}, "#Email Clicked ≥ 3"),
        ({"not": {"attribute": "CONSENT", "eq": False}}, "not CONSENT = false"),
        (
            {"all": [{"in_list": "Customers"}, {"score": "LOYALTY", "gte": 20}]},
            "in list Customers and LOYALTY ≥ 20",
        ),
        (
            {"all": [{"score": "SCORE", "gt": 50}, {"any": [TRUE, FALSE]}]},
            "SCORE > 50 and (in list yes or in list no)",
        ),
        ({"not": {"any": [TRUE, FALSE]}}, "not (in list yes or in list no)"),
        ({}, "?"),
        ([], "?"),
        ({"gt": 1}, "?"),
        ({"event": "E", "within": "soon", "gte": 1}, "#E in soon ≥ 1"),
    ],
)
def test_describe_condition(spec: Any, words: str) -> None:
    assert describe_condition(spec) == words


# --- properties: nothing but ConditionError at compile time, nothing at all at run time ---

NAMES = st.sampled_from(["X", "SCORE", "GRADE", "url", "Customers", ""])
CONDITION_KEYS = st.sampled_from([*GROUPS, *SUBJECTS, *OPERATORS, "within"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(["P1D", "PT2H", "P1M", "P2000Y", "*", "/pricing*", "[z-a]", "[!", "A"]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(CONDITION_KEYS | st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=24,
)


@st.composite
def leaves(draw: st.DrawFn) -> dict[str, Any]:
    """Leaves of the right shape with arbitrary operands (these mostly compile)."""
    mostly_right = draw(st.integers(0, 5)) > 0
    subject = draw(st.sampled_from(sorted(SUBJECTS)))
    leaf: dict[str, Any] = {subject: draw(NAMES if mostly_right else SCALARS)}
    if subject != "in_list":
        operand = SCALARS | st.lists(SCALARS, max_size=3) if mostly_right else JSON
        leaf[draw(st.sampled_from(sorted(OPERATORS)))] = draw(operand)
    if subject == "event" and draw(st.booleans()):
        leaf["within"] = draw(st.sampled_from(["P1D", "PT1H", "P1M"]) if mostly_right else SCALARS)
    return leaf


CONDITIONS = st.recursive(
    leaves(),
    lambda inner: (
        st.builds(lambda c: {"not": c}, inner)
        | st.builds(lambda items: {"all": items}, st.lists(inner, min_size=1, max_size=4))
        | st.builds(lambda items: {"any": items}, st.lists(inner, min_size=1, max_size=4))
    ),
    max_leaves=8,
)

FACT_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.sets(st.text(max_size=3)))


@st.composite
def any_facts(draw: st.DrawFn) -> Facts:
    keys = st.sampled_from(["X", "SCORE", "GRADE", "url", "percent"])
    numbers = st.floats(allow_nan=True) | st.integers(-1000, 1000)
    return Facts(
        now=draw(
            st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            )
        ),
        attributes=draw(st.dictionaries(keys, FACT_VALUES, max_size=4)),
        scores=draw(st.dictionaries(keys, numbers, max_size=3)),
        grades=draw(st.dictionaries(keys, FACT_VALUES, max_size=3)),
        lists=draw(st.sets(st.sampled_from(["Customers", "X", ""]), max_size=2)),
        properties=draw(st.dictionaries(keys, FACT_VALUES, max_size=4)),
        events=[("X", NOW - timedelta(days=d)) for d in draw(st.lists(st.integers(0, 60)))],
    )


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_compiling_arbitrary_json_raises_only_condition_error(spec: Any) -> None:
    try:
        predicate = compile_condition(spec)
    except ConditionError as exc:
        assert isinstance(exc.pointer, str)
        assert exc.pointer == "" or exc.pointer.startswith("/")
        return
    assert callable(predicate)
    assert isinstance(describe_condition(spec), str)


@settings(max_examples=300, deadline=None)
@given(CONDITIONS, any_facts())
def test_compiled_predicates_never_raise(spec: Any, facts: Facts) -> None:
    try:
        predicate = compile_condition(spec)
    except ConditionError:
        return
    assert isinstance(predicate(facts), bool)
    assert isinstance(describe_condition(spec), str)


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.floats(allow_nan=False))
def test_score_comparisons_agree_with_python(threshold: float, score: float) -> None:
    facts = Facts(scores={"SCORE": score})
    assert holds({"score": "SCORE", "gt": threshold}, facts) is (score > threshold)
    assert holds({"score": "SCORE", "lte": threshold}, facts) is (score <= threshold)
    assert holds({"score": "SCORE", "eq": threshold}, facts) is (score == threshold)


@pytest.mark.parametrize(("subject", "op"), [("score", "gt"), ("score", "lte"), ("event", "gte")])
def test_a_score_or_an_event_count_is_not_compared_with_text(subject: str, op: str) -> None:
    """``{"score": "SCORE", "gt": "abc"}`` passed and was never true."""
    with pytest.raises(ConditionError) as caught:
        compile_condition({subject: "X", op: "50"})
    assert caught.value.pointer == f"/{op}"
    assert str(caught.value) == f"a {subject} is compared with a number, found text '50'"
