"""Small helpers for readable tests (import as ``from helpers import at``)."""

from __future__ import annotations

from datetime import UTC, datetime


def at(text: str) -> datetime:
    """``at("2026-01-05 10:00")`` -> aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
