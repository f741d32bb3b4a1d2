"""API keys: created with ``leadflow keys create``, stored hashed, checked per request.

A key reads ``lf_<prefix>_<secret>``. The prefix finds the row; the secret is kept only as
``sha256(salt + secret)`` with a per-key random salt. Keys carry 32 random bytes, so a fast
hash is enough (a slow one guards low-entropy passwords, which these are not).

Scopes: ``ingest`` may send events (``/v1``, ``POST /v3/events``); ``admin`` may do
everything, including Leadflow's own API under ``/api`` and Brevo's contact calls.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from engine.clock import Clock, SystemClock
from engine.store.db import writer
from engine.store.tables import api_keys

SCOPES = ("ingest", "admin")
CACHE_SECONDS = 5.0
"""How long a checked key is trusted without looking again (so a revoke takes this long)."""
TOUCH_SECONDS = 60.0
"""``last used`` is written at most this often per key."""


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    scope: str

    def allows(self, scope: str) -> bool:
        return self.scope == "admin" or self.scope == scope


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}{secret}".encode()).hexdigest()


def create_key(engine: Engine, name: str, scope: str, clock: Clock | None = None) -> str:
    """Store a new key and return it in full (the only time it is ever shown)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r} (expected one of {', '.join(SCOPES)})")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    with writer(engine).begin() as connection:
        connection.execute(
            api_keys.insert().values(
                name=name,
                scope=scope,
                prefix=prefix,
                salt=salt,
                digest=_digest(salt, secret),
                created_at=(clock or SystemClock()).now(),
            )
        )
    return f"lf_{prefix}_{secret}"


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(api_keys).order_by(api_keys.c.id)).all()
    return [
        {
            "id": row.id,
            "name": row.name,
            "scope": row.scope,
            "prefix": f"lf_{row.prefix}_",
            "created_at": row.created_at,
            "last_used_at": row.last_used_at,
            "revoked_at": row.revoked_at,
        }
        for row in rows
    ]


def revoke_key(engine: Engine, key_id: int, clock: Clock | None = None) -> bool:
    """Revoke a key; False when there is no such key or it was already revoked."""
    with writer(engine).begin() as connection:
        result = connection.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=(clock or SystemClock()).now())
        )
        return bool(result.rowcount)


class KeyChecker:
    """Checks presented keys against the store, remembering good ones for a few seconds."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self._cache: dict[str, tuple[ApiKey, float]] = {}
        self._touched: dict[int, float] = {}
        self._lock = threading.Lock()

    def peek(self, presented: str) -> ApiKey | None:
        """The key when it was checked moments ago (no I/O); None means "look it up"."""
        cached = self._cache.get(presented)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        return None

    def check(self, presented: str) -> ApiKey | None:
        """The key's record when ``presented`` is a valid, unrevoked key; else None.
        Blocking (it may read the store): call it from a worker thread."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(presented)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = self._lookup(presented)
        with self._lock:
            if key is None:
                self._cache.pop(presented, None)
                return None
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[presented] = (key, now + CACHE_SECONDS)
            touch = self._touched.get(key.id, 0.0) <= now
            if touch:
                self._touched[key.id] = now + TOUCH_SECONDS
        if touch:
            self._touch(key.id, self.clock.now())
        return key

    def _lookup(self, presented: str) -> ApiKey | None:
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != "lf" or not parts[1] or not parts[2]:
            return None
        _, prefix, secret = parts
        with self.engine.connect() as connection:
            row = connection.execute(select(api_keys).where(api_keys.c.prefix == prefix)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.digest, _digest(row.salt, secret)):
            return None
        return ApiKey(row.id, row.name, row.scope)

    def _touch(self, key_id: int, moment: datetime) -> None:
        try:
            with writer(self.engine).begin() as connection:
                connection.execute(
                    update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=moment)
                )
        except Exception:  # bookkeeping only: a busy store must not fail the request
            with self._lock:
                self._touched.pop(key_id, None)
