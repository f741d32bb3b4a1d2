"""A problem found in an input file, said so that a person can act on it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    file: str
    pointer: str
    """A JSON pointer (``/nodes/points/add``) or ``line L, column C`` for unreadable JSON."""
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: {self.message}"

    def as_json(self) -> dict[str, str]:
        return {"file": self.file, "pointer": self.pointer, "message": self.message}


def suggest(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` when a choice is close, else an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def pointer_of(parts: Iterable[object]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)
