"""Scenario tests: small workflows and Segment events written into a temporary folder and
run through :func:`engine.simulate.simulate`, one or more per node kind and trigger kind,
asserting exact outcomes (scores, lists, attributes, messages and their moments)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select

from actions.wait import Wait
from engine.clock import parse_timestamp
from engine.runner import MAX_ENTRIES_PER_WAKE, MAX_NODES_PER_WAKE
from engine.simulate import simulate
from engine.store.tables import audit, outbox, runs


def ts(text: str) -> str:
    """``ts("2026-01-05 10:00")`` -> ``"2026-01-05T10:00:00Z"``."""
    date, _, time = text.partition(" ")
    time = time or "00:00"
    if time.count(":") == 1:
        time += ":00"
    return f"{date}T{time}Z"


def workflow(
    workflow_id: str,
    nodes: Mapping[str, Any],
    triggers: Iterable[Mapping[str, Any]] = (),
    *,
    start: str | None = None,
    reentry: str | None = None,
    exit_when: Mapping[str, Any] | None = None,
    version: int = 1,
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": workflow_id,
        "version": version,
        "triggers": list(triggers),
        "start": start or next(iter(nodes)),
        "nodes": dict(nodes),
    }
    if reentry is not None:
        document["reentry"] = reentry
    if exit_when is not None:
        document["exit_when"] = dict(exit_when)
    return document


def on(event: str, where: Mapping[str, Any] | None = None) -> dict[str, Any]:
    trigger: dict[str, Any] = {"type": "event", "event": event}
    if where is not None:
        trigger["where"] = dict(where)
    return trigger


def track(user: str, event: str, when: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "timestamp": ts(when),
    }


def identify(user: str, when: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits, "timestamp": ts(when)}


@dataclass
class Outcome:
    """What a simulation produced, plus the store it ran on (for runs, audit, outbox)."""

    result: dict[str, Any]
    url: str

    @property
    def contacts(self) -> dict[str, Any]:
        return self.result["contacts"]  # type: ignore[no-any-return]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.result["messages"]  # type: ignore[no-any-return]

    def scores(self, contact: str) -> dict[str, Any]:
        return self.contacts[contact]["scores"]  # type: ignore[no-any-return]

    def score(self, contact: str, name: str = "SCORE") -> Any:
        return self.scores(contact).get(name)

    def lists(self, contact: str) -> list[str]:
        return self.contacts[contact]["lists"]  # type: ignore[no-any-return]

    def attributes(self, contact: str) -> dict[str, Any]:
        return self.contacts[contact]["attributes"]  # type: ignore[no-any-return]

    def sent(self, contact: str | None = None) -> list[tuple[str, str, str]]:
        """(contact, what, at) for every message, ``what`` being the template, text or URL."""
        return [
            (m["contact"], m.get("template") or m.get("text") or m.get("url"), m["at"])
            for m in self.messages
            if contact is None or m["contact"] == contact
        ]

    def _engine(self) -> Engine:
        return create_engine(self.url)

    def runs(self, contact: str | None = None, workflow_id: str | None = None) -> list[Any]:
        engine = self._engine()
        try:
            query = select(runs).order_by(runs.c.entered_at, runs.c.id)
            if contact is not None:
                query = query.where(runs.c.contact_id == contact)
            if workflow_id is not None:
                query = query.where(runs.c.workflow_id == workflow_id)
            with engine.connect() as connection:
                return list(connection.execute(query))
        finally:
            engine.dispose()

    def audit(self, subject: str | None = None) -> list[Any]:
        engine = self._engine()
        try:
            query = select(audit).order_by(audit.c.id)
            if subject is not None:
                query = query.where(audit.c.subject == subject)
            with engine.connect() as connection:
                return list(connection.execute(query))
        finally:
            engine.dispose()

    def outbox(self) -> list[Any]:
        engine = self._engine()
        try:
            with engine.connect() as connection:
                return list(connection.execute(select(outbox).order_by(outbox.c.id)))
        finally:
            engine.dispose()


_counter = 0


def run_scenario(
    folder: Path,
    workflows: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any] | str],
    until: str | None = None,
    templates: Mapping[str, str] | None = None,
) -> Outcome:
    """Write the workflows and events under ``folder`` and simulate them on a store kept in
    ``folder`` (so tests can look at runs, audit and outbox rows afterwards)."""
    global _counter
    _counter += 1
    here = folder / f"scenario-{_counter}"
    (here / "workflows").mkdir(parents=True)
    if templates:
        (here / "workflows" / "templates").mkdir()
        for name, text in templates.items():
            (here / "workflows" / "templates" / f"{name}.txt").write_text(text, encoding="utf-8")
    for document in workflows:
        path = here / "workflows" / f"{document['id']}-v{document['version']}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
    lines = []
    for number, event in enumerate(events, start=1):
        if isinstance(event, str):
            lines.append(event)
            continue
        event = dict(event)
        event.setdefault("messageId", f"m-{number}")
        lines.append(json.dumps(event))
    events_path = here / "events.jsonl"
    events_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{here / 'store.db'}"
    simulation = simulate(
        [here / "workflows"],
        events_path,
        parse_timestamp(until) if until else None,
        database_url=url,
    )
    return Outcome(simulation.result, url)


# --- node kinds -------------------------------------------------------------------------


def test_update_score_add_subtract_set_percent_with_bounds(tmp_path: Path) -> None:
    flows = [
        workflow(
            "plus",
            {"p": {"type": "update_score", "add": 30, "max": 50}},
            [on("Plus")],
            reentry="always",
        ),
        workflow(
            "minus",
            {"m": {"type": "update_score", "subtract": 25, "min": 0}},
            [on("Minus")],
            reentry="always",
        ),
        workflow("set", {"s": {"type": "update_score", "set": 40}}, [on("Set")], reentry="always"),
        workflow(
            "setbig", {"s": {"type": "update_score", "set": 70}}, [on("SetBig")], reentry="always"
        ),
        workflow(
            "pct", {"c": {"type": "update_score", "percent": -10}}, [on("Pct")], reentry="always"
        ),
        workflow(
            "loyal",
            {"l": {"type": "update_score", "score": "LOYALTY", "percent": 50}},
            [on("Loyal")],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Plus", "2026-01-05 10:00"),  # 30
        track("ann", "Plus", "2026-01-05 10:01"),  # 60 -> capped at 50
        track("ann", "Plus", "2026-01-05 10:02"),  # stays 50
        track("ann", "Minus", "2026-01-05 10:03"),  # 25
        track("ann", "Minus", "2026-01-05 10:04"),  # 0
        track("ann", "Minus", "2026-01-05 10:05"),  # floor 0
        track("bob", "Minus", "2026-01-05 10:00"),  # from nothing: floor 0
        track("cid", "Set", "2026-01-05 10:00"),  # 40
        track("cid", "Pct", "2026-01-05 10:01"),  # 36
        track("cid", "Pct", "2026-01-05 10:02"),  # 32.4
        track("dan", "Set", "2026-01-05 10:00"),  # 40
        track("dan", "Plus", "2026-01-05 10:01"),  # 70 -> capped at 50
        # already above the ceiling: an increase never lowers it, it just stays
        track("eve", "SetBig", "2026-01-05 10:00"),  # 70
        track("eve", "Plus", "2026-01-05 10:01"),  # stays 70
        track("fay", "Loyal", "2026-01-05 10:00"),  # 0 * 1.5 = 0
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 50 - 25 - 25}
    assert out.scores("bob") == {"SCORE": 0}
    assert out.scores("cid") == {"SCORE": 32.4}
    assert out.scores("dan") == {"SCORE": 50}
    assert out.scores("eve") == {"SCORE": 70}
    assert out.scores("fay") == {"LOYALTY": 0}
    history = [(a.old, a.new) for a in out.audit("score") if a.contact_id == "ann"]
    assert history == [(0, 30), (30, 50), (50, 25), (25, 0)]


def test_update_score_percent_up_and_floor_when_already_below(tmp_path: Path) -> None:
    flows = [
        workflow("seed", {"s": {"type": "update_score", "set": 40}}, [on("Seed")]),
        workflow("low", {"s": {"type": "update_score", "set": 10}}, [on("Low")]),
        workflow(
            "grow", {"g": {"type": "update_score", "percent": 50}}, [on("Grow")], reentry="always"
        ),
        workflow(
            "decay",
            {"d": {"type": "update_score", "percent": -50, "min": 25}},
            [on("Decay")],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Seed", "2026-01-05 10:00"),  # 40
        track("ann", "Grow", "2026-01-05 10:01"),  # 60
        track("ann", "Decay", "2026-01-05 10:02"),  # 30
        track("ann", "Decay", "2026-01-05 10:03"),  # 15 -> floor 25
        track("bob", "Low", "2026-01-05 10:00"),  # 10, already under the floor
        track("bob", "Decay", "2026-01-05 10:01"),  # 5 -> never lifted above 10
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 25}
    assert out.scores("bob") == {"SCORE": 10}


def test_set_attribute_value_increment_from_property_and_failing_run(tmp_path: Path) -> None:
    flows = [
        workflow(
            "attrs",
            {
                "stage": {
                    "type": "set_attribute",
                    "attribute": "stage",
                    "value": "visitor",
                    "next": "count",
                },
                "count": {
                    "type": "set_attribute",
                    "attribute": "visits",
                    "increment": 1,
                    "next": "plan",
                },
                "plan": {
                    "type": "set_attribute",
                    "attribute": "plan",
                    "from_property": "plan",
                    "next": "tag",
                },
                "tag": {"type": "add_to_list", "list": "Has plan"},
            },
            [on("Visit")],
            reentry="always",
        ),
        workflow(
            "points", {"p": {"type": "update_score", "add": 5}}, [on("Visit")], reentry="always"
        ),
    ]
    events = [
        track("ann", "Visit", "2026-01-05 10:00", plan="pro"),
        track("bob", "Visit", "2026-01-05 10:01"),  # no 'plan': this run fails
        track("ann", "Visit", "2026-01-05 10:02", plan="team"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.attributes("ann") == {"stage": "visitor", "visits": 2, "plan": "team"}
    assert out.lists("ann") == ["Has plan"]
    assert out.scores("ann") == {"SCORE": 10}
    # bob's run failed at 'plan': what it did before stays, what comes after never ran,
    # and the other workflow's run on the same event went on
    assert out.attributes("bob") == {"stage": "visitor", "visits": 1}
    assert out.lists("bob") == []
    assert out.scores("bob") == {"SCORE": 5}
    (failed,) = out.runs("bob", "attrs")
    assert (failed.state, failed.end_reason, failed.node) == ("failed", "action failed", "plan")
    assert "no property 'plan'" in failed.error
    assert [r.state for r in out.runs("ann", "attrs")] == ["completed", "completed"]


def test_set_attribute_increment_of_text_fails_the_run(tmp_path: Path) -> None:
    flows = [
        workflow(
            "count",
            {"c": {"type": "set_attribute", "attribute": "visits", "increment": 2}},
            [on("Visit")],
            reentry="always",
        ),
    ]
    events = [
        identify("ann", "2026-01-05 10:00", visits="many"),
        track("ann", "Visit", "2026-01-05 10:01"),
        track("bob", "Visit", "2026-01-05 10:01"),
        track("bob", "Visit", "2026-01-05 10:02"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.attributes("ann") == {"visits": "many"}
    assert out.attributes("bob") == {"visits": 4}
    (failed,) = out.runs("ann")
    assert failed.state == "failed"
    assert "cannot increment attribute 'visits'" in failed.error


def test_add_and_remove_from_list(tmp_path: Path) -> None:
    flows = [
        workflow(
            "join",
            {"a": {"type": "add_to_list", "list": "Members"}},
            [on("Join")],
            reentry="always",
        ),
        workflow(
            "leave",
            {"r": {"type": "remove_from_list", "list": "Members"}},
            [on("Leave")],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Join", "2026-01-05 10:00"),
        track("ann", "Join", "2026-01-05 10:01"),  # already a member: no-op
        track("bob", "Join", "2026-01-05 10:00"),
        track("bob", "Leave", "2026-01-05 10:01"),
        track("cid", "Leave", "2026-01-05 10:00"),  # not a member: no-op
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.lists("ann") == ["Members"]
    assert out.lists("bob") == []
    assert out.lists("cid") == []
    changes = [(a.contact_id, a.name, a.old, a.new) for a in out.audit("list")]
    assert changes == [
        ("ann", "Members", False, True),
        ("bob", "Members", False, True),
        ("bob", "Members", True, False),
    ]


def test_send_email_known_template_subject_and_folder_templates(tmp_path: Path) -> None:
    flows = [
        workflow(
            "mail",
            {
                "first": {"type": "send_email", "template": "welcome-a", "next": "second"},
                "second": {"type": "send_email", "template": "welcome-2", "subject": "Hi!"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [track("ann", "Signed Up", "2026-01-05 10:00")]
    out = run_scenario(tmp_path, flows, events)
    assert out.messages == [
        {
            "contact": "ann",
            "channel": "email",
            "template": "welcome-a",
            "subject": "Welcome to Leadflow, there",  # the template's own, rendered
            "workflow": "mail",
            "at": "2026-01-05T10:00:00Z",
        },
        {
            "contact": "ann",
            "channel": "email",
            "template": "welcome-2",
            "subject": "Hi!",
            "workflow": "mail",
            "at": "2026-01-05T10:00:00Z",
        },
    ]


def test_send_email_unknown_template_fails_the_run_and_sends_nothing(tmp_path: Path) -> None:
    flows = [
        workflow(
            "mail",
            {
                "tag": {"type": "add_to_list", "list": "Tried", "next": "send"},
                "send": {"type": "send_email", "template": "no-such-template", "next": "after"},
                "after": {"type": "add_to_list", "list": "Sent"},
            },
            [on("Signed Up")],
        ),
        workflow(
            "other", {"o": {"type": "send_email", "template": "welcome-b"}}, [on("Signed Up")]
        ),
    ]
    events = [track("ann", "Signed Up", "2026-01-05 10:00")]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent() == [("ann", "welcome-b", "2026-01-05T10:00:00Z")]
    assert out.lists("ann") == ["Tried"]
    (failed,) = out.runs("ann", "mail")
    assert failed.state == "failed"
    assert failed.error == "node 'send' (send_email): unknown email template 'no-such-template'"
    assert [r.state for r in out.runs("ann", "other")] == ["completed"]


def test_send_email_template_from_a_templates_folder_beside_the_workflows(
    tmp_path: Path,
) -> None:
    flows = [workflow("mail", {"s": {"type": "send_email", "template": "promo"}}, [on("Go")])]
    events = [track("ann", "Go", "2026-01-05 10:00")]
    out = run_scenario(tmp_path, flows, events, templates={"promo": "Hello"})
    assert out.sent() == [("ann", "promo", "2026-01-05T10:00:00Z")]


def test_send_sms_and_webhook_reach_the_outbox(tmp_path: Path) -> None:
    flows = [
        workflow(
            "notify",
            {
                "sms": {
                    "type": "send_sms",
                    "text": "Hi {{ contact.attributes.name }}",
                    "next": "hook",
                },
                "hook": {
                    "type": "webhook",
                    "url": "https://crm.example.com/hook",
                    "body": {"who": "{{ contact.id }}", "n": 1},
                },
            },
            [on("Quote Requested")],
        ),
    ]
    events = [
        identify("ann", "2026-01-05 10:00", name="Ann"),  # the SMS text needs it
        track("ann", "Quote Requested", "2026-01-05 10:00:30"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.messages == [
        {
            "contact": "ann",
            "channel": "sms",
            "text": "Hi Ann",  # what Ann gets; the outbox keeps the template too
            "workflow": "notify",
            "at": "2026-01-05T10:00:30Z",
        },
        {
            "contact": "ann",
            "channel": "webhook",
            "url": "https://crm.example.com/hook",
            "workflow": "notify",
            "at": "2026-01-05T10:00:30Z",
        },
    ]
    sms, hook = out.outbox()
    assert hook.payload["body"] == {"who": "{{ contact.id }}", "n": 1}
    assert hook.payload["rendered"] == {"body": {"who": "ann", "n": 1}}
    assert sms.payload["rendered"] == {"text": "Hi Ann"}
    assert (hook.payload["workflow"], hook.payload["version"], hook.payload["node"]) == (
        "notify",
        1,
        "hook",
    )
    assert sms.status == hook.status == "pending"
    assert sms.idempotency_key != hook.idempotency_key


def test_wait_for_sends_at_exactly_entry_plus_duration(tmp_path: Path) -> None:
    flows = [
        workflow(
            "drip",
            {
                "hello": {"type": "send_email", "template": "welcome-a", "next": "pause"},
                "pause": {"type": "wait", "for": "PT2H30M", "next": "again"},
                "again": {"type": "send_email", "template": "welcome-2", "next": "month"},
                "month": {"type": "wait", "for": "P1M", "next": "last"},
                "last": {"type": "send_email", "template": "nurture-1"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-31 09:15:07"),
        track("bob", "Signed Up", "2026-01-05 10:00"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent("ann") == [
        ("ann", "welcome-a", "2026-01-31T09:15:07Z"),
        ("ann", "welcome-2", "2026-01-31T11:45:07Z"),
        # a calendar month from 31 January ends on the last day of February
        ("ann", "nurture-1", "2026-02-28T11:45:07Z"),
    ]
    assert out.sent("bob") == [
        ("bob", "welcome-a", "2026-01-05T10:00:00Z"),
        ("bob", "welcome-2", "2026-01-05T12:30:00Z"),
        ("bob", "nurture-1", "2026-02-05T12:30:00Z"),
    ]
    assert [r.state for r in out.runs()] == ["completed", "completed"]


def test_wait_until_a_date_and_a_date_already_past(tmp_path: Path) -> None:
    flows = [
        workflow(
            "launch",
            {
                "hold": {"type": "wait", "until": "2026-02-01T09:00:00Z", "next": "send"},
                "send": {"type": "send_email", "template": "welcome-b"},
            },
            [on("Interested")],
        ),
    ]
    events = [
        track("ann", "Interested", "2026-01-05 10:00"),
        track("bob", "Interested", "2026-02-03 10:00"),  # the date has passed: go on at once
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent() == [
        ("ann", "welcome-b", "2026-02-01T09:00:00Z"),
        ("bob", "welcome-b", "2026-02-03T10:00:00Z"),
    ]


def test_until_stops_the_clock_and_leaves_later_waits_pending(tmp_path: Path) -> None:
    flows = [
        workflow(
            "drip",
            {
                "pause": {"type": "wait", "for": "P3D", "next": "send"},
                "send": {"type": "send_email", "template": "welcome-2"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("bob", "Signed Up", "2026-01-07 10:00"),
    ]
    out = run_scenario(tmp_path, flows, events, until=ts("2026-01-09 12:00"))
    assert out.sent() == [("ann", "welcome-2", "2026-01-08T10:00:00Z")]
    assert [(r.contact_id, r.state, r.node) for r in out.runs()] == [
        ("ann", "completed", "send"),
        ("bob", "waiting", "pause"),
    ]


def test_waits_due_by_until_run_when_a_message_at_until_ends_the_last_batch(
    tmp_path: Path,
) -> None:
    """The last message run falls on ``until`` itself, in the batch of ann's sign-up, and
    a later one is left: the clock is at ``until`` already, and ann's wait (due in
    between) still runs. It used to
    be left pending (found by the review of split simulations)."""
    flows = [
        workflow(
            "drip",
            {
                "pause": {"type": "wait", "for": "PT1M", "next": "send"},
                "send": {"type": "send_email", "template": "welcome-2"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("bob", "Browsed", "2026-01-09 12:00"),
        track("cid", "Signed Up", "2026-01-10 09:00"),  # after until: never run
    ]
    out = run_scenario(tmp_path, flows, events, until=ts("2026-01-09 12:00"))
    assert out.sent() == [("ann", "welcome-2", "2026-01-05T10:01:00Z")]


def test_wait_for_event_arrives_or_times_out(tmp_path: Path) -> None:
    flows = [
        workflow(
            "confirm",
            {
                "ask": {"type": "send_email", "template": "confirm-subscription", "next": "wait"},
                "wait": {
                    "type": "wait_for_event",
                    "event": "Subscription Confirmed",
                    "where": {"property": "list", "eq": "Newsletter"},
                    "timeout": "P1D",
                    "next": "yes",
                    "on_timeout": "no",
                },
                "yes": {"type": "add_to_list", "list": "Newsletter"},
                "no": {"type": "send_email", "template": "welcome-b"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("ann", "Subscription Confirmed", "2026-01-05 15:20", list="Newsletter"),
        track("bob", "Signed Up", "2026-01-05 10:00"),  # never confirms
        track("cid", "Signed Up", "2026-01-05 10:00"),
        track("cid", "Subscription Confirmed", "2026-01-06 11:00", list="Newsletter"),  # late
        track("dan", "Signed Up", "2026-01-05 10:00"),
        track("dan", "Subscription Confirmed", "2026-01-05 11:00", list="Other"),  # no match
        track("dan", "Subscription Confirmed", "2026-01-05 12:00", list="Newsletter"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.lists("ann") == ["Newsletter"]
    assert out.lists("bob") == []
    assert out.lists("cid") == []
    assert out.lists("dan") == ["Newsletter"]
    timeouts = sorted(s for s in out.sent() if s[1] == "welcome-b")
    assert timeouts == [
        ("bob", "welcome-b", "2026-01-06T10:00:00Z"),
        ("cid", "welcome-b", "2026-01-06T10:00:00Z"),
    ]
    joined = {a.contact_id: a.at for a in out.audit("list")}
    assert {k: v.isoformat() for k, v in joined.items()} == {
        "ann": "2026-01-05T15:20:00+00:00",
        "dan": "2026-01-05T12:00:00+00:00",
    }


def test_condition_branches(tmp_path: Path) -> None:
    flows = [
        workflow(
            "fit",
            {
                "exec": {
                    "type": "condition",
                    "if": {"attribute": "job_title", "in": ["CEO", "VP Marketing"]},
                    "then": "vip",
                    "else": "big",
                },
                "big": {
                    "type": "condition",
                    "if": {
                        "all": [
                            {"attribute": "company_size", "gte": 500},
                            {"not": {"in_list": "Blocked"}},
                        ]
                    },
                    "then": "vip",
                    "else": "rest",
                },
                "vip": {"type": "add_to_list", "list": "Priority"},
                "rest": {"type": "add_to_list", "list": "Later"},
            },
            [on("Check")],
        ),
        workflow("block", {"b": {"type": "add_to_list", "list": "Blocked"}}, [on("Block")]),
    ]
    events = [
        identify("ann", "2026-01-05 10:00", job_title="CEO", company_size=5),
        identify("bob", "2026-01-05 10:00", job_title="Intern", company_size=900),
        identify("cid", "2026-01-05 10:00", job_title="Intern", company_size=900),
        identify("dan", "2026-01-05 10:00", job_title="Intern", company_size=20),
        track("cid", "Block", "2026-01-05 10:30"),
        track("ann", "Check", "2026-01-05 11:00"),
        track("bob", "Check", "2026-01-05 11:00"),
        track("cid", "Check", "2026-01-05 11:00"),
        track("dan", "Check", "2026-01-05 11:00"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.lists("ann") == ["Priority"]
    assert out.lists("bob") == ["Priority"]
    assert out.lists("cid") == ["Blocked", "Later"]
    assert out.lists("dan") == ["Later"]


def _split_flow() -> dict[str, Any]:
    return workflow(
        "ab",
        {
            "split": {
                "type": "split",
                "branches": [{"weight": 1, "next": "a"}, {"weight": 3, "next": "b"}],
            },
            "a": {"type": "add_to_list", "list": "A"},
            "b": {"type": "add_to_list", "list": "B"},
        },
        [on("Go")],
        reentry="always",
    )


def test_split_is_deterministic_and_roughly_weighted(tmp_path: Path) -> None:
    people = [f"user-{i:03d}@example.com" for i in range(200)]
    events = [track(p, "Go", "2026-01-05 10:00") for p in people]
    # every contact enters a second time: it must take the same branch again
    events += [track(p, "Go", "2026-01-06 10:00") for p in people]
    first = run_scenario(tmp_path, [_split_flow()], events)
    again = run_scenario(tmp_path, [_split_flow()], list(reversed(events[:200])))
    lists = {p: first.lists(p) for p in people}
    assert all(value in (["A"], ["B"]) for value in lists.values())
    assert lists == {p: again.lists(p) for p in people}
    share_a = sum(value == ["A"] for value in lists.values())
    assert 30 <= share_a <= 70  # 25 % of 200 is 50; the seeded hash is stable


def test_start_workflow_enters_the_other_one_with_the_event_properties(tmp_path: Path) -> None:
    flows = [
        workflow(
            "parent",
            {
                "go": {"type": "start_workflow", "workflow": "child", "next": "mark"},
                "mark": {"type": "add_to_list", "list": "Parent done"},
            },
            [on("Quote Requested")],
            reentry="always",
        ),
        workflow(
            "child",
            {
                "pts": {"type": "update_score", "add": 10, "next": "copy"},
                "copy": {
                    "type": "set_attribute",
                    "attribute": "product",
                    "from_property": "product",
                },
            },
            [],  # no trigger of its own: only start_workflow enters it (reentry never)
        ),
    ]
    events = [
        track("ann", "Quote Requested", "2026-01-05 10:00", product="crm"),
        track("ann", "Quote Requested", "2026-01-06 10:00", product="ads"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 10}
    assert out.attributes("ann") == {"product": "crm"}
    assert out.lists("ann") == ["Parent done"]
    assert sorted((r.workflow_id, r.state) for r in out.runs("ann")) == [
        ("child", "completed"),
        ("parent", "completed"),
        ("parent", "completed"),
    ]


def test_exit_node_ends_the_run(tmp_path: Path) -> None:
    flows = [
        workflow(
            "gate",
            {
                "check": {
                    "type": "condition",
                    "if": {"property": "plan", "eq": "free"},
                    "then": "stop",
                    "else": "tag",
                },
                "stop": {"type": "exit"},
                "tag": {"type": "add_to_list", "list": "Paying"},
            },
            [on("Signed Up")],
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00", plan="free"),
        track("bob", "Signed Up", "2026-01-05 10:00", plan="pro"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.lists("ann") == []
    assert out.lists("bob") == ["Paying"]
    assert sorted((r.contact_id, r.state, r.node, r.end_reason) for r in out.runs()) == [
        ("ann", "completed", "stop", "completed"),
        ("bob", "completed", "tag", "completed"),
    ]


# --- entry and exit rules ---------------------------------------------------------------


def _nurture_with_goal() -> list[dict[str, Any]]:
    return [
        workflow(
            "nurture",
            {
                "pause": {"type": "wait", "for": "P7D", "next": "send"},
                "send": {"type": "send_email", "template": "nurture-1"},
            },
            [on("Signed Up")],
            exit_when={"in_list": "Customers"},
        ),
        workflow(
            "buy", {"c": {"type": "add_to_list", "list": "Customers"}}, [on("Order Completed")]
        ),
    ]


def test_exit_when_ends_a_waiting_run_as_goal(tmp_path: Path) -> None:
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("ann", "Order Completed", "2026-01-07 10:00"),
        track("bob", "Signed Up", "2026-01-05 10:00"),
        track("cid", "Order Completed", "2026-01-05 09:00"),
        track("cid", "Signed Up", "2026-01-05 10:00"),  # already a customer: never enters
    ]
    out = run_scenario(tmp_path, _nurture_with_goal(), events)
    assert out.sent() == [("bob", "nurture-1", "2026-01-12T10:00:00Z")]
    (ann,) = out.runs("ann", "nurture")
    assert (ann.state, ann.end_reason) == ("exited", "goal")
    assert out.runs("cid", "nurture") == []


def test_exit_when_ends_the_run_as_soon_as_the_goal_holds(tmp_path: Path) -> None:
    """The goal is reached by another workflow's change at 2026-01-07 10:00: the run
    must not stay 'waiting' until its wait comes due five days later."""
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("ann", "Order Completed", "2026-01-07 10:00"),
    ]
    out = run_scenario(tmp_path, _nurture_with_goal(), events, until=ts("2026-01-08 00:00"))
    (ann,) = out.runs("ann", "nurture")
    assert (ann.state, ann.end_reason) == ("exited", "goal")
    assert ann.ended_at.isoformat() == "2026-01-07T10:00:00+00:00"


def test_exit_when_on_an_event_property_is_checked_on_every_event(tmp_path: Path) -> None:
    flows = [
        workflow(
            "drip",
            {
                "pause": {"type": "wait", "for": "P2D", "next": "send"},
                "send": {"type": "send_email", "template": "welcome-2"},
            },
            [on("Signed Up")],
            exit_when={"event": "Unsubscribed", "within": "P30D", "gte": 1},
        ),
    ]
    events = [
        track("ann", "Signed Up", "2026-01-05 10:00"),
        track("ann", "Unsubscribed", "2026-01-06 08:00"),
        track("bob", "Signed Up", "2026-01-05 10:00"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent() == [("bob", "welcome-2", "2026-01-07T10:00:00Z")]
    (ann,) = out.runs("ann")
    assert (ann.state, ann.end_reason) == ("exited", "goal")
    assert ann.ended_at.isoformat() == "2026-01-06T08:00:00+00:00"


@pytest.mark.parametrize(
    ("reentry", "expected"),
    [
        ("never", 10),
        ("always", 60),
        # entries at day 0 and day 7 (exactly the cooldown) and day 14; day 3, 8 and
        # 13 are refused: the cooldown counts from the last entry, not the last attempt
        ("P7D", 30),
    ],
)
def test_reentry(tmp_path: Path, reentry: str, expected: int) -> None:
    flows = [
        workflow("pts", {"p": {"type": "update_score", "add": 10}}, [on("Act")], reentry=reentry)
    ]
    days = ["05", "08", "12", "13", "18", "19"]
    events = [track("ann", "Act", f"2026-01-{day} 10:00") for day in days]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": expected}
    entered = [r.entered_at.date().isoformat() for r in out.runs("ann")]
    if reentry == "P7D":
        assert entered == ["2026-01-05", "2026-01-12", "2026-01-19"]


# --- trigger kinds ----------------------------------------------------------------------


def test_event_trigger_with_where(tmp_path: Path) -> None:
    flows = [
        workflow(
            "pricing",
            {"p": {"type": "update_score", "add": 30}},
            [on("Page Viewed", {"property": "url", "matches": "/pricing*"})],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Page Viewed", "2026-01-05 10:00", url="/pricing"),
        track("ann", "Page Viewed", "2026-01-05 10:01", url="/pricing/enterprise"),
        track("ann", "Page Viewed", "2026-01-05 10:02", url="/blog/pricing"),
        track("ann", "Page Viewed", "2026-01-05 10:03"),
        track("ann", "Pricing Viewed", "2026-01-05 10:04", url="/pricing"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 60}


def test_contact_created_fires_once_per_contact(tmp_path: Path) -> None:
    flows = [
        workflow(
            "hello",
            {"h": {"type": "send_email", "template": "welcome-a"}},
            [{"type": "contact_created"}],
            reentry="always",
        ),
    ]
    events = [
        identify("ann", "2026-01-05 10:00", name="Ann"),
        track("ann", "Page Viewed", "2026-01-05 10:05"),
        track("bob", "Page Viewed", "2026-01-06 10:00"),
        {"type": "group", "userId": "cid", "groupId": "acme", "timestamp": ts("2026-01-07 10:00")},
        identify("ann", "2026-01-08 10:00", name="Ann K."),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent() == [
        ("ann", "welcome-a", "2026-01-05T10:00:00Z"),
        ("bob", "welcome-a", "2026-01-06T10:00:00Z"),
        ("cid", "welcome-a", "2026-01-07T10:00:00Z"),
    ]


def test_attribute_changed_from_identify_and_from_another_workflow(tmp_path: Path) -> None:
    flows = [
        workflow(
            "watch",
            {"n": {"type": "update_score", "score": "PLAN_CHANGES", "add": 1}},
            [{"type": "attribute_changed", "attribute": "plan"}],
            reentry="always",
        ),
        workflow(
            "upgrade",
            {"u": {"type": "set_attribute", "attribute": "plan", "value": "pro"}},
            [on("Upgraded")],
            reentry="always",
        ),
    ]
    events = [
        identify("ann", "2026-01-05 10:00", plan="free"),  # None -> free
        identify("ann", "2026-01-05 11:00", plan="free"),  # no change
        identify("ann", "2026-01-05 12:00", country="US"),  # other attribute
        track("ann", "Upgraded", "2026-01-06 10:00"),  # free -> pro, by a workflow
        track("ann", "Upgraded", "2026-01-07 10:00"),  # already pro
        track("bob", "Upgraded", "2026-01-07 10:00"),  # None -> pro
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"PLAN_CHANGES": 2}
    assert out.scores("bob") == {"PLAN_CHANGES": 1}
    assert out.attributes("ann") == {"plan": "pro", "country": "US"}


def test_list_added_and_list_removed_fired_by_other_workflows(tmp_path: Path) -> None:
    flows = [
        workflow(
            "join", {"a": {"type": "add_to_list", "list": "VIP"}}, [on("Join")], reentry="always"
        ),
        workflow(
            "leave",
            {"r": {"type": "remove_from_list", "list": "VIP"}},
            [on("Leave")],
            reentry="always",
        ),
        workflow(
            "welcome-vip",
            {"w": {"type": "update_score", "add": 100}},
            [{"type": "list_added", "list": "VIP"}],
            reentry="always",
        ),
        workflow(
            "goodbye-vip",
            {"g": {"type": "send_email", "template": "nurture-2"}},
            [{"type": "list_removed", "list": "VIP"}],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Join", "2026-01-05 10:00"),
        track("ann", "Join", "2026-01-05 11:00"),  # already on it: no list_added
        track("ann", "Leave", "2026-01-06 10:00"),
        track("ann", "Leave", "2026-01-06 11:00"),  # not on it: no list_removed
        track("ann", "Join", "2026-01-07 10:00"),
        track("bob", "Leave", "2026-01-05 10:00"),
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 200}
    assert out.lists("ann") == ["VIP"]
    assert out.sent() == [("ann", "nurture-2", "2026-01-06T10:00:00Z")]
    assert "SCORE" not in out.scores("bob")


def test_score_crossed_fires_only_on_crossing(tmp_path: Path) -> None:
    flows = [
        workflow("act", {"p": {"type": "update_score", "add": 20}}, [on("Act")], reentry="always"),
        workflow(
            "drop", {"d": {"type": "update_score", "set": 10}}, [on("Drop")], reentry="always"
        ),
        workflow(
            "hot",
            {"h": {"type": "set_attribute", "attribute": "went_hot", "increment": 1}},
            [{"type": "score_crossed", "score": "SCORE", "above": 50}],
            reentry="always",
        ),
        workflow(
            "cold",
            {"c": {"type": "set_attribute", "attribute": "went_cold", "increment": 1}},
            [{"type": "score_crossed", "below": 50}],
            reentry="always",
        ),
    ]
    times = iter(f"2026-01-05 10:{m:02d}" for m in range(60))
    events = [track("ann", "Act", next(times)) for _ in range(5)]  # 20 40 60 80 100
    events += [track("ann", "Drop", next(times))]  # 100 -> 10: falls under 50 once
    events += [track("ann", "Act", next(times)) for _ in range(3)]  # 30 50 70: reaches 50
    events += [track("bob", "Act", next(times)) for _ in range(2)]  # 20 40: never
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": 70}
    assert out.attributes("ann") == {"went_hot": 2, "went_cold": 1}
    assert out.attributes("bob") == {}
    hot = [r.entered_at.strftime("%H:%M") for r in out.runs("ann", "hot")]
    assert hot == ["10:02", "10:07"]


def test_inactivity_fires_once_per_quiet_spell(tmp_path: Path) -> None:
    flows = [
        workflow(
            "wake-up",
            {"n": {"type": "send_email", "template": "nurture-1"}},
            [{"type": "inactivity", "events": ["Email Opened", "Email Clicked"], "for": "P7D"}],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Email Opened", "2026-01-05 10:00"),
        track("ann", "Page Viewed", "2026-01-10 10:00"),  # not an engagement event
        # quiet from 01-05 10:00: fires 01-12 10:00 (once, though it stays quiet)
        track("ann", "Email Clicked", "2026-01-20 08:30"),  # a new spell starts
        identify("bob", "2026-01-25 12:00", name="Bob"),  # quiet since created
        track("cid", "Email Opened", "2026-01-25 12:00"),
        track("cid", "Email Opened", "2026-01-30 12:00"),  # resets the spell
    ]
    out = run_scenario(tmp_path, flows, events)
    assert out.sent() == [
        ("ann", "nurture-1", "2026-01-12T10:00:00Z"),
        ("ann", "nurture-1", "2026-01-27T08:30:00Z"),
        ("bob", "nurture-1", "2026-02-01T12:00:00Z"),
        ("cid", "nurture-1", "2026-02-06T12:00:00Z"),
    ]


def test_inactivity_respects_until(tmp_path: Path) -> None:
    flows = [
        workflow(
            "wake-up",
            {"n": {"type": "send_email", "template": "nurture-1"}},
            [{"type": "inactivity", "events": ["Email Opened"], "for": "P7D"}],
            reentry="always",
        ),
    ]
    events = [
        track("ann", "Email Opened", "2026-01-05 10:00"),
        track("bob", "Email Opened", "2026-01-09 10:00"),
    ]
    out = run_scenario(tmp_path, flows, events, until=ts("2026-01-14 00:00"))
    assert out.sent() == [("ann", "nurture-1", "2026-01-12T10:00:00Z")]


def _weekly() -> list[dict[str, Any]]:
    return [
        workflow("join", {"a": {"type": "add_to_list", "list": "Members"}}, [on("Join")]),
        workflow(
            "digest",
            {"d": {"type": "send_email", "template": "welcome-2"}},
            [{"type": "schedule", "cron": "0 9 * * 1", "segment": {"in_list": "Members"}}],
            reentry="always",
        ),
    ]


def test_schedule_fires_at_cron_moments_for_the_segment(tmp_path: Path) -> None:
    events = [
        track("ann", "Join", "2026-01-05 10:00"),  # a Monday, after 09:00
        identify("bob", "2026-01-05 10:00", name="Bob"),  # not in the segment
        track("cid", "Join", "2026-01-14 10:00"),
    ]
    out = run_scenario(tmp_path, _weekly(), events, until=ts("2026-01-27 00:00"))
    assert out.sent() == [
        ("ann", "welcome-2", "2026-01-12T09:00:00Z"),
        ("ann", "welcome-2", "2026-01-19T09:00:00Z"),
        ("cid", "welcome-2", "2026-01-19T09:00:00Z"),
        ("ann", "welcome-2", "2026-01-26T09:00:00Z"),
        ("cid", "welcome-2", "2026-01-26T09:00:00Z"),
    ]


def test_schedule_without_until_fires_only_within_the_events_span(tmp_path: Path) -> None:
    events = [
        track("ann", "Join", "2026-01-05 10:00"),
        track("ann", "Ping", "2026-01-20 10:00"),
    ]
    out = run_scenario(tmp_path, _weekly(), events)
    assert out.sent() == [
        ("ann", "welcome-2", "2026-01-12T09:00:00Z"),
        ("ann", "welcome-2", "2026-01-19T09:00:00Z"),
    ]


# --- guards -----------------------------------------------------------------------------


def test_loop_guard_fails_a_run_that_never_pauses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # validate refuses this loop; the guard is for documents that got past it (a store
    # deployed by an older release, a third-party kind), so validation is told it pauses
    monkeypatch.setattr(Wait, "pauses_in", classmethod(lambda cls, data: True))
    flows = [
        workflow(
            "spin",
            {
                "bump": {"type": "update_score", "add": 1, "next": "hold"},
                # a date in the past never parks the run: the cycle runs on at once
                "hold": {"type": "wait", "until": "2020-01-01T00:00:00Z", "next": "bump"},
            },
            [on("Go")],
        ),
        workflow("fine", {"f": {"type": "add_to_list", "list": "Fine"}}, [on("Go")]),
    ]
    events = [track("ann", "Go", "2026-01-05 10:00")]
    out = run_scenario(tmp_path, flows, events)
    assert out.scores("ann") == {"SCORE": MAX_NODES_PER_WAKE // 2}
    assert out.lists("ann") == ["Fine"]
    (spin,) = out.runs("ann", "spin")
    assert (spin.state, spin.end_reason) == ("failed", "loop guard")
    assert f"more than {MAX_NODES_PER_WAKE} nodes" in spin.error


def test_cascade_guard_stops_workflows_that_trigger_each_other(tmp_path: Path) -> None:
    flows = [
        workflow("start", {"a": {"type": "add_to_list", "list": "Ping"}}, [on("Go")]),
        workflow(
            "off",
            {"r": {"type": "remove_from_list", "list": "Ping"}},
            [{"type": "list_added", "list": "Ping"}],
            reentry="always",
        ),
        workflow(
            "on",
            {"a": {"type": "add_to_list", "list": "Ping"}},
            [{"type": "list_removed", "list": "Ping"}],
            reentry="always",
        ),
        workflow("other", {"o": {"type": "update_score", "add": 5}}, [on("Go")]),
    ]
    events = [
        track("ann", "Go", "2026-01-05 10:00"),
        track("bob", "Later", "2026-01-05 11:00"),
    ]
    out = run_scenario(tmp_path, flows, events)
    (guard,) = out.audit("guard")
    assert guard.contact_id == "ann"
    assert f"more than {MAX_ENTRIES_PER_WAKE} workflow entries" in guard.new
    assert len(out.runs("ann")) == MAX_ENTRIES_PER_WAKE
    assert all(r.state == "completed" for r in out.runs("ann"))
    assert out.scores("ann") == {"SCORE": 5}
    assert "bob" in out.contacts


# --- the shipped playbooks --------------------------------------------------------------


@pytest.fixture(scope="module")
def playbooks() -> dict[str, Any]:
    folder = Path(str(files("workflows")))
    events = folder / "examples" / "events.jsonl"
    return simulate([folder], events, parse_timestamp("2026-03-21T00:00:00Z")).result


def test_playbooks_quote_requests(playbooks: dict[str, Any]) -> None:
    people = playbooks["contacts"]
    # gina: 5 (signed up) + 10 (email click) + 30 (pricing page) + 30 (quote) = 75: the
    # quote fast track puts her on 'Qualified leads' (not above 80, so not sales-qualified)
    gina = people["gina@initech.com"]
    assert gina["scores"]["SCORE"] == 75
    assert "Qualified leads" in gina["lists"]
    assert "Sales-qualified leads" not in gina["lists"]
    # ann went past 80 before her quote (90 on 2026-01-22) and ends at 150: sales-qualified
    ann = people["ann@acme.com"]
    assert ann["scores"]["SCORE"] == 150
    assert "Sales-qualified leads" in ann["lists"]
    assert "Qualified leads" not in ann["lists"]
    hooks = [
        (m["contact"], m["at"])
        for m in playbooks["messages"]
        if m["channel"] == "webhook" and m["workflow"] == "quote-request-fast-track"
    ]
    assert hooks == [
        ("gina@initech.com", "2026-01-12T15:30:00Z"),
        ("ann@acme.com", "2026-01-27T13:00:00Z"),
        ("jon@northwind.com", "2026-01-27T15:10:00Z"),
    ]
    # jon (no consent yet) is sent through double-opt-in one minute after his quote
    assert {
        "contact": "jon@northwind.com",
        "channel": "email",
        "template": "confirm-subscription",
        "subject": "Please confirm your subscription",
        "workflow": "double-opt-in",
        "at": "2026-01-27T15:11:00Z",
    } in playbooks["messages"]


def test_playbooks_inactivity_reset_and_rollups(playbooks: dict[str, Any]) -> None:
    people = playbooks["contacts"]
    # jon never opened an email: 30 days after he was created the reset takes his 30
    # points away, and score-bands moves him back to 'New leads'
    jon = people["jon@northwind.com"]
    assert jon["scores"]["SCORE"] == 0
    assert "New leads" in jon["lists"]
    assert "Qualified leads" not in jon["lists"]
    acme = playbooks["accounts"]["acme"]
    members = [v for v in people.values() if v["account"] == "acme"]
    assert acme["scores"]["SCORE"] == sum(v["scores"]["SCORE"] for v in members) == 245
    assert playbooks["rejected"] == []
    welcome = [
        (m.get("template") or m.get("text"), m["at"])
        for m in playbooks["messages"]
        if m["contact"] == "ann@acme.com" and m["workflow"] == "welcome-series"
    ]
    assert [at for _, at in welcome] == [
        "2026-01-05T10:00:00Z",
        "2026-01-07T10:00:00Z",
        "2026-01-12T10:00:00Z",
    ]
    nps = sorted(
        (m["at"], m["contact"]) for m in playbooks["messages"] if m.get("template") == "nps-survey"
    )
    assert nps == [
        ("2026-02-01T09:00:00Z", "gina@initech.com"),
        ("2026-02-01T09:00:00Z", "hank@initech.com"),
        ("2026-02-01T09:00:00Z", "ivy@initech.com"),
        ("2026-03-01T09:00:00Z", "gina@initech.com"),
        ("2026-03-01T09:00:00Z", "hank@initech.com"),
        ("2026-03-01T09:00:00Z", "ivy@initech.com"),
    ]
