"""``leadflow history``, ``diff`` and ``review`` on versions deployed at known dates."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import at
from sqlalchemy import Engine, select

from engine.api import Leadflow
from engine.catalog import deploy
from engine.cli import main
from engine.clock import VirtualClock
from engine.review import due_date, record_review, review_items
from engine.store.db import make_engine, upgrade, writer
from engine.store.tables import reviews
from engine.validation import validate_documents
from engine.versions import diff_documents, history, load_revisions

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((WORKFLOWS / name).read_text(encoding="utf-8"))
    return document


CONSIDERATION = _load("consideration-stage.json")
SALES_READY = _load("models/sales-ready.json")
GRADE = _load("models/b2b-grade.json")


def revised(document: dict[str, Any], version: int, notes: str) -> dict[str, Any]:
    new = copy.deepcopy(document)
    new["version"] = version
    new["notes"] = notes
    return new


def consideration_versions() -> list[dict[str, Any]]:
    """v1 as shipped; v2: quote +25 and no pricing-page trigger; v3: a lower list test."""
    v2 = revised(CONSIDERATION, 2, "Sales: pricing-page views are noise; quotes a bit less.")
    v2["nodes"]["points"]["add"] = 25
    del v2["triggers"][2]
    v3 = revised(v2, 3, "Sales-qualified from 60.")
    v3["nodes"]["is-sql"]["if"] = {"score": "SCORE", "gte": 60}
    v3["nodes"]["notify"] = {"type": "webhook", "url": "https://crm.example.com/hooks/sql"}
    v3["nodes"]["to-sql"]["next"] = "notify"
    del v3["nodes"]["count"]
    v3["start"] = "points"
    return [CONSIDERATION, v2, v3]


def sales_ready_versions() -> list[dict[str, Any]]:
    v2 = revised(SALES_READY, 2, "Warm from 25; decay 15 % every 2 weeks.")
    v2["bands"][0]["below"] = 25
    v2["bands"][1]["from"] = 25
    v2["decay"]["percent"] = 15
    v2["decay"]["every"] = "P14D"
    v2["sales_ready"] = 120
    del v2["rollup"]
    return [SALES_READY, v2]


def grade_versions() -> list[dict[str, Any]]:
    v2 = revised(GRADE, 2, "Managers count more; interns are students too.")
    v2["rules"][1]["points"] = 20
    v2["rules"][7]["if"] = {"attribute": "job_title", "in": ["Student", "Intern", "Trainee"]}
    v2["rules"].append(
        {"if": {"attribute": "industry", "eq": "Education"}, "points": -10, "label": "schools"}
    )
    v2["letters"]["B"] = 50
    return [GRADE, v2]


def deploy_at(engine: Engine, documents: list[dict[str, Any]], moment: datetime) -> None:
    checked = validate_documents(
        [(f"<{d['id']} v{d['version']}>", d) for d in documents], check_references=False
    )
    assert checked.ok, [str(p) for p in checked.problems]
    with writer(engine).begin() as connection:
        deploy(connection, [*checked.workflows, *checked.models], moment)


@pytest.fixture
def deployed(tmp_path: Path) -> Iterator[str]:
    """A SQLite store with three versions of consideration-stage, two of sales-ready and
    two of b2b-grade, each deployed at a known moment."""
    url = f"sqlite:///{tmp_path / 'versions.db'}"
    engine = make_engine(url)
    upgrade(engine)
    flows = consideration_versions()
    models = sales_ready_versions()
    grades = grade_versions()
    deploy_at(engine, [flows[0], models[0], grades[0]], at("2026-01-05 10:00"))
    deploy_at(engine, [flows[1], models[1]], at("2026-02-16 09:30"))
    deploy_at(engine, [flows[2], grades[1]], at("2026-04-01 08:00"))
    engine.dispose()
    yield url


def invoke(args: list[str], code: int = 0) -> Result:
    result = CliRunner().invoke(main, args, env={"COLUMNS": "250"})
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert result.exit_code == code, (result.exit_code, everything)
    return result


# --- history -------------------------------------------------------------------------------


def test_history_of_a_workflow_as_csv_one_column_per_version(deployed: str) -> None:
    out = invoke(["history", "consideration-stage", "--csv", "--db", deployed]).stdout
    lines = out.splitlines()
    assert lines[0] == "row,v1,v2,v3"
    assert lines[1] == "deployed,2026-01-05,2026-02-16,2026-04-01"
    assert lines[2] == (
        "name,Consideration stage scoring,Consideration stage scoring,Consideration stage scoring"
    )
    assert lines[3].startswith('notes,"Scores the consideration stage of domain.md 004')
    assert lines[3].endswith(
        ",Sales: pricing-page views are noise; quotes a bit less.,Sales-qualified from 60."
    )
    assert lines[4:] == [
        "on Quote Requested -> points,+30 SCORE,+25 SCORE,+25 SCORE",
        "on Contact Sales Requested -> points,+30 SCORE,+25 SCORE,+25 SCORE",
        "on Page Viewed where url matches /pricing* -> points,+30 SCORE,,",
        "node 'is-sql',if SCORE > 80,if SCORE > 80,if SCORE ≥ 60",
        "re-entry,always,always,always",
        "exit when,in list Customers,in list Customers,in list Customers",
    ]


def test_history_of_a_score_model_shows_threshold_bands_decay_and_rollup(deployed: str) -> None:
    out = invoke(["history", "sales-ready", "--csv", "--db", deployed]).stdout
    rows = out.splitlines()[4:]
    assert rows == [
        "score,SCORE,SCORE",
        "sales-ready,100,120",
        "band 'New leads',below 20,below 25",
        "band 'Warm leads',from 20 below 50,from 25 below 50",
        "band 'Qualified leads',from 50 to 80,from 50 to 80",
        "band 'Sales-qualified leads',above 80,above 80",
        "decay,by 10 % every 7 days,by 15 % every 14 days",
        'decay after,"30 days without Email Clicked, Ebook Downloaded, Page Viewed, Video '
        'Watched, Event Attended, Quote Requested, Contact Sales Requested","30 days without '
        "Email Clicked, Ebook Downloaded, Page Viewed, Video Watched, Event Attended, Quote "
        'Requested, Contact Sales Requested"',
        "decay floor,50 % of sales-ready,50 % of sales-ready",
        "roll-up,top 3,sum",
    ]


def test_history_of_a_grade_model_shows_each_rule_and_letter(deployed: str) -> None:
    data = json.loads(invoke(["history", "b2b-grade", "--json", "--db", deployed]).stdout)
    assert data["kind"] == "grade_model"
    assert [v["version"] for v in data["versions"]] == [1, 2]
    assert data["versions"][1]["deployed_at"] == "2026-04-01T08:00:00Z"
    values = {row["row"]: row["values"] for row in data["rows"]}
    assert values["rule 'manager'"] == {"1": "+15", "2": "+20"}
    assert values["rule 'student'"] == {"1": "-40", "2": "-40"}
    assert values["rule 'schools'"] == {"1": None, "2": "-10"}
    assert values["letter B"] == {"1": "≥ 45", "2": "≥ 50"}
    assert list(values)[-6:-5] == ["rule 'schools'"]  # a new rule sits after its neighbours


def test_history_in_the_terminal_is_a_table_with_notes_and_dates(deployed: str) -> None:
    out = invoke(["history", "consideration-stage", "--db", deployed]).stdout
    assert "consideration-stage (workflow): 3 version(s), newest v3" in out
    for text in ("v1", "v2", "v3", "2026-02-16", "Sales-qualified from 60.", "+25 SCORE"):
        assert text in out
    assert "on Page Viewed where url matches /pricing* -> points" in out
    assert "notes cut at 160 characters" in out


def test_history_of_an_unknown_id_exits_1_with_a_suggestion(deployed: str) -> None:
    result = invoke(["history", "sales-redy", "--db", deployed], code=1)
    assert "no deployed workflow or model has id 'sales-redy'; did you mean 'sales-ready'?" in (
        result.stderr
    )


# --- diff ----------------------------------------------------------------------------------


def test_diff_of_a_workflow_node_by_node(deployed: str) -> None:
    out = invoke(["diff", "consideration-stage", "1", "2", "--db", deployed]).stdout
    assert out.splitlines() == [
        "consideration-stage v1 (2026-01-05) -> v2 (2026-02-16): 3 change(s)",
        "  notes changed",
        "  trigger 3 removed: on Page Viewed where url matches /pricing*",
        "  node 'points': +30 SCORE -> +25 SCORE",
    ]
    out = invoke(["diff", "consideration-stage", "2", "3", "--db", deployed]).stdout
    assert out.splitlines() == [
        "consideration-stage v2 (2026-02-16) -> v3 (2026-04-01): 6 change(s)",
        "  notes changed",
        "  start: count -> points",
        "  node 'count' removed: CONSIDERATION_COUNT += 1",
        "  node 'is-sql': if SCORE > 80 -> if SCORE ≥ 60",
        "  node 'to-sql': next done -> notify",
        "  node 'notify' added: webhook crm.example.com",
    ]


def test_diff_backwards_and_added_trigger(deployed: str) -> None:
    out = invoke(["diff", "consideration-stage", "2", "1", "--db", deployed]).stdout
    assert "  trigger 3 added: on Page Viewed where url matches /pricing*" in out
    assert "  node 'points': +25 SCORE -> +30 SCORE" in out


def test_diff_of_a_score_model_and_a_grade_model(deployed: str) -> None:
    out = invoke(["diff", "sales-ready", "1", "2", "--db", deployed]).stdout
    assert out.splitlines()[1:] == [
        "  notes changed",
        "  sales-ready: 100 -> 120",
        "  band 'New leads': below 20 -> below 25",
        "  band 'Warm leads': from 20 below 50 -> from 25 below 50",
        "  decay: by 10 % every 7 days -> by 15 % every 14 days",
        "  roll-up: top 3 -> sum",
    ]
    out = invoke(["diff", "b2b-grade", "1", "2", "--db", deployed]).stdout
    assert out.splitlines()[1:] == [
        "  notes changed",
        "  rule 'manager': +15 -> +20",
        "  rule 'student': if job_title in [Student, Intern] -> if job_title in "
        "[Student, Intern, Trainee]",
        "  letter B: ≥ 45 -> ≥ 50",
        "  rule 'schools' added: -10 if industry = Education",
    ]


def test_diff_as_json(deployed: str) -> None:
    data = json.loads(
        invoke(["diff", "consideration-stage", "1", "2", "--json", "--db", deployed]).stdout
    )
    assert data["from"] == {"version": 1, "deployed_at": "2026-01-05T10:00:00Z"}
    assert data["to"] == {"version": 2, "deployed_at": "2026-02-16T09:30:00Z"}
    assert [(c["subject"], c["key"], c["change"]) for c in data["changes"]] == [
        ("notes", "notes", "changed"),
        ("trigger", "3", "removed"),
        ("node", "points", "changed"),
    ]
    assert data["changes"][1]["old"] == {
        "type": "event",
        "event": "Page Viewed",
        "where": {"property": "url", "matches": "/pricing*"},
    }


def test_diff_of_unknown_ids_and_versions_exits_1(deployed: str) -> None:
    assert "no deployed workflow or model has id 'nope'" in (
        invoke(["diff", "nope", "1", "2", "--db", deployed], code=1).stderr
    )
    assert "'sales-ready' has no version 3 (versions: 1, 2)" in (
        invoke(["diff", "sales-ready", "1", "3", "--db", deployed], code=1).stderr
    )
    assert invoke(["diff", "sales-ready", "x", "2", "--db", deployed], code=2)
    same = invoke(["diff", "sales-ready", "2", "2", "--db", deployed]).stdout
    assert same.splitlines() == ["sales-ready v2 (2026-02-16) -> v2 (2026-02-16): 0 change(s)"]


def test_diff_words_for_other_node_changes() -> None:
    old = {
        "id": "w",
        "version": 1,
        "triggers": [{"type": "event", "event": "A"}],
        "start": "s",
        "nodes": {
            "s": {
                "type": "split",
                "branches": [{"weight": 1, "next": "m"}, {"weight": 1, "next": "e"}],
            },
            "m": {"type": "send_email", "template": "welcome", "subject": "Hi", "next": "e"},
            "e": {"type": "exit"},
        },
    }
    new = copy.deepcopy(old)
    new["triggers"][0] = {"type": "event", "event": "B"}
    new["nodes"]["s"]["branches"][0]["weight"] = 3
    new["nodes"]["m"]["subject"] = "Hello"
    new["reentry"] = "P7D"
    new["exit_when"] = {"in_list": "Customers"}
    texts = [change.text for change in diff_documents(old, new)]
    assert texts == [
        "trigger 1: on A -> on B",
        "re-entry: never -> P7D",
        "exit when: never -> in list Customers",
        "node 's': split 50% / 50% -> split 75% / 25%",
        "node 'm': subject 'Hi' -> 'Hello'",
    ]
    new["nodes"]["s"]["branches"][1]["next"] = "m"
    new["nodes"]["m"]["template"] = "welcome-2"
    new["nodes"]["m"]["subject"] = "Hi"
    new["nodes"]["w"] = {"type": "webhook", "url": "https://a.example/x", "body": {"a": 1}}
    old["nodes"]["w"] = {"type": "webhook", "url": "https://a.example/y", "body": {"a": 2}}
    texts = [change.text for change in diff_documents(old, new)][3:]
    assert texts == [
        "node 's': split 50% / 50% -> split 75% / 25%",
        "node 's': branches to m, e -> m, m",
        "node 'm': email welcome -> email welcome-2",
        'node \'w\': body {"a": 2} -> {"a": 1}',
        "node 'w': url 'https://a.example/y' -> 'https://a.example/x'",
    ]


# --- review --------------------------------------------------------------------------------


def _figures(store: Engine) -> Leadflow:
    """consideration-stage (v1 2026-01-05, v2 2026-02-16) and the sales-ready model (v1
    2026-01-05), score-bands (no update_score: never reviewed) and b2b-grade (2026-03-01);
    ann and bob reach 120 points, cara 30; ann orders."""
    clock = VirtualClock(at("2026-01-05 10:00"))
    flow = Leadflow(engine=store, clock=clock)
    bands = _load("score-bands.json")
    flow.deploy([CONSIDERATION, SALES_READY, bands])
    clock.advance_to(at("2026-02-16 09:30"))
    flow.deploy([consideration_versions()[1]])
    clock.advance_to(at("2026-03-01 12:00"))
    flow.deploy([GRADE])
    clock.advance_to(at("2026-03-02 12:00"))
    for who, quotes in (("ann@acme.com", 4), ("bob@acme.com", 4), ("cara@acme.com", 1)):
        flow.identify(who, {"job_title": "VP Sales", "company_size": 300})
        for _ in range(quotes):
            flow.track(who, "Quote Requested")
    flow.track("ann@acme.com", "Order Completed", {"order_id": "o-1"})
    return flow


def test_review_lists_due_and_overdue_models_with_figures(store: Engine) -> None:
    _figures(store)
    with store.connect() as connection:
        items = review_items(connection, at("2026-03-10 09:00"), "Order Completed")
    found = {item.workflow_id: item for item in items}
    assert set(found) == {"consideration-stage", "sales-ready", "b2b-grade"}
    ready, flow, grade = found["sales-ready"], found["consideration-stage"], found["b2b-grade"]
    assert (ready.due.isoformat(), ready.days_overdue, ready.status) == ("2026-03-06", 4, "overdue")
    assert ready.status_text == "4 days overdue"
    assert (flow.due.isoformat(), flow.days_overdue, flow.status_text) == (
        "2026-03-06",
        4,
        "4 days overdue",
    )
    assert (flow.versions, flow.version) == (2, 2)
    assert (grade.due.isoformat(), grade.status_text) == ("2026-04-30", "due in 51 days")
    assert (ready.contacts, ready.ready, ready.reached, ready.quality) == (3, 2, 1, 0.5)
    assert (flow.contacts, flow.ready, flow.reached) == (3, 2, 1)
    assert (grade.contacts, grade.ready, grade.reached) == (3, None, None)
    with store.connect() as connection:
        by_list = review_items(connection, at("2026-03-10 09:00"), "list:Sales-qualified leads")
    assert {i.workflow_id: (i.ready, i.reached) for i in by_list}["sales-ready"] == (2, 2)


def test_review_done_moves_the_next_review_90_days_on(store: Engine) -> None:
    _figures(store)
    with writer(store).begin() as connection:
        next_due = record_review(connection, "sales-ready", "Sales: fine.", at("2026-03-10 09:00"))
    assert next_due.isoformat() == "2026-06-08"
    with store.connect() as connection:
        assert connection.execute(select(reviews.c.workflow_id, reviews.c.note)).all() == [
            ("sales-ready", "Sales: fine.")
        ]
        items = {i.workflow_id: i for i in review_items(connection, at("2026-06-09 23:59"))}
    assert items["sales-ready"].due.isoformat() == "2026-06-08"
    assert items["sales-ready"].status_text == "1 day overdue"
    assert items["sales-ready"].last_note == "Sales: fine."
    assert items["sales-ready"].reached is None
    assert due_date(at("2026-01-05 10:00"), None).isoformat() == "2026-03-06"


def test_review_command_table_json_and_done(store_url: str, store: Engine) -> None:
    _figures(store)
    now = "2026-03-10T09:00:00Z"
    out = invoke(["review", "--db", store_url, "--now", now, "--outcome", "Order Completed"])
    text = out.stdout
    assert "Models due for review (outcome: Order Completed)" in text
    assert "4 days overdue" in text and "2026-03-06" in text
    assert "1/2 (50%)" in text
    assert "b2b-grade" not in text  # due in 51 days: not yet
    everything = json.loads(
        invoke(["review", "--all", "--json", "--db", store_url, "--now", now]).stdout
    )
    assert [(i["id"], i["due"], i["days_overdue"]) for i in everything] == [
        ("consideration-stage", "2026-03-06", 4),
        ("sales-ready", "2026-03-06", 4),
        ("b2b-grade", "2026-04-30", -51),
    ]
    assert "quality" not in everything[0]
    done = invoke(
        ["review", "--db", store_url, "--now", now, "done", "sales-ready", "--note", "Sales: fine."]
    )
    assert done.stdout.strip() == "sales-ready: reviewed on 2026-03-10; next review due 2026-06-08"
    left = json.loads(invoke(["review", "--json", "--db", store_url, "--now", now]).stdout)
    assert [i["id"] for i in left] == ["consideration-stage"]
    invoke(["review", "done", "nope", "--note", "x", "--db", store_url], code=1)
    invoke(["review", "done", "sales-ready", "--db", store_url], code=2)  # --note is required
    warned = invoke(["review", "--db", store_url, "--now", now, "--outcome", "Order Complete"])
    assert "no contact has sent 'Order Complete'; did you mean 'Order Completed'?" in (
        warned.stderr
    )


def test_nothing_due_says_when_the_next_review_is(deployed: str) -> None:
    out = invoke(["review", "--db", deployed, "--now", "2026-01-10T00:00:00Z"]).stdout
    assert out.strip() == (
        "nothing is due for review; next: b2b-grade on 2026-03-06 (due in 55 days)"
    )


def test_load_revisions_keeps_the_deploy_moments(deployed: str) -> None:
    engine = make_engine(deployed)
    with engine.connect() as connection:
        revisions = load_revisions(connection, "consideration-stage")
    engine.dispose()
    assert [(r.version, r.deployed_at) for r in revisions] == [
        (1, at("2026-01-05 10:00")),
        (2, at("2026-02-16 09:30")),
        (3, at("2026-04-01 08:00")),
    ]
    table = history(revisions)
    assert [label for label, _ in table.rows][:3] == [
        "on Quote Requested -> points",
        "on Contact Sales Requested -> points",
        "on Page Viewed where url matches /pricing* -> points",
    ]
