"""The workflow language: cases a reviewing helper found wrong (session 14), each failing
before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.clock import parse_timestamp
from engine.errors import InvalidWorkflow
from engine.simulate import simulate
from engine.validation import validate_documents


def flow_document(
    wid: str, triggers: list[Any], nodes: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    doc = {
        "id": wid,
        "version": 1,
        "triggers": triggers,
        "start": next(iter(nodes)),
        "nodes": nodes,
    }
    doc.update(extra)
    return doc


def track_at(user: str, event: str, ts: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": props or {},
        "timestamp": ts,
    }


def run_simulation(
    tmp: Path,
    workflows: list[dict[str, Any]],
    events: list[dict[str, Any]],
    until: str | None = None,
    database_url: str | None = None,
) -> dict[str, Any]:
    folder = tmp / "wf"
    folder.mkdir(exist_ok=True)
    for doc in workflows:
        (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
    path = tmp / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    moment = parse_timestamp(until) if until else None
    return simulate([folder], path, moment, database_url=database_url, jobs=1).result


def test_a_nested_split_honours_its_own_weights(tmp_path: Path) -> None:
    doc = flow_document(
        "ab",
        [{"type": "event", "event": "Go"}],
        {
            "s1": {
                "type": "split",
                "branches": [{"weight": 50, "next": "s2"}, {"weight": 50, "next": "b"}],
            },
            "s2": {
                "type": "split",
                "branches": [{"weight": 50, "next": "x"}, {"weight": 50, "next": "y"}],
            },
            "b": {"type": "add_to_list", "list": "B"},
            "x": {"type": "add_to_list", "list": "X"},
            "y": {"type": "add_to_list", "list": "Y"},
        },
    )
    events = [track_at(f"user{i}@example.com", "Go", "2026-01-05T10:00:00Z") for i in range(400)]
    result = run_simulation(tmp_path, [doc], events)
    counts = Counter(name for c in result["contacts"].values() for name in c["lists"])
    # about 200 on B, about 100 each on X and Y; today Y gets nobody
    assert counts["Y"] > 50, counts
    assert counts["X"] > 50, counts


def test_two_sequential_splits_are_independent(tmp_path: Path) -> None:
    """A subject-line A/B test followed by a send-time A/B test: the four combinations
    should all occur, not just A+early and B+late."""
    doc = flow_document(
        "ab2",
        [{"type": "event", "event": "Go"}],
        {
            "subject": {
                "type": "split",
                "branches": [{"weight": 1, "next": "sa"}, {"weight": 1, "next": "sb"}],
            },
            "sa": {"type": "add_to_list", "list": "A", "next": "time"},
            "sb": {"type": "add_to_list", "list": "B", "next": "time"},
            "time": {
                "type": "split",
                "branches": [{"weight": 1, "next": "early"}, {"weight": 1, "next": "late"}],
            },
            "early": {"type": "add_to_list", "list": "early"},
            "late": {"type": "add_to_list", "list": "late"},
        },
    )
    events = [track_at(f"user{i}@example.com", "Go", "2026-01-05T10:00:00Z") for i in range(400)]
    result = run_simulation(tmp_path, [doc], events)
    combos = Counter(tuple(sorted(c["lists"])) for c in result["contacts"].values())
    assert combos[("A", "late")] > 0 and combos[("B", "early")] > 0, combos


ZERO_ROOT = Path(__file__).resolve().parents[1]


def _looping(nodes: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "loop",
        "version": 1,
        "triggers": [{"type": "event", "event": "Go"}],
        "reentry": "always",
        "start": "a",
        "nodes": nodes,
    }


ZERO_TIMEOUT = _looping(
    {
        "a": {"type": "update_score", "add": 1, "next": "w"},
        "w": {
            "type": "wait_for_event",
            "event": "E",
            "timeout": "PT0S",
            "next": "b",
            "on_timeout": "a",
        },
        "b": {"type": "exit"},
    }
)


ZERO_WAIT = _looping(
    {
        "a": {"type": "update_score", "add": 1, "next": "w"},
        "w": {"type": "wait", "for": "PT0S", "next": "a"},
    }
)


ZERO_UNTIL_LOOP = _looping(
    {
        "a": {"type": "update_score", "add": 1, "next": "w"},
        "w": {"type": "wait", "until": "2026-02-01T00:00:00Z", "next": "a"},
    }
)


def _problems(doc: dict[str, Any]) -> list[str]:
    return [str(p) for p in validate_documents([("loop.json", doc)]).problems]


def test_validate_refuses_a_loop_through_a_zero_timeout() -> None:
    assert any("/nodes/" in p and "loop" in p for p in _problems(ZERO_TIMEOUT))


def test_validate_refuses_a_loop_through_a_zero_wait() -> None:
    assert any("/nodes/" in p and "loop" in p for p in _problems(ZERO_WAIT))


def test_validate_refuses_a_loop_through_a_fixed_until() -> None:
    assert any("/nodes/" in p and "loop" in p for p in _problems(ZERO_UNTIL_LOOP))


ZERO_CHILD = """
import json, sys, tempfile
from datetime import UTC, datetime
from engine.api import Leadflow
from engine.clock import VirtualClock
from engine.store.db import make_engine, upgrade
from engine.catalog import deploy
from engine.model import compile_workflow
doc = json.loads(sys.argv[1])
clock = VirtualClock(datetime(2026, 1, 5, 10, tzinfo=UTC))
folder = tempfile.mkdtemp()
with Leadflow(f"sqlite:///{folder}/x.db", clock) as flow:
    # deployed without validate (as a store deployed by an older release would hold it)
    with flow.engine.begin() as connection:
        deploy(connection, [compile_workflow(doc)], clock.now())
    flow.runner.reload()
    flow.track("ann@acme.com", "Go", message_id="m-1")
    flow.run_due()
    print("done")
"""


def test_the_runner_does_not_hang_on_a_zero_timeout_loop() -> None:
    """Even for a document that got past validation, a worker's round must end (the run
    is failed by a loop guard, as an instant loop of plain nodes is)."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", ZERO_CHILD, json.dumps(ZERO_TIMEOUT)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ZERO_ROOT,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("run_due() did not return within 60 s (infinite loop)") from None
    assert "done" in out.stdout, out.stderr[-2000:]


LONG_LIST = "Webinar attendees, " + "x" * 190  # 209 characters


LONG_SCORE = "SCORE_" + "y" * 100  # 106 characters


LONG_DOC = flow_document(
    "long-names",
    [{"type": "event", "event": "Go"}],
    {
        "join": {"type": "add_to_list", "list": LONG_LIST, "next": "points"},
        "points": {"type": "update_score", "score": LONG_SCORE, "add": 5, "next": "later"},
        "later": {"type": "wait", "for": "P1D", "next": "check"},
        "check": {
            "type": "condition",
            "if": {"all": [{"in_list": LONG_LIST}, {"score": LONG_SCORE, "gte": 5}]},
            "then": "yes",
            "else": "no",
        },
        "yes": {"type": "add_to_list", "list": "Checked"},
        "no": {"type": "add_to_list", "list": "Lost"},
    },
)


LONG_EVENTS = [track_at("ann@acme.com", "Go", "2026-01-05T10:00:00Z")]


def test_simulate_gives_the_same_result_on_sqlite_and_postgresql(
    tmp_path: Path, store_url: str
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        on_sqlite = run_simulation(tmp_path / "a", [LONG_DOC], LONG_EVENTS)
    except InvalidWorkflow:  # refused before anything runs: fine, on both backends alike
        with pytest.raises(InvalidWorkflow):
            run_simulation(tmp_path / "b", [LONG_DOC], LONG_EVENTS, database_url=store_url)
        return
    on_postgres = run_simulation(tmp_path / "b", [LONG_DOC], LONG_EVENTS, database_url=store_url)
    assert on_postgres["contacts"] == on_sqlite["contacts"]


def test_validate_refuses_names_the_store_cannot_keep() -> None:
    """The other way to agree: say so before anything runs, with the pointer."""
    problems = validate_documents([("long.json", LONG_DOC)]).problems
    pointers = {p.pointer for p in problems}
    assert "/nodes/join/list" in pointers
    assert "/nodes/points/score" in pointers


def _with_node(node: dict[str, Any]) -> dict[str, Any]:
    return flow_document("msg", [{"type": "event", "event": "Go"}], {"send": node})


TEMPLATE_SMS = _with_node(
    {
        "type": "send_sms",
        "text": "Hi {{ contact.attributes.FIRSTNAME | default('there') }, 20 % off",
    }
)


TEMPLATE_HOOK = _with_node(
    {
        "type": "webhook",
        "url": "https://crm.example.com/lead",
        "body": {"lead": {"id": "{{ contact.id }"}},
    }
)


TEMPLATE_SUBJECT = _with_node(
    {"type": "send_email", "template": "welcome-a", "subject": "Welcome{% if contact.grade %}!"}
)


def test_validate_reports_a_broken_sms_text() -> None:
    problems = validate_documents([("sms.json", TEMPLATE_SMS)]).problems
    assert [(p.file, p.pointer) for p in problems] == [("sms.json", "/nodes/send/text")]


def test_validate_reports_a_broken_webhook_body_text() -> None:
    problems = validate_documents([("hook.json", TEMPLATE_HOOK)]).problems
    assert [(p.file, p.pointer) for p in problems] == [("hook.json", "/nodes/send/body/lead/id")]


def test_validate_reports_a_broken_subject() -> None:
    problems = validate_documents([("mail.json", TEMPLATE_SUBJECT)]).problems
    assert [(p.file, p.pointer) for p in problems] == [("mail.json", "/nodes/send/subject")]


def test_today_the_workflow_runs_and_sends_nothing(tmp_path: Path) -> None:
    """What a user sees now: simulate accepts the workflows and queues no message."""
    try:
        result = run_simulation(
            tmp_path, [TEMPLATE_SMS], [track_at("ann@acme.com", "Go", "2026-01-05T10:00:00Z")]
        )
    except Exception:  # refused up front: what should happen
        return
    assert result["messages"], "the workflow was accepted, yet every run failed"
