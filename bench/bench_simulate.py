"""Simulate 100,000 contacts sending 1,000,000 events over 90 days, with waits.

Inputs (deterministic, seed 20260105): a JSON Lines file of 1,000,000 Segment messages,
10 per contact. Each contact starts on a random moment of the first 60 days with an
identify (FIRSTNAME, job_title) and a Signed Up; 60 % confirm the subscription within six
days; the other 8 (or 7) messages are track events at random moments until day 90: Email
Opened, Email Clicked, Page Viewed (a tenth of them on /pricing), Ebook Downloaded, Event
Attended, Quote Requested and Contact Sales Requested. The shipped workflows run on them:
welcome-series (email, wait 2 days, SMS, wait 5 days, email), double-opt-in (wait for the
confirmation, 7-day timeout), quote-request-fast-track (webhook, wait 1 minute, ...),
awareness-, engagement- and consideration-stage scoring, and score-bands. That is about
300,000 waits started and resumed on the virtual clock.

Measured: ``engine.simulate.simulate`` (what ``leadflow simulate`` runs: validate, read
and sort the file, ingest on a throwaway SQLite store with every wait resumed at its own
moment, then build the summary), in a child process of its own. By default the
simulation splits the contacts over one process per CPU (``--jobs N`` to choose; ``--jobs
1`` for one process); its peak RSS is that of all its processes together, sampled every
20 ms from /proc (the tree of processes looked for every 0.5 s), and its CPU time
(printed beside the wall time) includes its parts'. Baseline, in another child in the
same run: the least a stored simulation does: read the same file, parse it with
orjson, sort by timestamp and store every event in a SQLite table of the same shape, as
the engine stores a history (``engine.simulate.store_history``): with the throwaway
store's pragmas, by messageId with executemany, 20,000 per transaction, and the contact
index built afterwards. Goal (issue 4): under 60 s and under 1 GiB peak RSS.

    python bench/bench_simulate.py            # 100,000 contacts, 1,000,000 events
    python bench/bench_simulate.py --quick    # 10,000 contacts, 100,000 events
    python bench/bench_simulate.py --jobs 1   # in one process, as before session 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from machine import machine_line

SEED = 20260105
ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = [
    "welcome-series",
    "double-opt-in",
    "quote-request-fast-track",
    "awareness-stage",
    "engagement-stage",
    "consideration-stage",
    "score-bands",
]
START = datetime(2026, 1, 5, tzinfo=UTC)
DAYS = 90
TITLES = ["CEO", "CTO", "VP Marketing", "Engineer", "Student", "Analyst"]
LATER = [
    ("Email Opened", 25),
    ("Email Clicked", 15),
    ("Page Viewed", 35),
    ("Ebook Downloaded", 12),
    ("Event Attended", 8),
    ("Quote Requested", 3),
    ("Contact Sales Requested", 2),
]
GOAL_SECONDS = 60.0
GOAL_RSS_KIB = 1024 * 1024


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_events(path: Path, people: int) -> int:
    """Write 10 messages per contact, in contact order (the simulation sorts them)."""
    rng = random.Random(SEED)
    names = [name for name, _ in LATER]
    weights = [weight for _, weight in LATER]
    end = DAYS * 86_400
    number = 0
    with path.open("wb") as out:
        for person in range(people):
            user = f"c{person:06d}@bench.test"
            first = rng.randrange(60 * 86_400)
            messages: list[tuple[int, dict[str, Any]]] = [
                (
                    first,
                    {
                        "type": "identify",
                        "userId": user,
                        "traits": {
                            "FIRSTNAME": f"Name{person}",
                            "job_title": rng.choice(TITLES),
                        },
                    },
                ),
                (first + 1, {"type": "track", "userId": user, "event": "Signed Up"}),
            ]
            if rng.random() < 0.6:
                confirm = first + rng.randrange(60, 6 * 86_400)
                messages.append(
                    (confirm, {"type": "track", "userId": user, "event": "Subscription Confirmed"})
                )
            while len(messages) < 10:
                event = rng.choices(names, weights)[0]
                properties: dict[str, Any] = {}
                if event == "Page Viewed":
                    properties["url"] = "/pricing" if rng.random() < 0.1 else "/blog/post"
                elif event == "Ebook Downloaded":
                    properties["ebook"] = f"Guide {rng.randrange(5)}"
                elif event == "Event Attended":
                    properties["event_name"] = "Webinar"
                track: dict[str, Any] = {"type": "track", "userId": user, "event": event}
                if properties:
                    track["properties"] = properties
                messages.append((rng.randrange(first + 2, end), track))
            for offset, message in messages:
                message["messageId"] = f"m{number:08d}"
                message["timestamp"] = _stamp(START + timedelta(seconds=offset))
                number += 1
                out.write(orjson.dumps(message))
                out.write(b"\n")
    return number


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds() -> float:
    """This process's and its ended children's (a split simulation's parts)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def tree_pids() -> set[int]:
    """This process and all its descendants, now (from /proc)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    parents[int(name)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
    tree, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grew = bool(found)
    return tree


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kib(pids: set[int]) -> int:
    """Resident memory of these processes together, now (those that ended count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE_KIB
        except (OSError, IndexError, ValueError):
            continue
    return total


def tree_rss_kib() -> int:
    """Resident memory of this process and all its descendants, now."""
    return rss_kib(tree_pids())


class TreePeak:
    """The highest resident memory of the process tree seen, sampled every 20 ms in a
    thread: the peak of the simulation's processes taken together (each part's own
    VmHWM, summed, would add peaks that never happen at one time)."""

    def __init__(self) -> None:
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        # the process tree is looked for every 0.5 s (a walk of /proc, about 1 ms, which
        # every 20 ms would take 5 % of a CPU from the simulation); its memory every 20 ms
        samples = 0
        pids: set[int] = set()
        while not self._done.is_set():
            if samples % 25 == 0:
                pids = tree_pids()
            self.peak = max(self.peak, rss_kib(pids))
            samples += 1
            self._done.wait(0.02)

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return max(self.peak, tree_rss_kib())


def child_engine(events: Path, jobs: int | None) -> dict[str, Any]:
    from engine.simulate import simulate

    paths = [ROOT / "workflows" / f"{name}.json" for name in WORKFLOWS]
    sampler = TreePeak()
    start, cpu = time.perf_counter(), cpu_seconds()
    outcome = simulate(paths, events, jobs=jobs)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    tree_peak = sampler.stop()
    contacts = outcome.result["contacts"]
    channels: dict[str, int] = {}
    for message in outcome.result["messages"]:
        channels[message["channel"]] = channels.get(message["channel"], 0) + 1
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_kib": max(tree_peak, peak_rss_kib()),
        "own_peak_kib": peak_rss_kib(),
        "parts": outcome.parts,
        "events": outcome.events,
        "contacts": len(contacts),
        "rejected": len(outcome.result["rejected"]),
        "messages": channels,
        "consent": sum(1 for c in contacts.values() if "CONSENT" in c.get("attributes", {})),
        "first": outcome.started.isoformat() if outcome.started else None,
        "last": outcome.ended.isoformat() if outcome.ended else None,
    }


def child_floor(events: Path, folder: Path) -> dict[str, Any]:
    from engine.simulate import HISTORY_CHUNK  # imported before the clock starts

    start = time.perf_counter()
    with events.open("rb") as handle:
        parsed = [orjson.loads(line) for line in handle]
    parsed.sort(key=lambda m: m["timestamp"])
    db = sqlite3.connect(folder / "floor.db", isolation_level=None)
    for pragma in ("page_size=16384", "journal_mode=TRUNCATE", "synchronous=OFF"):
        db.execute(f"PRAGMA {pragma}")  # what the engine's throwaway store runs with
    db.execute(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, message_id TEXT UNIQUE, "
        "contact_id TEXT NOT NULL, type TEXT NOT NULL, name TEXT, properties TEXT NOT NULL, "
        "timestamp TEXT NOT NULL)"
    )
    # as engine.simulate.store_history writes a history: by messageId, the contact index
    # built once the rows are in
    by_id = sorted(parsed, key=lambda m: m["messageId"])
    for first in range(0, len(by_id), HISTORY_CHUNK):
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO events (message_id, contact_id, type, name, properties, timestamp) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    m["messageId"],
                    m["userId"],
                    m["type"],
                    m.get("event"),
                    orjson.dumps(m.get("properties") or m.get("traits") or {}),
                    m["timestamp"],
                )
                for m in by_id[first : first + HISTORY_CHUNK]
            ],
        )
        db.execute("COMMIT")
    db.execute("CREATE INDEX ix_events_contact_ts_name ON events (contact_id, timestamp, name)")
    db.close()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_kib": peak_rss_kib(), "events": len(parsed)}


def run_child(kind: str, events: Path, folder: Path, jobs: int | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            kind,
            str(events),
            str(folder),
            *(["--jobs", str(jobs)] if jobs else []),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 contacts, 100,000 events")
    parser.add_argument("--contacts", type=int, help="number of contacts (default 100,000)")
    parser.add_argument(
        "--jobs",
        type=int,
        help="processes for the simulation (default: simulate's own choice, one per CPU)",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    if args.child:
        kind, events, folder = args.child
        if kind == "engine":
            print(json.dumps(child_engine(Path(events), args.jobs)))
        else:
            print(json.dumps(child_floor(Path(events), Path(folder))))
        return 0
    people = args.contacts or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
        folder = Path(name)
        events = folder / "events.jsonl"
        start = time.perf_counter()
        count = write_events(events, people)
        written = time.perf_counter() - start
        ours = run_child("engine", events, folder, args.jobs)
        base = run_child("floor", events, folder)
    problems = []
    if ours["events"] != count or base["events"] != count or ours["rejected"]:
        problems.append(f"events: engine {ours['events']}, floor {base['events']}, of {count}")
    if ours["contacts"] != people:
        problems.append(f"contacts: {ours['contacts']} of {people}")
    if ours["messages"].get("email", 0) < people:
        problems.append(f"emails: {ours['messages']} for {people} contacts")
    if ours["consent"] != people:
        problems.append(f"CONSENT set for {ours['consent']} of {people} (double-opt-in)")
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print(
        f"inputs: {people:,} contacts, {count:,} events over {DAYS} days "
        f"({written:.1f} s to write, not timed); workflows: {', '.join(WORKFLOWS)}"
    )
    print(
        f"engine: simulated {ours['first']} .. {ours['last']}; outbox {ours['messages']}; "
        f"CONSENT decided for all {ours['consent']:,} contacts"
    )
    print(
        f"engine: {ours['seconds']:.1f} s wall ({ours['cpu']:.1f} s CPU) in "
        f"{ours['parts']} process{'es' if ours['parts'] > 1 else ''}, peak RSS "
        f"{ours['peak_kib'] / 1024:,.0f} MiB (all its processes together; the coordinator's "
        f"own {ours['own_peak_kib'] / 1024:,.0f} MiB)"
    )
    print(
        f"floor (orjson + sort + sqlite3 executemany of the events): {base['seconds']:.1f} s, "
        f"peak RSS {base['peak_kib'] / 1024:,.0f} MiB"
    )
    print(
        f"ratio: engine takes {ours['seconds'] / base['seconds']:.1f}x the floor's time and "
        f"{ours['peak_kib'] / base['peak_kib']:.1f}x its memory"
    )
    met = ours["seconds"] < GOAL_SECONDS and ours["peak_kib"] < GOAL_RSS_KIB
    size = "" if people == 100_000 else " (set for 100,000 contacts; this run is smaller)"
    print(f"goal (< {GOAL_SECONDS:g} s, < 1 GiB RSS){size}: " + ("met" if met else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
