"""Small helpers for readable tests (import as ``from helpers import at``)."""

from __future__ import annotations

from datetime import UTC, datetime


def at(text: str) -> datetime:
    """``at("2026-01-05 10:00")`` -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


PAUSE_THEN_SCORE = {
    "id": "pause-then-score",
    "version": 1,
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "reentry": "always",
    "start": "pause",
    "nodes": {
        "pause": {"type": "wait", "for": "P1D", "next": "points"},
        "points": {"type": "update_score", "score": "SCORE", "add": 5},
    },
}
"""Signed Up, a day's wait, then +5 SCORE: one run parked on one wait per contact."""
