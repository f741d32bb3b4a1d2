"""The embedding API end to end on both backends: deploy, track, read back."""

from __future__ import annotations

from helpers import at

from engine.api import Leadflow
from engine.clock import VirtualClock


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
