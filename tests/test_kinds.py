"""Every node and trigger kind: its documentation, schema fragment, parsing, edges, label,
and its behaviour against a small fake of the runner's NodeContext."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from actions.set_attribute import SetAttribute
from actions.split import Split
from actions.update_score import UpdateScore
from engine.conditions import ConditionError
from engine.durations import Duration
from engine.errors import ActionFailed
from engine.kinds import (
    AwaitEvent,
    Continue,
    CronDriven,
    Edge,
    NodeKind,
    QuietDriven,
    Signal,
    Sleep,
    TriggerKind,
)
from engine.registry import default_registry
from engine.validation import check_document
from triggers.schedule import Schedule
from triggers.score_crossed import ScoreCrossed

REGISTRY = default_registry()
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)  # a Monday

# --- minimal valid examples: every registered kind must have one ------------------------

NODE_EXAMPLES: dict[str, dict[str, Any]] = {
    "update_score": {"type": "update_score", "add": 30, "next": "b"},
    "set_attribute": {"type": "set_attribute", "attribute": "NPS", "value": 9, "next": "b"},
    "add_to_list": {"type": "add_to_list", "list": "Warm leads", "next": "b"},
    "remove_from_list": {"type": "remove_from_list", "list": "New leads", "next": "b"},
    "send_email": {"type": "send_email", "template": "welcome-a", "next": "b"},
    "send_sms": {"type": "send_sms", "text": "Welcome!", "next": "b"},
    "webhook": {"type": "webhook", "url": "https://crm.example.com/hooks/lead", "next": "b"},
    "wait": {"type": "wait", "for": "P2D", "next": "b"},
    "wait_for_event": {
        "type": "wait_for_event",
        "event": "Subscription Confirmed",
        "timeout": "P7D",
        "next": "b",
        "on_timeout": "c",
    },
    "condition": {
        "type": "condition",
        "if": {"score": "SCORE", "gt": 80},
        "then": "b",
        "else": "c",
    },
    "split": {
        "type": "split",
        "branches": [{"weight": 50, "next": "b"}, {"weight": 50, "next": "c"}],
    },
    "start_workflow": {"type": "start_workflow", "workflow": "double-opt-in", "next": "b"},
    "exit": {"type": "exit"},
}

NODE_EDGES: dict[str, tuple[Edge, ...]] = {
    "update_score": (Edge("next", "b"),),
    "set_attribute": (Edge("next", "b"),),
    "add_to_list": (Edge("next", "b"),),
    "remove_from_list": (Edge("next", "b"),),
    "send_email": (Edge("next", "b"),),
    "send_sms": (Edge("next", "b"),),
    "webhook": (Edge("next", "b"),),
    "wait": (Edge("next", "b"),),
    "wait_for_event": (Edge("next", "b"), Edge("on_timeout", "c")),
    "condition": (Edge("then", "b"), Edge("else", "c")),
    "split": (Edge("branches/0/next", "b"), Edge("branches/1/next", "c")),
    "start_workflow": (Edge("next", "b"),),
    "exit": (),
}

NODE_LABELS: dict[str, str] = {
    "update_score": "+30 SCORE",
    "set_attribute": "NPS = 9",
    "add_to_list": "+ list Warm leads",
    "remove_from_list": "\N{MINUS SIGN} list New leads",
    "send_email": "email welcome-a",
    "send_sms": "SMS \N{LEFT DOUBLE QUOTATION MARK}Welcome!\N{RIGHT DOUBLE QUOTATION MARK}",
    "webhook": "webhook crm.example.com",
    "wait": "wait 2 days",
    "wait_for_event": "wait for Subscription Confirmed (≤ 7 days)",
    "condition": "if SCORE > 80",
    "split": "split 50% / 50%",
    "start_workflow": "start double-opt-in",
    "exit": "exit",
}

TRIGGER_EXAMPLES: dict[str, dict[str, Any]] = {
    "event": {"type": "event", "event": "Page Viewed"},
    "contact_created": {"type": "contact_created"},
    "attribute_changed": {"type": "attribute_changed", "attribute": "job_title"},
    "list_added": {"type": "list_added", "list": "Customers"},
    "list_removed": {"type": "list_removed", "list": "Newsletter"},
    "score_crossed": {"type": "score_crossed", "above": 50},
    "inactivity": {"type": "inactivity", "events": ["Email Opened"], "for": "P30D"},
    "schedule": {"type": "schedule", "cron": "0 3 * * 1"},
}

TRIGGER_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "event": (("event", "Page Viewed"),),
    "contact_created": (("contact_created", ""),),
    "attribute_changed": (("attribute_changed", "job_title"),),
    "list_added": (("list_added", "Customers"),),
    "list_removed": (("list_removed", "Newsletter"),),
    "score_crossed": (("score_changed", "SCORE"),),
    "inactivity": (),
    "schedule": (),
}

TRIGGER_LABELS: dict[str, str] = {
    "event": "on Page Viewed",
    "contact_created": "on new contact",
    "attribute_changed": "on job_title changed",
    "list_added": "on added to Customers",
    "list_removed": "on removed from Newsletter",
    "score_crossed": "SCORE reaches 50",
    "inactivity": "no Email Opened for 30 days",
    "schedule": "cron 0 3 * * 1",
}


def test_every_node_kind_has_an_example() -> None:
    missing = sorted(set(REGISTRY.nodes) - set(NODE_EXAMPLES))
    assert not missing, f"add a minimal example for the new node kind(s) {missing}"
    assert set(NODE_EXAMPLES) == set(REGISTRY.nodes) == set(NODE_EDGES) == set(NODE_LABELS)


def test_every_trigger_kind_has_an_example() -> None:
    missing = sorted(set(REGISTRY.triggers) - set(TRIGGER_EXAMPLES))
    assert not missing, f"add a minimal example for the new trigger kind(s) {missing}"
    assert set(TRIGGER_EXAMPLES) == set(REGISTRY.triggers) == set(TRIGGER_LABELS)


def test_the_contract_kinds_are_registered() -> None:
    assert set(REGISTRY.nodes) >= {
        "update_score", "set_attribute", "add_to_list", "remove_from_list", "send_email",
        "send_sms", "webhook", "wait", "wait_for_event", "condition", "split",
        "start_workflow", "exit",
    }  # fmt: skip
    assert set(REGISTRY.triggers) >= {
        "event", "contact_created", "attribute_changed", "list_added", "list_removed",
        "score_crossed", "inactivity", "schedule",
    }  # fmt: skip


ALL_KINDS = [("node", name) for name in sorted(REGISTRY.nodes)] + [
    ("trigger", name) for name in sorted(REGISTRY.triggers)
]


def kind_of(what: str, name: str) -> type[NodeKind] | type[TriggerKind]:
    return REGISTRY.nodes[name] if what == "node" else REGISTRY.triggers[name]


@pytest.mark.parametrize(("what", "name"), ALL_KINDS)
def test_kind_is_documented(what: str, name: str) -> None:
    kind = kind_of(what, name)
    assert kind.type == name
    assert isinstance(kind.title, str) and kind.title.strip()
    assert isinstance(kind.description, str) and kind.description.strip().endswith(".")
    assert set(kind.schema) <= {"properties", "required"}
    properties = kind.schema["properties"]
    assert "type" not in properties, "the schema adds 'type' itself"
    assert set(kind.schema.get("required", [])) <= set(properties)
    for key, prop in properties.items():
        assert isinstance(prop.get("title"), str) and prop["title"].strip(), key
        assert isinstance(prop.get("description"), str) and prop["description"].strip(), key


@pytest.mark.parametrize(("what", "name"), ALL_KINDS)
def test_kind_is_a_frozen_dataclass(what: str, name: str) -> None:
    kind = kind_of(what, name)
    assert dataclasses.is_dataclass(kind)
    example = (NODE_EXAMPLES if what == "node" else TRIGGER_EXAMPLES)[name]
    parsed = kind.parse(example)
    assert type(parsed) is kind
    for one in dataclasses.fields(parsed):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(parsed, one.name, None)
    assert parsed == kind.parse(example)


def document_with(node: dict[str, Any] | None = None, trigger: dict[str, Any] | None = None):
    return {
        "id": "example",
        "version": 1,
        "triggers": [trigger or {"type": "contact_created"}],
        "start": "a",
        "nodes": {"a": node or {"type": "exit"}, "b": {"type": "exit"}, "c": {"type": "exit"}},
    }


@pytest.mark.parametrize("name", sorted(REGISTRY.nodes))
def test_node_example_is_a_valid_workflow_node(name: str) -> None:
    node = NODE_EXAMPLES[name]
    if name in ("update_score", "set_attribute", "add_to_list", "remove_from_list", "send_email",
                "send_sms", "webhook", "start_workflow"):  # fmt: skip
        # make c reachable for kinds with only one edge
        doc = document_with(node)
        doc["nodes"]["b"] = {"type": "split", "branches": [{"weight": 1, "next": "c"}]}
    elif name in ("wait", "exit"):
        doc = document_with(node)
        doc["nodes"] = {"a": node, "b": {"type": "exit"}} if name == "wait" else {"a": node}
    else:
        doc = document_with(node)
    assert check_document(doc, "example.json", REGISTRY) == []


@pytest.mark.parametrize("name", sorted(REGISTRY.triggers))
def test_trigger_example_is_a_valid_trigger(name: str) -> None:
    doc = document_with(trigger=TRIGGER_EXAMPLES[name])
    doc["nodes"] = {"a": {"type": "exit"}}
    assert check_document(doc, "example.json", REGISTRY) == []


@pytest.mark.parametrize("name", sorted(REGISTRY.nodes))
def test_node_edges(name: str) -> None:
    kind = REGISTRY.nodes[name]
    node = kind.parse(NODE_EXAMPLES[name])
    assert node.edges() == NODE_EDGES[name]
    assert tuple(kind.raw_edges(NODE_EXAMPLES[name])) == NODE_EDGES[name]


@pytest.mark.parametrize("name", sorted(REGISTRY.nodes))
def test_node_label(name: str) -> None:
    assert REGISTRY.nodes[name].parse(NODE_EXAMPLES[name]).label() == NODE_LABELS[name]


@pytest.mark.parametrize("name", sorted(REGISTRY.nodes))
def test_only_waiting_kinds_pause(name: str) -> None:
    assert REGISTRY.nodes[name].pauses is (name in ("wait", "wait_for_event"))


@pytest.mark.parametrize("name", sorted(REGISTRY.triggers))
def test_trigger_keys_and_label(name: str) -> None:
    trigger = REGISTRY.triggers[name].parse(TRIGGER_EXAMPLES[name])
    assert trigger.keys() == TRIGGER_KEYS[name]
    assert trigger.label() == TRIGGER_LABELS[name]


def test_raw_edges_ignore_malformed_targets() -> None:
    kind = REGISTRY.nodes["condition"]
    assert tuple(kind.raw_edges({"then": 5, "else": "c"})) == (Edge("else", "c"),)
    split = REGISTRY.nodes["split"]
    branches = [{"weight": 1, "next": "a"}, "junk", {"next": 3}, {"next": "d"}]
    assert tuple(split.raw_edges({"branches": branches})) == (
        Edge("branches/0/next", "a"),
        Edge("branches/3/next", "d"),
    )
    assert tuple(split.raw_edges({"branches": "a"})) == ()


# --- a fake of what the runner gives a node ----------------------------------------------


@dataclass
class FakeFacts:
    now: datetime
    attributes: Mapping[str, Any]
    scores: Mapping[str, float]
    grades: Mapping[str, str]
    lists: set[str]
    properties: Mapping[str, Any]

    def count_events(self, name: str, since: datetime | None) -> int:
        return 0


@dataclass
class FakeContext:
    now: datetime = NOW
    scores: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    grades: dict[str, str] = field(default_factory=dict)
    lists: set[str] = field(default_factory=set)
    properties: dict[str, Any] = field(default_factory=dict)
    templates: set[str] = field(default_factory=lambda: {"welcome-a", "welcome-b"})
    point: float = 0.0
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    started: list[str] = field(default_factory=list)

    @property
    def facts(self) -> FakeFacts:
        return FakeFacts(
            self.now, self.attributes, self.scores, self.grades, self.lists, self.properties
        )

    def score(self, name: str) -> float:
        return self.scores.get(name, 0.0)

    def set_score(self, name: str, value: float) -> None:
        self.scores[name] = value

    def attribute(self, name: str) -> Any:
        return self.attributes.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self.attributes[name] = value

    def add_to_list(self, name: str) -> None:
        self.lists.add(name)

    def remove_from_list(self, name: str) -> None:
        self.lists.discard(name)

    def send(self, channel: str, payload: Mapping[str, Any]) -> None:
        self.sent.append((channel, dict(payload)))

    def has_template(self, name: str) -> bool:
        return name in self.templates

    def render_email(self, template: str, subject: str | None) -> dict[str, Any]:
        return {"subject": subject or f"<{template}>", "text": f"<{template} body>"}

    def render_text(self, text: str, what: str) -> str:
        return text.replace("{{ contact.id }}", "ann")

    def start_workflow(self, workflow_id: str) -> None:
        self.started.append(workflow_id)

    def split_point(self) -> float:
        return self.point


def node(spec: dict[str, Any]) -> Any:
    return REGISTRY.nodes[spec["type"]].parse(spec)


# --- update_score ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "old", "new"),
    [
        ({"add": 30}, 10, 40),
        ({"add": -5}, 10, 5),
        ({"subtract": 10}, 25, 15),
        ({"subtract": 10}, 5, -5),  # no floor: goes negative
        ({"set": 0}, 73, 0),
        ({"set": 12.5}, 0, 12.5),
        ({"percent": -10}, 200, 180),
        ({"percent": 50}, 40, 60),
        ({"percent": -100}, 80, 0),
        ({"add": 0.1}, 0.2, 0.3),  # rounded, not 0.30000000000000004
        # a floor bounds a decrease ...
        ({"subtract": 10, "min": 0}, 5, 0),
        ({"subtract": 10, "min": 0}, 50, 40),
        ({"percent": -10, "min": 50}, 200, 180),
        ({"percent": -10, "min": 50}, 52, 50),
        # ... but never lifts a score that is already under it
        ({"subtract": 10, "min": 0}, -20, -20),
        ({"percent": -10, "min": 50}, 40, 40),
        ({"set": 0, "min": 10}, 50, 10),
        ({"set": 0, "min": 10}, 5, 5),
        # an increase is not held back by a floor
        ({"add": 5, "min": 50}, 10, 15),
        # a ceiling bounds an increase ...
        ({"add": 30, "max": 100}, 90, 100),
        ({"add": 30, "max": 100}, 50, 80),
        ({"percent": 50, "max": 100}, 80, 100),
        # ... but never lowers a score that is already over it
        ({"add": 30, "max": 100}, 120, 120),
        ({"set": 200, "max": 100}, 150, 150),
        ({"set": 200, "max": 100}, 50, 100),
        # a decrease is not held back by a ceiling
        ({"subtract": 10, "max": 100}, 150, 140),
        ({"add": 100, "min": 0, "max": 100}, 50, 100),
        ({"subtract": 100, "min": 0, "max": 100}, 50, 0),
    ],
)
def test_update_score_apply(change: dict[str, Any], old: float, new: float) -> None:
    kind = node({"type": "update_score", **change})
    assert isinstance(kind, UpdateScore)
    assert kind.apply(old) == new


def test_update_score_execute() -> None:
    ctx = FakeContext(scores={"SCORE": 60, "OTHER": 1})
    step = node({"type": "update_score", "score": "SCORE", "add": 30, "next": "done"}).execute(ctx)
    assert step == Continue("done")
    assert ctx.scores == {"SCORE": 90, "OTHER": 1}


def test_update_score_defaults_to_score_and_starts_from_zero() -> None:
    ctx = FakeContext()
    assert node({"type": "update_score", "subtract": 5}).execute(ctx) == Continue(None)
    assert ctx.scores == {"SCORE": -5}


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ({"add": 30}, "+30 SCORE"),
        ({"subtract": 10, "min": 0}, "-10 SCORE (min 0)"),
        ({"set": 0, "score": "LOYALTY"}, "LOYALTY = 0"),
        ({"percent": -10, "min": 50}, "-10% SCORE (min 50)"),
        ({"percent": 5, "min": 0, "max": 100}, "+5% SCORE (min 0, max 100)"),
        ({"add": 2.5, "score": "SCORE_CRM"}, "+2.5 SCORE_CRM"),
    ],
)
def test_update_score_label(spec: dict[str, Any], label: str) -> None:
    assert node({"type": "update_score", **spec}).label() == label


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"add": 1, "set": 5},
            "expected exactly one of add, subtract, set, percent; found add, set",
        ),
        ({}, "expected exactly one of add, subtract, set, percent; found none"),
        ({"add": 1, "min": 10, "max": 5}, "min (10) is greater than max (5)"),
    ],
)
def test_update_score_parse_errors(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        node({"type": "update_score", **spec})
    assert str(caught.value) == message


# --- set_attribute ---------------------------------------------------------------------


def test_set_attribute_value() -> None:
    ctx = FakeContext(attributes={"CONSENT": False})
    step = node({"type": "set_attribute", "attribute": "CONSENT", "value": True, "next": "n"})
    assert step.execute(ctx) == Continue("n")
    assert ctx.attributes == {"CONSENT": True}


def test_set_attribute_value_may_be_any_json() -> None:
    ctx = FakeContext()
    node({"type": "set_attribute", "attribute": "tags", "value": ["a", {"b": None}]}).execute(ctx)
    assert ctx.attributes == {"tags": ["a", {"b": None}]}


@pytest.mark.parametrize(("old", "by", "new"), [(None, 1, 1), (2, 1, 3), (2, 1.5, 3.5), (5, -5, 0)])
def test_set_attribute_increment(old: Any, by: float, new: float) -> None:
    ctx = FakeContext(attributes={} if old is None else {"COUNT": old})
    node({"type": "set_attribute", "attribute": "COUNT", "increment": by}).execute(ctx)
    assert ctx.attributes == {"COUNT": new}


@pytest.mark.parametrize("old", ["3", True, [1], {"n": 1}])
def test_set_attribute_increment_of_a_non_number_fails(old: Any) -> None:
    ctx = FakeContext(attributes={"COUNT": old})
    with pytest.raises(ActionFailed, match="cannot increment attribute 'COUNT'"):
        node({"type": "set_attribute", "attribute": "COUNT", "increment": 1}).execute(ctx)
    assert ctx.attributes == {"COUNT": old}


def test_set_attribute_from_property() -> None:
    ctx = FakeContext(properties={"score": 9, "comment": "great"})
    node({"type": "set_attribute", "attribute": "NPS", "from_property": "score"}).execute(ctx)
    assert ctx.attributes == {"NPS": 9}


def test_set_attribute_from_a_missing_property_fails() -> None:
    ctx = FakeContext(properties={"comment": "great", "answer": 3})
    with pytest.raises(ActionFailed) as caught:
        node({"type": "set_attribute", "attribute": "NPS", "from_property": "score"}).execute(ctx)
    assert str(caught.value) == (
        "the event that woke this run has no property 'score' (it has: answer, comment)"
    )
    assert ctx.attributes == {}
    with pytest.raises(ActionFailed, match=r"\(it has: none\)"):
        node({"type": "set_attribute", "attribute": "NPS", "from_property": "x"}).execute(
            FakeContext()
        )


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ({"value": True}, "A = true"),
        ({"value": "double-opt-in"}, 'A = "double-opt-in"'),
        ({"value": None}, "A = null"),
        ({"increment": 1}, "A += 1"),
        ({"increment": -0.5}, "A += -0.5"),
        ({"from_property": "score"}, "A = event.score"),
    ],
)
def test_set_attribute_label(spec: dict[str, Any], label: str) -> None:
    kind = node({"type": "set_attribute", "attribute": "A", **spec})
    assert isinstance(kind, SetAttribute)
    assert kind.label() == label


@pytest.mark.parametrize(
    ("spec", "found"), [({}, "none"), ({"value": 1, "increment": 1}, "value, increment")]
)
def test_set_attribute_needs_exactly_one_source(spec: dict[str, Any], found: str) -> None:
    with pytest.raises(ValueError) as caught:
        node({"type": "set_attribute", "attribute": "A", **spec})
    assert str(caught.value) == (
        f"expected exactly one of value, increment, from_property; found {found}"
    )


# --- lists, messages, webhooks, other workflows ------------------------------------------


def test_add_and_remove_list() -> None:
    ctx = FakeContext(lists={"New leads"})
    add = node({"type": "add_to_list", "list": "Warm leads", "next": "off"})
    remove = node({"type": "remove_from_list", "list": "New leads", "next": "end"})
    assert add.execute(ctx) == Continue("off")
    assert ctx.lists == {"New leads", "Warm leads"}
    assert remove.execute(ctx) == Continue("end")
    assert ctx.lists == {"Warm leads"}
    # both are no-ops when there is nothing to do
    assert add.execute(ctx) == Continue("off")
    assert remove.execute(ctx) == Continue("end")
    assert ctx.lists == {"Warm leads"}


def test_send_email() -> None:
    ctx = FakeContext()
    step = node({"type": "send_email", "template": "welcome-a", "next": "wait"}).execute(ctx)
    assert step == Continue("wait")
    rendered = {"subject": "<welcome-a>", "text": "<welcome-a body>"}
    assert ctx.sent == [("email", {"template": "welcome-a", "rendered": rendered})]


def test_send_email_with_subject() -> None:
    ctx = FakeContext()
    node({"type": "send_email", "template": "welcome-b", "subject": "Hi"}).execute(ctx)
    rendered = {"subject": "Hi", "text": "<welcome-b body>"}
    assert ctx.sent == [("email", {"template": "welcome-b", "subject": "Hi", "rendered": rendered})]


def test_send_email_with_an_unknown_template_fails() -> None:
    ctx = FakeContext()
    with pytest.raises(ActionFailed) as caught:
        node({"type": "send_email", "template": "welcome-c", "next": "x"}).execute(ctx)
    assert str(caught.value) == "unknown email template 'welcome-c'"
    assert ctx.sent == []


def test_send_sms() -> None:
    ctx = FakeContext()
    text = "Hi {{ contact.attributes.FIRSTNAME }}, welcome!"
    assert node({"type": "send_sms", "text": text, "next": "n"}).execute(ctx) == Continue("n")
    assert ctx.sent == [("sms", {"text": text, "rendered": {"text": text}})]


def test_send_sms_label_is_shortened() -> None:
    label = node({"type": "send_sms", "text": "x" * 24}).label()
    assert label == "SMS “" + "x" * 24 + "”"
    label = node({"type": "send_sms", "text": "Hello there, welcome to Leadflow!"}).label()
    assert label == "SMS “Hello there, welcome to…”"


def test_webhook() -> None:
    ctx = FakeContext()
    body = {"contact": "{{ contact.id }}", "score": 90}
    spec = {"type": "webhook", "url": "https://crm.example.com:8443/hook?x=1", "body": body}
    webhook = node({**spec, "next": "n"})
    assert webhook.execute(ctx) == Continue("n")
    url = "https://crm.example.com:8443/hook?x=1"
    rendered = {"body": {"contact": "ann", "score": 90}}
    assert ctx.sent == [("webhook", {"url": url, "body": body, "rendered": rendered})]
    assert webhook.label() == "webhook crm.example.com:8443"
    ctx = FakeContext()
    node({"type": "webhook", "url": "http://h.example/"}).execute(ctx)
    assert ctx.sent == [
        ("webhook", {"url": "http://h.example/", "body": None, "rendered": {"body": None}})
    ]


def test_start_workflow() -> None:
    ctx = FakeContext()
    step = node({"type": "start_workflow", "workflow": "double-opt-in", "next": "done"})
    assert step.execute(ctx) == Continue("done")
    assert ctx.started == ["double-opt-in"]


def test_exit() -> None:
    ctx = FakeContext(scores={"SCORE": 5})
    assert node({"type": "exit"}).execute(ctx) == Continue(None)
    assert ctx == FakeContext(scores={"SCORE": 5})


# --- wait, wait_for_event --------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "due"),
    [
        ("P2D", datetime(2026, 1, 7, 10, 0, tzinfo=UTC)),
        ("PT90M", datetime(2026, 1, 5, 11, 30, tzinfo=UTC)),
        ("P1M", datetime(2026, 2, 5, 10, 0, tzinfo=UTC)),
    ],
)
def test_wait_for(duration: str, due: datetime) -> None:
    step = node({"type": "wait", "for": duration, "next": "sms"}).execute(FakeContext())
    assert step == Sleep(due, "sms")


def test_wait_for_a_month_from_a_month_end() -> None:
    ctx = FakeContext(now=datetime(2026, 1, 31, 9, 0, tzinfo=UTC))
    step = node({"type": "wait", "for": "P1M"}).execute(ctx)
    assert step == Sleep(datetime(2026, 2, 28, 9, 0, tzinfo=UTC), None)


def test_wait_for_nothing_goes_on_at_once() -> None:
    assert node({"type": "wait", "for": "PT0S", "next": "n"}).execute(FakeContext()) == Continue(
        "n"
    )


def test_wait_until() -> None:
    wait = node({"type": "wait", "until": "2026-03-01T09:00:00Z", "next": "n"})
    assert wait.execute(FakeContext()) == Sleep(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), "n")
    assert wait.label() == "wait until 2026-03-01T09:00:00Z"


def test_wait_until_with_an_offset_is_kept_in_utc() -> None:
    wait = node({"type": "wait", "until": "2026-03-01T10:00:00+01:00"})
    assert wait.execute(FakeContext()) == Sleep(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), None)


def test_wait_until_lower_case_rfc3339() -> None:
    wait = node({"type": "wait", "until": "2026-03-01t09:00:00z"})
    assert wait.execute(FakeContext()) == Sleep(datetime(2026, 3, 1, 9, 0, tzinfo=UTC), None)


@pytest.mark.parametrize("until", ["2025-12-31T23:59:59Z", "2026-01-05T10:00:00Z"])
def test_wait_until_a_past_moment_continues_at_once(until: str) -> None:
    wait = node({"type": "wait", "until": until, "next": "late"})
    assert wait.execute(FakeContext()) == Continue("late")


@pytest.mark.parametrize("spec", [{}, {"for": "P1D", "until": "2026-03-01T09:00:00Z"}])
def test_wait_needs_exactly_one_of_for_and_until(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected exactly one of for, until"):
        node({"type": "wait", **spec})


def test_wait_for_event() -> None:
    spec = {
        "type": "wait_for_event",
        "event": "Page Viewed",
        "where": {"property": "url", "matches": "/pricing*"},
        "timeout": "P7D",
        "next": "hot",
        "on_timeout": "cold",
    }
    waiting = node(spec)
    step = waiting.execute(FakeContext())
    assert isinstance(step, AwaitEvent)
    assert (step.event, step.timeout_at, step.next, step.on_timeout) == (
        "Page Viewed",
        datetime(2026, 1, 12, 10, 0, tzinfo=UTC),
        "hot",
        "cold",
    )
    assert step.where is not None
    assert step.where(FakeContext(properties={"url": "/pricing/team"}).facts) is True
    assert step.where(FakeContext(properties={"url": "/careers"}).facts) is False
    assert waiting.label() == "wait for Page Viewed where url matches /pricing* (≤ 7 days)"


def test_wait_for_event_without_where() -> None:
    step = node(NODE_EXAMPLES["wait_for_event"]).execute(FakeContext())
    assert step == AwaitEvent(
        "Subscription Confirmed", None, datetime(2026, 1, 12, 10, 0, tzinfo=UTC), "b", "c"
    )


def test_wait_for_event_bad_where_points_at_it() -> None:
    with pytest.raises(ConditionError) as caught:
        node({**NODE_EXAMPLES["wait_for_event"], "where": {"property": "x"}})
    assert caught.value.pointer == "/where"


# --- condition, split --------------------------------------------------------------------


def test_condition() -> None:
    cond = node({"type": "condition", "if": {"score": "SCORE", "gt": 80}, "then": "y", "else": "n"})
    assert cond.execute(FakeContext(scores={"SCORE": 81})) == Continue("y")
    assert cond.execute(FakeContext(scores={"SCORE": 80})) == Continue("n")
    assert cond.execute(FakeContext()) == Continue("n")


def test_condition_reads_every_kind_of_fact() -> None:
    spec = {
        "all": [
            {"attribute": "job_title", "in": ["CEO", "VP"]},
            {"grade": "GRADE", "in": ["A", "B"]},
            {"in_list": "Warm leads"},
            {"property": "percent", "gte": 75},
        ]
    }
    cond = node({"type": "condition", "if": spec, "then": "y", "else": "n"})
    ctx = FakeContext(
        attributes={"job_title": "VP"},
        grades={"GRADE": "B"},
        lists={"Warm leads"},
        properties={"percent": 80},
    )
    assert cond.execute(ctx) == Continue("y")
    ctx.properties["percent"] = 74
    assert cond.execute(ctx) == Continue("n")


def test_condition_bad_if_points_at_it() -> None:
    with pytest.raises(ConditionError) as caught:
        node({"type": "condition", "if": {"all": [{"score": "S"}]}, "then": "a", "else": "b"})
    assert caught.value.pointer == "/if/all/0"


def split_of(*weights: float) -> Split:
    spec = {
        "type": "split",
        "branches": [{"weight": w, "next": f"b{i}"} for i, w in enumerate(weights)],
    }
    kind = node(spec)
    assert isinstance(kind, Split)
    return kind


def test_split_is_deterministic_per_contact() -> None:
    split = split_of(50, 50)
    for point, branch in [(0.0, "b0"), (0.4999, "b0"), (0.5, "b1"), (0.9999999, "b1")]:
        assert split.execute(FakeContext(point=point)) == Continue(branch)
        assert split.execute(FakeContext(point=point)) == Continue(branch)


def test_split_weights_need_not_add_up_to_100() -> None:
    split = split_of(1, 3)
    assert [split.choose(p) for p in (0.0, 0.24, 0.25, 0.99)] == ["b0", "b0", "b1", "b1"]
    assert split.label() == "split 25% / 75%"


def test_split_distribution_follows_the_weights() -> None:
    split = split_of(20, 30, 50)
    even = Counter(split.choose(i / 10_000) for i in range(10_000))
    assert even == {"b0": 2_000, "b1": 3_000, "b2": 5_000}
    rng = random.Random(7)
    drawn = Counter(split.choose(rng.random()) for _ in range(50_000))
    for branch, share in (("b0", 0.2), ("b1", 0.3), ("b2", 0.5)):
        assert abs(drawn[branch] / 50_000 - share) < 0.01, (branch, drawn)


def test_split_single_branch_takes_everything() -> None:
    split = split_of(3)
    assert {split.choose(i / 100) for i in range(100)} == {"b0"}
    assert split.label() == "split 100%"


@pytest.mark.parametrize("weights", [(0, 100), (50, -1)])
def test_split_weight_must_be_positive(weights: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="every branch weight must be greater than 0"):
        split_of(*weights)


# --- triggers ----------------------------------------------------------------------------

FACTS = FakeContext().facts


def trigger(spec: dict[str, Any]) -> Any:
    return REGISTRY.triggers[spec["type"]].parse(spec)


def test_event_trigger_with_where() -> None:
    on_pricing = trigger(
        {
            "type": "event",
            "event": "Page Viewed",
            "where": {"property": "url", "matches": "/pricing*"},
        }
    )
    signal = Signal("event", "Page Viewed", properties={"url": "/pricing"})
    assert on_pricing.keys() == (("event", "Page Viewed"),)
    assert on_pricing.matches(signal, FakeContext(properties={"url": "/pricing/plans"}).facts)
    assert not on_pricing.matches(signal, FakeContext(properties={"url": "/careers"}).facts)
    assert not on_pricing.matches(signal, FakeContext().facts)
    assert on_pricing.label() == "on Page Viewed where url matches /pricing*"


def test_event_trigger_without_where_matches_every_such_event() -> None:
    on_any = trigger({"type": "event", "event": "Signed Up"})
    assert on_any.matches(Signal("event", "Signed Up"), FACTS) is True


def test_event_trigger_bad_where_points_at_it() -> None:
    with pytest.raises(ConditionError) as caught:
        trigger({"type": "event", "event": "E", "where": {"property": "u", "eq": 1, "ne": 2}})
    assert caught.value.pointer == "/where"


@pytest.mark.parametrize(
    ("old", "new", "above", "below"),
    [
        (40, 50, True, False),  # reaching the threshold counts as crossing above
        (40, 60, True, False),
        (49.9, 50, True, False),
        (None, 50, True, False),  # a new score starts at 0
        (50, 60, False, False),  # already there: no new crossing
        (60, 50, False, False),
        (40, 45, False, False),
        (60, 40, False, True),
        (50, 49, False, True),
        (50, 0, False, True),
        (49, 40, False, False),  # already under
        (50, 50, False, False),
    ],
)
def test_score_crossed(old: float | None, new: float, above: bool, below: bool) -> None:
    rising = trigger({"type": "score_crossed", "score": "SCORE", "above": 50})
    falling = trigger({"type": "score_crossed", "below": 50})
    signal = Signal("score_changed", "SCORE", old=old, new=new)
    assert rising.matches(signal, FACTS) is above
    assert falling.matches(signal, FACTS) is below


def test_score_crossed_label_and_keys() -> None:
    falling = trigger({"type": "score_crossed", "score": "LOYALTY", "below": 20.5})
    assert isinstance(falling, ScoreCrossed)
    assert falling.keys() == (("score_changed", "LOYALTY"),)
    assert falling.label() == "LOYALTY falls under 20.5"


@pytest.mark.parametrize("spec", [{}, {"above": 1, "below": 2}])
def test_score_crossed_needs_exactly_one_direction(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected exactly one of above, below"):
        trigger({"type": "score_crossed", **spec})


def test_attribute_changed() -> None:
    watch = trigger({"type": "attribute_changed", "attribute": "job_title"})
    assert watch.matches(Signal("attribute_changed", "job_title", old="Dev", new="VP"), FACTS)
    assert watch.matches(Signal("attribute_changed", "job_title", old=None, new="VP"), FACTS)
    assert not watch.matches(Signal("attribute_changed", "job_title", old="VP", new="VP"), FACTS)


@pytest.mark.parametrize("kind", ["list_added", "list_removed"])
def test_list_triggers(kind: str) -> None:
    watch = trigger({"type": kind, "list": "Customers"})
    assert watch.keys() == ((kind, "Customers"),)
    assert watch.matches(Signal(kind, "Customers"), FACTS) is True


def test_contact_created() -> None:
    created = trigger({"type": "contact_created"})
    assert created.keys() == (("contact_created", ""),)
    assert created.matches(Signal("contact_created"), FACTS) is True


def test_inactivity_parse() -> None:
    quiet = trigger(
        {"type": "inactivity", "events": ["Email Opened", "Email Clicked"], "for": "P45D"}
    )
    assert isinstance(quiet, QuietDriven)
    assert quiet.events == ("Email Opened", "Email Clicked")
    assert quiet.quiet_for == Duration.parse("P45D")
    assert quiet.label() == "no Email Opened / Email Clicked for 45 days"
    assert not isinstance(quiet, CronDriven)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cron", "moment", "fire"),
    [
        ("0 3 * * 1", utc(2026, 1, 1), utc(2026, 1, 5, 3)),  # 1 is Monday, as in crontab
        ("0 3 * * 1", utc(2026, 1, 5, 2, 59, 59), utc(2026, 1, 5, 3)),
        ("0 3 * * 1", utc(2026, 1, 5, 3), utc(2026, 1, 12, 3)),  # strictly after
        ("0 3 * * 1", utc(2026, 1, 5, 3) - timedelta(microseconds=1), utc(2026, 1, 5, 3)),
        ("0 3 * * 0", utc(2026, 1, 1), utc(2026, 1, 4, 3)),  # 0 is Sunday
        ("0 3 * * 7", utc(2026, 1, 1), utc(2026, 1, 4, 3)),  # so is 7
        ("0 3 * * sun", utc(2026, 1, 1), utc(2026, 1, 4, 3)),
        ("0 8 * * 1-5", utc(2026, 1, 2, 9), utc(2026, 1, 5, 8)),  # Friday 9:00 -> Monday
        ("0 8 * * 5-7", utc(2026, 1, 5), utc(2026, 1, 9, 8)),  # Fri, Sat, Sun
        ("30 9 1 * *", utc(2026, 1, 1, 9, 30), utc(2026, 2, 1, 9, 30)),
        ("*/15 * * * *", utc(2026, 1, 1, 0, 7), utc(2026, 1, 1, 0, 15)),
        ("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29)),
    ],
)
def test_schedule_next_fire_after(cron: str, moment: datetime, fire: datetime) -> None:
    schedule = trigger({"type": "schedule", "cron": cron})
    assert isinstance(schedule, CronDriven)
    got = schedule.next_fire_after(moment)
    assert got == fire
    assert got.utcoffset() == timedelta(0)


def test_schedule_is_in_utc_whatever_the_moment_zone() -> None:
    schedule = trigger({"type": "schedule", "cron": "0 3 * * 1"})
    paris = timezone(timedelta(hours=1))
    got = schedule.next_fire_after(datetime(2026, 1, 5, 3, 30, tzinfo=paris))  # 02:30 UTC
    assert got == utc(2026, 1, 5, 3)
    assert got.utcoffset() == timedelta(0)


def test_schedule_segment() -> None:
    schedule = trigger(
        {"type": "schedule", "cron": "0 3 * * 1", "segment": {"score": "SCORE", "gt": 50}}
    )
    assert isinstance(schedule, Schedule)
    assert schedule.segment is not None
    assert schedule.segment(FakeContext(scores={"SCORE": 51}).facts) is True
    assert schedule.segment(FakeContext(scores={"SCORE": 50}).facts) is False
    assert schedule.label() == "cron 0 3 * * 1 for SCORE > 50"
    assert trigger({"type": "schedule", "cron": "0 3 * * 1"}).segment is None


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 25 * * 1", "hour field '25'"),
        ("61 * * * *", "minute field '61'"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * *", "expected 5 fields"),
        ("0 3 * * 8", "day-of-week field '8'"),
        ("0 3 * * 5-1", "runs backwards"),
        ("0 3 * 13 *", "month field '13'"),
        ("0 3 1 * 1", "not both"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_schedule_bad_cron(cron: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        trigger({"type": "schedule", "cron": cron})
    assert str(caught.value).startswith(f"bad cron expression {cron!r}: ")
    assert message in str(caught.value)
