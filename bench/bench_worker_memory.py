"""Memory over a long worker run: RSS while the worker resumes 1,000,000 due waits on SQLite.

Setup (not timed): the store of bench_resume.py (one workflow: wait a day, +5 SCORE, exit;
1,000,000 contacts with one due wait each), bulk-inserted with the plain driver.

Measured: ``Worker.resume_waits()`` with the default ``WorkerSettings`` drains every due wait
(batch by batch, as the scheduled job does), in this process. After every batch the resident
set size is read from /proc/self/status (VmRSS); the figures printed are the RSS before the
first batch and after each tenth of the waits. Baseline, in the same run: the RSS after the
first tenth (100,000 waits). Goal (issue 4): the RSS after all 1,000,000 is within 20 % of
the RSS after 100,000 (memory stays flat; nothing accumulates per wait or per batch).

    python bench/bench_worker_memory.py            # 1,000,000 waits
    python bench/bench_worker_memory.py --quick    # 100,000 waits (after 10,000 is the base)
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from bench_resume import NOW, fill_sqlite, make_rows
from machine import machine_line

from engine.clock import VirtualClock
from engine.runner import Runner
from engine.store.db import WORKER_CHECKPOINT_PAGES, open_engine
from engine.worker import Worker, WorkerSettings, wait_batch

GOAL_GROWTH = 0.20


def rss_kib() -> int:
    """Resident set size of this process, KiB (VmRSS from /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class SampledRunner(Runner):
    """A Runner that notes the RSS after every resume batch, once per mark crossed."""

    marks: list[int]
    samples: dict[int, int]
    resumed_total: int

    def resume_due(
        self,
        now: datetime,
        limit: int = 1000,
        lease: timedelta = timedelta(minutes=5),
        chunk: int | None = None,
    ) -> int:
        done = super().resume_due(now, limit, lease, chunk)
        self.resumed_total += done
        while self.marks and self.resumed_total >= self.marks[0]:
            self.samples[self.marks.pop(0)] = rss_kib()
        return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 waits")
    parser.add_argument("--waits", type=int, help="number of due waits (default 1,000,000)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.waits or (100_000 if args.quick else 1_000_000)
    tenth = count // 10
    folder = Path(tempfile.mkdtemp(prefix="leadflow-bench-"))
    try:
        start = time.perf_counter()
        fill_sqlite(folder / "worker.db", make_rows(count))
        setup = time.perf_counter() - start
        gc.collect()
        engine = open_engine(  # as `leadflow worker` opens its store
            f"sqlite:///{folder}/worker.db", checkpoint_pages=WORKER_CHECKPOINT_PAGES
        )
        runner = SampledRunner(engine, VirtualClock(NOW))
        runner.marks = [tenth * i for i in range(1, 11)]
        runner.samples = {}
        runner.resumed_total = 0
        runner.catalog  # noqa: B018 - loaded before the first sample, as in a running worker
        before = rss_kib()
        worker = Worker(runner, WorkerSettings())
        start = time.perf_counter()
        worker.resume_waits()
        seconds = time.perf_counter() - start
        engine.dispose()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if worker.resumed != count or len(runner.samples) != 10:
        print(f"FAIL: the worker resumed {worker.resumed:,} of {count:,} waits")
        return 1
    print(
        f"inputs: {count:,} due waits on SQLite, worker batch {wait_batch('sqlite'):,}; "
        f"setup {setup:.1f} s (not timed)"
    )
    print(
        f"worker: resumed {worker.resumed:,} waits in {seconds:.1f} s "
        f"({worker.resumed / seconds:,.0f} waits/s)"
    )
    print(f"RSS before the first batch: {before / 1024:,.1f} MiB")
    for mark, kib in runner.samples.items():
        print(f"RSS after {mark:>9,} waits: {kib / 1024:,.1f} MiB")
    base, last = runner.samples[tenth], runner.samples[count]
    growth = last / base - 1
    print(
        f"ratio: RSS after {count:,} is {last / base:.3f}x the RSS after {tenth:,} ({growth:+.1%})"
    )
    met = growth <= GOAL_GROWTH
    print(f"goal (within {GOAL_GROWTH:.0%}): " + ("met" if met else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
