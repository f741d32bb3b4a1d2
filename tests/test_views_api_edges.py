"""Views, explain and the /api routes: cases a reviewing helper found wrong (session 14),
each failing before its fix."""

from __future__ import annotations

import urllib.parse
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.api import Leadflow
from engine.cli import main as cli
from engine.clock import VirtualClock
from engine.errors import UnknownContact
from engine.explain import explain_contact
from engine.service.app import create_app
from engine.service.keys import create_key
from engine.store.db import open_engine

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def test_a_merged_contact_is_on_exactly_one_band_list(store_url: str) -> None:
    clock = VirtualClock(datetime(2026, 1, 5, 12, tzinfo=UTC))
    with Leadflow(store_url, clock) as flow:
        flow.deploy(
            [
                str(WORKFLOWS / "consideration-stage.json"),
                str(WORKFLOWS / "models" / "sales-ready.json"),
            ]
        )
        flow.track("ann@acme.com", "Quote Requested", message_id="m-1")  # 30: Warm
        flow.send(
            [
                {
                    "type": "track",
                    "anonymousId": "anon-1",
                    "event": "Quote Requested",
                    "timestamp": "2026-01-05T09:00:00Z",
                    "messageId": "m-2",
                }
            ]
        )  # 30: Warm
        flow.send(
            [
                {
                    "type": "identify",
                    "anonymousId": "anon-1",
                    "userId": "ann@acme.com",
                    "timestamp": "2026-01-05T11:00:00Z",
                    "messageId": "m-3",
                }
            ]
        )
        view = flow.contact("ann@acme.com")
    assert view["scores"] == {"SCORE": 60}
    bands = {"New leads", "Warm leads", "Qualified leads", "Sales-qualified leads"}
    assert [name for name in view["lists"] if name in bands] == ["Qualified leads"], view["lists"]


with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


@pytest.fixture
def slashed_api(store_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    clock = VirtualClock(datetime(2026, 1, 5, 12, tzinfo=UTC))
    with Leadflow(store_url, clock) as flow:
        flow.deploy([str(WORKFLOWS / "consideration-stage.json")])
        for contact in ("crm/42", "x", "x/explain"):
            flow.track(contact, "Quote Requested")
        flow.send([{"type": "group", "userId": "crm/42", "groupId": "sf/acme", "traits": {}}])
    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    try:
        with TestClient(create_app(engine=engine, apply=False)) as client:
            yield client, {"api-key": key}
    finally:
        engine.dispose()


def _quoted(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def test_the_cli_reads_a_contact_whose_id_holds_a_slash(store_url: str, slashed_api) -> None:
    result = CliRunner().invoke(cli, ["contacts", "show", "crm/42", "--db", store_url, "--json"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("path", "found"),
    [
        (f"/api/contacts/{_quoted('crm/42')}", "crm/42"),
        (f"/api/contacts/{_quoted('crm/42')}/explain", "crm/42"),
        (f"/api/accounts/{_quoted('sf/acme')}", "sf/acme"),
    ],
)
def test_an_id_with_a_slash_is_found_over_http(slashed_api, path: str, found: str) -> None:
    client, headers = slashed_api
    response = client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["id"] == found


def test_an_encoded_slash_is_part_of_the_id_not_a_path_step(slashed_api) -> None:
    client, headers = slashed_api
    response = client.get(f"/api/contacts/{_quoted('x/explain')}", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "x/explain", body  # the contact, not contact x's explanation
    assert "score_history" in body


LIMIT_PAST_INT8 = "9223372036854775808"


@pytest.fixture
def limited_api(store_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with Leadflow(store_url, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))) as flow:
        flow.identify("ann@acme.com", {"job_title": "CEO"})
    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    try:
        with TestClient(create_app(engine=engine, apply=False), raise_server_exceptions=False) as c:
            yield c, {"api-key": key}
    finally:
        engine.dispose()


@pytest.mark.parametrize("path", ["/api/segment", "/api/outbox"])
def test_a_limit_past_what_the_store_holds_is_a_400(limited_api, path: str) -> None:
    client, headers = limited_api
    response = client.get(f"{path}?limit={LIMIT_PAST_INT8}", headers=headers)
    assert response.status_code == 400, (response.status_code, response.text)


@pytest.mark.parametrize("path", ["/api/segment", "/api/outbox"])
def test_the_largest_limit_the_cli_takes_works(limited_api, path: str) -> None:
    client, headers = limited_api
    response = client.get(f"{path}?limit={int(LIMIT_PAST_INT8) - 1}", headers=headers)
    assert response.status_code == 200, (response.status_code, response.text)


@pytest.mark.parametrize("path", ["/api/segment", "/api/outbox"])
def test_a_unicode_digit_as_a_limit_is_a_400(limited_api, path: str) -> None:
    client, headers = limited_api
    response = client.get(f"{path}?limit=\u00b2", headers=headers)  # '²'.isdigit() is True
    assert response.status_code == 400, (response.status_code, response.text)


MOVES_DOUBLE = {
    "id": "double-points",
    "version": 1,
    "triggers": [{"type": "event", "event": "Demo Booked"}],
    "reentry": "always",
    "start": "a",
    "nodes": {
        "a": {"type": "update_score", "add": 30, "next": "b"},
        "b": {"type": "update_score", "add": 30},
    },
}


def test_each_band_move_is_listed_on_its_own(store_url: str) -> None:
    clock = VirtualClock(datetime(2026, 1, 5, 12, tzinfo=UTC))
    with Leadflow(store_url, clock) as flow:
        flow.deploy([MOVES_DOUBLE, str(WORKFLOWS / "models" / "sales-ready.json")])
        flow.track("ann@acme.com", "Demo Booked", message_id="m-1")
    engine = open_engine(store_url)
    try:
        with engine.connect() as connection:
            moves = explain_contact(connection, "ann@acme.com")["scores"]["SCORE"]["band_moves"]
    finally:
        engine.dispose()
    assert [(m["from"], m["to"]) for m in moves] == [
        ([], ["Warm leads"]),
        (["Warm leads"], ["Qualified leads"]),
    ], [m["text"] for m in moves]


def _fill(url: str) -> None:
    with Leadflow(url, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))) as flow:
        flow.deploy([str(WORKFLOWS / "consideration-stage.json")])
        flow.track("ann@acme.com", "Quote Requested", message_id="m-1")


def test_the_embedding_api_says_unknown_contact_on_both_backends(store_url: str) -> None:
    _fill(store_url)
    with Leadflow(store_url) as flow, pytest.raises(UnknownContact):
        flow.contact("ann\x00@acme.com")


@pytest.fixture
def nul_api(store_url: str) -> Iterator[tuple[TestClient, dict[str, str]]]:
    _fill(store_url)
    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    try:
        with TestClient(create_app(engine=engine, apply=False), raise_server_exceptions=False) as c:
            yield c, {"api-key": key}
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "path",
    ["/api/contacts/a%00b", "/api/contacts/a%00b/explain", "/api/accounts/a%00b"],
)
def test_an_id_with_a_nul_is_a_404(nul_api, path: str) -> None:
    client, headers = nul_api
    response = client.get(path, headers=headers)
    assert response.status_code == 404, (response.status_code, response.text)


@pytest.mark.parametrize(
    "path",
    [
        "/api/contacts/ann%40acme.com/explain?score=S%00",
        "/api/segment?sort=score:S%00",
        "/api/segment?sort=grade:G%00",
        "/api/outbox?status=dead%00",
    ],
)
def test_a_name_with_a_nul_is_not_a_500(nul_api, path: str) -> None:
    client, headers = nul_api
    response = client.get(path, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text)
