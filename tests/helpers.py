"""Small helpers for readable tests (import as ``from helpers import at``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

PG_SERVER = os.environ.get("LEADFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_database(prefix: str, options: str = "") -> Iterator[str]:
    """The URL of a PostgreSQL database made for the caller (``options``: what ``CREATE
    DATABASE`` takes after the name), dropped afterwards whatever happens."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_SERVER, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" {options}'.rstrip())
    try:
        yield f"{PG_SERVER.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_SERVER, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
