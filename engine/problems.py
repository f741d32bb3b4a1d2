"""A problem found in an input file, said so that a person can act on it."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    file: str
    pointer: str
    """A JSON pointer (``/nodes/points/add``) or ``line L, column C`` for unreadable JSON."""
    message: str

    def __str__(self) -> str:
        """One line, ``FILE: /pointer: message``, whatever characters the parts hold."""
        return _one_line(f"{self.file}: {self.pointer or '/'}: {self.message}")

    def as_json(self) -> dict[str, str]:
        return {"file": self.file, "pointer": self.pointer, "message": self.message}


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def _one_line(text: str) -> str:
    """Control characters (a node id may hold a newline) written as escapes."""
    return text.translate(_CONTROL).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def suggest(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` when a choice is close, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def pointer_of(parts: Iterable[object]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


_KINDS: dict[type, str] = {
    dict: "an object",
    list: "a list",
    str: "text",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def describe_json(value: Any) -> str:
    """A decoded JSON value in the words of the file it came from (``null``, ``text "x"``),
    not Python's (``None``, ``NoneType``): the reader wrote JSON."""
    name = _KINDS.get(type(value), type(value).__name__)
    if isinstance(value, dict | list) or value is None:
        return name
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{name} {shown}"
