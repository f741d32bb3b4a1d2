"""Backtest 100,000 contacts and 1,000,000 events against a known outcome.

Inputs (deterministic, seed 20260105): a JSON Lines file of 1,000,000 Segment messages, 10 per
contact. Each contact starts on a random moment of the first 90 days with an identify
(job_title) and a Signed Up; the rest are track events over the next 30 days (Email Opened,
Email Clicked, Ebook Downloaded, Event Attended, Page Viewed with a tenth on /pricing, Quote
Requested, Contact Sales Requested), drawn with weights that lean towards the consideration
actions the more "intent" the contact has. Contacts with more intent convert more often:
converters' last message is a Lead Converted, 1 hour to 14 days after their last action
(about 13 % of the contacts). The workflows are the shipped scoring stages
(awareness-, engagement- and consideration-stage) and the sales-ready score model
(workflows/models/sales-ready.json: bands, and decay after 30 days without engagement, 10 %
a week, which the virtual clock runs every week of the 150 days).

Measured: ``engine.backtest.backtest`` of one variant (what ``leadflow backtest`` runs:
validate, read and sort the file, replay it on a throwaway SQLite store on the virtual clock,
then read the audit and work out the figures), in a child process of its own, so its peak RSS
is its alone. Baseline, in another child in the same run: ``engine.simulate.simulate`` of the
same workflows and file in one process (``leadflow simulate --jobs 1``; a backtest replays in
one), so the ratio says what judging the model costs on top of replaying it. Since session 11
that includes the audit log, which the backtest reads and a simulation's throwaway store no
longer writes. Goal (issue 6): under 60 s.

    python bench/bench_backtest.py            # 100,000 contacts, 1,000,000 events
    python bench/bench_backtest.py --quick    # 10,000 contacts, 100,000 events
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from machine import machine_line

SEED = 20260105
ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = [
    ROOT / "workflows" / "awareness-stage.json",
    ROOT / "workflows" / "engagement-stage.json",
    ROOT / "workflows" / "consideration-stage.json",
    ROOT / "workflows" / "models" / "sales-ready.json",
]
OUTCOME = "Lead Converted"
START = datetime(2026, 1, 5, tzinfo=UTC)
PER_CONTACT = 10
TITLES = ["CEO", "CTO", "VP Marketing", "Engineer", "Student", "Analyst"]
# (event, weight for no intent, weight for full intent)
ACTIONS = [
    ("Email Opened", 50, 5),
    ("Email Clicked", 6, 10),
    ("Page Viewed", 35, 20),
    ("Ebook Downloaded", 4, 10),
    ("Event Attended", 4, 5),
    ("Quote Requested", 0.2, 25),
    ("Contact Sales Requested", 0.2, 20),
]
GOAL_SECONDS = 60.0


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_events(path: Path, people: int) -> tuple[int, int]:
    """Write PER_CONTACT messages per contact, in contact order; returns (messages,
    converters)."""
    rng = random.Random(SEED)
    names = [name for name, _, _ in ACTIONS]
    number = converters = 0
    with path.open("wb") as out:
        for person in range(people):
            user = f"c{person:06d}@bench.test"
            first = rng.randrange(90 * 86_400)
            intent = rng.random() ** 3  # most contacts have little
            converts = rng.random() < 0.03 + 0.7 * intent**2
            weights = [low + (high - low) * intent for _, low, high in ACTIONS]
            identify = {"type": "identify", "userId": user}
            identify["traits"] = {"job_title": rng.choice(TITLES)}
            messages: list[tuple[int, dict[str, Any]]] = [
                (first, identify),
                (first + 1, {"type": "track", "userId": user, "event": "Signed Up"}),
            ]
            for _ in range(PER_CONTACT - 2 - converts):
                event = rng.choices(names, weights)[0]
                track: dict[str, Any] = {"type": "track", "userId": user, "event": event}
                if event == "Page Viewed":
                    share = 0.02 + 0.5 * intent
                    url = "/pricing" if rng.random() < share else "/blog/post"
                    track["properties"] = {"url": url}
                elif event == "Ebook Downloaded":
                    track["properties"] = {"ebook": f"Guide {rng.randrange(5)}"}
                elif event == "Event Attended":
                    track["properties"] = {"event_name": "Webinar"}
                messages.append((first + 2 + rng.randrange(30 * 86_400), track))
            if converts:
                last = max(offset for offset, _ in messages)
                moment = last + rng.randrange(3_600, 14 * 86_400)
                messages.append((moment, {"type": "track", "userId": user, "event": OUTCOME}))
                converters += 1
            for offset, message in messages:
                message["messageId"] = f"m{number:08d}"
                message["timestamp"] = _stamp(START + timedelta(seconds=offset))
                number += 1
                out.write(orjson.dumps(message))
                out.write(b"\n")
    return number, converters


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_backtest(events: Path) -> dict[str, Any]:
    from engine.backtest import Variant, backtest

    variant = Variant("shipped", tuple(WORKFLOWS))
    start, cpu = time.perf_counter(), cpu_seconds()
    result = backtest([variant], events, OUTCOME)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    (figures,) = result.as_json()["variants"]
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_kib": peak_rss_kib(),
        "events": result.events,
        "rejected": result.rejected,
        "figures": figures,
    }


def child_simulate(events: Path) -> dict[str, Any]:
    from engine.simulate import simulate

    start, cpu = time.perf_counter(), cpu_seconds()
    outcome = simulate(WORKFLOWS, events, jobs=1)  # in one process, as the backtest
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {
        "seconds": seconds,
        "cpu": cpu,
        "peak_kib": peak_rss_kib(),
        "events": outcome.events,
        "contacts": len(outcome.result["contacts"]),
        "rejected": len(outcome.result["rejected"]),
    }


def run_child(kind: str, events: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(events)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 contacts, 100,000 events")
    parser.add_argument("--contacts", type=int, help="number of contacts (default 100,000)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    print(machine_line(), flush=True)
    if args.child:
        kind, events = args.child
        child = child_backtest if kind == "backtest" else child_simulate
        print(json.dumps(child(Path(events))))
        return 0
    people = args.contacts or (10_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="leadflow-bench-") as name:
        events = Path(name) / "events.jsonl"
        start = time.perf_counter()
        count, converters = write_events(events, people)
        written = time.perf_counter() - start
        ours = run_child("backtest", events)
        base = run_child("simulate", events)
    figures = ours["figures"]
    problems = []
    if ours["events"] != count or base["events"] != count or ours["rejected"]:
        problems.append(f"events: backtest {ours['events']}, simulate {base['events']}, of {count}")
    if figures["contacts"] != people or base["contacts"] != people:
        problems.append(f"contacts: backtest {figures['contacts']}, simulate {base['contacts']}")
    if figures["converters"] != converters:
        problems.append(f"converters: {figures['converters']} of {converters} written")
    banded = sum(band["converters"] for band in figures["converters_per_band"])
    if banded != converters:
        problems.append(f"converters per band add up to {banded}, not {converters}")
    if not figures["sales_ready"] or not (figures["lift"] or 0) > 1:
        problems.append(f"no signal: {figures['sales_ready']} sales-ready, lift {figures['lift']}")
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}")
        return 1
    print(
        f"inputs: {people:,} contacts, {count:,} events, {converters:,} converters "
        f"({written:.1f} s to write, not timed); workflows: "
        + ", ".join(path.stem for path in WORKFLOWS)
    )
    flagged = figures["converted_after_sales_ready"]
    print(
        f"figures: {figures['sales_ready']:,} sales-ready, {flagged:,} converted after; "
        f"quality {figures['quality']:.1%}, recall {figures['recall']:.1%}, "
        f"lift {figures['lift']:.2f}x, median lead time {figures['median_lead_time_days']} days"
    )
    for label, run in (("backtest", ours), ("simulate", base)):
        print(
            f"{label}: {run['seconds']:.1f} s wall, {run['cpu']:.1f} s CPU, "
            f"peak RSS {run['peak_kib'] / 1024:,.0f} MiB"
        )
    print(
        f"ratio: backtest takes {ours['seconds'] / base['seconds']:.2f}x the wall time of a "
        f"plain simulate, {ours['cpu'] / base['cpu']:.2f}x its CPU time and "
        f"{ours['peak_kib'] / base['peak_kib']:.2f}x its memory"
    )
    met = ours["seconds"] < GOAL_SECONDS
    print(f"goal (< {GOAL_SECONDS:g} s): " + ("met" if met else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
