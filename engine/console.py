"""The terminal output of every command (rich), the same way everywhere."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 1_000
"""Columns when the output is not a terminal."""


def terminal(stderr: bool = False) -> Console:
    """Rich's console. Written to a pipe or a file, rich wraps lines at 80 columns: a long
    rejected line or reason came out in two, which breaks ``grep`` and logs. There, lines
    are not wrapped (and tables take the width their cells need)."""
    made = Console(stderr=stderr)
    if made.is_terminal:
        return made
    return Console(stderr=stderr, width=PIPE_WIDTH, soft_wrap=True)
