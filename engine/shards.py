"""Splitting an event history into parts that can be simulated apart, one process each.

Two contacts must be simulated together when anything one of them does can change the
other: an ``alias`` or an identify with both ids (one folds into the other), a ``group``
call (account roll-ups and account conditions read every member), or a messageId they
share (the first message of an id wins, whichever contact sent it). Contacts joined by
none of these never meet in the runner: every node reads and writes its own contact, and
timed work (waits, quiet spells, cron fan-outs, decay) runs per contact at its own moment.
Everything else is per contact, so these connected parts can run in separate stores.

The pass here reads only the ids of each line (not timestamps, traits or properties) and
keeps one small integer per line and one dict entry per messageId (its hash, and the
contact of its first line), so it costs a fraction of what parsing the file does.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from engine.segment import BOM

_GROUP = "\x00group:"
"""Prefix of an account's node: account ids and contact ids are separate namespaces."""


@dataclass(frozen=True)
class ShardPlan:
    """Which part each line of the file goes to (index = line number - 1); the lines
    that cannot be read, and those of the first part, are part 0's."""

    parts: int
    line_part: bytes
    messages: list[int]
    """Lines with a contact, per part (for balancing; rejected lines are not counted)."""


class _Links:
    """Union-find over contact and account ids (path halving, union by size)."""

    __slots__ = ("index", "parent", "size")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.parent: list[int] = []
        self.size: list[int] = []

    def node(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            found = self.index[key] = len(self.parent)
            self.parent.append(found)
            self.size.append(1)
        return found

    def root(self, node: int) -> int:
        parent = self.parent
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    def join(self, a: int, b: int) -> None:
        a, b = self.root(a), self.root(b)
        if a == b:
            return
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]


def _identifier(data: dict[str, Any], key: str) -> str | None:
    """As :func:`engine.segment.parse_message` reads an id; ``ValueError`` where it would
    reject the message."""
    value = data.get(key)
    if type(value) is str:
        return value or None
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(key)
    return str(value)


def _ids(data: Any) -> tuple[str, str | None, str | None]:
    """The contact a message is for, a second contact it joins, and its account."""
    if not isinstance(data, dict):
        raise ValueError("not an object")
    user = _identifier(data, "userId")
    anonymous = _identifier(data, "anonymousId")
    contact = user or anonymous
    if contact is None:
        raise ValueError("no contact")
    kind = data.get("type")
    other = None
    if kind == "identify" and user and anonymous:
        other = anonymous
    elif kind == "alias":
        other = _identifier(data, "previousId")
    group = data.get("groupId") if kind == "group" else None
    account = None if group is None or isinstance(group, bool) else str(group)
    return contact, other, account


def plan_shards(lines: Iterable[bytes], parts: int, least: int = 0) -> ShardPlan:
    """Assign every line to one of at most ``parts`` parts, so that linked contacts share
    a part and the parts hold about as many messages each; ``least``: fewer parts, so
    that each holds about that many messages at least (a process costs a second or two
    to start). A line that cannot be read here goes to part 0, where the simulation
    rejects it as it always would."""
    links = _Links()
    line_node = array("l")  # the contact node of each line, -1: none
    # the node of the first line of each messageId (by hash): a later line with the same
    # hash joins it. Equal hashes join two contacts: right for a shared messageId,
    # harmless for a collision (the parts are only less even)
    first_of_id: dict[int, int] = {}
    first_line = True
    for raw in lines:
        try:
            data = orjson.loads(raw)  # the usual line: valid UTF-8, JSON whitespace around
        except orjson.JSONDecodeError:
            # else read as engine.segment.read_lines reads it (a byte-order mark before
            # the first line dropped, any whitespace stripped), so both see the same
            # message (a line that is not UTF-8 is rejected there: any part will do)
            text = raw.decode("utf-8", "replace")
            text = (text.removeprefix(BOM) if first_line else text).strip()
            try:
                data = orjson.loads(text) if text else None
            except orjson.JSONDecodeError:
                data = None
        first_line = False
        try:
            contact, other, account = _ids(data)
        except ValueError:  # blank, not JSON, or no contact: the reader rejects it
            line_node.append(-1)
            continue
        node = links.node(contact)
        line_node.append(node)
        if other is not None:
            links.join(node, links.node(other))
        if account is not None:
            links.join(node, links.node(_GROUP + account))
        message_id = data.get("messageId")
        if message_id is not None and not isinstance(message_id, bool | dict | list):
            first = first_of_id.setdefault(hash(str(message_id)), node)
            if first != node:
                links.join(first, node)
    del first_of_id
    weight: dict[int, int] = {}
    for node in line_node:
        if node >= 0:
            root = links.root(node)
            weight[root] = weight.get(root, 0) + 1
    if least > 0:
        parts = min(parts, sum(weight.values()) // least)
    parts = max(1, min(parts, len(weight), 255))
    load = [0] * parts
    part_of: dict[int, int] = {}
    # the biggest connected groups first, each to the lightest part so far
    for root, count in sorted(weight.items(), key=lambda item: (-item[1], item[0])):
        lightest = min(range(parts), key=load.__getitem__)
        part_of[root] = lightest
        load[lightest] += count
    line_part = bytearray(len(line_node))
    if parts > 1:
        for number, node in enumerate(line_node):
            if node >= 0:
                line_part[number] = part_of[links.root(node)]
    return ShardPlan(parts, bytes(line_part), load)
