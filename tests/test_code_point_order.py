"""Ids are ordered by code point on every backend, whatever the database's collation.

The catalog's workflow order is the order in which the workflows one signal triggers are
entered; a summary's contacts and messages, a segment's ties and a schedule's fan-out are
what users read and what shares a transaction. None may differ between SQLite and a
PostgreSQL database whose collation sorts text another way (engine.store.order)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import pg_database
from sqlalchemy import select

from engine.api import Leadflow
from engine.catalog import Catalog, deploy
from engine.clock import VirtualClock
from engine.explain import explain_score
from engine.runner import ContactUpdate, Runner
from engine.segments import SegmentQuery, select_contacts
from engine.service import brevo
from engine.service.directory import all_lists
from engine.service.state import Service
from engine.simulate import simulate
from engine.store.db import make_engine, upgrade, writer
from engine.store.tables import outbox
from engine.validation import validate_documents

WELCOME = json.loads(
    (Path(__file__).resolve().parent.parent / "workflows" / "welcome-series.json").read_text()
)
IDS = ["welcome_b", "welcome0", "welcome-b", "welcome.c"]  # collations disagree on these
PEOPLE = ["c_b", "c0", "c-b", "c.c", "C1"]  # and on these
POINTS = {
    "id": "points",
    "version": 1,
    "triggers": [{"type": "event", "event": "Hi"}],
    "start": "p",
    "nodes": {"p": {"type": "update_score", "score": "SCORE", "add": 10}},
}


@pytest.fixture(params=["sqlite", "postgresql-icu"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store; on PostgreSQL a database of its own with an ICU en-US collation,
    which sorts ``_`` and ``-`` before digits and ignores case at first."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with pg_database("leadflow_icu", icu) as url:
        yield url


def test_workflows_load_in_code_point_order(url: str) -> None:
    documents: list[dict[str, Any]] = []
    for workflow_id in IDS:
        document = copy.deepcopy(WELCOME)
        document["id"] = document["name"] = workflow_id
        documents.append(document)
    validation = validate_documents([(f"{d['id']}.json", d) for d in documents])
    assert validation.ok, validation.problems
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            deploy(connection, validation.workflows, datetime(2026, 1, 5, tzinfo=UTC))
        with engine.connect() as connection:
            if url.startswith("postgresql"):  # the collation does disagree here
                collated = connection.exec_driver_sql(
                    "SELECT workflow_id FROM workflow_versions ORDER BY workflow_id"
                ).scalars()
                assert list(collated) != sorted(IDS)
            assert list(Catalog.load(connection).latest) == sorted(IDS)
    finally:
        engine.dispose()


def _collated(url: str, ids: list[str]) -> list[str]:
    """``ids`` in the database's own order: on the ICU database, not code-point order."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SELECT v FROM (VALUES "
                + ", ".join(f"('{i}')" for i in ids)
                + ") AS t(v) ORDER BY v"
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


def test_summary_fan_out_and_segment_order_by_code_point(url: str, tmp_path: Path) -> None:
    if url.startswith("postgresql"):
        assert _collated(url, PEOPLE) != sorted(PEOPLE)  # the order would differ
    join = {
        "id": "join",
        "version": 1,
        "triggers": [{"type": "event", "event": "Join"}],
        "start": "a",
        "nodes": {
            "a": {"type": "add_to_list", "list": "Members", "next": "hello"},
            "hello": {"type": "send_email", "template": "welcome-2"},
        },
    }
    digest = {
        "id": "digest",
        "version": 1,
        "reentry": "always",
        "triggers": [{"type": "schedule", "cron": "0 9 * * 1", "segment": {"in_list": "Members"}}],
        "start": "d",
        "nodes": {"d": {"type": "send_email", "template": "welcome-2"}},
    }
    folder = tmp_path / "workflows"
    folder.mkdir()
    for document in (join, digest):
        (folder / f"{document['id']}.json").write_text(json.dumps(document))
    events = tmp_path / "events.jsonl"
    events.write_text(
        "".join(
            json.dumps(
                {
                    "type": "track",
                    "userId": person,
                    "event": "Join",
                    "messageId": f"m-{number}",
                    "timestamp": "2026-01-06T10:00:00Z",  # one moment for everyone
                }
            )
            + "\n"
            for number, person in enumerate(reversed(PEOPLE))
        )
    )
    result = simulate([folder], events, datetime(2026, 1, 13, tzinfo=UTC), database_url=url).result
    assert list(result["contacts"]) == sorted(PEOPLE)
    sent = [(m["at"], m["template"], m["contact"]) for m in result["messages"]]
    assert sent == [("2026-01-06T10:00:00Z", "welcome-2", p) for p in sorted(PEOPLE)] + [
        ("2026-01-12T09:00:00Z", "welcome-2", p) for p in sorted(PEOPLE)
    ]
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            queued = list(  # the order join's wake and then the fan-out queued them in
                connection.scalars(select(outbox.c.contact_id).order_by(outbox.c.id))
            )
            assert queued[len(PEOPLE) :] == sorted(PEOPLE)
            now = datetime(2026, 1, 13, tzinfo=UTC)
            ties = [r["id"] for r in select_contacts(connection, SegmentQuery(), now)]
            assert ties == sorted(PEOPLE)  # every SCORE is 0: all tied
    finally:
        engine.dispose()


def _band_model(model_id: str) -> dict[str, Any]:
    return {
        "kind": "score_model",
        "id": model_id,
        "version": 1,
        "name": model_id,
        "score": "SCORE",
        "bands": [{"list": f"All of {model_id}", "from": 0}],
    }


def test_explain_and_a_brevo_list_clearing_go_by_code_point(url: str) -> None:
    """``explain`` names the band of the first score model by id; Brevo's "remove
    everyone from a list" removes (and lists) the members in id order."""
    now = datetime(2026, 1, 5, tzinfo=UTC)
    engine = make_engine(url)
    try:
        upgrade(engine)
        flow = Leadflow(engine=engine, clock=VirtualClock(now))
        flow.deploy([_band_model("band_b"), _band_model("band0"), POINTS])
        flow.send(
            [
                {
                    "type": "track",
                    "userId": "ann",
                    "event": "Hi",
                    "messageId": "m1",
                    "timestamp": "2026-01-05T00:00:00Z",
                }
            ]
        )
        runner = Runner(engine, VirtualClock(now))
        for person in reversed(PEOPLE):  # one at a time: rows stored in this order
            runner.update_contacts({person: ContactUpdate(add_lists=("Members",))}, now, "t")
        with engine.connect() as connection:
            band = explain_score(connection, "ann", "SCORE")["band"]
        with writer(engine).begin() as connection:  # numbers the lists it finds
            (list_id,) = [i for i, name, _ in all_lists(connection, now) if name == "Members"]
        service = Service(engine, VirtualClock(now), apply=False)
        try:
            answer = brevo._change_list({"all": True}, service, list_id, False)
        finally:
            service.stop()
    finally:
        engine.dispose()
    assert band == {"list": "All of band0", "model": "band0 v1"}
    assert json.loads(answer.body)["contacts"]["success"] == sorted(PEOPLE)
