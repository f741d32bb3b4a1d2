"""Simulation: the real runner on a throwaway embedded store and a virtual clock that
jumps from one due moment to the next, so months of waits take seconds."""

from __future__ import annotations

import gc
import os
import tempfile
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Index, Table, func, select

from engine.catalog import deploy
from engine.clock import SystemClock, VirtualClock, ensure_utc
from engine.errors import InvalidWorkflow
from engine.runner import BATCH_SIZE, EVENT_COLUMNS, Runner, gc_paused
from engine.segment import Message, Rejection, first_of_each_id, read_lines
from engine.store.db import open_engine, writer
from engine.store.sql import insert_rows
from engine.store.tables import audit, events, quiet_watch, waits
from engine.templates import TemplateCatalog
from engine.validation import Validation, validate_paths
from engine.views import summary_of

Progress = Callable[[int, int], None]


@dataclass
class Simulation:
    result: dict[str, Any]
    events: int
    started: datetime | None
    ended: datetime | None
    parts: int = 1
    """Processes the contacts were split over (see :mod:`engine.simulate_parts`)."""
    failed_runs: list[dict[str, Any]] = field(default_factory=list)
    """Runs that failed (contact, workflow, version, node, at, error): beside ``result``,
    which holds what the contract's ``--json`` object does."""


def read_event_file(
    path: Path, part: tuple[bytes, int] | None = None, anchor: datetime | None = None
) -> tuple[list[Message], list[Rejection]]:
    """Messages sorted by timestamp (stable), and the lines that were rejected.

    A message without a timestamp happened "now": in a simulation that is the moment of the
    message before it in the file (or of the first timestamped one).

    ``part``: only the lines a :class:`engine.shards.ShardPlan` gives to that part (its
    ``line_part`` and the part's number); the others are read as blank lines, so line
    numbers stay those of the file. ``anchor``: the moment of messages without one, if
    known already (:func:`first_timestamp`; every part of a split simulation uses the
    coordinator's, so a file without any timestamp has one "now" for all of them).

    The file is read line by line (never held whole): only the parsed messages stay."""
    messages: list[Message] = []
    rejections: list[Rejection] = []
    # a million messages and their dicts, and no reference cycle among them: without the
    # pause, the cyclic collector walks the growing list again and again (a third of the
    # time it takes to read a 1,000,000-line file)
    with gc_paused(), path.open("rb") as handle:
        if anchor is None:
            anchor = first_timestamp(handle)
            handle.seek(0)
        lines: Iterable[bytes] = handle if part is None else _only_part(handle, *part)
        for item in read_lines(lines, anchor):
            if isinstance(item, Rejection):
                rejections.append(item)
            else:
                messages.append(item)
    messages.sort(key=_timestamp)
    return messages, rejections


def _only_part(lines: Iterable[bytes], line_part: bytes, number: int) -> Iterator[bytes]:
    """The lines of part ``number``, the others blank; lines past the plan are part 0's."""
    known = len(line_part)
    for index, raw in enumerate(lines):
        mine = line_part[index] == number if index < known else number == 0
        yield raw if mine else b""


def _timestamp(message: Message) -> datetime:
    return message.timestamp


def first_timestamp(lines: Iterable[bytes]) -> datetime:
    """The first timestamp in the lines, else the system's "now"."""
    probe = SystemClock().now()
    for item in read_lines(lines, probe):
        if isinstance(item, Message) and item.timestamp != probe:
            return item.timestamp
    return probe


def simulate(
    workflow_paths: Iterable[str | Path] | str | Path,
    events_path: str | Path,
    until: datetime | None = None,
    progress: Progress | None = None,
    database_url: str | None = None,
    jobs: int | None = None,
) -> Simulation:
    """Run ``workflow_paths`` over the history in ``events_path``.

    ``jobs``: processes to simulate in. The history is split into parts whose contacts
    never meet (:mod:`engine.shards`), each simulated on a throwaway store of its own by
    the same runner, and the results are put together; the result is the same as in one
    process. None: one per CPU, as long as each gets :data:`LEAST_PER_PART` messages or
    more. A store of the caller's (``database_url``), and workflows that watch account
    scores (:func:`watches_accounts`), are always simulated in this process."""
    # one path or several, as text or Path; a text is one path, not its letters
    many = [workflow_paths] if isinstance(workflow_paths, str | Path) else workflow_paths
    paths = [Path(p) for p in many]
    events_path = Path(events_path)
    if until is not None:
        if not isinstance(until, datetime) or until.utcoffset() is None:
            raise ValueError(f"until: expected an aware datetime, found {until!r}")
        until = ensure_utc(until)
    validation = validate_paths(paths)
    if not validation.ok:
        raise InvalidWorkflow(list(validation.problems))
    wanted = usable_cpus() if jobs is None else jobs
    if database_url is None and wanted > 1 and not watches_accounts(validation):
        from engine.simulate_parts import simulate_in_parts

        outcome = simulate_in_parts(
            paths, events_path, until, progress, wanted, 0 if jobs else LEAST_PER_PART
        )
        if outcome is not None:
            return outcome
    messages, rejections = read_event_file(events_path)
    count = len(messages)
    start = messages[0].timestamp if messages else None
    with simulation_store(validation, paths, start or _epoch(), database_url) as (runner, clock):
        # a store of the caller's outlives the simulation and gets all its indexes
        run_history(
            runner,
            clock,
            messages,
            rejections,
            until,
            progress,
            str(events_path),
            complete=database_url is not None,
        )
        del messages
        with gc_paused(), runner.engine.connect() as connection:
            made = summary_of(connection)
    ended = clock.now() if count else None
    return Simulation(made.done(), count, start, ended, failed_runs=made.failed)


def watches_accounts(validation: Validation) -> bool:
    """Whether a workflow enters contacts when their account's score crosses a bound. Such
    a crossing is stamped with the latest moment of the batch of messages or waits that
    caused it, and a split simulation ends its batches elsewhere than one process does,
    so these simulations are not split (their outcome would differ)."""
    return any(
        key[0] == "account_score_changed"
        for workflow in validation.workflows
        for trigger in workflow.triggers
        for key in trigger.keys()  # noqa: SIM118 (a trigger kind, not a dict)
    )


LEAST_PER_PART = 25_000
"""Messages a part should hold before :func:`simulate` starts a process for it on its
own: starting one (a Python, the engine's imports, a store) takes a second or two."""


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@contextmanager
def simulation_store(
    validation: Validation,
    paths: list[Path],
    start: datetime,
    database_url: str | None,
    within: Path | None = None,
) -> Iterator[tuple[Runner, VirtualClock]]:
    """A store with the workflows deployed at ``start``, and a runner on a virtual clock
    there: a throwaway SQLite file (deleted afterwards, in a folder made ``within`` the
    one given) unless ``database_url`` is given."""
    with tempfile.TemporaryDirectory(prefix="leadflow-sim-", dir=within) as folder:
        url = database_url or f"sqlite:///{folder}/simulation.db"
        # a store of our own is thrown away at the end: no durability needed
        engine = open_engine(url, durable=database_url is not None)
        try:
            clock = VirtualClock(start)
            with writer(engine).begin() as connection:
                deploy(connection, [*validation.workflows, *validation.models], clock.now())
            # a store that is thrown away keeps only what the run reads back; the summary
            # is built from contacts, scores, lists, accounts and the outbox
            keep = database_url is not None
            yield Runner(engine, clock, TemplateCatalog.near(paths), history=keep), clock
        finally:
            engine.dispose()


def run_history(
    runner: Runner,
    clock: VirtualClock,
    messages: list[Message],
    rejections: list[Rejection],
    until: datetime | None,
    progress: Progress | None,
    source: str,
    complete: bool,
) -> None:
    """A simulation's run of its file: the rejected lines recorded, then the messages
    replayed (:func:`replay_history`), each let go as it is applied, so they are gone
    before a summary is built (``messages`` is emptied)."""
    if rejections:
        runner.ingest(rejections, source=source)
    replay_history(
        runner, clock, messages, until, progress, source=source, consume=True, complete=complete
    )


def replay_history(
    runner: Runner,
    clock: VirtualClock,
    messages: list[Message],
    until: datetime | None,
    progress: Progress | None = None,
    source: str = "-",
    consume: bool = False,
    complete: bool = True,
) -> None:
    """:func:`run_clock` over ``messages``; on a store without events, its whole history
    is written first (:func:`store_history`) and then only run.

    ``consume``: ``messages`` is let go of (emptied at once when the history is written
    first, else as it is applied); ``complete=False``: the store is thrown away after, so
    the index :func:`store_history` leaves out is not built (:func:`complete_history`)."""
    stored = history_is_empty(runner.engine)
    history = messages
    if stored:
        history = store_history(runner.engine, messages, until)
        if consume:
            messages.clear()  # ``history`` holds them now, and lets them go as it runs
    run_clock(
        runner,
        clock,
        history,
        until,
        progress,
        source=source,
        consume=consume or stored,
        stored=stored,
    )
    if stored and complete:
        complete_history(runner.engine)


def run_clock(
    runner: Runner,
    clock: VirtualClock,
    messages: list[Message],
    until: datetime | None,
    progress: Progress | None = None,
    source: str = "-",
    consume: bool = False,
    stored: bool = False,
) -> None:
    """Apply messages in timestamp order, and every timed wake between them at its own
    moment. Without ``until``, go on after the last message until every wait the messages
    started has come due (schedules alone do not keep the clock going).

    ``consume``: each message is replaced in ``messages`` by a placeholder once applied,
    so the list does not keep them all alive until the end. ``stored``: the messages are
    in the store already (:func:`store_history`) and are only run."""
    # The messages (a million objects or more) live until they are applied; frozen, the
    # cyclic collector no longer walks them after every batch (about 2 s of a
    # 1,000,000-event backtest). Reference counting still frees each one once applied.
    # The collector itself is paused and sweeps between steps (:func:`_sweep`).
    gc.freeze()
    try:
        with gc_paused():
            _run_clock(runner, clock, messages, until, progress, source, consume, stored)
    finally:
        gc.unfreeze()


def _run_clock(
    runner: Runner,
    clock: VirtualClock,
    messages: list[Message],
    until: datetime | None,
    progress: Progress | None,
    source: str,
    consume: bool,
    stored: bool,
) -> None:
    total = len(messages)
    index = steps = 0
    while True:
        next_event = messages[index].timestamp if index < total else None
        if next_event is None and until is not None:
            # with --until the clock goes on to it: schedules fire on the way
            next_timer = runner.next_due(include_waits=True)
        else:
            next_timer = _next_timer(runner, finite_only=next_event is None)
        candidates = [m for m in (next_event, next_timer) if m is not None]
        if not candidates:
            return
        moment = min(candidates)
        if until is not None and moment > until:
            # even when a message at ``until`` itself has brought the clock there: the
            # waits due after that batch's first message and by ``until`` are still to run
            clock.advance_to(until)
            runner.run_timers(until)
            return
        if next_timer is not None and next_timer <= moment:
            clock.advance_to(next_timer)
            runner.run_timers(next_timer)
            steps += 1
            _sweep(steps)
            continue
        end = index
        # a quiet spell started by a message of this batch must not come due inside it
        horizon = min(
            (t.quiet_for.after(messages[index].timestamp) for _, _, t in runner.catalog.quiet),
            default=None,
        )
        while (
            end < total
            and end - index < BATCH_SIZE
            and (next_timer is None or messages[end].timestamp < next_timer)
            and (end == index or horizon is None or messages[end].timestamp < horizon)
            and (until is None or messages[end].timestamp <= until)
        ):
            end += 1
        clock.advance_to(messages[end - 1].timestamp)
        runner.resume_due(messages[index].timestamp, limit=10**9)
        runner.ingest(messages[index:end], source=source, batch_size=BATCH_SIZE, stored=stored)
        if consume:
            messages[index:end] = [_SPENT] * (end - index)
        index = end
        steps += 1
        _sweep(steps)
        if progress is not None:
            progress(index, total)


def _sweep(step: int) -> None:
    """The cyclic collector's work between two steps of a replay, which runs with it
    paused: the youngest objects every step, older ones every 10th and 100th (the
    collector's own rhythm). Between steps a batch's objects are gone already; left to
    itself, the collector resumed at each batch's end and walked all of them once more
    while they were still alive (4 % of a 500,000-event replay)."""
    gc.collect(2 if step % 100 == 0 else 1 if step % 10 == 0 else 0)


def history_is_empty(engine: Engine) -> bool:
    """No event stored yet: a replay may write its whole history first."""
    with engine.connect() as connection:
        return connection.scalar(select(events.c.id).limit(1)) is None


HISTORY_CHUNK = 20_000
"""Events per INSERT batch of :func:`store_history`."""


def store_history(engine: Engine, messages: list[Message], until: datetime | None) -> list[Message]:
    """Write a simulation's whole history (up to ``until``) into its fresh store at once,
    and return the messages left to run: the first of each messageId, in time order.

    A replay on a throwaway store knows every event before it starts. Written one batch
    at a time, as ingestion does, each event lands at a random place in the messageId
    and the contact indexes, both bigger than the page cache, which cost 13 of a
    1,000,000-event backtest's 76 s. Here the rows go in by messageId, so that index
    grows at its end, and the contact index is built afterwards, sorted in one pass.

    The replay sees the same history: every query of events during a run reads only
    events up to the run's moment (``timestamp <= now``), and a merge re-points the
    source contact's events whenever they happened. Events of one moment are all seen
    together, where batch by batch an event could miss one of its own moment that fell
    into the next batch. An event's ``received_at`` is its own moment."""
    with gc_paused():
        return _store_history(engine, messages, until)


def _store_history(
    engine: Engine, messages: list[Message], until: datetime | None
) -> list[Message]:
    kept = first_of_each_id(messages)
    # the messages after ``until`` are never run: returned, but not stored
    written = len(kept) if until is None else bisect_right(kept, until, key=_timestamp)
    order = sorted(range(written), key=lambda i: kept[i].message_id or "")
    contact_index = _index(events, "ix_events_contact_ts_name")
    with writer(engine).begin() as connection:
        contact_index.drop(connection)
        # nothing reads the audit while a replay runs: its index is built once at the end,
        # for a store that is kept (complete_history), instead of growing at random places
        _index(audit, AUDIT_INDEX).drop(connection)
        for start in range(0, written, HISTORY_CHUNK):
            rows = []
            for i in order[start : start + HISTORY_CHUNK]:
                m = kept[i]
                rows.append(
                    (
                        m.message_id,
                        m.contact_id,
                        m.type,
                        m.event,
                        m.properties or m.traits,
                        m.timestamp,
                        m.timestamp,
                    )
                )
            insert_rows(connection, events, EVENT_COLUMNS, rows)
        contact_index.create(connection)
    return kept


AUDIT_INDEX = "ix_audit_contact_at"


def complete_history(engine: Engine) -> None:
    """Build the index :func:`store_history` left out (the audit's, by contact), for a
    replayed store that is kept: ``contacts show`` and ``explain`` read it."""
    with writer(engine).begin() as connection:
        _index(audit, AUDIT_INDEX).create(connection, checkfirst=True)


def _index(table: Table, name: str) -> Index:
    (index,) = (i for i in table.indexes if i.name == name)
    return index


def _next_timer(runner: Runner, finite_only: bool) -> datetime | None:
    """Next quiet spell or schedule; once the messages are used up, only while waits or
    quiet spells are still pending, so the simulation ends."""
    due = runner.next_due(include_waits=finite_only)
    if not finite_only or due is None:
        return due
    with runner.engine.connect() as connection:
        pending = connection.scalar(select(func.count()).select_from(waits)) or 0
        quiet = (
            connection.scalar(
                select(func.count())
                .select_from(quiet_watch)
                .where(quiet_watch.c.fired_at.is_(None))
            )
            or 0
        )
    if not pending and not (quiet and runner.catalog.quiet):
        return None
    return due


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


_SPENT = Message("track", "", _epoch())
"""What ``run_clock(consume=True)`` leaves in place of a message it applied."""
