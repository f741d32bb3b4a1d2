"""The HTTP inbox and Segment ingestion: cases a reviewing helper found wrong (session 14),
each failing before its fix."""

from __future__ import annotations

import base64
import json
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from engine.api import Leadflow
from engine.cli import main as cli
from engine.clock import VirtualClock, ensure_utc
from engine.runner import Runner
from engine.service.app import create_app
from engine.service.inbox import Applier
from engine.service.keys import create_key
from engine.store.db import open_engine
from engine.store.tables import events, rejected

with warnings.catch_warnings():  # starlette's note about httpx2
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


def _drain(service: Any, runner: Runner) -> None:
    """The service's own applier thread on ``runner``, until the inbox is empty (30 s at
    most), as `leadflow serve` applies what it accepted."""
    applier = Applier(service.inbox, runner)
    applier.start()
    try:
        deadline = time.monotonic() + 30
        while service.inbox.pending()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        applier.stop()


def test_good_messages_accepted_beside_a_poison_one_are_applied(store_url: str) -> None:
    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    app = create_app(engine=engine, apply=False)  # accept first, apply below with the real loop
    service = app.state.service
    with TestClient(app, raise_server_exceptions=False) as client:
        good1 = {"userId": "good1@acme.com", "event": "Signed Up", "messageId": "good-1"}
        poison = {"userId": "x" * 321, "event": "Signed Up", "messageId": "long-user"}
        good2 = {"userId": "good2@acme.com", "event": "Signed Up", "messageId": "good-2"}
        for body in (good1, poison, good2):
            response = client.post("/v1/track", json=body, headers=auth)
            # the poison one may be refused at the door (400); the good ones are taken
            assert response.status_code == 200 or body is poison, response.text
        _drain(service, Runner(engine, service.clock))
    with engine.connect() as connection:
        taken = set(connection.scalars(select(events.c.message_id)))
        reasons = list(connection.scalars(select(rejected.c.reason)))
    engine.dispose()
    # both good messages were answered 200 and must be applied, whatever the third did
    assert {"good-1", "good-2"} <= taken, reasons


class FailsOnOneContact(Runner):
    """A runner with a bug that only one contact's message trips (any bug, or a value a
    backend refuses, behaves so): ingesting a batch that holds it raises."""

    def ingest(self, items, *args, **kwargs):  # type: ignore[no-untyped-def]
        items = list(items)
        if any(getattr(i, "contact_id", None) == "boom@acme.com" for i in items):
            raise RuntimeError("cannot apply boom@acme.com")
        return super().ingest(items, *args, **kwargs)


def test_mechanism_on_sqlite_one_failing_message_rejects_its_claim(tmp_path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'lf.db'}")
    key = create_key(engine, "t", "admin")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    app = create_app(engine=engine, apply=False)
    service = app.state.service
    with TestClient(app, raise_server_exceptions=False) as client:
        batch = [
            {"type": "track", "userId": "good1@acme.com", "event": "E", "messageId": "g-1"},
            {"type": "track", "userId": "boom@acme.com", "event": "E", "messageId": "boom"},
            {"type": "track", "userId": "good2@acme.com", "event": "E", "messageId": "g-2"},
        ]
        assert client.post("/v1/batch", json={"batch": batch}, headers=auth).status_code == 200
        single = {"userId": "good3@acme.com", "event": "E", "messageId": "g-3"}
        assert client.post("/v1/track", json=single, headers=auth).status_code == 200
        _drain(service, FailsOnOneContact(engine, service.clock))
    with engine.connect() as connection:
        taken = set(connection.scalars(select(events.c.message_id)))
    engine.dispose()
    assert {"g-1", "g-2", "g-3"} <= taken


SKEW_RECEIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


SKEW_HAPPENED = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _stamps_of(tmp_path, path: str, body: dict) -> dict[str, datetime]:
    engine = open_engine(f"sqlite:///{tmp_path / 'lf.db'}")
    key = create_key(engine, "t", "ingest")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    clock = VirtualClock(SKEW_RECEIVED)
    app = create_app(engine=engine, clock=clock, apply=False)
    with TestClient(app) as client:
        response = client.post(path, json=body, headers=auth)
        assert response.status_code == 200, response.text
        app.state.service.inbox.apply_all(Runner(engine, clock))
    with engine.connect() as connection:
        rows = connection.execute(select(events.c.message_id, events.c.timestamp)).all()
    engine.dispose()
    return {m: ensure_utc(t) for m, t in rows}


@pytest.mark.parametrize("where", ["message", "batch"])
def test_rudderstack_batch_with_original_timestamp_and_sent_at(tmp_path, where: str) -> None:
    message = {
        "type": "track",
        "anonymousId": "device-1",
        "event": "Product Viewed",
        "originalTimestamp": "2026-01-05T10:00:00.000Z",
        "messageId": "r-1",
        "channel": "mobile",
    }
    sent_at = "2026-01-05T11:59:00.000Z"  # flushed from the offline queue a minute ago
    body: dict = {"batch": [message]}
    if where == "message":
        message["sentAt"] = sent_at
    else:
        body["sentAt"] = sent_at
    stamp = _stamps_of(tmp_path, "/v1/batch", body)["r-1"]
    # receivedAt - (sentAt - originalTimestamp) = 10:01; the raw originalTimestamp (10:00)
    # would be acceptable too; the receipt moment (12:00) is not
    assert SKEW_HAPPENED <= stamp <= SKEW_HAPPENED + timedelta(minutes=1), stamp


def test_single_call_with_only_original_timestamp(tmp_path) -> None:
    body = {
        "anonymousId": "device-2",
        "event": "Product Viewed",
        "originalTimestamp": "2026-01-05T10:00:00.000Z",
        "messageId": "r-2",
    }
    stamp = _stamps_of(tmp_path, "/v1/track", body)["r-2"]
    assert stamp == SKEW_HAPPENED, stamp


CHAIN_POINTS = {
    "id": "points",
    "version": 1,
    "name": "points",
    "triggers": [{"type": "event", "event": "Visit"}],
    "reentry": "always",
    "start": "a",
    "nodes": {"a": {"type": "update_score", "score": "SCORE", "add": 10}},
}


def test_events_of_an_anonymous_id_after_a_chain_of_merges(store_url: str) -> None:
    clock = VirtualClock(datetime(2026, 1, 5, 10, tzinfo=UTC))
    with Leadflow(store_url, clock) as flow:
        flow.deploy([CHAIN_POINTS])
        flow.send(
            [
                {
                    "type": "track",
                    "anonymousId": "anon-1",
                    "event": "Visit",
                    "messageId": "1",
                    "timestamp": "2026-01-05T10:00:01Z",
                },
                {
                    "type": "identify",
                    "anonymousId": "anon-1",
                    "userId": "ann@old.com",
                    "messageId": "2",
                    "timestamp": "2026-01-05T10:00:02Z",
                },
                {
                    "type": "alias",
                    "previousId": "ann@old.com",
                    "userId": "ann@new.com",
                    "messageId": "3",
                    "timestamp": "2026-01-05T10:00:03Z",
                },
            ]
        )
        assert flow.contact("ann@new.com")["scores"] == {"SCORE": 10}
        # the same browser, still anonymous, visits again
        flow.send(
            [
                {
                    "type": "track",
                    "anonymousId": "anon-1",
                    "event": "Visit",
                    "messageId": "4",
                    "timestamp": "2026-01-05T10:00:04Z",
                }
            ]
        )
        with flow.engine.connect() as connection:
            owner = connection.scalar(select(events.c.contact_id).where(events.c.message_id == "4"))
        assert owner == "ann@new.com"
        assert flow.contact("ann@new.com")["scores"] == {"SCORE": 20}


def test_lines_with_an_empty_message_id_are_all_taken(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        {"type": "track", "userId": f"user{i}@acme.com", "event": "Signed Up", "messageId": ""}
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    url = f"sqlite:///{tmp_path / 'lf.db'}"
    result = CliRunner().invoke(cli, ["ingest", str(path), "--db", url])
    assert "3 taken, 0 duplicate(s), 0 rejected" in result.output, result.output
    engine = open_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(events)) == 3
    engine.dispose()


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"userId": "u" * 321}, "'userId' is 321 characters long; at most 320"),
        ({"anonymousId": "a" * 400}, "'anonymousId' is 400 characters long; at most 320"),
        ({"userId": "ann", "messageId": "m" * 201}, "'messageId' is 201 characters long"),
        ({"userId": "ann", "event": "E" * 201}, "'event' is 201 characters long; at most 200"),
        (
            {"type": "group", "userId": "ann", "groupId": "g" * 321},
            "'groupId' is 321 characters long; at most 320",
        ),
        (
            {"type": "alias", "userId": "ann", "previousId": "p" * 321},
            "'previousId' is 321 characters long",
        ),
    ],
)
def test_ids_and_names_longer_than_the_store_keeps_are_rejected_on_both_backends(
    store_url: str, message: dict[str, object], reason: str
) -> None:
    """SQLite kept them whole; PostgreSQL raised (a long userId: a KeyError traceback, the
    rest of the file lost) or cut them to the column (two long messageIds sharing their
    first 200 characters: the second a "duplicate")."""
    clock = VirtualClock(datetime(2026, 1, 5, 10, tzinfo=UTC))
    line = {"type": "track", "event": "Visit", **message}
    with Leadflow(store_url, clock) as flow:
        report = flow.send([line, {"type": "track", "userId": "bob", "event": "Visit"}])
        assert (report.taken, report.rejected) == (1, 1)
        with flow.engine.connect() as connection:
            (kept,) = connection.scalars(select(rejected.c.reason)).all()
    assert reason in kept


# --- the Brevo endpoints check input as /v1 does --------------------------------------------


def _brevo_post(
    brevo: tuple[TestClient, dict[str, str]], path: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    client, headers = brevo
    response = client.post(path, content=json.dumps(body).encode(), headers=headers)
    return response.status_code, (response.json() if response.content else {})


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v3/contacts", {"email": "ann\u0000@acme.com"}, 400, "/email: a NUL character"),
        ("/v3/contacts", {"email": "ok@acme.com", "ext_id": "crm\u00001"}, 400, "/ext_id"),
        ("/v3/contacts", {"email": "a" * 330 + "@acme.com"}, 400, "longer than 320"),
        ("/v3/contacts/lists", {"name": "L" * 250}, 400, "longer than 200"),
        (
            "/v3/events",
            {
                "event_name": "Viewed",
                "identifiers": {"email_id": "ann@acme.com"},
                "event_properties": {"a": "x\u0000"},
            },
            400,
            "/event_properties/a: a NUL character",
        ),
        (
            "/v3/events",
            {"event_name": "Viewed", "identifiers": {"ext_id": "x" * 321}},
            400,
            "identifiers.ext_id is longer than 320",
        ),
        ("/v3/contacts/lists/99999999999999999999/contacts/add", {"all": True}, 404, "List"),
    ],
)
def test_bad_brevo_input_is_a_4xx_that_says_why_on_both_backends(
    brevo: tuple[TestClient, dict[str, str]],
    path: str,
    body: dict[str, Any],
    status: int,
    says: str,
) -> None:
    """These were 500s (SQLite: a KeyError; PostgreSQL: a DataError), or a 204 for an
    event the inbox rejected afterwards."""
    got, answer = _brevo_post(brevo, path, body)
    assert got == status, answer
    assert says in answer["message"], answer


def test_a_brevo_contact_id_no_store_holds_is_not_found(
    brevo: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = brevo
    for identifier in ("ann%00x@acme.com", "a" * 400):
        response = client.get(f"/v3/contacts/{identifier}", headers=headers)
        assert response.status_code == 404, response.text


def test_the_sqlite_inbox_fsyncs_every_accepted_request(tmp_path: Path) -> None:
    """WAL with synchronous=NORMAL fsyncs at checkpoints only: a power cut would roll back
    requests already answered 200. The inbox's side file commits with FULL."""
    from engine.service.state import Service

    engine = open_engine(f"sqlite:///{tmp_path / 'lf.db'}")
    service = Service(engine, apply=False)
    try:
        with service.inbox.store.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        service.stop()
        engine.dispose()


def test_browser_sdks_can_send_cross_origin_and_to_the_short_paths(tmp_path: Path) -> None:
    """analytics.js posts from a shop's pages to /v1/t, /v1/p, ... (and /v1/b when it
    batches), after a CORS preflight: the preflight got 405 and no answer named an
    origin, so the browser dropped every call. The Brevo API stays without CORS."""
    origin = "https://shop.example.com"
    engine = open_engine(f"sqlite:///{tmp_path / 'lf.db'}")
    key = create_key(engine, "web", "ingest")
    app = create_app(engine=engine, apply=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        preflight = client.options(
            "/v1/batch",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "*"
        plain = {"Origin": origin, "Content-Type": "text/plain"}
        for path, body in (
            ("/v1/t", {"type": "track", "anonymousId": "a-1", "event": "Viewed"}),
            ("/v1/p", {"type": "page", "anonymousId": "a-1", "name": "Home"}),
            ("/v1/i", {"type": "identify", "anonymousId": "a-1", "traits": {"plan": "pro"}}),
            ("/v1/b", {"batch": [{"type": "track", "anonymousId": "a-1", "event": "Clicked"}]}),
        ):
            post = client.post(path, content=json.dumps({**body, "writeKey": key}), headers=plain)
            assert post.status_code == 200, (path, post.text)
            assert post.headers["access-control-allow-origin"] == "*"
        refused = client.post("/v1/t", json={"event": "x"}, headers={"Origin": origin})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == "*"  # the page can read why
        brevo = client.options(
            "/v3/contacts", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in brevo.headers
        assert app.state.service.inbox.pending()[1] == 4
    engine.dispose()
