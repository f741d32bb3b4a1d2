"""Brevo ids, the inbox's given-up rows, SDK clocks and huge numbers: cases a second
reviewing helper found wrong in this session's changes (session 14), each failing before
its fix."""

from __future__ import annotations

import base64
import contextlib
import json
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from test_service_ingest_edges import FailsOnOneContact, _stamps_of

from engine.cli import main as cli
from engine.segment import parse_message
from engine.service.app import create_app
from engine.service.inbox import MAX_ATTEMPTS
from engine.service.keys import create_key
from engine.store.db import open_engine
from engine.store.tables import events, rejected

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


IDS_PAST_INT4 = 2**31


@pytest.fixture
def brevo_with_ann(
    brevo: tuple[TestClient, dict[str, str]],
) -> tuple[TestClient, dict[str, str]]:
    """The conftest's Brevo service, with ann created through it."""
    client, headers = brevo
    created = client.post("/v3/contacts", content=b'{"email": "ann@acme.com"}', headers=headers)
    assert created.status_code == 201, created.text
    return brevo


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v3/events", {"event_name": "E", "identifiers": {"contact_id": IDS_PAST_INT4}}),
        ("POST", f"/v3/contacts/lists/{IDS_PAST_INT4}/contacts/add", {"emails": ["ann@acme.com"]}),
        ("POST", f"/v3/contacts/lists/{IDS_PAST_INT4}/contacts/remove", {"all": True}),
        ("POST", "/v3/contacts", {"email": "bob@acme.com", "listIds": [IDS_PAST_INT4]}),
        ("PUT", "/v3/contacts/ann@acme.com", {"listIds": [IDS_PAST_INT4]}),
        ("PUT", "/v3/contacts/ann@acme.com", {"unlinkListIds": [IDS_PAST_INT4]}),
        ("POST", "/v3/contacts/lists", {"name": "L", "folderId": IDS_PAST_INT4}),
        ("GET", f"/v3/contacts/{IDS_PAST_INT4}?identifierType=contact_id", None),
        ("GET", "/v3/contacts/99999999999999999999", None),
        ("PUT", "/v3/contacts/99999999999999999999", {"attributes": {"A": 1}}),
        ("GET", "/v3/contacts/\u00b2", None),
    ],
)
def test_an_id_no_store_holds_is_a_4xx_not_a_500(
    brevo_with_ann: tuple[TestClient, dict[str, str]], method: str, path: str, body: object
) -> None:
    client, headers = brevo_with_ann
    content = None if body is None else json.dumps(body).encode()
    response = client.request(method, path, content=content, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)


def test_a_unicode_digit_in_a_query_number_is_a_400(
    brevo_with_ann: tuple[TestClient, dict[str, str]],
) -> None:
    client, headers = brevo_with_ann
    response = client.get("/v3/contacts/lists?limit=\u00b2", headers=headers)
    assert response.status_code == 400, response.text


def test_a_given_up_row_is_not_rejected_again_each_round(tmp_path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'lf.db'}")
    key = create_key(engine, "t", "admin")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    app = create_app(engine=engine, apply=False)
    service = app.state.service
    runner = FailsOnOneContact(engine, service.clock)

    def post(batch: list[dict]) -> None:
        response = client.post("/v1/batch", json={"batch": batch}, headers=auth)
        assert response.status_code == 200, response.text

    def round_() -> None:
        with contextlib.suppress(RuntimeError):  # the other row still fails
            service.inbox.apply_once(runner)

    with TestClient(app, raise_server_exceptions=False) as client:
        # row A: a good message, the poison one, and one refused at the door
        post(
            [
                {"type": "track", "userId": "good@acme.com", "event": "E", "messageId": "g-1"},
                {"type": "track", "userId": "boom@acme.com", "event": "E", "messageId": "b-1"},
                {"type": "track", "event": "no contact", "messageId": "bad-1"},
            ]
        )
        for _ in range(MAX_ATTEMPTS):
            round_()  # A fails MAX_ATTEMPTS times
        # row B arrives: the same contact's next message, which fails too
        post([{"type": "track", "userId": "boom@acme.com", "event": "E", "messageId": "b-2"}])
        for _ in range(MAX_ATTEMPTS + 2):
            round_()
        assert service.inbox.pending()[0] == 0
    with engine.connect() as connection:
        kept = connection.scalar(select(func.count()).select_from(rejected))
        taken = set(connection.scalars(select(events.c.message_id)))
    service.stop()
    engine.dispose()
    assert taken == {"g-1"}
    # b-1, bad-1 (row A) and b-2 (row B): each rejected once
    assert kept == 3


SKEW_RECEIVED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


SKEW_HAPPENED = SKEW_RECEIVED - timedelta(seconds=30)  # on the server's clock


SKEW_SLOW = timedelta(hours=3)  # the phone's clock is 3 hours slow


def _stamp_of(tmp_path: Path, path: str, body: dict[str, Any]) -> datetime:
    """The one event's stored moment, sent at SKEW_RECEIVED (by the other file's helper)."""
    (stamp,) = _stamps_of(tmp_path, path, body).values()
    return stamp


def _on_the_device(moment: datetime) -> str:
    return (moment - SKEW_SLOW).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("where", ["batch", "single"])
def test_an_sdk_payload_is_corrected_for_the_device_clock(tmp_path, where: str) -> None:
    message = {
        "type": "track",
        "anonymousId": "device-1",
        "event": "Product Viewed",
        "timestamp": _on_the_device(SKEW_HAPPENED),  # analytics.js / mobile SDKs: the device clock
        "messageId": "ajs-1",
    }
    if where == "batch":  # analytics-next's batched dispatcher, the mobile SDKs
        body = {"batch": [message], "sentAt": _on_the_device(SKEW_RECEIVED)}
        stamp = _stamp_of(tmp_path, "/v1/batch", body)
    else:  # analytics.js's single call: sentAt on the message
        message.pop("type")
        stamp = _stamp_of(
            tmp_path, "/v1/track", {**message, "sentAt": _on_the_device(SKEW_RECEIVED)}
        )
    assert stamp == SKEW_HAPPENED, stamp


@pytest.mark.parametrize("typed", [False, True])
def test_a_contact_imported_with_a_20_digit_number_can_be_read(
    tmp_path, store_url: str, typed: bool
) -> None:
    path = tmp_path / "crm.csv"
    path.write_text("email,sim\nann@acme.com,89014103211118510720\n")
    args = ["import", "contacts", str(path), "--db", store_url]
    if typed:
        args += ["--type", "sim=int"]
    result = CliRunner().invoke(cli, args)
    # --type int may refuse the row with a reason; what is imported must be readable
    assert result.exit_code == 0 or (typed and "64 bits" in result.output), result.output
    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    app = create_app(engine=engine, apply=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/v3/contacts/ann@acme.com", headers={"api-key": key})
    finally:
        engine.dispose()
    assert response.status_code == (200 if result.exit_code == 0 else 404), response.text


RANGE_NOW = datetime(2026, 1, 5, 10, tzinfo=UTC)


RANGE_MESSAGE = {
    "type": "track",
    "userId": "ann",
    "event": "E",
    "originalTimestamp": "1901-01-05T09:00:00Z",
    "sentAt": "2999-01-05T09:01:00Z",
}


def test_the_same_moment_as_a_timestamp_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_message({**RANGE_MESSAGE, "timestamp": "0928-01-05T09:59:00Z"}, RANGE_NOW)


def test_a_corrected_moment_outside_the_supported_years_is_refused() -> None:
    try:
        stamp = parse_message(RANGE_MESSAGE, RANGE_NOW).timestamp
    except ValueError:
        return
    assert 1900 <= stamp.year <= 2999, stamp
