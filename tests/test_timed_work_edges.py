"""Inactivity, schedules, pauses and catching up: cases a reviewing helper found wrong
(session 14), each failing before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
from helpers import at
from sqlalchemy import func, select, update

from engine.api import Leadflow
from engine.clock import VirtualClock, ensure_utc
from engine.simulate import simulate
from engine.store.db import writer
from engine.store.tables import outbox, quiet_watch, runs, workflow_status

MONTH_WORKFLOW = {
    "id": "monthly-quiet",
    "version": 1,
    "name": "m",
    "triggers": [{"type": "inactivity", "events": ["Email Opened"], "for": "P1M"}],
    "reentry": "always",
    "start": "tag",
    "nodes": {"tag": {"type": "add_to_list", "list": "Quiet"}},
}


def test_worker_fires_when_next_due_says_the_spell_ends(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([MONTH_WORKFLOW])
    clock.advance_to(at("2026-01-31 10:00"))
    flow.track("ann", "Email Opened", timestamp=at("2026-01-31 10:00"), message_id="m1")
    due = flow.runner.next_due()
    assert due == at("2026-02-28 10:00")  # one month after Jan 31 = Feb 28
    clock.advance_to(due)
    flow.run_due(due)
    assert flow.contact("ann")["lists"] == ["Quiet"]  # fails: not fired until 1 March


def test_simulate_terminates(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(MONTH_WORKFLOW))
    events = tmp_path / "ev.jsonl"
    events.write_text(
        json.dumps(
            {
                "type": "track",
                "userId": "ann",
                "event": "Email Opened",
                "timestamp": "2026-01-31T10:00:00Z",
                "messageId": "m1",
            }
        )
        + "\n"
    )
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "engine",
                "simulate",
                "--workflows",
                str(wf),
                "--events",
                str(events),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("simulate never ends (next_due and fire_quiet disagree)") from None
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["contacts"]["ann"]["lists"] == ["Quiet"]


LATE_WORKFLOW = {
    "id": "quiet30",
    "version": 1,
    "name": "q",
    "triggers": [{"type": "inactivity", "events": ["Email Opened"], "for": "P30D"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "QUIET", "add": 1}},
}


def late_flow_at(tmp_path: Path, start: str) -> tuple[Leadflow, VirtualClock]:
    clock = VirtualClock(at(start))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([LATE_WORKFLOW])
    return flow, clock


def test_a_late_event_does_not_move_the_spell_back(tmp_path: Path) -> None:
    flow, clock = late_flow_at(tmp_path, "2026-01-01 00:00")
    clock.advance_to(at("2026-01-11 00:00"))
    flow.track("ann", "Email Opened", timestamp=at("2026-01-10 00:00"), message_id="new")
    # an older open, delivered late by the CDP
    flow.track("ann", "Email Opened", timestamp=at("2026-01-05 00:00"), message_id="old")
    # 31 days after the late event, 26 after the latest one (the spell ends Feb 9)
    clock.advance_to(at("2026-02-05 00:00"))
    flow.run_due()
    # ann last opened an email on Jan 10: quiet for 26 days only
    assert "QUIET" not in flow.contact("ann")["scores"]


def test_one_quiet_spell_fires_once(tmp_path: Path) -> None:
    flow, clock = late_flow_at(tmp_path, "2026-01-01 00:00")
    flow.track("ann", "Email Opened", timestamp=at("2026-01-01 00:00"), message_id="a")
    clock.advance_to(at("2026-01-20 00:00"))
    flow.track("ann", "Email Opened", timestamp=at("2026-01-20 00:00"), message_id="b")
    clock.advance_to(at("2026-02-20 00:00"))
    flow.run_due()  # quiet since Jan 20: fires once (Feb 19)
    assert flow.contact("ann")["scores"] == {"QUIET": 1}
    # an open from Jan 10 arrives late; ann has been quiet since Jan 20 all along
    flow.track("ann", "Email Opened", timestamp=at("2026-01-10 00:00"), message_id="late")
    clock.advance_to(at("2026-02-21 00:00"))
    flow.run_due()
    assert flow.contact("ann")["scores"] == {"QUIET": 1}  # fails: 2, the spell fired twice


def newcron_doc(version: int, triggers: list[dict]) -> dict:
    return {
        "id": "digest",
        "version": version,
        "name": "digest",
        "triggers": triggers,
        "reentry": "always",
        "start": "count",
        "nodes": {"count": {"type": "update_score", "score": "DIGESTS", "add": 1}},
    }


NEWCRON_EVENT = {"type": "event", "event": "Never Sent"}


NEWCRON_DAILY = {"type": "schedule", "cron": "0 9 * * *"}


def test_a_schedule_added_in_v2_fires_from_v2s_deploy(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([newcron_doc(1, [NEWCRON_EVENT])])
    flow.identify("ann", {"name": "Ann"}, timestamp=at("2026-01-01 00:00"))
    clock.advance_to(at("2026-03-01 00:00"))
    flow.deploy([newcron_doc(2, [NEWCRON_EVENT, NEWCRON_DAILY])])
    clock.advance_to(at("2026-03-01 10:00"))
    flow.run_due()
    # one cron time (1 March 09:00) since the schedule exists
    assert flow.contact("ann")["scores"] == {"DIGESTS": 1}  # fails: 60


def test_a_schedule_moved_to_another_index_does_not_replay_its_history(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([newcron_doc(1, [NEWCRON_DAILY])])
    flow.identify("ann", {"name": "Ann"}, timestamp=at("2026-01-01 00:00"))
    clock.advance_to(at("2026-01-31 10:00"))
    flow.run_due()
    assert flow.contact("ann")["scores"] == {"DIGESTS": 31}
    # v2 only adds an event trigger in front of the same schedule
    flow.deploy([newcron_doc(2, [NEWCRON_EVENT, NEWCRON_DAILY])])
    clock.advance_to(at("2026-02-01 10:00"))
    flow.run_due()
    assert flow.contact("ann")["scores"] == {"DIGESTS": 32}  # fails: 62


PAUSED_WORKFLOW = {
    "id": "await-click",
    "version": 1,
    "name": "a",
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "start": "wait",
    "nodes": {
        "wait": {
            "type": "wait_for_event",
            "event": "Email Clicked",
            "timeout": "P7D",
            "next": "hot",
            "on_timeout": "cold",
        },
        "hot": {"type": "webhook", "url": "https://example.test/hot", "next": "points"},
        "points": {"type": "update_score", "score": "SCORE", "add": 50},
        "cold": {"type": "add_to_list", "list": "Cold"},
    },
}


def set_paused(flow: Leadflow, paused: bool) -> None:
    with writer(flow.engine).begin() as connection:
        connection.execute(
            update(workflow_status)
            .where(workflow_status.c.workflow_id == "await-click")
            .values(paused=paused, updated_at=flow.clock.now())
        )


def test_a_paused_workflow_does_not_resume_event_waits(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([PAUSED_WORKFLOW])
    flow.track("ann", "Signed Up", timestamp=at("2026-01-01 00:00"), message_id="m1")
    set_paused(flow, True)  # as `leadflow pause await-click`
    clock.advance_to(at("2026-01-02 00:00"))
    flow.track("ann", "Email Clicked", timestamp=at("2026-01-02 00:00"), message_id="m2")
    with flow.engine.connect() as connection:
        sent = connection.scalar(select(func.count()).select_from(outbox))
    assert sent == 0  # fails: the paused workflow's webhook was queued
    assert flow.contact("ann")["scores"] == {}  # fails: SCORE 50


CATCHUP_SCORING = {
    "id": "signup-points",
    "version": 1,
    "name": "s",
    "triggers": [{"type": "event", "event": "Signed Up"}],
    "start": "later",
    "nodes": {
        "later": {"type": "wait", "for": "PT2H", "next": "points"},
        "points": {"type": "update_score", "score": "SCORE", "add": 10},
    },
}


CATCHUP_DIGEST = {
    "id": "daily-digest",
    "version": 1,
    "name": "d",
    "triggers": [
        {"type": "schedule", "cron": "0 10 * * *", "segment": {"score": "SCORE", "gte": 10}}
    ],
    "reentry": "always",
    "start": "join",
    "nodes": {"join": {"type": "add_to_list", "list": "Digest"}},
}


CATCHUP_EVENT = {
    "type": "track",
    "userId": "ann",
    "event": "Signed Up",
    "timestamp": "2026-01-05T09:00:00Z",
    "messageId": "m1",
}


def test_simulate_leaves_ann_out_of_the_10_oclock_digest(tmp_path: Path) -> None:
    for doc in (CATCHUP_SCORING, CATCHUP_DIGEST):
        (tmp_path / f"{doc['id']}.json").write_text(json.dumps(doc))
    (tmp_path / "ev.jsonl").write_text(json.dumps(CATCHUP_EVENT) + "\n")
    done = simulate(
        [tmp_path / "signup-points.json", tmp_path / "daily-digest.json"],
        tmp_path / "ev.jsonl",
        until=at("2026-01-05 12:00"),
        jobs=1,
    )
    assert done.result["contacts"]["ann"]["lists"] == []
    assert done.result["contacts"]["ann"]["scores"] == {"SCORE": 10}


def test_a_late_run_due_agrees_with_simulate(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-05 09:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([CATCHUP_SCORING, CATCHUP_DIGEST])
    flow.send([CATCHUP_EVENT])
    clock.advance_to(at("2026-01-05 12:00"))  # the worker was down from 09:00 to 12:00
    flow.run_due()
    assert flow.contact("ann")["scores"] == {"SCORE": 10}
    assert flow.contact("ann")["lists"] == []  # fails: ["Digest"], entered at 10:00


def test_on_time_run_due_agrees_with_simulate(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-05 09:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([CATCHUP_SCORING, CATCHUP_DIGEST])
    flow.send([CATCHUP_EVENT])
    for moment in ("2026-01-05 10:00", "2026-01-05 11:00", "2026-01-05 12:00"):
        clock.advance_to(at(moment))
        flow.run_due()
    assert flow.contact("ann")["lists"] == []  # passes: each timer at its own time


MERGED_WORKFLOW = {
    "id": "quiet30",
    "version": 1,
    "name": "q",
    "triggers": [{"type": "inactivity", "events": ["Email Opened"], "for": "P30D"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "QUIET", "add": 1}},
}


def test_a_merge_keeps_the_latest_engagement(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([MERGED_WORKFLOW])
    flow.track("ann@acme.com", "Email Opened", timestamp=at("2026-01-01 00:00"), message_id="a")
    clock.advance_to(at("2026-01-20 00:00"))
    flow.send(
        [
            {
                "type": "track",
                "anonymousId": "anon-1",
                "event": "Email Opened",
                "timestamp": "2026-01-20T00:00:00Z",
                "messageId": "b",
            }
        ]
    )
    clock.advance_to(at("2026-01-25 00:00"))
    flow.send(
        [
            {
                "type": "alias",
                "userId": "ann@acme.com",
                "previousId": "anon-1",
                "timestamp": "2026-01-25T00:00:00Z",
                "messageId": "c",
            }
        ]
    )
    clock.advance_to(at("2026-02-05 00:00"))
    flow.run_due()
    # the person last opened an email on Jan 20: quiet for 16 days only
    assert "QUIET" not in flow.contact("ann@acme.com")["scores"]  # fails: fired Jan 31


def test_contacts_that_exist_before_the_deploy_can_go_quiet(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.identify("ann@acme.com", {"name": "Ann"}, timestamp=at("2026-01-01 00:00"))
    clock.advance_to(at("2026-01-02 00:00"))
    flow.deploy([MERGED_WORKFLOW])
    clock.advance_to(at("2026-04-01 00:00"))  # three months without an email opened
    flow.run_due()
    assert flow.contact("ann@acme.com")["scores"] == {"QUIET": 1}  # fails: never fires


def test_a_new_version_that_moves_the_trigger_keeps_the_spells(tmp_path: Path) -> None:
    """quiet_watch rows are keyed by the trigger's index in `triggers`: v2 putting an event
    trigger in front of the same inactivity trigger orphans every running spell."""
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock)
    flow.deploy([MERGED_WORKFLOW])
    flow.track("ann@acme.com", "Email Opened", timestamp=at("2026-01-01 00:00"), message_id="a")
    clock.advance_to(at("2026-01-10 00:00"))
    v2 = {
        **MERGED_WORKFLOW,
        "version": 2,
        "triggers": [{"type": "event", "event": "Asked For Reset"}, *MERGED_WORKFLOW["triggers"]],
    }
    flow.deploy([v2])
    clock.advance_to(at("2026-03-01 00:00"))
    flow.run_due()
    assert flow.contact("ann@acme.com")["scores"] == {"QUIET": 1}  # fails: never fires


def test_contacts_from_before_the_deploy_go_quiet_from_their_history_on_both_backends(
    store_url: str,
) -> None:
    """The deploy gives every contact a spell: from its latest such event, else from its
    creation, but no earlier than one ``for`` before the deploy (nothing acted back then)."""
    clock = VirtualClock(at("2025-06-01 00:00"))
    with Leadflow(store_url, clock=clock) as flow:
        flow.identify("old@acme.com", {}, timestamp=at("2025-06-01 00:00"))  # quiet for ages
        flow.track("ann@acme.com", "Email Opened", timestamp=at("2026-01-20 00:00"))
        flow.track("bob@acme.com", "Page Viewed", timestamp=at("2026-01-25 00:00"))  # not it
        clock.advance_to(at("2026-02-01 00:00"))
        flow.deploy([MERGED_WORKFLOW])
        with flow.engine.connect() as connection:
            spells = {
                row.contact_id: ensure_utc(row.last_at)
                for row in connection.execute(select(quiet_watch))
            }
        assert spells == {
            "old@acme.com": at("2026-01-02 00:00"),  # one P30D before the deploy
            "ann@acme.com": at("2026-01-20 00:00"),
            "bob@acme.com": at("2026-01-25 00:00"),  # created then, never opened
        }
        clock.advance_to(at("2026-02-01 00:00"))
        flow.run_due()
        assert flow.contact("old@acme.com")["scores"] == {"QUIET": 1}  # at the deploy
        assert flow.contact("ann@acme.com")["scores"] == {}
        clock.advance_to(at("2026-02-19 00:00"))
        flow.run_due()
        assert flow.contact("ann@acme.com")["scores"] == {"QUIET": 1}  # 30 days after
        assert flow.contact("bob@acme.com")["scores"] == {}
        clock.advance_to(at("2026-02-24 00:00"))
        flow.run_due()
        assert flow.contact("bob@acme.com")["scores"] == {"QUIET": 1}
        flow.deploy([{**MERGED_WORKFLOW, "version": 2, "name": "again"}])  # nothing starts over
        clock.advance_to(at("2026-03-01 00:00"))
        flow.run_due()
        assert {c: flow.contact(c)["scores"]["QUIET"] for c in spells} == dict.fromkeys(spells, 1)


RESET = json.loads((files("workflows") / "email-inactivity-reset.json").read_text())
VIEW = {
    "id": "view",
    "version": 1,
    "triggers": [{"type": "event", "event": "Page Viewed"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "SCORE", "add": 10}},
}


@pytest.mark.parametrize("late", ["the next event", "an ingest of history"])
def test_a_spell_that_ended_before_the_next_round_fires_when_an_event_resets_it(
    tmp_path: Path, late: str
) -> None:
    """The spell ended at 10:00; an Email Opened at 10:00:05 reset it before the worker's
    next round (or an ingest of a history file ran no rounds at all): the reset never
    happened, where simulate of the same history resets the score."""
    history = [
        {
            "type": "track",
            "userId": "a",
            "event": "Page Viewed",
            "timestamp": "2026-01-02T09:00:00Z",
        },
        {
            "type": "track",
            "userId": "a",
            "event": "Email Opened",
            "timestamp": "2026-01-02T10:00:00Z",
        },
        {
            "type": "track",
            "userId": "a",
            "event": "Email Opened",
            "timestamp": "2026-02-01T10:00:05Z",
        },
    ]
    history = [{**m, "messageId": f"m{i}"} for i, m in enumerate(history)]
    clock = VirtualClock(at("2026-01-01 00:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy([VIEW, RESET])
        if late == "the next event":
            clock.advance_to(at("2026-01-02 10:00"))
            flow.send(history[:2])
            clock.advance_to(at("2026-02-01 10:00:05"))  # 5 s after the spell ended
            flow.send(history[2:])
            clock.advance_to(at("2026-02-01 10:00:15"))
            flow.run_due()
        else:
            clock.advance_to(at("2026-02-01 10:00:05"))
            flow.send(history)
        assert flow.contact("a")["scores"] == {"SCORE": 0}
        with flow.engine.connect() as connection:
            entered = connection.scalar(
                select(func.count()).select_from(runs).where(runs.c.workflow_id == RESET["id"])
            )
        assert entered == 1  # once, at the end of the spell


def test_the_workers_wait_job_fires_a_cron_time_that_came_due_before_the_wait(
    tmp_path: Path,
) -> None:
    """The waits job runs every second, the timers job every 30 s: the wait due at 10:00:05
    was resumed (SCORE 10) before the 10:00:00 cron time fired and found ann in its
    segment. The waits job now fires timers that came due first, as simulate does."""
    from engine.runner import Runner
    from engine.worker import Worker

    scoring = {**CATCHUP_SCORING, "nodes": {**CATCHUP_SCORING["nodes"]}}
    scoring["nodes"]["later"] = {"type": "wait", "for": "PT1H0M5S", "next": "points"}
    clock = VirtualClock(at("2026-01-05 09:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy([scoring, CATCHUP_DIGEST])
        flow.send([CATCHUP_EVENT])
        clock.advance_to(at("2026-01-05 09:59:59"))
        flow.run_due()  # the worker's rounds until then
        worker = Worker(Runner(flow.engine, clock))
        clock.advance_to(at("2026-01-05 10:00:20"))  # both due; the timers job not yet
        worker.resume_waits()
        clock.advance_to(at("2026-01-05 10:00:30"))
        worker.timers()  # the timers job's round
        assert flow.contact("ann")["scores"] == {"SCORE": 10}
        assert flow.contact("ann")["lists"] == []  # was ["Digest"]
