"""WAL checkpoints off the writers' path, for a long-running worker on a SQLite file.

In WAL mode SQLite copies the log back into the database file (a checkpoint) inside the
commit that takes the log past ``wal_autocheckpoint`` pages, so whichever transaction
happens to cross the line pays for everyone's pages: a decay tick over a million scores
commits about 600 MB of log and then spent a further 0.6-1.3 s copying it back before
its commit returned (bench/bench_decay.py). SQLite's documentation suggests the remedy
used here for applications that mind the latency: turn the automatic checkpoint off on
the writing connections and run checkpoints from a thread of their own. A ``PASSIVE``
checkpoint never waits for readers or writers; what it cannot copy yet is copied by the
next one.

Only the worker does this, as it is the process that runs for long. Other processes keep
SQLite's automatic checkpoints, and the last connection to close a store checkpoints it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

log = logging.getLogger("leadflow.checkpoints")

WAL_KEEP_BYTES = 64 * 1024 * 1024
"""After a checkpoint has emptied the log, SQLite starts it again from the top; this
truncates a log that a large transaction grew back to this size, so a tick's 600 MB are
not kept on disk until the store closes."""


def is_sqlite_file(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


@dataclass
class Checkpointer:
    """Turns the automatic checkpoint off on ``engine``'s connections and checkpoints
    every few seconds in a thread of its own (:meth:`start`), or when asked (:meth:`run`).
    A thread rather than a scheduler job: the worker's first drain of due waits runs
    before its scheduler starts, and its log must be copied back as it grows too."""

    engine: Engine
    checkpoints: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def install(self) -> None:
        """From now on, connections of ``engine`` leave checkpoints to :meth:`run`."""

        def no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")
            dbapi_connection.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")

        event.listen(self.engine, "connect", no_autocheckpoint)
        # Connections already in the pool were opened with the automatic checkpoint on.
        self.engine.dispose(close=True)

    def run(self) -> int:
        """One ``PASSIVE`` checkpoint; returns how many pages of the log are now in the
        database file (SQLite counts those copied by earlier checkpoints of the same
        log too)."""
        raw = self.engine.raw_connection()
        try:
            busy, _logged, copied = raw.driver_connection.execute(  # type: ignore[union-attr]
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        finally:
            raw.close()
        if busy:
            log.debug("checkpoint could not get its lock; the next one will")
            return 0
        self.checkpoints += 1
        return max(int(copied), 0)

    def start(self, seconds: float) -> None:
        """:meth:`install`, then checkpoint every ``seconds`` until :meth:`stop`."""
        self.install()

        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    self.run()
                except Exception:  # a failed checkpoint is retried on the next round
                    log.exception("WAL checkpoint failed")

        self._thread = threading.Thread(target=loop, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and copy back what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.run()
