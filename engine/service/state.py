"""What the endpoints share: the store, the clock, keys, the inbox and its applier, a
runner for direct contact changes, and request counters for /metrics."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from engine.clock import Clock, SystemClock
from engine.runner import Runner
from engine.service.http import HttpError, presented_key
from engine.service.inbox import MAX_BACKLOG, Applier, Inbox, WriteGate
from engine.service.keys import ApiKey, KeyChecker
from engine.templates import TemplateCatalog

T = TypeVar("T")


class Service:
    def __init__(
        self,
        engine: Engine,
        clock: Clock | None = None,
        apply: bool = True,
        templates: TemplateCatalog | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        self.templates = templates
        self.gate = WriteGate(engine)
        self.keys = KeyChecker(engine, self.clock)
        self.inbox = Inbox(engine, self.clock, self.gate)
        self.applier = Applier(self.inbox, Runner(engine, self.clock, templates)) if apply else None
        self._runner = Runner(engine, self.clock, templates)
        self._runner_lock = threading.Lock()
        self.started = time.time()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.accepted = 0
        self.dropped = 0
        self.latency_sum = 0.0
        self.latency_count = 0
        self.counter_lock = threading.Lock()

    def start(self) -> None:
        if self.applier is not None:
            self.applier.start()

    def stop(self) -> None:
        if self.applier is not None:
            self.applier.stop()
        self.inbox.close()

    def reload(self) -> None:
        """Deployed workflows changed: every runner reads the catalog again."""
        self._runner.reload()
        if self.applier is not None:
            self.applier.runner.reload()

    def accepted_messages(self, source: str, count: int) -> None:
        if self.applier is not None:
            self.applier.accepted()
        with self.counter_lock:
            self.accepted += count

    @contextmanager
    def runner(self) -> Iterator[Runner]:
        """The runner for direct changes, one caller at a time, behind the write gate."""
        with self._runner_lock, self.gate.short():
            yield self._runner

    def admit(self) -> None:
        """Refuse new messages while the inbox holds more than it should (503)."""
        if self.inbox.backlog > MAX_BACKLOG:
            raise HttpError(
                503,
                "busy",
                f"{self.inbox.backlog} accepted messages are waiting to be applied; retry later",
            )

    async def blocking(self, function: Callable[..., T], *args: Any) -> T:
        return await run_in_threadpool(function, *args)

    async def authorize(self, request: Request, scope: str, body_key: Any = None) -> ApiKey:
        presented = presented_key(request)
        if presented is None and isinstance(body_key, str) and body_key:
            presented = body_key
        if presented is None:
            raise HttpError(401, "unauthorized", "an API key is required")
        key = self.keys.peek(presented)
        if key is None:
            key = await run_in_threadpool(self.keys.check, presented)
        if key is None:
            raise HttpError(401, "unauthorized", "the API key is not valid or was revoked")
        if not key.allows(scope):
            raise HttpError(
                403,
                "permission_denied",
                f"the key {key.name!r} has the {key.scope} scope; this call needs {scope}",
            )
        return key


def service_of(request: Request) -> Service:
    service = request.app.state.service
    assert isinstance(service, Service)
    return service
