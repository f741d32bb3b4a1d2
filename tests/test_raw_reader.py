"""engine.store.raw decodes stored JSON text exactly as the JSON column type does
(``json.loads``), including what only the standard library accepts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.store.raw import RawReader, sqlite_document

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities too: json.dumps writes them, json.loads reads them
    | st.text(),  # lone surrogates included
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, type for type (NaN equal to NaN, 1 not equal to 1.0 or True)."""
    return json.dumps(a) == json.dumps(b) and repr(a) == repr(b)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_sqlite_document_is_json_loads(value: Any) -> None:
    stored = json.dumps(value)
    assert _same(sqlite_document(stored), json.loads(stored))


@pytest.mark.parametrize(
    "stored",
    [
        "NaN",
        "[Infinity, -Infinity]",
        "1E400",
        str(2**70),  # orjson would give a float
        str(-(2**63) - 1),
        str(2**64 - 1),
        '{"phone": "1234567890123456789012", "n": 1}',
        '"\\ud800"',
        '{"a": 1, "a": 2}',
        "{}",
        "[]",
    ],
)
def test_what_only_the_standard_library_reads(stored: str) -> None:
    assert _same(sqlite_document(stored), json.loads(stored))


def test_each_document_is_a_fresh_object() -> None:
    first, second = sqlite_document("{}"), sqlite_document("{}")
    first["x"] = 1
    assert second == {}
    assert sqlite_document(None) is None


def test_postgres_values_pass_as_copies() -> None:
    read = RawReader(postgres=True)
    decoded = {"a": 1}
    copy = read.document(decoded)
    assert copy == decoded and copy is not decoded
    assert read.moment(None) is None
