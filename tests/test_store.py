"""The store on both backends: deploys and versions, pause/resume, concurrent score updates,
audit and outbox rows, migrations."""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import at, pg_database
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select, text, update

from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.errors import DeployConflict, NotALeadflowStore, StoreFromNewerRelease
from engine.runner import new_run_id
from engine.state import Batch
from engine.store.db import current_revision, head_revision, make_engine, upgrade, writer
from engine.store.moments import EPOCH
from engine.store.tables import audit, contacts, events, outbox, runs, waits, workflow_status


def doc(workflow_id: str, nodes: dict[str, Any], triggers: list[Any], **extra: Any) -> Any:
    return {
        "id": workflow_id,
        "version": extra.pop("version", 1),
        "triggers": triggers,
        "start": extra.pop("start", next(iter(nodes))),
        "nodes": nodes,
        **extra,
    }


def on(event: str) -> list[dict[str, str]]:
    return [{"type": "event", "event": event}]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(at("2026-01-05 10:00"))


@pytest.fixture
def flow(store_url: str, clock: VirtualClock) -> Any:
    engine = Leadflow(store_url, clock)
    yield engine
    engine.close()


def rows(engine: Engine, query: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(query))


def set_paused(flow: Leadflow, workflow_id: str, paused: bool) -> None:
    with flow.engine.begin() as connection:
        connection.execute(
            update(workflow_status)
            .where(workflow_status.c.workflow_id == workflow_id)
            .values(paused=paused)
        )
    flow.runner.reload()


# --- deploys and versions -----------------------------------------------------------------

DRIP_V1 = doc(
    "drip",
    {
        "pause": {"type": "wait", "for": "P1D", "next": "tag"},
        "tag": {"type": "add_to_list", "list": "Done v1"},
    },
    on("Start"),
    reentry="always",
)
DRIP_V2 = doc(
    "drip",
    {
        "hold": {"type": "wait", "for": "PT2H", "next": "mark"},
        "mark": {"type": "add_to_list", "list": "Done v2"},
    },
    on("Start"),
    version=2,
    reentry="always",
)


def test_deploy_same_document_is_unchanged_a_different_one_conflicts(flow: Leadflow) -> None:
    (first,) = flow.deploy([DRIP_V1])
    assert (first.workflow_id, first.version, first.status) == ("drip", 1, "deployed")
    (again,) = flow.deploy([dict(DRIP_V1)])
    assert again.status == "unchanged"
    changed = {**DRIP_V1, "name": "Drip, renamed"}
    with pytest.raises(DeployConflict, match="bump 'version'"):
        flow.deploy([changed])
    assert [r.status for r in flow.deploy([DRIP_V1, DRIP_V2])] == ["unchanged", "deployed"]


def test_runs_stay_on_their_version(flow: Leadflow, clock: VirtualClock) -> None:
    flow.deploy([DRIP_V1])
    flow.track("ann", "Start", timestamp=at("2026-01-05 10:00"), message_id="e-1")
    clock.advance_to(at("2026-01-05 11:00"))
    flow.deploy([DRIP_V2])
    flow.track("bob", "Start", timestamp=at("2026-01-05 11:00"), message_id="e-2")
    waiting = rows(flow.engine, select(runs.c.contact_id, runs.c.version, runs.c.node))
    assert sorted(waiting) == [("ann", 1, "pause"), ("bob", 2, "hold")]
    clock.advance_to(at("2026-01-05 13:30"))
    assert flow.run_due() == 1  # bob's two hours are over, ann's day is not
    assert flow.contact("bob")["lists"] == ["Done v2"]
    assert flow.contact("ann")["lists"] == []
    clock.advance_to(at("2026-01-06 10:00"))
    assert flow.run_due() == 1
    assert flow.contact("ann")["lists"] == ["Done v1"]  # v1's nodes, though v2 is newest
    done = rows(flow.engine, select(runs.c.contact_id, runs.c.version, runs.c.state))
    assert sorted(done) == [("ann", 1, "completed"), ("bob", 2, "completed")]


def test_run_ids_are_version_7_uuids_that_sort_by_entry(
    flow: Leadflow, clock: VirtualClock
) -> None:
    """Run ids carry the (injected) moment their run entered, so they sort by it, and the
    waits that come due together sit together in the indexes keyed by run id."""
    flow.deploy([DRIP_V1])
    for hour in range(3):
        clock.advance_to(at(f"2026-01-05 1{hour}:00"))
        for n in range(3):
            flow.track(f"c{n}-{hour}", "Start", timestamp=clock.now(), message_id=f"e-{hour}-{n}")
    stored = rows(flow.engine, select(runs.c.id, runs.c.entered_at))
    assert len(stored) == 9
    for run_id, entered in stored:
        value = uuid.UUID(run_id)
        assert (value.version, value.variant, value.hex) == (7, uuid.RFC_4122, run_id)
        assert int(run_id[:12], 16) == int(entered.timestamp() * 1000)
    by_id = [entered for _, entered in sorted(stored)]
    assert by_id == sorted(by_id)
    assert len({run_id for run_id, _ in stored}) == 9


@given(
    st.datetimes(timezones=st.none() | st.just(UTC)),
    st.datetimes(timezones=st.none() | st.just(UTC)),
)
def test_run_ids_order_like_their_moments_to_the_millisecond(a: datetime, b: datetime) -> None:
    """A naive moment is UTC, as everywhere in the engine, whatever the local zone."""
    first, second = new_run_id(a), new_run_id(b)
    assert len(first) == 32 and uuid.UUID(first).version == 7
    aware = [m if m.tzinfo else m.replace(tzinfo=UTC) for m in (a, b)]
    millis = [min(max((m - EPOCH) // timedelta(milliseconds=1), 0), 2**48 - 1) for m in aware]
    assert [int(i[:12], 16) for i in (first, second)] == millis
    if millis[0] != millis[1]:
        assert (first < second) == (millis[0] < millis[1])


def test_run_ids_from_a_seeded_source_repeat() -> None:
    moment = datetime(2026, 1, 5, 10, tzinfo=UTC)
    ids = [new_run_id(moment, random.Random(7).randbytes) for _ in range(2)]
    assert ids[0] == ids[1] != new_run_id(moment, random.Random(8).randbytes)


def test_pause_blocks_entries_and_holds_waits_resume_releases_them(
    flow: Leadflow, clock: VirtualClock
) -> None:
    flow.deploy([DRIP_V1])
    flow.track("ann", "Start", timestamp=at("2026-01-05 10:00"), message_id="p-1")
    set_paused(flow, "drip", True)
    clock.advance_to(at("2026-01-05 12:00"))
    flow.track("bob", "Start", timestamp=at("2026-01-05 12:00"), message_id="p-2")
    assert rows(flow.engine, select(runs.c.contact_id)) == [("ann",)]
    clock.advance_to(at("2026-01-06 12:00"))  # ann's wait is due, but held
    assert flow.run_due() == 0
    assert flow.contact("ann")["lists"] == []
    set_paused(flow, "drip", False)
    clock.advance_to(at("2026-01-06 12:01"))
    assert flow.run_due() == 1
    assert flow.contact("ann")["lists"] == ["Done v1"]
    assert rows(flow.engine, select(func.count()).select_from(waits)) == [(0,)]
    clock.advance_to(at("2026-01-06 12:02"))
    flow.track("bob", "Start", timestamp=at("2026-01-06 12:02"), message_id="p-3")
    assert sorted(rows(flow.engine, select(runs.c.contact_id, runs.c.state))) == [
        ("ann", "completed"),
        ("bob", "waiting"),
    ]


# --- concurrency --------------------------------------------------------------------------

POINTS = doc("points", {"add": {"type": "update_score", "add": 1}}, on("Act"), reentry="always")
CREATED = doc(
    "created",
    {"add": {"type": "update_score", "score": "CREATED", "add": 1}},
    [{"type": "contact_created"}],
)


def test_two_engines_never_lose_a_score_update(store_url: str) -> None:
    clock = VirtualClock(at("2026-01-06 00:00"))
    with Leadflow(store_url, clock) as setup:
        setup.deploy([POINTS, CREATED])
        setup.track("ann", "Hello", timestamp=at("2026-01-05 09:00"), message_id="hello")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def feed(tag: str) -> None:
        try:
            with Leadflow(store_url, clock) as flow:
                start.wait()
                for first in range(0, 200, 5):
                    flow.send(
                        {
                            "type": "track",
                            "userId": "ann",
                            "event": "Act",
                            "messageId": f"{tag}-{i}",
                            "timestamp": "2026-01-05T10:00:00Z",
                        }
                        for i in range(first, first + 5)
                    )
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    threads = [threading.Thread(target=feed, args=(tag,)) for tag in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    with Leadflow(store_url, clock) as flow:
        assert flow.contact("ann")["scores"] == {"CREATED": 1, "SCORE": 400}
        changes = rows(
            flow.engine,
            select(audit.c.old, audit.c.new).where(audit.c.name == "SCORE").order_by(audit.c.id),
        )
    assert len(changes) == 400
    assert sorted(new for _, new in changes) == list(range(1, 401))
    assert all(new == old + 1 for old, new in changes)


def _while_another_transaction_holds(engine: Engine, hold: Any, then: Any) -> Any:
    """Run ``hold(connection)`` in an open write transaction, start ``then()`` in a thread,
    give it time to reach the rows ``hold`` wrote, commit, and return what ``then`` gave."""
    out: dict[str, Any] = {}
    connection = writer(engine).connect()
    transaction = connection.begin()
    hold(connection)

    def other() -> None:
        try:
            out["value"] = then()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(timeout=0.5)  # blocked on the held rows (PostgreSQL) or the lock (SQLite)
    transaction.commit()
    connection.close()
    thread.join(timeout=30)
    assert "error" not in out, out
    return out["value"]


def test_a_contact_created_by_a_concurrent_transaction_is_not_new_again(store: Engine) -> None:
    now = at("2026-01-05 10:00")

    def load_elsewhere() -> list[str]:
        with writer(store).begin() as connection:
            return Batch(connection).load(["ann", "bob"], now)

    new = _while_another_transaction_holds(
        store, lambda connection: Batch(connection).load(["ann"], now), load_elsewhere
    )
    assert new == ["bob"]


def test_a_message_taken_by_a_concurrent_transaction_is_not_run_twice(
    store_url: str, clock: VirtualClock
) -> None:
    with Leadflow(store_url, clock) as flow:
        flow.deploy([POINTS, CREATED])

        def hold(connection: Any) -> None:  # another worker is ingesting message "dup"
            Batch(connection).load(["ann"], at("2026-01-05 10:00"))
            connection.execute(
                events.insert(),
                {
                    "message_id": "dup",
                    "contact_id": "ann",
                    "type": "track",
                    "name": "Act",
                    "properties": {},
                    "timestamp": at("2026-01-05 10:00"),
                    "received_at": at("2026-01-05 10:00"),
                },
            )

        report = _while_another_transaction_holds(
            flow.engine,
            hold,
            lambda: flow.track("ann", "Act", timestamp=at("2026-01-05 10:00"), message_id="dup"),
        )
        assert (report.taken, report.duplicates) == (0, 1)
        assert flow.contact("ann")["scores"] == {}  # neither 'Act' nor 'created' ran here


# --- audit and outbox ---------------------------------------------------------------------


def test_every_score_change_is_audited_with_its_origin(flow: Leadflow, clock: VirtualClock) -> None:
    flow.deploy(
        [
            doc(
                "stage",
                {
                    "pts": {"type": "update_score", "add": 30, "next": "cap"},
                    "cap": {"type": "update_score", "score": "FIT", "set": 7},
                },
                on("Quote Requested"),
                reentry="always",
            ),
            doc(
                "decay",
                {"cut": {"type": "update_score", "percent": -50}},
                on("Idle"),
                version=3,
            ),
        ]
    )
    flow.track("ann", "Quote Requested", timestamp=at("2026-01-05 10:00"), message_id="q-1")
    clock.advance_to(at("2026-01-05 10:05"))
    flow.track("ann", "Quote Requested", timestamp=at("2026-01-05 10:05"), message_id="q-2")
    flow.track("ann", "Idle", timestamp=at("2026-01-05 10:05"))
    found = rows(
        flow.engine,
        select(
            audit.c.name,
            audit.c.old,
            audit.c.new,
            audit.c.workflow_id,
            audit.c.version,
            audit.c.node,
            audit.c.cause,
        )
        .where(audit.c.subject == "score")
        .order_by(audit.c.id),
    )
    assert [tuple(r) for r in found] == [
        ("SCORE", 0, 30, "stage", 1, "pts", "track Quote Requested (q-1)"),
        ("FIT", 0, 7, "stage", 1, "cap", "track Quote Requested (q-1)"),
        ("SCORE", 30, 60, "stage", 1, "pts", "track Quote Requested (q-2)"),
        ("SCORE", 60, 30, "decay", 3, "cut", "track Idle"),
    ]
    history = flow.contact("ann", history=True)["score_history"]
    assert [h["text"] for h in history][:1] == [
        "+30 SCORE (now 30) by stage v1 on track Quote Requested (q-1), 2026-01-05 10:00"
    ]


def test_outbox_rows_have_unique_idempotency_keys(flow: Leadflow, clock: VirtualClock) -> None:
    flow.deploy(
        [
            doc(
                "thrice",
                {
                    "mail": {"type": "send_email", "template": "nurture-1", "next": "count"},
                    "count": {
                        "type": "set_attribute",
                        "attribute": "sent",
                        "increment": 1,
                        "next": "more",
                    },
                    "more": {
                        "type": "condition",
                        "if": {"attribute": "sent", "lt": 3},
                        "then": "pause",
                        "else": "end",
                    },
                    "pause": {"type": "wait", "for": "P1D", "next": "mail"},
                    "end": {"type": "exit"},
                },
                on("Start"),
            )
        ]
    )
    flow.track("ann", "Start", timestamp=at("2026-01-05 10:00"))
    flow.track("bob", "Start", timestamp=at("2026-01-05 10:00"))
    clock.advance_to(at("2026-01-10 00:00"))
    assert flow.run_due() == 4
    sent = rows(
        flow.engine, select(outbox.c.idempotency_key, outbox.c.contact_id, outbox.c.payload)
    )
    assert len(sent) == 6
    assert len({key for key, _, _ in sent}) == 6
    moments = sorted((c, p["at"]) for _, c, p in sent)
    assert moments == [
        ("ann", "2026-01-05T10:00:00Z"),
        ("ann", "2026-01-06T10:00:00Z"),
        ("ann", "2026-01-07T10:00:00Z"),
        ("bob", "2026-01-05T10:00:00Z"),
        ("bob", "2026-01-06T10:00:00Z"),
        ("bob", "2026-01-07T10:00:00Z"),
    ]


# --- migrations ---------------------------------------------------------------------------


def test_a_database_holding_tables_named_like_leadflows_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as other:
        other.execute("CREATE TABLE contacts (name TEXT)")
        other.execute("CREATE TABLE events (at TEXT)")
        other.execute("CREATE TABLE invoices (n INT)")
    store = make_engine(f"sqlite:///{path}")
    try:
        with pytest.raises(NotALeadflowStore, match="already holds tables named contacts, events:"):
            upgrade(store)
    finally:
        store.dispose()
    with sqlite3.connect(path) as other:
        names = {row[0] for row in other.execute("SELECT name FROM sqlite_master")}
    assert names == {"contacts", "events", "invoices"}
    # a database with only other applications' tables takes Leadflow's beside them
    (tmp_path / "shared.db").touch()
    with sqlite3.connect(tmp_path / "shared.db") as other:
        other.execute("CREATE TABLE invoices (n INT)")
    shared = make_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    try:
        assert upgrade(shared) == head_revision()
    finally:
        shared.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_opening_a_new_store_at_once_all_succeed(backend: str, tmp_path: Path) -> None:
    """Replicas or workers started together on a new store all migrated it at once: 7 of
    8 failed, with "database is locked" on SQLite and a duplicate type on PostgreSQL
    (found by a reviewing helper). They now take turns, and the later ones find the
    store done."""
    code = (
        "import sys; from engine.store.db import open_engine; "
        "open_engine(sys.argv[1]).dispose(); print('opened')"
    )

    def race(url: str) -> None:
        home = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": home}
        started = [
            subprocess.Popen(
                [sys.executable, "-c", code, url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for _ in range(6)
        ]
        answers = [process.communicate(timeout=120) for process in started]
        failed = [err.decode()[-500:] for out, err in answers if out.strip() != b"opened"]
        assert failed == []
        engine = make_engine(url)
        try:
            assert current_revision(engine) == head_revision()
        finally:
            engine.dispose()

    if backend == "sqlite":
        race(f"sqlite:///{tmp_path / 'new.db'}")
    else:
        with pg_database("leadflow_race") as url:
            race(url)


def test_an_engine_with_a_pool_of_one_connection_is_migrated() -> None:
    """The migration lock held one connection while the migration took a second: an
    engine with a pool of one timed out (found by a reviewing helper)."""
    from sqlalchemy import create_engine

    with pg_database("leadflow_pool") as url:
        engine = create_engine(
            url.replace("postgresql://", "postgresql+psycopg://"),
            pool_size=1,
            max_overflow=0,
            pool_timeout=5,
        )
        try:
            assert upgrade(engine) == head_revision() == current_revision(engine)
        finally:
            engine.dispose()


def test_a_store_upgraded_by_a_newer_release_is_refused_and_left_alone(store_url: str) -> None:
    store = make_engine(store_url)
    try:
        upgrade(store)
        with store.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099_future'"))
        with pytest.raises(StoreFromNewerRelease, match=r"'0099_future'.*newer release"):
            upgrade(store)
        assert current_revision(store) == "0099_future"
        # a newer release with a branch beside a head this one knows: two heads
        with store.begin() as connection:
            connection.execute(
                text("UPDATE alembic_version SET version_num = :head"), {"head": head_revision()}
            )
            connection.execute(text("INSERT INTO alembic_version VALUES ('0099_branch')"))
        with pytest.raises(StoreFromNewerRelease, match=r"'0099_branch'.*nothing was changed"):
            upgrade(store)
    finally:  # the PostgreSQL database is shared by this run's tests
        with store.begin() as connection:
            connection.execute(text("DELETE FROM alembic_version"))
            connection.execute(
                text("INSERT INTO alembic_version VALUES (:head)"), {"head": head_revision()}
            )
        store.dispose()


def test_upgrade_is_idempotent_and_keeps_data(store_url: str) -> None:
    engine = make_engine(store_url)
    try:
        head = head_revision()
        assert head is not None
        assert upgrade(engine) == head
        assert current_revision(engine) == head
        with Leadflow(engine=engine) as flow:
            flow.identify("ann", {"plan": "pro"})
        assert upgrade(engine) == head
        assert upgrade(engine) == head
        assert current_revision(engine) == head
        assert rows(engine, select(contacts.c.id, contacts.c.attributes)) == [
            ("ann", {"plan": "pro"})
        ]
    finally:
        engine.dispose()


PEOPLE = [f"p{i}" for i in range(7)]


def daily_schedule(workflow_id: str = "daily", segment: Any = None) -> Any:
    """+1 SCORE at 09:00 UTC each day, for every contact (or those in ``segment``)."""
    bump = {"type": "update_score", "score": "SCORE", "add": 1}
    trigger: dict[str, Any] = {"type": "schedule", "cron": "0 9 * * *"}
    if segment is not None:
        trigger["segment"] = segment
    return doc(workflow_id, {"bump": bump}, [trigger], reentry="always")


def daily_decay(score: str = "SCORE") -> dict[str, Any]:
    """Model ``cooling``: ``score`` loses 10 a day, after 12 hours without a rise."""
    return {
        "kind": "score_model",
        "id": "cooling",
        "version": 1,
        "score": score,
        "decay": {"after": "PT12H", "every": "P1D", "points": 10},
    }


@contextmanager
def two_workers_in_chunks_of_two(
    store_url: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Leadflow, Leadflow]]:
    """Two workers on one store with :data:`PEOPLE` and :func:`daily_schedule`, whose
    fan-outs go two contacts a transaction."""
    import engine.runner as runner_module

    monkeypatch.setattr(runner_module, "BATCH_SIZE", 2)
    with Leadflow(store_url, clock) as first, Leadflow(store_url, clock) as second:
        first.deploy([daily_schedule()])
        first.send([{"type": "identify", "userId": p, "traits": {}} for p in PEOPLE])
        yield first, second


def test_each_schedule_fire_and_decay_tick_is_taken_by_one_worker_only(
    store_url: str, clock: VirtualClock
) -> None:
    """Two workers (two Leadflow objects, two owners) on one store run the same due
    moment: a schedule's fire enters its segment once, a decay tick lowers once. On
    PostgreSQL the claim's rowcount is -1 (SQLAlchemy 2.1 on psycopg), which once read
    as taken by every worker: each fire went out once per worker."""
    from engine.store.tables import schedule_fires

    weekly = daily_schedule("weekly", segment={"in_list": "Members"})
    joins = doc("join", {"add": {"type": "add_to_list", "list": "Members"}}, on("Join"))
    cooling = daily_decay("ACTIVITY")
    activity = doc(
        "act", {"a": {"type": "update_score", "score": "ACTIVITY", "add": 64}}, on("Join")
    )
    first, second = Leadflow(store_url, clock), Leadflow(store_url, clock)
    try:
        first.deploy([weekly, joins, cooling, activity])
        for who in ("ann", "bob"):
            first.track(who, "Join", timestamp=clock.now(), message_id=f"join-{who}")
        later = at("2026-01-07 09:30")  # two daily fires, and a decay tick a day
        assert first.runner.fire_schedules(later) == 4
        assert second.runner.fire_schedules(later) == 0
        assert first.runner.fire_decay(later) == 2  # ann and bob, at 2026-01-06 10:00
        assert second.runner.fire_decay(later) == 0
        with first.engine.begin() as connection:
            (model,) = first.runner.catalog.decaying()
            tick = at("2026-01-20 10:00")
            assert first.runner.take_decay_tick(connection, model, tick)
            assert not second.runner.take_decay_tick(connection, model, tick)
            connection.rollback()
        assert first.contact("ann")["scores"] == {"SCORE": 2.0, "ACTIVITY": 54.0}
        assert first.contact("bob")["scores"] == {"SCORE": 2.0, "ACTIVITY": 54.0}
        assert len(rows(first.engine, select(schedule_fires.c.fire_at))) == 3
    finally:
        first.close()
        second.close()


def test_a_schedule_fan_out_that_stops_part_way_is_finished_from_where_it_stopped(
    store_url: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fire was claimed in one transaction and entered in chunks after it: a chunk
    that failed, or a worker that died, lost the rest of the fire for good (found by a
    reviewing helper). Now the next run goes on after the last chunk that committed, at
    once after a failure, after the lease for a worker that died; nobody twice."""
    import engine.runner as runner_module
    from engine.store.tables import schedule_fires

    people = PEOPLE
    with two_workers_in_chunks_of_two(store_url, clock, monkeypatch) as (first, second):
        enter = runner_module.Wake.enter
        calls: list[str] = []

        def fails_on_the_fifth(wake: Any, state: Any, *args: Any) -> Any:
            calls.append(state.id)
            if len(calls) == 5:
                raise RuntimeError("disk full")
            return enter(wake, state, *args)

        monkeypatch.setattr(runner_module.Wake, "enter", fails_on_the_fifth)
        clock.advance_to(at("2026-01-06 09:30"))
        with pytest.raises(RuntimeError, match="disk full"):
            first.runner.fire_schedules(at("2026-01-06 09:30"))
        scores = {p: first.contact(p)["scores"].get("SCORE", 0) for p in people}
        assert scores == {"p0": 1, "p1": 1, "p2": 1, "p3": 1, "p4": 0, "p5": 0, "p6": 0}
        assert rows(
            first.engine, select(schedule_fires.c.done_through, schedule_fires.c.finished)
        ) == [("p3", False)]
        # the next run, by any worker, goes on after p3
        assert second.runner.fire_schedules(at("2026-01-06 09:30")) == 0  # not yet
        clock.advance_to(at("2026-01-06 09:31"))  # a minute after the failure
        assert second.runner.fire_schedules(at("2026-01-06 09:31")) == 3
        scores = {p: first.contact(p)["scores"].get("SCORE", 0) for p in people}
        assert set(scores.values()) == {1}
        assert rows(first.engine, select(schedule_fires.c.finished)) == [(True,)]
        # a worker that died part way: its lease runs out, then another finishes the fire
        with first.engine.begin() as connection:
            connection.execute(
                update(schedule_fires).values(
                    finished=False, done_through="p4", lease_until=at("2026-01-06 09:35")
                )
            )
        clock.advance_to(at("2026-01-06 09:34"))
        assert second.runner.fire_schedules(at("2026-01-06 09:34")) == 0
        clock.advance_to(at("2026-01-06 09:36"))
        assert second.runner.fire_schedules(at("2026-01-06 09:36")) == 2  # p5 and p6
        scores = {p: first.contact(p)["scores"].get("SCORE", 0) for p in people}
        assert scores == {"p0": 1, "p1": 1, "p2": 1, "p3": 1, "p4": 1, "p5": 2, "p6": 2}


def test_a_long_fan_out_keeps_its_lease_from_the_clock(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fan-out of many chunks renews its lease from the clock's now at each chunk: a
    lease counted from the moment the fire was due ran out while it still worked, and a
    second worker took the rest over beside it."""
    import engine.runner as runner_module

    clock = VirtualClock(at("2026-01-05 10:00"))
    people = PEOPLE
    with two_workers_in_chunks_of_two(store_url, clock, monkeypatch) as (first, second):
        split = runner_module.chunks
        taken_over: list[int] = []

        def slow_chunks(items: Any, size: int) -> Any:
            for number, part in enumerate(split(items, size)):
                if number:  # between chunks (committed): four minutes each, and a look
                    clock.advance_to(clock.now() + timedelta(minutes=4))
                    taken_over.append(second.runner.fire_schedules(clock.now()))
                yield part

        monkeypatch.setattr(runner_module, "chunks", slow_chunks)
        clock.advance_to(at("2026-01-06 09:00"))
        assert first.runner.fire_schedules(at("2026-01-06 09:00")) == 7
        assert taken_over == [0, 0, 0]  # twelve minutes in all, never taken over
        assert {p: first.contact(p)["scores"] for p in people} == {p: {"SCORE": 1} for p in people}


def test_a_schedule_that_always_fails_stops_neither_the_others_nor_decay(
    store_url: str, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its fan-out is retried first in every round: failing, it raised before the other
    schedules and decay ran, so they never did again (found by a reviewing helper)."""
    import engine.runner as runner_module

    cooling = daily_decay("ACTIVITY")
    act = doc("act", {"a": {"type": "update_score", "score": "ACTIVITY", "add": 50}}, on("Go"))
    with Leadflow(store_url, clock) as flow:
        flow.deploy([daily_schedule("aaa"), daily_schedule("zzz"), cooling, act])
        flow.track("ann", "Go", message_id="g1")
        enter = runner_module.Wake.enter

        def poisoned(wake: Any, state: Any, workflow: Any, *args: Any) -> Any:
            if workflow.id == "aaa":
                raise RuntimeError("aaa is broken")
            return enter(wake, state, workflow, *args)

        monkeypatch.setattr(runner_module.Wake, "enter", poisoned)
        for day in ("2026-01-06 09:30", "2026-01-07 09:30"):
            clock.advance_to(at(day))
            with pytest.raises(RuntimeError, match="aaa is broken"):
                flow.run_due()
        scores = flow.contact("ann")["scores"]
        assert scores == {"SCORE": 2.0, "ACTIVITY": 40.0}  # zzz twice; decay at 01-06 10:00
        # aaa's later fires wait for its first: they neither pile up nor overtake it
        from engine.store.tables import schedule_fires

        aaa = select(schedule_fires.c.fire_at, schedule_fires.c.finished).where(
            schedule_fires.c.workflow_id == "aaa"
        )
        assert rows(flow.engine, aaa) == [(at("2026-01-06 09:00"), False)]


def test_a_resumed_model_decays_from_its_resumption(store_url: str, clock: VirtualClock) -> None:
    """Paused for eight days, a model with a daily tick made up all eight at once on
    resume: 90 fell to 10 in one run (found by a reviewing helper)."""
    from engine.store.tables import workflow_status

    cooling = daily_decay()
    with Leadflow(store_url, clock) as flow:
        flow.deploy([cooling, doc("q", {"s": {"type": "update_score", "add": 90}}, on("Q"))])
        flow.track("ann", "Q", message_id="q1")

        def status(paused: bool, when: str) -> None:
            with flow.engine.begin() as connection:
                connection.execute(
                    update(workflow_status)
                    .where(workflow_status.c.workflow_id == "cooling")
                    .values(paused=paused, updated_at=at(when))
                )

        status(True, "2026-01-05 11:00")
        clock.advance_to(at("2026-01-13 11:00"))
        flow.run_due()
        assert flow.contact("ann")["scores"] == {"SCORE": 90}  # paused: nothing
        status(False, "2026-01-13 11:00")
        flow.run_due()
        assert flow.contact("ann")["scores"] == {"SCORE": 90}  # nothing made up
        clock.advance_to(at("2026-01-14 11:00"))
        flow.run_due()
        assert flow.contact("ann")["scores"] == {"SCORE": 80}  # a day after resuming


def test_a_decay_tick_that_fails_is_not_taken_and_runs_again(
    flow: Leadflow, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick's claim commits with its decay: a tick that fails half-way leaves neither
    the claim nor any lowered score behind, and the next run takes it and decays."""
    from engine.scoring import decay
    from engine.store.tables import schedule_fires, scores

    flow.deploy(
        [
            {
                "kind": "score_model",
                "id": "cooling",
                "version": 1,
                "score": "SCORE",
                "decay": {"after": "P7D", "every": "P7D", "points": 10},
            },
            doc("quote", {"s": {"type": "update_score", "score": "SCORE", "add": 50}}, on("Q")),
        ]
    )
    flow.track("ann", "Q", timestamp=at("2026-01-05 10:00"), message_id="q1")
    tick = at("2026-01-12 10:00")  # deployed at 2026-01-05 10:00, every P7D

    def broken(*_: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(decay, "_follow_up", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        flow.runner.fire_decay(tick)
    assert rows(flow.engine, select(schedule_fires.c.fire_at)) == []
    assert rows(flow.engine, select(scores.c.value)) == [(50.0,)]

    monkeypatch.undo()
    assert flow.runner.fire_decay(tick) == 1
    assert rows(flow.engine, select(scores.c.value)) == [(40.0,)]
    assert len(rows(flow.engine, select(schedule_fires.c.fire_at))) == 1
    # and taken once: running it again changes nothing
    assert flow.runner.fire_decay(tick) == 0
    assert rows(flow.engine, select(scores.c.value)) == [(40.0,)]
