"""Inactivity spells: cases a review of this session's changes found wrong (session 14),
each failing before its fix."""

from __future__ import annotations

import json
import typing
from importlib.resources import files
from pathlib import Path

import pytest
from helpers import at
from sqlalchemy import select
from test_timed_work_edges import MONTH_WORKFLOW

from engine.api import Leadflow
from engine.clock import VirtualClock, ensure_utc
from engine.kinds import QuietDriven
from engine.simulate import simulate
from engine.store.tables import runs

MOVED_OPENED = {"type": "inactivity", "events": ["Email Opened"], "for": "P30D"}


MOVED_VIEWED = {"type": "inactivity", "events": ["Page Viewed"], "for": "P7D"}


def moved_doc(version: int, triggers: list[dict]) -> dict:
    return {
        "id": "quiet",
        "version": version,
        "name": "q",
        "triggers": triggers,
        "reentry": "always",
        "start": "points",
        "nodes": {"points": {"type": "update_score", "score": "QUIET", "add": 1}},
    }


def test_an_inactivity_trigger_put_in_front_of_another_gets_spells_of_its_own(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([moved_doc(1, [MOVED_OPENED])])
    flow.track("ann", "Email Opened", timestamp=at("2026-01-01 00:00"), message_id="a")
    clock.advance_to(at("2026-02-05 00:00"))
    flow.run_due()  # the Email Opened spell fires on Jan 31
    assert flow.contact("ann")["scores"] == {"QUIET": 1}
    # v2 puts a Page Viewed inactivity trigger in front of the same Email Opened one
    flow.deploy([moved_doc(2, [MOVED_VIEWED, MOVED_OPENED])])
    clock.advance_to(at("2026-02-20 00:00"))
    flow.run_due()
    # ann never viewed a page: quiet for Page Viewed from the deploy (floored to P7D
    # before it), so that spell fires once; the Email Opened spell fired already
    assert flow.contact("ann")["scores"] == {"QUIET": 2}  # HEAD: 1, Page Viewed never fires


def test_two_swapped_inactivity_triggers_keep_their_own_spells(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([moved_doc(1, [MOVED_OPENED, MOVED_VIEWED])])
    flow.track("ann", "Email Opened", timestamp=at("2026-01-01 00:00"), message_id="a")
    clock.advance_to(at("2026-01-10 00:00"))
    flow.run_due()  # the Page Viewed spell (since creation, Jan 1) fired on Jan 8
    assert flow.contact("ann")["scores"] == {"QUIET": 1}
    flow.deploy(
        [moved_doc(2, [MOVED_VIEWED, MOVED_OPENED])]
    )  # the same two triggers, in the other order
    clock.advance_to(at("2026-01-20 00:00"))
    flow.track("ann", "Page Viewed", timestamp=at("2026-01-20 00:00"), message_id="b")
    # the Page Viewed spell that fired on Jan 8 does not fire again
    assert flow.contact("ann")["scores"] == {"QUIET": 1}  # HEAD: 2 (fired again, "Jan 8")
    clock.advance_to(at("2026-02-05 00:00"))
    flow.run_due()
    # Page Viewed quiet from Jan 20 (fires Jan 27); Email Opened from Jan 1 (fires Jan 31)
    assert flow.contact("ann")["scores"] == {"QUIET": 3}


STALE_QUIET = {
    "id": "quiet30",
    "version": 1,
    "name": "q",
    "triggers": [{"type": "inactivity", "events": ["Email Opened"], "for": "P30D"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "QUIET", "add": 1}},
}


STALE_OPENED_POINTS = {
    "id": "opened-points",
    "version": 1,
    "name": "o",
    "triggers": [{"type": "event", "event": "Email Opened"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "SCORE", "add": 1}},
}


STALE_HOT_ACCOUNT = {  # watches an account score: ingest then settles accounts after each message
    "id": "hot-account",
    "version": 1,
    "name": "h",
    "triggers": [{"type": "score_crossed", "score": "SCORE", "above": 1000, "of": "account"}],
    "start": "tag",
    "nodes": {"tag": {"type": "add_to_list", "list": "Hot accounts"}},
}


STALE_HISTORY = [
    {"type": "group", "userId": "ann", "groupId": "acme", "timestamp": "2026-01-01T00:00:00Z"},
    {
        "type": "track",
        "userId": "ann",
        "event": "Email Opened",
        "timestamp": "2026-01-01T00:00:00Z",
    },
]


STALE_LATER = [  # 19 and 21 days apart: ann is never quiet for 30 days
    {
        "type": "track",
        "userId": "ann",
        "event": "Email Opened",
        "timestamp": "2026-01-20T00:00:00Z",
    },
    {
        "type": "track",
        "userId": "ann",
        "event": "Email Opened",
        "timestamp": "2026-02-10T00:00:00Z",
    },
]


def numbered(messages: list[dict]) -> list[dict]:
    return [{**m, "messageId": f"m{i}"} for i, m in enumerate(messages)]


def test_ingest_does_not_fire_a_spell_that_an_earlier_event_of_the_batch_reset(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy([STALE_QUIET, STALE_OPENED_POINTS, STALE_HOT_ACCOUNT])
        flow.send(numbered(STALE_HISTORY))
        clock.advance_to(at("2026-02-10 00:00"))
        flow.send([{**m, "messageId": f"later{i}"} for i, m in enumerate(STALE_LATER)])
        assert "QUIET" not in flow.contact("ann")["scores"]  # HEAD: fired "on Jan 31"


def test_simulate_agrees(tmp_path: Path) -> None:
    for doc in (STALE_QUIET, STALE_OPENED_POINTS, STALE_HOT_ACCOUNT):
        (tmp_path / f"{doc['id']}.json").write_text(json.dumps(doc))
    events = tmp_path / "ev.jsonl"
    events.write_text("".join(json.dumps(m) + "\n" for m in numbered(STALE_HISTORY + STALE_LATER)))
    done = simulate(
        [
            tmp_path / f"{d['id']}.json"
            for d in (STALE_QUIET, STALE_OPENED_POINTS, STALE_HOT_ACCOUNT)
        ],
        events,
        until=at("2026-02-10 00:00"),
        jobs=1,
    )
    assert "QUIET" not in done.result["contacts"]["ann"]["scores"]  # passes


LATE_QUIET = {
    "id": "quiet30",
    "version": 1,
    "name": "q",
    "triggers": [{"type": "inactivity", "events": ["Email Opened"], "for": "P30D"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "QUIET", "add": 1}},
}


def opened(when: str, message_id: str) -> dict:
    return {
        "type": "track",
        "userId": "ann",
        "event": "Email Opened",
        "timestamp": when,
        "messageId": message_id,
    }


def test_a_late_event_in_a_batch_does_not_fire_a_spell_that_did_not_end(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy([LATE_QUIET])
        flow.send([opened("2026-01-01T00:00:00Z", "a")])
        clock.advance_to(at("2026-01-20 00:00"))
        flow.send([opened("2026-01-20T00:00:00Z", "b")])
        clock.advance_to(at("2026-02-10 00:00"))
        # one request: an open from Jan 5 delivered late, then today's open
        flow.send([opened("2026-01-05T00:00:00Z", "late"), opened("2026-02-10T00:00:00Z", "c")])
        # ann opened on Jan 20 and Feb 10: never quiet for 30 days
        assert "QUIET" not in flow.contact("ann")["scores"]  # HEAD: fired "on Feb 4"
        clock.advance_to(at("2026-02-15 00:00"))
        flow.run_due()
        assert "QUIET" not in flow.contact("ann")["scores"]


def test_the_same_messages_sent_one_by_one_agree(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy([LATE_QUIET])
        flow.send([opened("2026-01-01T00:00:00Z", "a")])
        clock.advance_to(at("2026-01-20 00:00"))
        flow.send([opened("2026-01-20T00:00:00Z", "b")])
        clock.advance_to(at("2026-02-10 00:00"))
        flow.send([opened("2026-01-05T00:00:00Z", "late")])
        flow.send([opened("2026-02-10T00:00:00Z", "c")])
        assert "QUIET" not in flow.contact("ann")["scores"]  # passes


def test_ingest_does_no_protocol_isinstance_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([Path(str(files("workflows") / "email-inactivity-reset.json"))])
    checks = 0
    meta = type(QuietDriven)
    original = meta.__instancecheck__

    def counting(cls: type, instance: object) -> bool:
        nonlocal checks
        if cls is QuietDriven:
            checks += 1
        return original(cls, instance)

    monkeypatch.setattr(meta, "__instancecheck__", counting)
    assert meta is typing._ProtocolMeta  # type: ignore[attr-defined]
    flow.send(
        [
            {
                "type": "track",
                "userId": f"c{i % 50}",
                "event": "Email Opened",
                "timestamp": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                "messageId": f"m{i}",
            }
            for i in range(1000)
        ]
    )
    assert checks < 100  # HEAD: 1000, one per event


def test_a_seeded_spell_does_not_end_before_the_deploy(tmp_path: Path) -> None:
    clock = VirtualClock(at("2025-06-01 00:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.identify("old", {}, timestamp=at("2025-06-01 00:00"))  # quiet for ages
        clock.advance_to(at("2026-03-30 12:00"))
        flow.deploy([MONTH_WORKFLOW])
        clock.advance_to(at("2026-04-02 00:00"))
        flow.run_due()
        with flow.engine.connect() as connection:
            entered = [ensure_utc(m) for m in connection.scalars(select(runs.c.entered_at))]
        assert entered  # it does go quiet
        assert min(entered) >= at("2026-03-30 12:00")  # HEAD: 2026-03-28 12:00
