"""The HTTP service end to end: uvicorn on a free loopback port, driven by the real
segment-analytics-python, rudder-sdk-python and brevo-python packages and by raw HTTP for
the bad input that well-behaved clients never send; the store is checked afterwards."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import brevo
import httpx
import pytest
import rudderstack.analytics as rudder_analytics
import segment.analytics as segment_analytics
import uvicorn
from brevo.core.api_error import ApiError
from brevo.types import ContactErrorModel  # noqa: F401  (the SDK's error model must import)
from click.testing import CliRunner
from rudderstack.analytics import Client as RudderClient
from rudderstack.analytics import request as rudder_request
from segment.analytics import Client as SegmentClient
from segment.analytics import request as segment_request
from segment.analytics.request import APIError as SegmentAPIError
from sqlalchemy import Engine, func, select

from engine.cli import main as cli
from engine.messaging.settings import secret
from engine.messaging.tokens import CONFIRM, UNSUBSCRIBE, make_token
from engine.service.app import create_app
from engine.service.keys import create_key
from engine.store.db import make_engine, open_engine, writer
from engine.store.tables import audit, contacts, events, outbox, rejected

LIST_WORKFLOW = {
    "id": "svc-newsletter-points",
    "version": 1,
    "name": "Points for joining the newsletter",
    "triggers": [{"type": "list_added", "list": "Newsletter"}],
    "reentry": "never",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "SCORE", "add": 10}},
}
TITLE_WORKFLOW = {
    "id": "svc-title-list",
    "version": 1,
    "name": "Executives list",
    "triggers": [{"type": "attribute_changed", "attribute": "JOB_TITLE"}],
    "reentry": "always",
    "start": "check",
    "nodes": {
        "check": {
            "type": "condition",
            "if": {"attribute": "JOB_TITLE", "in": ["CEO", "VP Marketing"]},
            "then": "add",
            "else": "done",
        },
        "add": {"type": "add_to_list", "list": "Executives"},
        "done": {"type": "exit"},
    },
}


class Server:
    """uvicorn in a thread on 127.0.0.1, port chosen by the OS."""

    def __init__(self, url: str) -> None:
        self.engine = open_engine(url)
        self.app = create_app(engine=self.engine)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="error", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.dispose()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Env:
    server: Server
    url: str
    ingest: str
    admin: str

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def engine(self) -> Engine:
        return self.server.engine

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            text = response.read()
        finally:
            connection.close()
        try:
            return response.status, json.loads(text) if text else None
        except ValueError:
            return response.status, text.decode()

    def basic(self, key: str | None = None) -> dict[str, str]:
        token = base64.b64encode(f"{key or self.ingest}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def settle(self) -> None:
        """Wait until every accepted message has been applied."""
        deadline = time.monotonic() + 20
        while True:
            status, body = self.request("GET", "/api/inbox", headers={"api-key": self.admin})
            assert status == 200, body
            if body["messages"] == 0:
                return
            assert time.monotonic() < deadline, body
            time.sleep(0.02)

    def count(self, table: Any, *where: Any) -> int:
        with self.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(table).where(*where)))

    def contact(self, contact_id: str) -> dict[str, Any]:
        status, body = self.request(
            "GET",
            f"/api/contacts/{urllib.parse.quote(contact_id)}",
            headers={"api-key": self.admin},
        )
        assert status == 200, body
        assert isinstance(body, dict)
        return body


def _start(url: str) -> Iterator[Env]:
    engine = make_engine(url)
    open_engine(url).dispose()
    ingest = create_key(engine, "test ingest", "ingest")
    admin = create_key(engine, "test admin", "admin")
    engine.dispose()
    with Server(url) as server:
        yield Env(server, url, ingest, admin)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    path = tmp_path_factory.mktemp("service") / "leadflow.db"
    yield from _start(f"sqlite:///{path}")
    # the SDKs keep a module-level requests session with a live connection
    segment_request._session.close()
    rudder_request._session.close()


@contextmanager
def brevo_client(env: Env, key: str) -> Iterator[brevo.Brevo]:
    """The official SDK pointed at the service (its own httpx client, closed afterwards)."""
    with httpx.Client() as transport:
        yield brevo.Brevo(api_key=key, base_url=f"{env.base}/v3", httpx_client=transport)


# --- Segment: the real SDK ----------------------------------------------------------------


def test_segment_sdk_module_level(env: Env) -> None:
    errors: list[Any] = []
    segment_analytics.write_key = env.ingest
    segment_analytics.host = env.base
    segment_analytics.sync_mode = True
    segment_analytics.on_error = lambda error, items: errors.append(error)
    segment_analytics.default_client = None
    try:
        segment_analytics.identify(
            "ann@acme.com", {"JOB_TITLE": "VP Marketing", "company_size": 500}
        )
        segment_analytics.track("ann@acme.com", "Page Viewed", {"url": "/pricing"})
        segment_analytics.group("ann@acme.com", "acme", {"name": "Acme", "industry": "Retail"})
        segment_analytics.page("ann@acme.com", "Docs", "Install", {"url": "/docs/install"})
        segment_analytics.screen("ann@acme.com", "App", "Home")
        segment_analytics.identify("anon-1", {"source": "ad"})
        segment_analytics.alias("anon-1", "ann@acme.com")
        segment_analytics.flush()
    finally:
        # (shutdown() of a sync_mode client fails inside the SDK: it has no consumers)
        segment_analytics.default_client = None
    assert errors == []
    env.settle()
    ann = env.contact("ann@acme.com")
    assert ann["attributes"]["JOB_TITLE"] == "VP Marketing"
    assert ann["attributes"]["source"] == "ad"  # the alias folded anon-1 in
    assert ann["account"] == "acme"
    assert "Executives" not in ann["lists"]  # TITLE_WORKFLOW is deployed later
    with env.engine.connect() as connection:
        names = sorted(
            n
            for n in connection.scalars(
                select(events.c.name).where(events.c.contact_id == "ann@acme.com")
            )
            if n
        )
    assert names == ["Page Viewed", "Page Viewed", "Screen Viewed"]


def test_segment_client_batches_and_retries_are_taken_once(env: Env) -> None:
    errors: list[Any] = []
    client = SegmentClient(
        env.ingest, host=env.base, upload_size=40, on_error=lambda e, b: errors.append(e)
    )
    for i in range(120):
        client.track(f"bulk{i % 7}@acme.com", "Email Clicked", {"n": i}, message_id=f"bulk-{i}")
    client.flush()
    client.shutdown()
    assert errors == []
    env.settle()
    taken = env.count(events, events.c.message_id.like("bulk-%"))
    assert taken == 120
    # the client retries (the same batch again): nothing is stored twice
    batch = [
        {
            "type": "track",
            "userId": f"bulk{i % 7}@acme.com",
            "event": "Email Clicked",
            "properties": {"n": i},
            "messageId": f"bulk-{i}",
        }
        for i in range(100, 120)
    ]
    for _ in range(2):
        status, body = env.request("POST", "/v1/batch", {"batch": batch, "writeKey": env.ingest})
        assert (status, body) == (200, {"success": True})
    env.settle()
    assert env.count(events, events.c.message_id.like("bulk-%")) == 120


def test_segment_client_gzip(env: Env) -> None:
    errors: list[Any] = []
    client = SegmentClient(
        env.ingest, host=env.base, gzip=True, sync_mode=True, on_error=lambda e, b: errors.append(e)
    )
    client.track("gz@acme.com", "Quote Requested", {"plan": "pro"}, message_id="gz-1")
    assert errors == []
    env.settle()
    assert env.count(events, events.c.message_id == "gz-1") == 1


# --- RudderStack: the real SDK (gzips by default) -----------------------------------------


def test_rudder_sdk_module_level(env: Env) -> None:
    errors: list[Any] = []
    rudder_analytics.write_key = env.ingest
    rudder_analytics.dataPlaneUrl = env.base
    rudder_analytics.sync_mode = True
    rudder_analytics.on_error = lambda error, items: errors.append(error)
    rudder_analytics.default_client = None
    try:
        assert rudder_analytics.gzip is True
        rudder_analytics.identify("rudy@acme.com", {"JOB_TITLE": "CEO"})
        rudder_analytics.track("rudy@acme.com", "Quote Requested", {"plan": "team"})
        rudder_analytics.group("rudy@acme.com", "rudco", {"name": "Rudco"})
        rudder_analytics.flush()
    finally:
        rudder_analytics.default_client = None
    assert errors == []
    env.settle()
    rudy = env.contact("rudy@acme.com")
    assert rudy["attributes"]["JOB_TITLE"] == "CEO"
    assert rudy["account"] == "rudco"
    assert env.count(events, events.c.contact_id == "rudy@acme.com") == 3


def test_rudder_client_batches(env: Env) -> None:
    errors: list[Any] = []
    client = RudderClient(
        env.ingest, host=env.base, upload_size=25, on_error=lambda e, b: errors.append(e)
    )
    for i in range(60):
        client.track(f"r{i % 5}@acme.com", "Video Watched", {"percent": i}, message_id=f"rb-{i}")
    client.flush()
    client.shutdown()
    assert errors == []
    env.settle()
    assert env.count(events, events.c.message_id.like("rb-%")) == 60


# --- bad input: each a clear 4xx, nothing lost, nothing twice ------------------------------


def test_wrong_key_is_401_and_the_sdk_hears_it(env: Env) -> None:
    client = SegmentClient("lf_nothere_wrong", host=env.base, sync_mode=True, max_retries=0)
    with pytest.raises(SegmentAPIError) as caught:
        client.track("nokey@acme.com", "Page Viewed", message_id="nokey-1")
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert "not valid" in caught.value.message
    status, body = env.request("POST", "/v1/track", {"userId": "x", "event": "E"})
    assert status == 401 and body["code"] == "unauthorized" and body["message"]
    status, body = env.request(
        "POST", "/v1/track", {"userId": "x", "event": "E"}, headers=env.basic("not-a-key")
    )
    assert status == 401
    status, body = env.request(
        "POST", "/v1/track", {"userId": "x", "event": "E", "writeKey": "lf_a_b"}
    )
    assert status == 401
    env.settle()
    assert env.count(events, events.c.contact_id.in_(["nokey@acme.com", "x"])) == 0


def test_oversize_is_413(env: Env) -> None:
    big = "x" * (33 * 1024)
    status, body = env.request(
        "POST",
        "/v1/track",
        {"userId": "big@acme.com", "event": "E", "properties": {"b": big}},
        headers=env.basic(),
    )
    assert status == 413 and body["code"] == "payload_too_large", body
    assert "32 KB" in body["message"]
    batch = [
        {"type": "track", "userId": "big@acme.com", "event": "E", "properties": {"b": "y" * 20000}}
        for _ in range(30)
    ]
    status, body = env.request("POST", "/v1/batch", {"batch": batch}, headers=env.basic())
    assert status == 413 and "500 KB" in body["message"], body
    # gzip keeps the wire small, but the limit is on what it expands to
    raw = gzip.compress(json.dumps({"batch": batch}).encode())
    status, body = env.request(
        "POST", "/v1/batch", raw=raw, headers={**env.basic(), "Content-Encoding": "gzip"}
    )
    assert status == 413, body
    # one oversize message in a batch: the batch is taken, that message is rejected and kept
    mixed = [
        {"type": "track", "userId": "big@acme.com", "event": "Small", "messageId": "big-ok"},
        {"type": "track", "userId": "big@acme.com", "event": "Huge", "properties": {"b": big}},
    ]
    status, body = env.request("POST", "/v1/batch", {"batch": mixed}, headers=env.basic())
    assert status == 200 and body["success"] is True, body
    assert body["rejected"][0]["index"] == 1 and "32 KB" in body["rejected"][0]["reason"]
    env.settle()
    assert env.count(events, events.c.message_id == "big-ok") == 1
    assert env.count(rejected, rejected.c.reason.like("%32 KB%")) == 1


def test_broken_gzip_bad_json_and_wrong_types_are_400(env: Env) -> None:
    env.settle()
    before = env.count(rejected)
    headers = {**env.basic(), "Content-Encoding": "gzip"}
    good = gzip.compress(b'{"batch": []}')
    status, body = env.request("POST", "/v1/batch", raw=good[:-6], headers=headers)
    assert status == 400 and body["code"] == "invalid_gzip", body
    status, body = env.request("POST", "/v1/batch", raw=b"not gzip at all", headers=headers)
    assert status == 400 and body["code"] == "invalid_gzip", body
    status, body = env.request("POST", "/v1/batch", raw=b'{"batch": [', headers=env.basic())
    assert status == 400 and body["code"] == "invalid_json" and "JSON" in body["message"]
    status, body = env.request("POST", "/v1/batch", raw=b"[1, 2]", headers=env.basic())
    assert status == 400 and "object" in body["message"]
    status, body = env.request("POST", "/v1/batch", {"batch": {"a": 1}}, headers=env.basic())
    assert status == 400 and "'batch' must be a list" in body["message"]
    status, body = env.request(
        "POST", "/v1/track", {"userId": "t@acme.com", "event": 5}, headers=env.basic()
    )
    assert status == 400 and body["message"] == "track message needs 'event'", body
    status, body = env.request(
        "POST", "/v1/identify", {"userId": {"a": 1}, "traits": {}}, headers=env.basic()
    )
    assert status == 400 and "'userId' must be text" in body["message"], body
    status, body = env.request(
        "POST", "/v1/identify", {"userId": "t@acme.com", "traits": [1]}, headers=env.basic()
    )
    assert status == 400 and "'traits' must be an object" in body["message"], body
    status, body = env.request(
        "POST",
        "/v1/track",
        {"userId": "t@acme.com", "event": "E", "timestamp": "yesterday"},
        headers=env.basic(),
    )
    assert status == 400 and "ISO-8601" in body["message"], body
    # a batch with bad messages: the good ones are taken, the bad ones kept with reasons
    batch = [
        {"type": "track", "userId": "t@acme.com", "event": "Good", "messageId": "types-1"},
        {"type": "track", "userId": "t@acme.com", "messageId": "types-2"},
        "not a message",
        {"type": "launch", "userId": "t@acme.com"},
        {"type": "track", "userId": "t@acme.com", "event": "Good", "messageId": "types-3"},
    ]
    status, body = env.request("POST", "/v1/batch", {"batch": batch}, headers=env.basic())
    assert status == 200, body
    assert [r["index"] for r in body["rejected"]] == [1, 2, 3]
    env.settle()
    assert env.count(events, events.c.message_id.in_(["types-1", "types-3"])) == 2
    assert env.count(rejected) == before + 3 + 4  # 4 single calls above were kept too
    with env.engine.connect() as connection:
        reasons = list(connection.scalars(select(rejected.c.reason).order_by(rejected.c.id)))
    assert any("unknown message type 'launch'" in r for r in reasons)
    assert any('expected a message object, found text "not a message"' in r for r in reasons)
    status, body = env.request("GET", "/api/inbox", headers={"api-key": env.admin})
    assert body == {"rows": 0, "messages": 0}


def test_rejected_batch_retry_is_not_doubled(env: Env) -> None:
    batch = [
        {"type": "track", "userId": "twice@acme.com", "event": "Signed Up", "messageId": "tw-1"},
        {
            "type": "identify",
            "userId": "twice@acme.com",
            "traits": {"plan": "pro"},
            "messageId": "tw-2",
        },
    ]
    raw = gzip.compress(json.dumps({"batch": batch, "writeKey": env.ingest}).encode())
    for _ in range(3):
        status, body = env.request(
            "POST", "/v1/batch", raw=raw, headers={"Content-Encoding": "gzip"}
        )
        assert (status, body) == (200, {"success": True})
    env.settle()
    assert env.count(events, events.c.contact_id == "twice@acme.com") == 2
    assert env.count(audit, audit.c.contact_id == "twice@acme.com", audit.c.name == "plan") == 1


# --- Brevo: the real SDK -------------------------------------------------------------------


def _deploy(env: Env, documents: list[dict[str, Any]]) -> None:
    status, body = env.request("POST", "/api/workflows", documents, headers={"api-key": env.admin})
    assert status == 201, body


def test_brevo_sdk_contacts_lists_events(env: Env) -> None:
    _deploy(env, [LIST_WORKFLOW, TITLE_WORKFLOW])
    with brevo_client(env, env.admin) as client:
        _brevo_calls(env, client)


def _brevo_calls(env: Env, client: brevo.Brevo) -> None:
    newsletter = client.contacts.create_list(name="Newsletter", folder_id=1).id
    assert isinstance(newsletter, int)
    created = client.contacts.create_contact(
        email="Bea@Brevo.test",
        attributes={"FIRSTNAME": "Bea", "JOB_TITLE": "CEO"},
        list_ids=[newsletter],
        ext_id="crm-42",
    )
    assert created is not None and isinstance(created.id, int)
    number = created.id
    for identifier, kind in [
        ("bea@brevo.test", None),
        ("Bea@Brevo.test", None),
        (str(number), None),
        (number, "contact_id"),
        ("crm-42", "ext_id"),
    ]:
        info = client.contacts.get_contact_info(identifier, identifier_type=kind)
        assert info.id == number and info.email == "bea@brevo.test", identifier
    assert info.attributes.FIRSTNAME == "Bea"  # type: ignore[attr-defined]
    executives = next(i for i in client.contacts.get_lists().lists or [] if i.name == "Executives")
    assert info.list_ids == sorted([newsletter, executives.id])
    assert info.email_blacklisted is False and info.sms_blacklisted is False
    assert info.statistics.messages_sent == []
    assert info.created_at.endswith("Z") and info.modified_at
    # the URL-encoded form of the identifier, as Brevo's docs ask for it
    status, body = env.request(
        "GET", "/v3/contacts/bea%40brevo.test", headers={"api-key": env.admin}
    )
    assert status == 200 and body["id"] == number
    # the list change and the attribute went through the runner: triggers fired, audited
    bea = env.contact("bea@brevo.test")
    assert bea["scores"]["SCORE"] == 10 and "Executives" in bea["lists"], bea
    assert env.count(audit, audit.c.contact_id == "bea@brevo.test", audit.c.subject == "list") == 2
    # a duplicate create is Brevo's 400 duplicate_parameter; updateEnabled updates (204)
    with pytest.raises(ApiError) as caught:
        client.contacts.create_contact(email="bea@brevo.test")
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "duplicate_parameter"
    again = client.contacts.create_contact(
        email="bea@brevo.test", attributes={"LASTNAME": "Brown"}, update_enabled=True
    )
    assert again is None
    client.contacts.update_contact(
        "bea@brevo.test", attributes={"JOB_TITLE": "Intern"}, sms_blacklisted=True
    )
    info = client.contacts.get_contact_info("bea@brevo.test")
    assert info.sms_blacklisted is True and info.email_blacklisted is False
    assert info.attributes.LASTNAME == "Brown"  # type: ignore[attr-defined]
    assert info.attributes.JOB_TITLE == "Intern"  # type: ignore[attr-defined]
    # lists: add and remove by email, id and ext id; the answer names who failed
    client.contacts.create_contact(email="cid@brevo.test")
    added = client.contacts.add_contact_to_list(
        newsletter, request={"emails": ["cid@brevo.test", "nobody@brevo.test"]}
    )
    assert added.contacts.success == ["cid@brevo.test"]
    assert added.contacts.failure == ["nobody@brevo.test"]
    with pytest.raises(ApiError) as caught:
        client.contacts.add_contact_to_list(newsletter, request={"emails": ["cid@brevo.test"]})
    assert caught.value.status_code == 400
    assert caught.value.body["code"] == "invalid_parameter"
    removed = client.contacts.remove_contact_from_list(newsletter, request={"ids": [number]})
    assert removed.contacts.success == [number]
    lists = client.contacts.get_lists(limit=50)
    by_name = {item.name: item for item in lists.lists or []}
    assert by_name["Newsletter"].id == newsletter
    assert by_name["Newsletter"].total_subscribers == 1
    assert "Executives" in by_name  # a list a workflow made has a number too
    assert lists.count == len(by_name)
    # events
    client.event.create_event(
        event_name="Demo Booked",
        identifiers={"email_id": "bea@brevo.test"},
        contact_properties={"PLAN": "enterprise"},
        event_properties={"seats": 40},
        event_date="2026-01-05T10:00:00Z",
    )
    client.event.create_event(event_name="Demo Booked", identifiers={"ext_id": "crm-42"})
    env.settle()
    assert (
        env.count(events, events.c.contact_id == "bea@brevo.test", events.c.name == "Demo Booked")
        == 2
    )
    assert client.contacts.get_contact_info(str(number)).attributes.PLAN == "enterprise"  # type: ignore[attr-defined]


def test_brevo_errors(env: Env) -> None:
    with (
        brevo_client(env, env.admin) as client,
        brevo_client(env, "lf_wrong_key") as stranger,
        brevo_client(env, env.ingest) as ingest,
    ):
        _brevo_errors(env, client, stranger, ingest)


def _brevo_errors(
    env: Env, client: brevo.Brevo, stranger: brevo.Brevo, ingest: brevo.Brevo
) -> None:
    with pytest.raises(ApiError) as caught:
        client.contacts.get_contact_info("ghost@brevo.test")
    assert caught.value.status_code == 404
    assert caught.value.body == {"code": "document_not_found", "message": "Contact does not exist"}
    with pytest.raises(ApiError) as caught:
        client.contacts.add_contact_to_list(999, request={"emails": ["a@b.c"]})
    assert caught.value.status_code == 404
    assert caught.value.body["code"] == "document_not_found"
    with pytest.raises(ApiError) as caught:
        stranger.contacts.get_lists()
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "unauthorized"
    # an ingest key may send events but not read contacts
    ingest.event.create_event(event_name="Ping", identifiers={"email_id": "ping@brevo.test"})
    with pytest.raises(ApiError) as caught:
        ingest.contacts.get_contact_info("ping@brevo.test")
    assert caught.value.status_code == 403
    status, body = env.request(
        "POST",
        "/v3/events",
        {"identifiers": {"email_id": "a@b.c"}},
        headers={"api-key": env.ingest},
    )
    assert (status, body["code"]) == (400, "missing_parameter"), body
    status, body = env.request(
        "POST",
        "/v3/events",
        {"event_name": "X", "identifiers": {"email_id": "a@b.c"}, "event_date": "soon"},
        headers={"api-key": env.ingest},
    )
    assert (status, body["code"]) == (400, "invalid_parameter"), body
    status, body = env.request(
        "POST", "/v3/contacts", {"attributes": {"A": 1}}, headers={"api-key": env.admin}
    )
    assert (status, body["code"]) == (400, "missing_parameter"), body
    status, body = env.request("POST", "/v3/contacts", raw=b"{", headers={"api-key": env.admin})
    assert (status, body["code"]) == (400, "bad_request"), body
    status, body = env.request(
        "POST",
        "/v3/contacts/lists/1/contacts/add",
        {"ids": [3, None]},
        headers={"api-key": env.admin},
    )
    assert (status, body["code"]) == (400, "invalid_parameter"), body
    assert body["message"] == "ids must hold integers, found null", body


# --- Leadflow's own API, docs, health, metrics --------------------------------------------


def test_own_api(env: Env) -> None:
    admin = {"api-key": env.admin}
    status, _ = env.request(
        "POST",
        "/v1/identify",
        {"userId": "own@acme.com", "traits": {"JOB_TITLE": "CEO"}},
        headers=env.basic(),
    )
    assert status == 200
    env.settle()
    status, body = env.request(
        "GET", "/api/workflows", headers={"Authorization": f"Bearer {env.admin}"}
    )
    assert status == 200 and isinstance(body, list)
    status, body = env.request("GET", "/api/workflows", headers={"api-key": env.ingest})
    assert status == 403, body
    bad = {
        **LIST_WORKFLOW,
        "id": "svc-broken",
        "nodes": {"points": {"type": "update_score", "add": "ten"}},
    }
    status, body = env.request("POST", "/api/workflows", bad, headers=admin)
    assert status == 422 and body["code"] == "invalid_workflow", body
    assert any(p["pointer"].startswith("/nodes/points") for p in body["problems"]), body
    status, body = env.request("GET", "/api/contacts/nobody", headers=admin)
    assert status == 404, body
    status, body = env.request(
        "GET",
        "/api/segment?"
        + urllib.parse.urlencode({"where": '{"attribute": "JOB_TITLE", "eq": "CEO"}'}),
        headers=admin,
    )
    assert status == 200 and "own@acme.com" in [c["id"] for c in body["contacts"]], body
    status, body = env.request("GET", "/api/segment?where=%7B%22nope%22%3A1%7D", headers=admin)
    assert status == 422 and body["message"].startswith("where:"), body
    with writer(env.engine).begin() as connection:
        connection.execute(
            outbox.insert().values(
                idempotency_key="svc-test-1",
                contact_id="own@acme.com",
                channel="email",
                payload={"template": "welcome"},
                status="dead",
                attempts=5,
                created_at=datetime.now(UTC),
            )
        )
    status, body = env.request("GET", "/api/outbox?status=dead", headers=admin)
    assert status == 200 and body["count"] == 1, body
    row_id = body["messages"][0]["id"]
    status, body = env.request("POST", f"/api/outbox/{row_id}/retry", headers=admin)
    assert (status, body["status"]) == (200, "pending"), body
    status, body = env.request("POST", "/api/outbox/99999/retry", headers=admin)
    assert status == 404, body
    status, body = env.request("GET", "/api/contacts/own@acme.com/explain", headers=admin)
    assert status == 200 and body["id"] == "own@acme.com", body
    status, body = env.request("GET", "/api/report", headers=admin)
    assert status == 200 and "contacts" in body
    status, spec = env.request("GET", "/openapi.json")
    assert (
        status == 200
        and "/v1/batch" in spec["paths"]
        and "/v3/contacts/{identifier}" in spec["paths"]
    )
    status, page = env.request("GET", "/docs")
    assert status == 200 and "/v3/events" in page
    status, body = env.request("GET", "/health")
    assert status == 200 and body["status"] == "ok"
    status, text = env.request("GET", "/metrics")
    assert status == 200
    for name in (
        "leadflow_events_taken_total",
        "leadflow_rejected_total",
        "leadflow_runs_active",
        "leadflow_waits_due",
        "leadflow_outbox_pending",
        "leadflow_delivery_latency_seconds",
        "leadflow_http_requests_total",
    ):
        assert name in text


def test_keys_cli(env: Env) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["keys", "create", "--name", "ci", "--scope", "ingest", "--db", env.url]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("lf_")
    status, _ = env.request(
        "POST", "/v1/track", {"userId": "k@acme.com", "event": "E"}, headers=env.basic(key)
    )
    assert status == 200
    listed = runner.invoke(cli, ["keys", "list", "--json", "--db", env.url])
    rows = json.loads(listed.stdout)
    row = next(r for r in rows if r["name"] == "ci")
    assert row["scope"] == "ingest" and row["last_used_at"] and row["revoked_at"] is None
    assert key not in listed.stdout
    fresh = runner.invoke(cli, ["keys", "create", "--db", env.url]).stdout.strip().splitlines()[-1]
    fresh_id = max(
        r["id"]
        for r in json.loads(runner.invoke(cli, ["keys", "list", "--json", "--db", env.url]).stdout)
    )
    revoked = runner.invoke(cli, ["keys", "revoke", str(fresh_id), "--db", env.url])
    assert revoked.exit_code == 0, revoked.output
    status, body = env.request(
        "POST", "/v1/track", {"userId": "k@acme.com", "event": "E"}, headers=env.basic(fresh)
    )
    assert status == 401, body
    assert runner.invoke(cli, ["keys", "revoke", "9999", "--db", env.url]).exit_code == 1
    env.settle()


# --- PostgreSQL: the Segment path once more ------------------------------------------------


def test_segment_path_on_postgresql(pg_url: str) -> None:
    env = _start(pg_url)
    e = next(env)
    try:
        client = SegmentClient(e.ingest, host=e.base, upload_size=30, gzip=True)
        for i in range(90):
            client.identify(f"pg{i % 9}@acme.com", {"JOB_TITLE": "CEO"}, message_id=f"pgi-{i}")
            client.track(f"pg{i % 9}@acme.com", "Page Viewed", {"url": "/p"}, message_id=f"pg-{i}")
        client.flush()
        client.shutdown()
        status, body = e.request(
            "POST",
            "/v1/batch",
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "pg0@acme.com",
                        "event": "Page Viewed",
                        "messageId": "pg-5",
                    }
                ]
            },
            headers=e.basic(),
        )
        assert (status, body) == (200, {"success": True})
        e.settle()
        assert e.count(events, events.c.message_id.like("pg-%")) == 90
        assert e.count(events, events.c.message_id.like("pgi-%")) == 90
        assert e.count(contacts, contacts.c.id.like("pg%@acme.com")) == 9
        assert e.contact("pg3@acme.com")["attributes"] == {"JOB_TITLE": "CEO"}
        with brevo_client(e, e.admin) as api:
            assert api.contacts.get_contact_info("pg3@acme.com").email == "pg3@acme.com"
    finally:
        env.close()


# --- the links in emails -------------------------------------------------------------------


def test_unsubscribe_and_confirm_links(env: Env) -> None:
    status, _ = env.request(
        "POST",
        "/v1/identify",
        {"userId": "link@acme.com", "traits": {"A": 1}},
        headers=env.basic(),
    )
    assert status == 200
    env.settle()
    with writer(env.engine).begin() as connection:
        key = secret(connection)
    moment = datetime.now(UTC)
    confirm = make_token(key, CONFIRM, "link@acme.com", moment, "test")
    status, page = env.request("GET", f"/confirm/{confirm}")  # a look: a button, no change
    assert status == 200 and "<form method='post'>" in page and "Confirm my" in page, page
    status, page = env.request("POST", f"/confirm/{confirm}")
    assert status == 200 and "confirmed" in page, page
    status, page = env.request("POST", f"/confirm/{confirm}")
    assert status == 200 and "already" in page
    leave = make_token(key, UNSUBSCRIBE, "link@acme.com", moment, "test")
    status, page = env.request(
        "POST",
        f"/unsubscribe/{leave}",
        raw=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and "unsubscribed" in page, page
    status, page = env.request("POST", f"/unsubscribe/{leave}")  # the page's button
    assert status == 200 and "already" in page
    status, page = env.request("GET", "/unsubscribe/v1.forged.token")
    assert status == 400
    status, page = env.request("GET", f"/confirm/{leave}")  # not a confirmation link
    assert status == 400 and "not a confirm link" in page
    env.settle()
    with brevo_client(env, env.admin) as client:
        assert client.contacts.get_contact_info("link@acme.com").email_blacklisted is True
    assert env.contact("link@acme.com")["attributes"]["UNSUBSCRIBED"] is True
    assert env.count(events, events.c.name == "Subscription Confirmed") == 1


def test_a_flood_is_refused_with_503(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.service.state.MAX_BACKLOG", -1)
    connection = http.client.HTTPConnection("127.0.0.1", env.server.port, timeout=30)
    body = json.dumps({"userId": "flood@acme.com", "event": "E"}).encode()
    connection.request("POST", "/v1/track", body=body, headers=env.basic())
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 503 and response.getheader("Retry-After") == "5"
    assert answer["code"] == "busy"
    monkeypatch.undo()
    status, _ = env.request(
        "POST", "/v1/track", {"userId": "flood@acme.com", "event": "E"}, headers=env.basic()
    )
    assert status == 200


def test_leadflow_serve_command(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/serve.db"
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--scope", "admin", "--db", url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = "import sys; from engine.cli import run; sys.argv[0] = 'leadflow'; run()"
    server = subprocess.Popen(
        [sys.executable, "-c", command, "serve", "--port", str(port), "--db", url],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    assert json.load(r)["status"] == "ok"
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/track",
            data=json.dumps({"userId": "s@acme.com", "event": "Served"}).encode(),
            headers={"api-key": key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert json.load(r) == {"success": True}
        status = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/inbox", headers={"api-key": key}
        )
        while True:
            with urllib.request.urlopen(status, timeout=10) as r:
                if json.load(r)["messages"] == 0:
                    break
            assert time.monotonic() < deadline + 20
            time.sleep(0.05)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=20)
    assert b"leadflow serving on" in err
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(events)) == 1
    engine.dispose()
