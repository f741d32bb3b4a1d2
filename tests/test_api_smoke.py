"""The embedding API end to end on both backends: deploy, track, read back."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import at
from sqlalchemy import func, select, update

from engine.api import Leadflow
from engine.catalog import deploy
from engine.clock import VirtualClock
from engine.model import compile_workflow
from engine.store.db import make_engine
from engine.store.tables import events, rejected, waits, workflow_status


def compiled(documents: list[dict[str, Any]]) -> list[Any]:
    return [compile_workflow(d) for d in documents]


def test_deploy_track_and_read_back(store_url: str) -> None:
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow(store_url, clock) as flow:
        flow.deploy(["workflows/consideration-stage.json", "workflows/score-bands.json"])
        first = flow.track(
            "ann@acme.com", "Quote Requested", timestamp=at("2026-01-05 10:00"), message_id="m1"
        )
        again = flow.track(
            "ann@acme.com", "Quote Requested", timestamp=at("2026-01-05 10:01"), message_id="m1"
        )
        contact = flow.contact("ann@acme.com", history=True)
    assert (first.taken, again.taken, again.duplicates) == (1, 0, 1)
    assert contact["scores"] == {"SCORE": 30}
    assert contact["lists"] == ["Warm leads"]
    assert [c["new"] for c in contact["score_history"]] == [30]


def test_an_in_memory_store_runs_due_waits() -> None:
    """``sqlite://`` has one connection: the due-wait query reads the catalog through the
    write transaction's connection, not a second one (which failed with SQLite's
    OperationalError before session 7)."""
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow("sqlite://", clock) as flow:
        flow.deploy(["workflows/consideration-stage.json"])
        assert flow.run_due(at("2026-01-06 10:00")) == 0
        flow.track("ann@acme.com", "Quote Requested", timestamp=at("2026-01-05 10:00"))
        assert flow.contact("ann@acme.com")["scores"] == {"SCORE": 30}


GO = {
    "id": "go",
    "version": 1,
    "triggers": [{"type": "event", "event": "Go"}],
    "reentry": "always",
    "start": "bump",
    "nodes": {"bump": {"type": "update_score", "score": "SCORE", "add": 1}},
}


def test_deploys_and_pauses_made_elsewhere_take_effect_at_the_next_call(store_url: str) -> None:
    """A long-lived object kept its first catalog: a pause, or a new version deployed by
    another process, never reached it (found by a reviewing helper)."""
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow(store_url, clock) as ours, Leadflow(store_url, clock) as theirs:
        ours.deploy([GO])
        ours.track("ann", "Go", message_id="g1")
        theirs.deploy([{**GO, "version": 2, "nodes": {"bump": {**GO["nodes"]["bump"], "add": 10}}}])
        ours.track("ann", "Go", message_id="g2")
        assert ours.contact("ann")["scores"] == {"SCORE": 11}
        with theirs.engine.begin() as connection:
            connection.execute(
                update(workflow_status)
                .where(workflow_status.c.workflow_id == "go")
                .values(paused=True)
            )
        ours.track("ann", "Go", message_id="g3")
        assert ours.contact("ann")["scores"] == {"SCORE": 11}


def test_bad_messages_from_python_are_rejected_and_the_good_ones_taken(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow(f"sqlite:///{tmp_path / 's.db'}", clock) as flow:
        flow.deploy(GO)  # one document, not a list of its keys
        good = {"type": "track", "userId": "ann", "event": "Go", "messageId": "ok"}
        report = flow.send(
            [
                good,
                {
                    "type": "track",
                    "userId": "bob",
                    "event": "Go",
                    "properties": {"d": at("2026-01-01 00:00")},
                },
                {
                    "type": "track",
                    "userId": "bob",
                    "event": "Go",
                    "properties": {"x": float("nan")},
                },
                None,  # type: ignore[list-item]
                "track",  # type: ignore[list-item]
            ]
        )
        assert (report.taken, report.rejected) == (1, 4)
        with flow.engine.connect() as connection:
            reasons = list(connection.scalars(select(rejected.c.reason).order_by(rejected.c.id)))
        assert reasons[0] == (
            "the message is not JSON: Object of type datetime is not JSON serializable"
        )
        assert reasons[1].startswith("the message is not JSON: Out of range float values")
        assert reasons[2:] == [
            "expected a message object, found null",
            'expected a message object, found text "track"',
        ]
        assert flow.track("cid", "Go", properties=["x"]).rejected == 1  # type: ignore[arg-type]
        assert flow.track("cid", "Go", timestamp="2026-01-05T09:00:00Z").taken == 1  # type: ignore[arg-type]
        assert flow.track("cid", "Go", timestamp="soon").rejected == 1  # type: ignore[arg-type]
        lines = flow.ingest_lines(['{"type": "track", "userId": "dan", "event": "Go"}', 7])  # type: ignore[list-item]
        assert (lines.taken, lines.rejected) == (1, 1)
        assert flow.contact("ann")["scores"] == {"SCORE": 1}
        with pytest.raises(TypeError, match="contact_id: expected text, found 5"):
            flow.contact(5)  # type: ignore[arg-type]


def test_a_naive_moment_is_refused_before_any_wait_is_leased(tmp_path: Path) -> None:
    """A naive ``now`` raised half way through the due waits, whose lease then parked
    them for five minutes: a second call at the same moment found nothing due."""
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow(f"sqlite:///{tmp_path / 's.db'}", clock) as flow:
        nodes = {
            "hold": {"type": "wait", "for": "P1D", "next": "bump"},
            "bump": GO["nodes"]["bump"],
        }
        flow.deploy({**GO, "start": "hold", "nodes": nodes})
        flow.track("ann@acme.com", "Go", message_id="q1")
        with pytest.raises(ValueError, match="now: expected an aware datetime"):
            flow.run_due(datetime(2026, 3, 1))
        with pytest.raises(TypeError, match="now: expected a datetime"):
            flow.run_due("2026-03-01")  # type: ignore[arg-type]
        with flow.engine.connect() as connection:
            assert list(connection.scalars(select(waits.c.lease_owner))) == [None]
        assert flow.run_due(at("2026-03-01 00:00")) == 1
        assert flow.contact("ann@acme.com")["scores"] == {"SCORE": 1}


def test_a_given_engine_is_upgraded_and_left_open(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'given.db'}")
    with Leadflow(engine=engine, clock=VirtualClock(at("2026-01-05 10:00"))) as flow:
        flow.deploy([GO])
        flow.track("ann", "Go")
    with engine.connect() as connection:  # still the caller's to use
        assert connection.scalar(select(func.count()).select_from(events)) == 1
    engine.dispose()
    with pytest.raises(TypeError, match="url: expected a database URL as text"):
        Leadflow(123)  # type: ignore[arg-type]


def test_two_processes_deploying_the_same_document_at_once_both_succeed(store_url: str) -> None:
    clock = VirtualClock(at("2026-01-05 10:00"))
    with Leadflow(store_url, clock) as one, Leadflow(store_url, clock) as two:
        with one.engine.begin() as first:
            assert [r.status for r in deploy(first, compiled([GO]), clock.now())] == ["deployed"]
            # the second deploy runs while the first is not committed yet
            outcome: list[Any] = []
            thread = threading.Thread(target=lambda: outcome.append(two.deploy([GO])))
            thread.start()
            thread.join(0.5)
        thread.join(30)
        assert [r.status for r in outcome[0]] == ["unchanged"]
