"""One line about the machine a bench ran on, printed before its figures.

The goals in issue 4 are absolute (events a second, seconds for a simulation), and the
machines these benches run on have differed by three to four times in speed from one
session to the next. Two small workloads timed in the same run say which kind of machine a
figure came from, so figures from two runs can be compared; the ratio to each bench's own
baseline is what stays put. Both are needed: on session 12's machine an empty loop ran as
fast as on the fastest machine before it, while everything that works through memory
(the benches, and the dict below) ran three times slower."""

from __future__ import annotations

import os
import random
import time

LOOP_STEPS = 10_000_000
DICT_KEYS = 1_000_000


def loop_seconds(steps: int = LOOP_STEPS, tries: int = 3) -> float:
    """The best of ``tries`` timings of an empty ``for`` loop of ``steps`` steps: the
    interpreter's speed, in the processor's caches."""
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        for _ in range(steps):
            pass
        best = min(best, time.perf_counter() - start)
    return best


def dict_seconds(keys: int = DICT_KEYS) -> float:
    """A dict of ``keys`` random text keys to small tuples, built and its keys sorted:
    about 200 MB touched, what the engine's batches do to memory."""
    rng = random.Random(20260105)
    start = time.perf_counter()
    table = {f"c{rng.getrandbits(40):012x}": (n, str(n)) for n in range(keys)}
    ordered = sorted(table)
    seconds = time.perf_counter() - start
    del table, ordered
    return seconds


def machine_line() -> str:
    load = os.getloadavg()[0]
    return (
        f"machine: {os.cpu_count()} CPUs; a 10M-step Python loop takes {loop_seconds():.2f} s "
        f"(best of 3), a 1M-key dict built and sorted {dict_seconds():.2f} s; "
        f"load average {load:.1f}"
    )
