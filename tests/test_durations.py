"""ISO-8601 durations: parsing, calendar arithmetic (month ends), plain-words labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.durations import Duration, check_duration, is_duration


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "months", "delta"),
    [
        ("P30D", 0, timedelta(days=30)),
        ("PT2H", 0, timedelta(hours=2)),
        ("PT15M", 0, timedelta(minutes=15)),
        ("PT1.5S", 0, timedelta(seconds=1.5)),
        ("P1M", 1, timedelta()),
        ("P1Y", 12, timedelta()),
        ("P1Y2M", 14, timedelta()),
        ("P1W", 0, timedelta(days=7)),
        ("P2W3D", 0, timedelta(days=17)),
        ("P1DT12H", 0, timedelta(days=1, hours=12)),
        ("P1Y2M3W4DT5H6M7S", 14, timedelta(days=25, hours=5, minutes=6, seconds=7)),
        ("P0D", 0, timedelta()),
        ("P1000Y", 12000, timedelta()),
    ],
)
def test_parse(text: str, months: int, delta: timedelta) -> None:
    duration = Duration.parse(text)
    assert (duration.months, duration.delta) == (months, delta)
    assert str(duration) == duration.text == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "30D",
        "P1DT",
        "P1.5D",
        "p1d",
        "P1D\n",
        " P1D",
        "P-1D",
        "P1H",
        "PT1D",
        "P1S",
        "P1D2M",
        "P\u0663D",  # an Arabic-Indic digit: ISO-8601 means ASCII digits
        "3 days",
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected an ISO-8601 duration"):
        Duration.parse(text)


@pytest.mark.parametrize("value", [None, 30, 1.5, ["P1D"], {"P": 1}])
def test_parse_rejects_non_text(value: object) -> None:
    with pytest.raises(ValueError, match="expected an ISO-8601 duration"):
        Duration.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["P1001Y", "P12001M", "P99999999999D", "PT" + "9" * 30 + "S"])
def test_parse_rejects_spans_out_of_range(text: str) -> None:
    with pytest.raises(ValueError, match="longer than 1000 years"):
        Duration.parse(text)


def test_parse_rejects_more_digits_than_int_takes() -> None:
    with pytest.raises(ValueError, match="longer than 1000 years"):
        Duration.parse("P" + "9" * 5000 + "D")


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P1D", at(2026, 1, 31, 10), at(2026, 2, 1, 10)),
        ("PT2H", at(2026, 1, 31, 23), at(2026, 2, 1, 1)),
        ("P1M", at(2026, 1, 15, 9), at(2026, 2, 15, 9)),
        ("P1M", at(2026, 1, 31, 9), at(2026, 2, 28, 9)),  # month end: last day of February
        ("P1M", at(2028, 1, 31, 9), at(2028, 2, 29, 9)),  # leap year
        ("P1M", at(2026, 3, 31), at(2026, 4, 30)),
        ("P1M", at(2026, 12, 31), at(2027, 1, 31)),
        ("P2M", at(2026, 12, 31), at(2027, 2, 28)),
        ("P13M", at(2026, 1, 31), at(2027, 2, 28)),
        ("P1Y", at(2028, 2, 29), at(2029, 2, 28)),
        ("P1M1D", at(2026, 1, 31), at(2026, 3, 1)),  # months first, then days
        ("P30D", at(2026, 1, 31), at(2026, 3, 2)),
        ("P1W", at(2026, 1, 5, 3), at(2026, 1, 12, 3)),
        ("PT0.5S", at(2026, 1, 1), at(2026, 1, 1) + timedelta(milliseconds=500)),
    ],
)
def test_after(text: str, start: datetime, end: datetime) -> None:
    assert Duration.parse(text).after(start) == end


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("P1D", at(2026, 3, 1), at(2026, 2, 28)),
        ("P1M", at(2026, 3, 31, 8), at(2026, 2, 28, 8)),
        ("P1M", at(2028, 3, 31), at(2028, 2, 29)),
        ("P1M", at(2026, 1, 15), at(2025, 12, 15)),
        ("P1Y", at(2028, 2, 29), at(2027, 2, 28)),
        ("P30D", at(2026, 3, 31), at(2026, 3, 1)),
        ("P1M1D", at(2026, 3, 31), at(2026, 2, 27)),
        ("PT36H", at(2026, 1, 2, 12), at(2026, 1, 1)),
    ],
)
def test_before(text: str, start: datetime, end: datetime) -> None:
    assert Duration.parse(text).before(start) == end


def test_arithmetic_keeps_the_time_zone() -> None:
    moment = Duration.parse("P1M").after(at(2026, 1, 31, 10, 30))
    assert moment.tzinfo is UTC
    assert moment == at(2026, 2, 28, 10, 30)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("P1D", "1 day"),
        ("P3D", "3 days"),
        ("P2D", "2 days"),
        ("PT1H", "1 hour"),
        ("PT2H", "2 hours"),
        ("PT90M", "1 hour 30 minutes"),
        ("PT1M", "1 minute"),
        ("PT45S", "45 seconds"),
        ("P1W", "7 days"),
        ("P1M", "1 month"),
        ("P14M", "1 year 2 months"),
        ("P2Y", "2 years"),
        ("P1DT1S", "1 day 1 second"),
        ("P1Y1M1DT1H1M1S", "1 year 1 month 1 day 1 hour 1 minute 1 second"),
        ("P0D", "0 seconds"),
        ("PT1.5S", "1 second"),
    ],
)
def test_describe(text: str, words: str) -> None:
    assert Duration.parse(text).describe() == words


def test_approximate_counts_thirty_day_months() -> None:
    assert Duration.parse("P1M2D").approximate() == timedelta(days=32)
    assert Duration.parse("P1Y").approximate() == timedelta(days=360)


def test_format_checks() -> None:
    assert is_duration("P30D") is True
    assert is_duration("thirty days") is False
    assert is_duration("P2000Y") is False
    assert is_duration(30) is True  # not text: the schema's type check reports it
    assert check_duration("P30D") is True
    assert check_duration("thirty days") is False
    assert check_duration(None) is True
    with pytest.raises(ValueError, match="longer than 1000 years"):
        check_duration("P2000Y")


DURATION_ALPHABET = st.sampled_from("PYMWDTHS0123456789.,-+ \n")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(DURATION_ALPHABET, max_size=12)))
def test_parse_raises_only_value_error(text: str) -> None:
    try:
        duration = Duration.parse(text)
    except ValueError:
        return
    assert duration.text == text
    start = at(2026, 1, 31, 12)
    assert duration.before(start) <= start <= duration.after(start)
    assert isinstance(duration.describe(), str)


@settings(max_examples=150, deadline=None)
@given(
    days=st.integers(0, 3000),
    hours=st.integers(0, 100),
    minutes=st.integers(0, 100),
    start=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
def test_exact_spans_round_trip(days: int, hours: int, minutes: int, start: datetime) -> None:
    duration = Duration.parse(f"P{days}DT{hours}H{minutes}M")
    assert duration.after(start) - start == timedelta(days=days, hours=hours, minutes=minutes)
    assert duration.before(duration.after(start)) == start
