"""Reading Segment-spec messages (identify, track, group, alias, page, screen).

Every CDP emits this format, so it is Leadflow's native input. A message that cannot be
used is turned into a :class:`Rejection` naming the line and the reason; it never stops
the messages around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

import orjson

from engine.clock import EARLIEST_YEAR, LATEST_YEAR, parse_timestamp
from engine.problems import describe_json, pointer_of

TYPES = ("identify", "track", "group", "alias", "page", "screen")

BOM = "\ufeff"
"""The byte-order mark some editors put at the start of a UTF-8 file."""


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    contact_id: str
    timestamp: datetime
    message_id: str | None = None
    event: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    merge_from: str | None = None
    """An anonymous id (identify with both ids) or previousId (alias) to fold into this one."""
    line: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    line: int | None
    raw: str
    reason: str


_NONE: dict[str, Any] = {}
"""The empty properties of an identify or group and the empty traits of a track: one
dict for all of them, where a dict each cost 64 bytes a message (a simulation holds every
message of its file). Never changed: messages are read, never written to."""


def first_of_each_id(messages: Iterable[Message], seen: set[str] | None = None) -> list[Message]:
    """The messages without a repeated messageId (the contract's rule: the first one
    wins), in their order; ``seen``: ids taken before these (it is filled in as well)."""
    seen = set() if seen is None else seen
    kept = []
    for message in messages:
        if message.message_id is not None:
            if message.message_id in seen:
                continue
            seen.add(message.message_id)
        kept.append(message)
    return kept


def parse_message(
    data: Any, now: datetime, line: int | None = None, nul_free: bool = False
) -> Message:
    """Validate one decoded message; raises ValueError with the reason.

    ``nul_free``: the caller saw that the message's text holds no NUL character (a
    line without ``\\u0000``), so its strings need not be searched for one."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, found {describe_json(data)}")
    if not nul_free:
        where = nul_pointer(data)
        if where is not None:
            raise ValueError(
                f"{where or '/'}: text cannot hold the NUL character (\\u0000): "
                "neither SQLite's nor PostgreSQL's text keeps it whole"
            )
    kind = data.get("type")
    if kind not in TYPES:
        expected = f"(expected one of {', '.join(TYPES)})"
        if kind is None:
            raise ValueError(f"the message has no 'type' {expected}")
        found = repr(kind) if isinstance(kind, str) else f"{describe_json(kind)}"
        raise ValueError(f"unknown message type {found} {expected}")
    user_id = _identifier(data, "userId")
    anonymous_id = _identifier(data, "anonymousId")
    contact = user_id or anonymous_id
    if contact is None:
        raise ValueError(f"{kind} message needs 'userId' or 'anonymousId'")
    stamp = data.get("timestamp")
    if stamp is not None:
        timestamp = parse_timestamp(stamp)
    elif data.get("originalTimestamp") is not None:
        timestamp = _corrected(data, now)
    else:
        timestamp = now
    message_id = data.get("messageId")
    if message_id == "":  # no id, as over HTTP (with_message_id): not one shared by all
        message_id = None
    if message_id is not None and (
        isinstance(message_id, bool) or not isinstance(message_id, str | int)
    ):
        raise ValueError(f"'messageId' must be text, found {describe_json(message_id)}")
    ident = None if message_id is None else _within(str(message_id), "messageId", MAX_NAME)
    # one shared string per type, contact and event name, not one per message: a
    # simulation holds every message of its file in memory at once
    kind = TYPES[TYPES.index(kind)]
    contact = _shared(contact)
    # Message's fields by position (type, contact_id, timestamp, message_id, event,
    # properties, traits, group_id, merge_from, line): no keyword dict per message
    if kind == "track":
        event = data.get("event")
        if not isinstance(event, str) or not event:
            raise ValueError("track message needs 'event'")
        _within(event, "event", MAX_NAME)
        properties = _object(data, "properties")
        return Message(
            kind, contact, timestamp, ident, _shared(event), properties, _NONE, None, None, line
        )
    if kind == "identify":
        traits = _object(data, "traits")
        context = data.get("context")
        if not traits and isinstance(context, dict) and isinstance(context.get("traits"), dict):
            traits = dict(context["traits"])  # RudderStack sends identify traits here
        merge = anonymous_id if user_id and anonymous_id and anonymous_id != user_id else None
        return Message(kind, contact, timestamp, ident, None, _NONE, traits, None, merge, line)
    if kind in ("page", "screen"):
        properties = _object(data, "properties")
        if isinstance(data.get("name"), str):
            properties.setdefault("name", data["name"])
        event = "Page Viewed" if kind == "page" else "Screen Viewed"
        return Message(
            "track", contact, timestamp, ident, event, properties, _NONE, None, None, line
        )
    if kind == "group":
        group = data.get("groupId")
        if isinstance(group, bool) or not isinstance(group, str | int) or group == "":
            raise ValueError("group message needs 'groupId'")
        traits = _object(data, "traits")
        group = _within(str(group), "groupId", MAX_ID)
        return Message(kind, contact, timestamp, ident, None, _NONE, traits, group, None, line)
    previous = _identifier(data, "previousId")
    if previous is None or user_id is None:
        raise ValueError("alias message needs 'previousId' and 'userId'")
    merge = previous if previous != user_id else None
    return Message(kind, contact, timestamp, ident, None, _NONE, _NONE, None, merge, line)


def _corrected(data: dict[str, Any], now: datetime) -> datetime:
    """The Segment spec's ``receivedAt - (sentAt - originalTimestamp)`` (the device clock's
    skew taken out); ``originalTimestamp`` as it is without a ``sentAt``. ``receivedAt``
    is the message's own when it has one (an export), else ``now``."""
    original = parse_timestamp(data["originalTimestamp"])
    sent = data.get("sentAt")
    if sent is None:
        return original
    received = data.get("receivedAt")
    reference = now if received is None else parse_timestamp(received)
    moment = reference - (parse_timestamp(sent) - original)
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise ValueError(
            f"'sentAt' {sent!r} and 'originalTimestamp' {data['originalTimestamp']!r} give "
            f"a moment in the year {moment.year}: expected one between the years "
            f"{EARLIEST_YEAR} and {LATEST_YEAR}"
        )
    return moment


def nul_pointer(value: Any, pointer: str = "") -> str | None:
    """The JSON pointer of the first string (or key) in ``value`` holding a NUL
    character, or None."""
    if isinstance(value, str):
        return pointer if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = pointer + pointer_of((key,))
            if isinstance(key, str) and "\x00" in key:
                return here
            found = nul_pointer(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_pointer(item, f"{pointer}/{index}")
            if found is not None:
                return found
    return None


def _shared(text: str) -> str:
    return intern(text) if type(text) is str else text


MAX_ID = 320
"""The longest contact or account id a store keeps (PostgreSQL's columns are VARCHAR(320);
SQLite would keep any length, so the limit is checked here, for both)."""

MAX_NAME = 200
"""The longest messageId and event name a store keeps (VARCHAR(200))."""


def _within(text: str, key: str, most: int) -> str:
    if len(text) > most:
        raise ValueError(f"{key!r} is {len(text)} characters long; at most {most}")
    return text


def _identifier(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if type(value) is str:  # the usual case
        return _within(value, key, MAX_ID) or None
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{key!r} must be text, found {describe_json(value)}")
    return _within(str(value), key, MAX_ID)


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key!r} must be an object, found {describe_json(value)}")
    return dict(value)


def read_lines(
    lines: Iterable[str | bytes], now: datetime, first_line: int = 1
) -> Iterator[Message | Rejection]:
    """JSON Lines to messages and rejections, in file order; blank lines are skipped."""
    for number, raw in enumerate(lines, start=first_line):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                # kept as far as it can be (a text column holds text), and not taken
                # with the bad bytes replaced: two ids would become one contact
                kept = raw.decode("utf-8", "replace").strip()
                yield Rejection(
                    number,
                    kept,
                    f"not UTF-8 (byte {exc.start + 1} of the line, "
                    f"{raw[exc.start]:#04x}: {exc.reason})",
                )
                continue
        elif isinstance(raw, str):
            text = raw
        else:  # a caller's iterable from Python, not a file
            found = f"{type(raw).__name__} {raw!r}"[:200]
            yield Rejection(number, repr(raw)[:2000], f"expected a line of text, found {found}")
            continue
        if number == 1:  # a file saved "with BOM" (Windows editors): the mark is not data
            text = text.removeprefix(BOM)
        text = text.strip()
        if not text:
            continue
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            yield Rejection(number, text, f"invalid JSON: {exc}")
            continue
        try:
            yield parse_message(
                data, now, number, nul_free="\x00" not in text and "\\u0000" not in text
            )
        except ValueError as exc:
            yield Rejection(number, text, str(exc))
