"""The worker: an APScheduler 3 scheduler with a few fixed jobs, never one job per contact.

Jobs use ``max_instances=1``, ``coalesce=True`` and no misfire grace limit, so a paused or
overloaded worker catches up instead of skipping. Any number of workers can share one
PostgreSQL database: waits are leased with ``FOR UPDATE SKIP LOCKED``, each contact is
locked while it runs, and each cron time is taken by one worker only.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType

from apscheduler.events import EVENT_SCHEDULER_START
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler

from engine.runner import BATCH_SIZE, Runner

log = logging.getLogger("leadflow.worker")


SQLITE_WAIT_BATCH = 50_000
"""Due waits resumed per transaction on SQLite. Due waits lie at random places in ``waits``,
``runs`` and ``scores``, and SQLite logs, and checkpoints at commit, every page a
transaction touched: 10,000 waits out of 1,000,000 touch most pages of those b-trees, so
a bigger transaction shares the same pages among more waits (1,000,000 due waits: 7,732/s
at 10,000 a transaction, 15,546/s at 50,000; bench/README.md, "Sixth round"). The worker
works through such a batch ``BATCH_SIZE`` contacts at a time (``Runner.resume_due(chunk=
...)``), so its memory stays that of ``BATCH_SIZE``. Other writers (ingest, the HTTP
service's inbox drain) wait for the transaction: about three seconds for a score update
here, longer for heavier workflows; twice the batch was faster still (bench/README.md,
"Seventh round") but would double that wait."""


def wait_batch(dialect: str) -> int:
    """Due waits per transaction when none is set: :data:`SQLITE_WAIT_BATCH` on SQLite,
    ``BATCH_SIZE`` on PostgreSQL, where workers share a backlog a batch at a time."""
    return SQLITE_WAIT_BATCH if dialect == "sqlite" else BATCH_SIZE


def wait_lease(dialect: str, batch: int | None = None) -> tuple[int, int | None]:
    """Due waits per transaction (``batch``, else :func:`wait_batch`) and contacts per
    part of it (``Runner.resume_due``'s ``chunk``): ``BATCH_SIZE`` on SQLite, one part on
    PostgreSQL, where one part keeps one lock order."""
    return (
        wait_batch(dialect) if batch is None else batch,
        BATCH_SIZE if dialect == "sqlite" else None,
    )


@dataclass
class WorkerSettings:
    batch: int | None = None
    """Waits resumed per transaction; ``None``: :func:`wait_batch` for the store."""
    lease: timedelta = timedelta(minutes=5)
    wait_poll_seconds: float = 1.0
    timers_poll_seconds: float = 30.0
    reaper_seconds: float = 60.0
    catalog_refresh_seconds: float = 15.0
    delivery_poll_seconds: float = 2.0
    delivery_batches: int = 10
    """Outbox batches per delivery run, so a backlog does not hold up due waits."""

    def __post_init__(self) -> None:
        if self.batch is not None and self.batch < 1:  # SQLite reads LIMIT -1 as no limit
            raise ValueError(f"batch must be at least 1 waits per transaction, not {self.batch}")


@dataclass
class Worker:
    runner: Runner
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    resumed: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    _timers_due: tuple[datetime, datetime | None] | None = field(default=None, repr=False)
    """(when looked up, the timers' next moment): next_due costs queries per cron
    workflow, so the every-second job looks it up again only once it has come, or when
    the timers job's period has passed (a deploy or a backdated event since)."""

    def _timer_due_by(self, now: datetime) -> bool:
        known = self._timers_due
        fresh = known is not None and (now - known[0]).total_seconds() < (
            self.settings.timers_poll_seconds
        )
        if known is None or not fresh or (known[1] is not None and known[1] <= now):
            known = (now, self.runner.next_due(include_waits=False))
            self._timers_due = known
        return known[1] is not None and known[1] <= now

    def resume_waits(self) -> None:
        """Drain due waits batch by batch; stop between batches when asked to.

        When a quiet spell, cron time or decay tick has come due, the waits due before it
        go first, then it, then the rest (:meth:`catch_up`), as a simulation runs them:
        the timers job comes only every 30 s, and a wait resumed before a cron time that
        fell due a few seconds earlier changed what its segment found. A timer that
        fails is left to the timers job to report."""
        if self._timer_due_by(self.runner.clock.now()):
            try:
                self.catch_up()
            except Exception:  # logged by the runner when it failed; reported every 30 s
                log.debug("a timer failed while catching up; the timers job reports it")
            return
        batch, chunk = wait_lease(self.runner.engine.dialect.name, self.settings.batch)
        while not self.stopping.is_set():
            done = self.runner.resume_due(
                self.runner.clock.now(), batch, self.settings.lease, chunk=chunk
            )
            self.resumed += done
            if not done:
                return

    def timers(self) -> None:
        self.runner.fire_timers(self.runner.clock.now())

    def catch_up(self) -> None:
        """What came due while no worker ran, in time order (as Runner.run_timers): the
        waits due by each missed cron time, quiet spell or decay tick, then that timer."""
        now = self.runner.clock.now()
        previous = None
        while not self.stopping.is_set():
            step = self.runner.next_due(include_waits=False)
            if step is None or step > now or (previous is not None and step <= previous):
                step = now
            batch, chunk = wait_lease(self.runner.engine.dialect.name, self.settings.batch)
            while not self.stopping.is_set():
                done = self.runner.resume_due(step, batch, self.settings.lease, chunk=chunk)
                self.resumed += done
                if not done:
                    break
            if self.stopping.is_set():
                return
            try:
                self.runner.fire_timers(step)
            except Exception:  # logged by the runner; the scheduler's timers job retries
                if step >= now:
                    raise
            if step >= now:
                return
            previous = step

    def reap(self) -> None:
        released = self.runner.release_leases(self.runner.clock.now())
        if released:
            log.warning("released %d expired wait lease(s)", released)

    def refresh(self) -> None:
        self.runner.reload()

    def deliver(self) -> None:
        """Deliver due outbox messages (engine/messaging/delivery.py)."""
        from engine.messaging.delivery import Deliverer

        deliverer = Deliverer(self.runner.engine, self.runner.clock, owner=self.runner.owner)
        for _ in range(self.settings.delivery_batches):
            if self.stopping.is_set() or not deliverer.deliver_batch().claimed:
                return

    def scheduler(self) -> BlockingScheduler:
        scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
            timezone="UTC",
        )
        s = self.settings
        scheduler.add_job(
            self.resume_waits, "interval", seconds=s.wait_poll_seconds, id="resume-waits"
        )
        scheduler.add_job(self.timers, "interval", seconds=s.timers_poll_seconds, id="timers")
        scheduler.add_job(self.reap, "interval", seconds=s.reaper_seconds, id="lease-reaper")
        scheduler.add_job(
            self.deliver, "interval", seconds=s.delivery_poll_seconds, id="deliver-outbox"
        )
        scheduler.add_job(
            self.refresh, "interval", seconds=s.catalog_refresh_seconds, id="catalog-refresh"
        )
        return scheduler

    def run(self) -> None:
        """Run until SIGTERM/SIGINT; the batch in hand is finished, then the worker exits."""
        scheduler = self.scheduler()

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current batch, then stopping", signum)
            self.stopping.set()
            if scheduler.running:  # not yet during the start-up drain below
                # From another thread: the handler runs in the main thread, perhaps
                # inside the scheduler's loop, which holds its job store lock (an RLock,
                # so a shutdown here would get it too) and then updated a job the
                # shutdown had just removed: JobLookupError, exit 1. The thread waits
                # for the loop to let go of the lock.
                threading.Thread(target=_shut_down, args=(scheduler,)).start()

        def started(_event: object) -> None:
            if self.stopping.is_set() and scheduler.running:  # asked before start()
                scheduler.shutdown(wait=False)
                return
            s = self.settings
            log.info(
                "worker %s started: due waits every %g s, timers every %g s, outbox every %g s",
                self.runner.owner,
                s.wait_poll_seconds,
                s.timers_poll_seconds,
                s.delivery_poll_seconds,
            )

        scheduler.add_listener(started, EVENT_SCHEDULER_START)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.catch_up()
        scheduler.start()


def _shut_down(scheduler: BlockingScheduler) -> None:
    # a second signal, or the start-up listener, may have been first
    with contextlib.suppress(SchedulerNotRunningError):
        scheduler.shutdown(wait=False)
