"""Messaging: cases a reviewing helper found wrong (session 14), each failing before its
fix."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import at
from sqlalchemy import Engine, func, select
from test_messaging_delivery import (
    START,
    SmtpServer,
    setup,
    smtp_values,
    workflow,
)

from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.messaging.consent import quiet_until, unsubscribe
from engine.messaging.render import parse_template
from engine.messaging.settings import BY_KEY, BadSetting, MessagingSettings, coerce
from engine.store.tables import consents, events, outbox


@pytest.mark.parametrize("zone", ["America", "Europe", "x" * 300])
def test_quiet_until_falls_back_for_a_folder_or_overlong_zone(zone: str) -> None:
    rules = MessagingSettings.from_values({"quiet_hours": "21:00-08:00"}, {})
    # 03:00 UTC: quiet in UTC (the default zone), until 08:00 UTC
    assert quiet_until(rules, {"timezone": zone}, at("2026-01-06 03:00")) == at("2026-01-06 08:00")


def test_one_contact_with_timezone_america_does_not_stop_everyones_email(
    sqlite_store: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    s = setup(sqlite_store, tmp_path, values=smtp_values(smtp, quiet_hours="21:00-08:00"))
    s.flow.identify("ann@acme.com", {"timezone": "America"})
    s.flow.identify("bob@acme.com", {"timezone": "Europe/Paris"})
    s.flow.track("ann@acme.com", "Go")
    s.flow.track("bob@acme.com", "Go")
    report = s.deliverer.deliver()  # raised IsADirectoryError
    assert report.sent == 2  # 10:00 UTC: outside quiet hours in UTC and in Paris


def test_default_timezone_setting_refuses_a_folder_with_a_badsetting() -> None:
    with pytest.raises(BadSetting, match=r"quiet_hours\.default_timezone"):
        coerce("quiet_hours.default_timezone", "zone", "America")  # raised IsADirectoryError


def test_parse_template_ignores_a_byte_order_mark() -> None:
    parsed = parse_template("\ufeffSubject: Please confirm\nCategory: transactional\n\nHi\n")
    assert (parsed.subject, parsed.category, parsed.body) == (
        "Please confirm",
        "transactional",
        "Hi\n",
    )


def test_a_bom_saved_template_keeps_its_subject_and_category(
    sqlite_store: Engine,
    tmp_path: Path,
) -> None:
    here = tmp_path / "templates"
    here.mkdir()
    text = (
        "Subject: Please confirm\r\nCategory: transactional\r\n\r\nConfirm: {{ confirm_url }}\r\n"
    )
    (here / "confirm.txt").write_bytes(text.encode("utf-8-sig"))
    flow = Leadflow(engine=sqlite_store, clock=VirtualClock(START), templates=[here])
    flow.deploy([workflow("w", {"m": {"type": "send_email", "template": "confirm"}})])
    flow.track("ann@acme.com", "Go")
    with sqlite_store.connect() as connection:
        (row,) = connection.execute(outbox.select()).all()
    rendered = row.payload["rendered"]
    assert rendered["subject"] == "Please confirm"
    assert rendered["category"] == "transactional"
    assert "Subject:" not in rendered["text"]


CLICK_TEMPLATE = "Subject: News\n\nHello\nUnsubscribe: {{ unsubscribe_url }}\n"


@pytest.mark.parametrize("later", [timedelta(0), timedelta(minutes=5)])
def test_a_second_click_on_a_merged_contacts_link_is_already_done(
    sqlite_store: Engine,
    tmp_path: Path,
    later: timedelta,
) -> None:
    """Same second: the second click crashes (IntegrityError on consents' (action, ref):
    a 500 from GET /unsubscribe). Later: a duplicate proof, event and webhook."""
    here = tmp_path / "templates"
    here.mkdir()
    (here / "news.txt").write_text(CLICK_TEMPLATE, encoding="utf-8")
    flow = Leadflow(engine=sqlite_store, clock=VirtualClock(START), templates=[here])
    flow.deploy(
        [
            workflow("w", {"m": {"type": "send_email", "template": "news"}}),
            workflow(
                "goodbye",
                {"hook": {"type": "webhook", "url": "https://crm.example/unsubscribed"}},
                event="Unsubscribed",
            ),
        ]
    )
    flow.identify("crm-1", {"email": "ann@acme.com", "CONSENT": True})
    flow.track("crm-1", "Go")
    with sqlite_store.connect() as connection:
        (row,) = connection.execute(select(outbox)).all()
    token = row.payload["rendered"]["unsubscribe_url"].rsplit("/", 1)[1]
    # the CRM id turns out to be ann@acme.com: merged into it
    flow.send(
        [
            {
                "type": "alias",
                "previousId": "crm-1",
                "userId": "ann@acme.com",
                "timestamp": "2026-01-05T10:30:00Z",
                "messageId": "a-1",
            }
        ]
    )
    first = unsubscribe(flow.runner, token)
    assert first.already is False
    assert flow.contact("ann@acme.com")["attributes"]["UNSUBSCRIBED"] is True
    flow.clock.advance_to(flow.clock.now() + later)  # type: ignore[attr-defined]
    second = unsubscribe(flow.runner, token)  # the same link clicked again
    assert second.already is True
    with sqlite_store.connect() as connection:
        proofs = connection.scalar(select(func.count()).select_from(consents))
        left = connection.scalar(
            select(func.count()).select_from(events).where(events.c.name == "Unsubscribed")
        )
        hooks = connection.scalar(
            select(func.count()).select_from(outbox).where(outbox.c.channel == "webhook")
        )
    assert (proofs, left, hooks) == (1, 1, 1)


def test_a_new_signup_of_an_unsubscribed_address_gets_its_confirmation_email(
    sqlite_store: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    playbook = json.loads(files("workflows").joinpath("double-opt-in.json").read_text("utf-8"))
    news = workflow("news", {"m": {"type": "send_email", "template": "offer"}})
    s = setup(sqlite_store, tmp_path, [playbook, news], smtp_values(smtp))
    # the CRM's contact for Ann gets the newsletter and unsubscribes
    s.flow.identify("crm-1", {"email": "ann@acme.com", "CONSENT": True})
    s.flow.track("crm-1", "Go")
    assert s.deliverer.deliver().sent == 1
    token = s.rows()[0].payload["rendered"]["unsubscribe_url"].rsplit("/", 1)[1]
    unsubscribe(s.flow.runner, token)
    # months later Ann signs up again on the website (a new contact, her address as id)
    s.flow.track("ann@acme.com", "Signed Up")
    report = s.deliverer.deliver()
    last = s.rows()[-1]
    assert last.payload["template"] == "confirm-subscription"
    assert (last.status, last.note) == ("sent", None)
    assert report.sent == 1
    assert [e.rcpt_tos for e in smtp.box.envelopes][-1] == ["ann@acme.com"]


def test_the_cap_counts_what_the_merged_contact_already_got(
    sqlite_store: Engine,
    tmp_path: Path,
    smtp: SmtpServer,
) -> None:
    caps = {"email": {"max": 1, "per": "P7D"}}
    s = setup(sqlite_store, tmp_path, values=smtp_values(smtp, frequency_caps=caps))
    s.flow.identify("crm-1", {"email": "ann@acme.com"})
    s.flow.track("crm-1", "Go")
    assert s.deliverer.deliver().sent == 1
    s.clock.advance_to(START + timedelta(hours=2))
    s.flow.send(
        [
            {
                "type": "alias",
                "previousId": "crm-1",
                "userId": "ann@acme.com",
                "timestamp": "2026-01-05T12:00:00Z",
                "messageId": "a-1",
            }
        ]
    )
    s.clock.advance_to(START + timedelta(hours=3))
    s.flow.track("ann@acme.com", "Go")
    report = s.deliverer.deliver()
    assert (report.sent, report.postponed) == (0, 1)
    assert len(smtp.box.envelopes) == 1


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        # a typo in the channel: no cap at all, silently
        ("frequency_caps", {"emails": {"max": 1, "per": "P1D"}}, "unknown channel"),
        # webhooks are never capped (consent.check): accepted, never applied
        ("frequency_caps", {"webhook": {"max": 1, "per": "P1D"}}, "webhooks are not capped"),
        # a zero window: the cap never holds anything back
        ("frequency_caps", {"email": {"max": 1, "per": "PT0S"}}, "empty window"),
        # every double opt-in link expired the moment it is sent
        ("consent.confirm_valid", "P0D", "zero validity"),
        # header_pair raises for every SMS: each one retried until dead
        ("sms.auth_header", "Bearer abc123", "not 'Name: value'"),
        # the sms.body template does not parse / names a variable that does not exist:
        # every SMS fails at delivery
        ("sms.body", {"to": "{{ to }}", "text": "{{ text "}, "syntax error"),
        ("sms.body", {"to": "{{ to }}", "text": "{{ message }}"}, "unknown variable"),
        # links and List-Unsubscribe need an absolute http(s) URL
        ("public_url", "leadflow.example.com", "no scheme"),
        ("public_url", "javascript:alert(1)", "not http"),
        # goes into the List-Unsubscribe header as it is: a CRLF adds headers
        ("unsubscribe.mailto", "unsubscribe@acme.test\r\nBcc: spy@evil.test", "header injection"),
        ("unsubscribe.mailto", "please unsubscribe me", "not an address"),
    ],
)
def test_a_setting_that_cannot_work_is_refused(key: str, value: Any, why: str) -> None:
    with pytest.raises(BadSetting, match=key.replace(".", r"\.")):
        coerce(key, BY_KEY[key].kind, value)


SUBJECT_WORKFLOW = {
    "id": "w", "version": 1, "triggers": [{"type": "event", "event": "Go"}],
    "reentry": "always", "start": "a",
    "nodes": {
        "a": {"type": "send_email", "template": "welcome-a", "next": "b"},
        "b": {"type": "send_email", "template": "welcome-a",
              "subject": "Welcome to Leadflow, {{ contact.attributes.FIRSTNAME }}"},
    },
}  # fmt: skip


SUBJECT_EVENTS = [
    {"type": "identify", "userId": "ann@acme.com", "traits": {"FIRSTNAME": "Ann"},
     "timestamp": "2026-01-05T10:00:00Z", "messageId": "m1"},
    {"type": "track", "userId": "ann@acme.com", "event": "Go",
     "timestamp": "2026-01-05T10:01:00Z", "messageId": "m2"},
]  # fmt: skip


def test_simulate_shows_the_subject_a_template_gives(tmp_path: Path) -> None:
    (tmp_path / "w.json").write_text(json.dumps(SUBJECT_WORKFLOW), encoding="utf-8")
    (tmp_path / "events.jsonl").write_text("\n".join(map(json.dumps, SUBJECT_EVENTS)) + "\n")
    result = CliRunner().invoke(
        main,
        ["simulate", "--workflows", str(tmp_path / "w.json"),
         "--events", str(tmp_path / "events.jsonl"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    subjects = [m.get("subject") for m in json.loads(result.output)["messages"]]
    # both emails go out with this subject (the template's, then the node's)
    assert subjects == ["Welcome to Leadflow, Ann", "Welcome to Leadflow, Ann"]


def test_a_scanners_get_on_a_link_changes_nothing_only_the_post_does(tmp_path: Path) -> None:
    """Mail security scanners fetch every link of an incoming email: a GET that acted
    unsubscribed corporate recipients at their first email, with the scanner's address as
    proof (RFC 8058, section 4). A GET now shows a button; the POST acts."""
    import httpx
    from test_service import Server

    from engine.messaging.settings import secret
    from engine.messaging.tokens import CONFIRM, UNSUBSCRIBE, make_token
    from engine.store.db import make_engine, upgrade, writer

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = make_engine(url)
    upgrade(store)
    flow = Leadflow(engine=store, clock=VirtualClock(START))
    flow.identify("ann@acme.com", {"CONSENT": True})
    with writer(store).begin() as connection:
        key = secret(connection)
    now = datetime.now(UTC)
    leave = make_token(key, UNSUBSCRIBE, "ann@acme.com", now, "news")
    join = make_token(key, CONFIRM, "ann@acme.com", now, "news")
    with Server(url) as server, httpx.Client(base_url=server.base) as client:
        for path in (f"/unsubscribe/{leave}", f"/confirm/{join}"):
            page = client.get(path, headers={"User-Agent": "SafeLinks/1.0"})
            assert page.status_code == 200
            assert "<form method='post'>" in page.text
        attributes = flow.contact("ann@acme.com")["attributes"]
        assert attributes.get("UNSUBSCRIBED") is not True and attributes["CONSENT"] is True
        with store.connect() as connection:
            assert connection.scalar(select(func.count()).select_from(consents)) == 0
        done = client.post(
            f"/unsubscribe/{leave}",
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert done.status_code == 200
    assert flow.contact("ann@acme.com")["attributes"]["UNSUBSCRIBED"] is True
    flow.close()
    store.dispose()
