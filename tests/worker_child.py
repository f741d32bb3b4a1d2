"""Child process for tests/test_worker.py (a script, not a test module).

python worker_child.py drain URL BATCH [PAUSE_MS]
    The real :class:`engine.worker.Worker` job (``resume_waits``) in a loop until no wait
    is left. Prints ``ready`` once connected, waits for a line on stdin (so two children
    start together), then prints one JSON line: owner, resumed, batches, seconds.
    PAUSE_MS: a pause after each batch, outside any transaction, so that on SQLite (whose
    busy wait is not fair) the other process gets the write lock now and then.

python worker_child.py hang URL LIMIT NOW_ISO
    Test-only crash point: takes LIMIT due waits at NOW_ISO (on PostgreSQL with a
    10-minute lease, committed first; on SQLite inside the resuming transaction), resumes
    them in one transaction, writes every change, then prints ``flushed`` and sleeps
    before the COMMIT, waiting to be SIGKILLed mid-batch.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta

from sqlalchemy import func, select

from engine.clock import SystemClock, VirtualClock
from engine.runner import Runner
from engine.state import Batch
from engine.store.db import open_engine
from engine.store.tables import waits
from engine.worker import Worker, WorkerSettings


class CountingRunner(Runner):
    """A Runner that counts its non-empty batches and pauses after each."""

    batches = 0
    pause = 0.0

    def resume_due(
        self,
        now: datetime,
        limit: int = 1000,
        lease: timedelta = timedelta(minutes=5),
        chunk: int | None = None,
    ) -> int:
        done = super().resume_due(now, limit, lease, chunk)
        if done:
            self.batches += 1
            time.sleep(self.pause)
        return done


def drain(url: str, batch: int, pause: float) -> None:
    engine = open_engine(url)
    runner = CountingRunner(engine, SystemClock())
    runner.pause = pause
    worker = Worker(runner, WorkerSettings(batch=batch))
    runner.catalog  # noqa: B018 - load the catalog before the start line
    with engine.connect() as connection:
        connection.scalar(select(func.count()).select_from(waits))
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.perf_counter()
    deadline = time.monotonic() + 120
    while True:
        worker.resume_waits()
        with engine.connect() as connection:
            left = connection.scalar(select(func.count()).select_from(waits))
        if not left:
            break
        if time.monotonic() > deadline:
            sys.exit(f"{left} wait(s) still there after 120 s")
        time.sleep(0.02)  # the other worker holds the leases on what is left
    print(
        json.dumps(
            {
                "owner": runner.owner,
                "resumed": worker.resumed,
                "batches": runner.batches,
                "seconds": round(time.perf_counter() - started, 3),
            }
        ),
        flush=True,
    )


def hang(url: str, limit: int, now: datetime) -> None:
    flush = Batch.flush

    def flush_then_hang(self: Batch) -> None:
        flush(self)
        print("flushed", flush=True)
        time.sleep(3600)

    Batch.flush = flush_then_hang  # type: ignore[method-assign]
    engine = open_engine(url)
    Runner(engine, VirtualClock(now)).resume_due(now, limit, timedelta(minutes=10))
    sys.exit("the transaction was not supposed to get here")


if __name__ == "__main__":
    mode, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "drain":
        drain(url, count, int(sys.argv[4]) / 1000 if len(sys.argv) > 4 else 0.0)
    elif mode == "hang":
        hang(url, count, datetime.fromisoformat(sys.argv[4]))
    else:
        sys.exit(f"unknown mode {mode!r}")
