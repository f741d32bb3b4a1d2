"""Messaging without the network: rendering at run time, tokens, the consent rules, quiet
hours, frequency caps, settings, backoff, unsubscribe and the outbox commands.

Delivery against real SMTP and HTTP servers is in test_messaging_delivery.py."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import at
from sqlalchemy import Engine, select

from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.messaging.consent import (
    POSTPONE,
    SEND,
    SUPPRESS,
    check,
    confirm,
    quiet_until,
    unsubscribe,
)
from engine.messaging.delivery import Deliverer, backoff
from engine.messaging.render import parse_template
from engine.messaging.settings import (
    BY_KEY,
    BadSetting,
    MessagingSettings,
    coerce,
    parse_quiet_hours,
    secret,
    set_setting,
)
from engine.messaging.tokens import (
    CONFIRM,
    UNSUBSCRIBE,
    InvalidToken,
    make_token,
    read_token,
)
from engine.store.db import make_engine, upgrade, writer
from engine.store.tables import audit, consents, outbox, runs

START = at("2026-01-05 10:00")


def workflow(wid: str, nodes: dict[str, Any], event: str = "Go") -> dict[str, Any]:
    return {
        "id": wid,
        "version": 1,
        "triggers": [{"type": "event", "event": event}],
        "reentry": "always",
        "start": next(iter(nodes)),
        "nodes": nodes,
    }


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    yield engine
    engine.dispose()


def make_flow(
    engine: Engine,
    folder: Path,
    workflows: list[dict[str, Any]],
    templates: Mapping[str, str] | None = None,
    clock: VirtualClock | None = None,
) -> Leadflow:
    here = folder / "templates"
    here.mkdir(exist_ok=True)
    for name, text in (templates or {}).items():
        (here / name).write_text(text, encoding="utf-8")
    flow = Leadflow(engine=engine, clock=clock or VirtualClock(START), templates=[here])
    flow.deploy(workflows)
    return flow


def outbox_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(outbox).order_by(outbox.c.id)))


def run_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(runs).order_by(runs.c.entered_at, runs.c.id)))


# --- templates --------------------------------------------------------------------------


def test_a_template_has_a_header_block_and_a_body() -> None:
    parsed = parse_template("Subject: Hi {{ x }}\nCategory: transactional\n\nBody\nline 2\n")
    assert parsed.subject == "Hi {{ x }}"
    assert parsed.category == "transactional"
    assert parsed.body == "Body\nline 2\n"
    assert parsed.body_line == 4
    plain = parse_template("Hello\n")
    assert (plain.subject, plain.category, plain.body) == (None, "marketing", "Hello\n")
    with pytest.raises(ValueError, match="marketing or transactional"):
        parse_template("Subject: x\nCategory: urgent\n\nBody")


def test_shipped_confirmation_is_transactional_the_others_marketing() -> None:
    from engine.templates import TemplateCatalog

    catalog = TemplateCatalog()
    kinds = {name: parse_template(src).category for name, src in catalog.sources.items()}
    assert kinds.pop("confirm-subscription") == "transactional"
    assert set(kinds.values()) == {"marketing"}
    assert all(parse_template(src).subject for src in catalog.sources.values())


# --- rendering while the run executes ---------------------------------------------------


def test_email_rendered_with_attributes_scores_account_html_and_links(
    sqlite_store: Engine, tmp_path: Path
) -> None:
    templates = {
        "offer.txt": (
            "Subject: {{ contact.attributes.FIRSTNAME }}, an offer for {{ account.traits.name }}\n"
            "\n"
            "Score {{ contact.scores.SCORE }}, lists {{ contact.lists | join(',') }}.\n"
            "Unsubscribe: {{ unsubscribe_url }}\n"
        ),
        "offer.html": "<p>Hi {{ contact.attributes.FIRSTNAME }}</p>",
    }
    flows = [
        workflow(
            "offer",
            {
                "points": {"type": "update_score", "add": 40, "next": "join"},
                "join": {"type": "add_to_list", "list": "Warm", "next": "mail"},
                "mail": {"type": "send_email", "template": "offer"},
            },
        )
    ]
    flow = make_flow(sqlite_store, tmp_path, flows, templates)
    flow.identify("ann@acme.com", {"FIRSTNAME": "<Ann>"})
    flow.send(
        [{"type": "group", "userId": "ann@acme.com", "groupId": "acme", "traits": {"name": "Acme"}}]
    )
    flow.track("ann@acme.com", "Go")
    (row,) = outbox_rows(sqlite_store)
    rendered = row.payload["rendered"]
    assert row.payload["template"] == "offer"
    assert rendered["subject"] == "<Ann>, an offer for Acme"
    assert rendered["category"] == "marketing"
    assert rendered["text"].startswith("Score 40, lists Warm.\nUnsubscribe: http://")
    assert rendered["html"] == "<p>Hi &lt;Ann&gt;</p>"  # autoescaped
    url = rendered["unsubscribe_url"]
    assert url in rendered["text"]
    assert url.startswith("http://127.0.0.1:8000/unsubscribe/v1.")


def test_public_url_comes_from_the_settings(sqlite_store: Engine, tmp_path: Path) -> None:
    with writer(sqlite_store).begin() as connection:
        set_setting(connection, "public_url", "https://leads.example.com/")
    flows = [workflow("w", {"m": {"type": "send_email", "template": "welcome-a"}})]
    flow = make_flow(sqlite_store, tmp_path, flows)
    flow.track("ann@acme.com", "Go")
    (row,) = outbox_rows(sqlite_store)
    assert row.payload["rendered"]["unsubscribe_url"].startswith(
        "https://leads.example.com/unsubscribe/v1."
    )
    assert "Hi there," in row.payload["rendered"]["text"]  # FIRSTNAME | default('there')


@pytest.mark.parametrize(
    ("node", "reason"),
    [
        (
            {"type": "send_email", "template": "needs-name"},
            "node 'n' (send_email): email template 'needs-name': "
            "contact.attributes.FIRSTNAME is not set for this contact",
        ),
        (
            {"type": "send_email", "template": "no-such"},
            "node 'n' (send_email): unknown email template 'no-such'",
        ),
        (
            {"type": "send_email", "template": "broken"},
            "node 'n' (send_email): email template 'broken': syntax error on line 3: "
            "unexpected '}'",
        ),
        (
            {"type": "send_email", "template": "welcome-a", "subject": "{{ contact.scores.X }}"},
            "node 'n' (send_email): email template 'welcome-a' subject: "
            "contact.scores.X is not set for this contact",
        ),
        (
            {"type": "send_sms", "text": "Hi {{ contact.attributes.FIRSTNAME }}"},
            "node 'n' (send_sms): SMS text: contact.attributes.FIRSTNAME is not set for this "
            "contact",
        ),
        (
            {"type": "webhook", "url": "https://crm.example.com/x",
             "body": {"lead": {"tags": ["{{ coupon }}"]}}},
            "node 'n' (webhook): webhook body at /lead/tags/0: coupon is not a template variable",
        ),
        (
            {"type": "send_sms", "text": "{{ contact.attributes.__class__ }}"},
            "node 'n' (send_sms): SMS text: access to attribute '__class__' of '_Scope' object "
            "is unsafe.",
        ),
    ],
)  # fmt: skip
def test_a_missing_template_or_variable_fails_the_run_and_queues_nothing(
    sqlite_store: Engine, tmp_path: Path, node: dict[str, Any], reason: str
) -> None:
    templates = {
        "needs-name.txt": "Subject: Hi\n\nHello {{ contact.attributes.FIRSTNAME }}\n",
        "broken.txt": "Subject: Hi\n\n{{ contact.id }\n",
    }
    flows = [
        workflow(
            "w",
            {
                "first": {"type": "send_email", "template": "welcome-b", "next": "n"},
                "n": {**node, "next": "after"},
                "after": {"type": "add_to_list", "list": "Reached"},
            },
        )
    ]
    flow = make_flow(sqlite_store, tmp_path, flows, templates)
    flow.track("ann@acme.com", "Go")
    (run,) = run_rows(sqlite_store)
    assert (run.state, run.end_reason) == ("failed", "action failed")
    assert run.error == reason
    # the step that failed rolls nothing back of the run's earlier nodes, but adds nothing
    assert [r.payload["template"] for r in outbox_rows(sqlite_store)] == ["welcome-b"]
    assert flow.contact("ann@acme.com")["lists"] == []


def test_sms_and_webhook_are_rendered_into_the_payload(
    sqlite_store: Engine, tmp_path: Path
) -> None:
    text = "Hi {{ contact.attributes.FIRSTNAME }}"
    body = {
        "id": "{{ contact.id }}",
        "score": "{{ contact.scores.SCORE | default(0) }}",
        "n": 3,
        "flag": True,
    }
    flows = [
        workflow(
            "w",
            {
                "sms": {"type": "send_sms", "text": text, "next": "hook"},
                "hook": {"type": "webhook", "url": "https://crm.example.com/lead", "body": body},
            },
        )
    ]
    flow = make_flow(sqlite_store, tmp_path, flows)
    flow.identify("ann@acme.com", {"FIRSTNAME": "Ann"})
    flow.track("ann@acme.com", "Go")
    sms, hook = outbox_rows(sqlite_store)
    assert sms.payload["rendered"] == {"text": "Hi Ann"}
    assert hook.payload["rendered"] == {
        "body": {"id": "ann@acme.com", "score": "0", "n": 3, "flag": True}
    }


# --- tokens -------------------------------------------------------------------------------


def test_tokens_round_trip_and_refuse_tampering() -> None:
    key = b"k" * 32
    token = make_token(key, UNSUBSCRIBE, "ann@acme.com", START, "welcome")
    found = read_token(key, token, UNSUBSCRIBE)
    assert (found.contact_id, found.issued_at, found.source) == ("ann@acme.com", START, "welcome")
    with pytest.raises(InvalidToken, match="not a confirm link"):
        read_token(key, token, CONFIRM)
    with pytest.raises(InvalidToken, match="signature"):
        read_token(b"x" * 32, token, UNSUBSCRIBE)
    other = make_token(key, UNSUBSCRIBE, "bob@acme.com", START)
    forged = token.rsplit(".", 1)[0].replace(token.split(".")[1], other.split(".")[1])
    with pytest.raises(InvalidToken, match="signature"):
        read_token(key, forged + "." + token.rsplit(".", 1)[1], UNSUBSCRIBE)
    for junk in ("", "v1.x", "v2.a.b", "v1.!!.??"):
        with pytest.raises(InvalidToken):
            read_token(key, junk, UNSUBSCRIBE)


def test_the_secret_is_created_once_and_kept(sqlite_store: Engine) -> None:
    with writer(sqlite_store).begin() as connection:
        first = secret(connection)
    with writer(sqlite_store).begin() as connection:
        assert secret(connection) == first
    assert len(first) == 32


def test_unsubscribe_link_round_trip_is_audited(sqlite_store: Engine, tmp_path: Path) -> None:
    flows = [workflow("w", {"m": {"type": "send_email", "template": "welcome-a"}})]
    flow = make_flow(sqlite_store, tmp_path, flows)
    flow.identify("ann@acme.com", {"CONSENT": True})
    flow.track("ann@acme.com", "Go")
    (row,) = outbox_rows(sqlite_store)
    token = row.payload["rendered"]["unsubscribe_url"].rsplit("/", 1)[1]
    assert isinstance(flow.clock, VirtualClock)
    flow.clock.advance_to(START + timedelta(days=400))  # unsubscribe links never expire
    done = unsubscribe(flow.runner, token, ip="203.0.113.9", user_agent="Mail/1.0")
    assert (done.contact_id, done.action, done.already) == ("ann@acme.com", "unsubscribed", False)
    attributes = flow.contact("ann@acme.com")["attributes"]
    assert attributes["UNSUBSCRIBED"] is True
    assert attributes["CONSENT"] is False
    with sqlite_store.connect() as connection:
        changes = [
            (a.name, a.old, a.new, a.cause.split(" (")[0])
            for a in connection.execute(
                select(audit).where(audit.c.subject == "attribute", audit.c.at > START)
            )
        ]
        proof = connection.execute(select(consents)).one()
    assert changes == [
        ("UNSUBSCRIBED", None, True, "identify"),
        ("CONSENT", True, False, "identify"),
    ]
    assert (proof.action, proof.ip, proof.user_agent) == ("unsubscribed", "203.0.113.9", "Mail/1.0")
    assert proof.source == "unsubscribe link (w)"
    assert unsubscribe(flow.runner, token).already is True
    # the email queued before the click is never sent
    report = Deliverer(sqlite_store, flow.clock, environ={}).deliver()
    assert report.suppressed == 1
    assert (outbox_rows(sqlite_store)[0].status, outbox_rows(sqlite_store)[0].note) == (
        "suppressed",
        "unsubscribed",
    )
    with pytest.raises(InvalidToken):
        unsubscribe(flow.runner, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


def test_an_unsubscribed_address_gets_nothing_whichever_contact_holds_it(
    sqlite_store: Engine, tmp_path: Path
) -> None:
    """crm-1 (email ann@acme.com) unsubscribed; the contact ann@acme.com, never merged
    with it, was still written to (found by a reviewing helper). The address is kept as
    unsubscribed until it confirms a double opt-in again."""
    flows = [workflow("w", {"m": {"type": "send_email", "template": "welcome-a"}})]
    flow = make_flow(sqlite_store, tmp_path, flows)
    flow.identify("crm-1", {"email": "Ann@Acme.com", "CONSENT": True})
    flow.track("crm-1", "Go")
    (row,) = outbox_rows(sqlite_store)
    token = row.payload["rendered"]["unsubscribe_url"].rsplit("/", 1)[1]
    unsubscribe(flow.runner, token)
    flow.track("ann@acme.com", "Go")
    deliverer = Deliverer(sqlite_store, flow.clock, environ={})
    assert deliverer.deliver().suppressed == 2
    notes = [(r.contact_id, r.note) for r in outbox_rows(sqlite_store)]
    assert notes == [
        ("crm-1", "unsubscribed"),
        ("ann@acme.com", "unsubscribed (ann@acme.com unsubscribed as contact crm-1)"),
    ]
    # a double opt-in confirmed by the address lifts it
    with sqlite_store.connect() as connection:
        key = secret(connection)
    confirm(flow.runner, make_token(key, CONFIRM, "ann@acme.com", flow.clock.now(), "form"))
    flow.track("ann@acme.com", "Go")
    assert deliverer.deliver().suppressed == 0
    last = outbox_rows(sqlite_store)[-1]  # not suppressed: it waits for an SMTP server
    assert (last.status, last.note.split(":")[0]) == ("pending", "waiting")


# --- the rules ------------------------------------------------------------------------------


def settings(**values: Any) -> MessagingSettings:
    return MessagingSettings.from_values(values, {})


@pytest.mark.parametrize(
    ("channel", "category", "contact", "attributes", "stored", "verdict"),
    [
        ("email", "marketing", "ann@a.com", {}, {}, (SEND, "")),
        ("email", "marketing", "ann@a.com", {"CONSENT": True}, {}, (SEND, "")),
        ("email", "marketing", "ann@a.com", {"CONSENT": "yes"}, {}, (SEND, "")),
        ("email", "marketing", "ann@a.com", {"CONSENT": False}, {},
         (SUPPRESS, "no consent (CONSENT is false)")),
        ("email", "marketing", "ann@a.com", {"CONSENT": "false"}, {},
         (SUPPRESS, "no consent (CONSENT is false)")),
        ("email", "marketing", "ann@a.com", {}, {"consent.require_explicit": True},
         (SUPPRESS, "no consent (CONSENT not given; consent.require_explicit is on)")),
        ("email", "marketing", "ann@a.com", {"CONSENT": True},
         {"consent.require_explicit": True}, (SEND, "")),
        ("email", "transactional", "ann@a.com", {"CONSENT": False}, {}, (SEND, "")),
        ("email", "transactional", "ann@a.com", {}, {"consent.require_explicit": True},
         (SEND, "")),
        ("email", "transactional", "ann@a.com", {"UNSUBSCRIBED": True}, {},
         (SUPPRESS, "unsubscribed")),
        ("email", "marketing", "ann@a.com", {"UNSUBSCRIBED": True, "CONSENT": True}, {},
         (SUPPRESS, "unsubscribed")),
        ("email", "marketing", "ann@a.com", {"emailBlacklisted": True}, {},
         (SUPPRESS, "unsubscribed (emailBlacklisted)")),
        ("sms", "marketing", "ann@a.com", {"SMS": "+3312", "emailBlacklisted": True}, {},
         (SEND, "")),
        ("sms", "marketing", "ann@a.com", {"SMS": "+3312", "CONSENT": False}, {},
         (SUPPRESS, "no consent (CONSENT is false)")),
        ("sms", "marketing", "ann@a.com", {}, {}, (SUPPRESS, "no phone number")),
        ("email", "marketing", "ann", {}, {}, (SUPPRESS, "no email address")),
        ("email", "marketing", "ann", {"EMAIL": "ann@a.com"}, {}, (SEND, "")),
        ("email", "marketing", "ann", None, {}, (SUPPRESS, "unknown contact ann")),
        ("webhook", "marketing", "ann", {"UNSUBSCRIBED": True}, {}, (SEND, "")),
    ],
)  # fmt: skip
def test_consent_rules(
    channel: str,
    category: str,
    contact: str,
    attributes: dict[str, Any] | None,
    stored: dict[str, Any],
    verdict: tuple[str, str],
) -> None:
    found = check(channel, category, contact, attributes, settings(**stored), START)
    assert (found.action, found.reason) == verdict


@pytest.mark.parametrize(
    ("now", "zone", "until"),
    [
        ("2026-01-05 21:30", "Europe/Paris", "2026-01-06 07:00"),  # 22:30 in Paris
        ("2026-01-05 19:59", "Europe/Paris", None),  # 20:59 in Paris
        ("2026-01-06 06:59", "Europe/Paris", "2026-01-06 07:00"),  # 07:59 in Paris
        ("2026-01-06 07:00", "Europe/Paris", None),  # 08:00 in Paris
        ("2026-01-06 03:00", "America/New_York", "2026-01-06 13:00"),  # 22:00 the day before
        ("2026-01-06 03:00", "Not/AZone", "2026-01-06 08:00"),  # falls back to UTC
        ("2026-01-06 03:00", None, "2026-01-06 08:00"),
        # 28 March 2026 22:00 in Paris (UTC+1); the quiet hours end after the DST change
        ("2026-03-28 21:00", "Europe/Paris", "2026-03-29 06:00"),
    ],
)
def test_quiet_hours_end_in_the_contacts_time_zone(
    now: str, zone: str | None, until: str | None
) -> None:
    rules = settings(quiet_hours="21:00-08:00")
    attributes = {} if zone is None else {"timezone": zone}
    found = quiet_until(rules, attributes, at(now))
    assert found == (None if until is None else at(until))
    verdict = check("email", "marketing", "a@b.c", attributes, rules, at(now))
    assert verdict.action == (SEND if until is None else POSTPONE)
    transactional = check("email", "transactional", "a@b.c", attributes, rules, at(now))
    assert transactional.action == SEND


def test_quiet_hours_within_one_day_and_bad_values() -> None:
    rules = settings(quiet_hours="12:00-14:00")
    assert quiet_until(rules, {}, at("2026-01-05 13:10")) == at("2026-01-05 14:00")
    assert quiet_until(rules, {}, at("2026-01-05 14:00")) is None
    for bad in ("21-8", "25:00-08:00", "08:00-08:00"):
        with pytest.raises(BadSetting, match="quiet_hours"):
            settings(quiet_hours=bad)
    assert parse_quiet_hours(None) is None


def test_frequency_cap_postpones_until_the_window_allows() -> None:
    rules = settings(frequency_caps={"email": {"max": 3, "per": "P7D"}})
    now = at("2026-01-10 12:00")
    sent = [at("2026-01-04 09:00"), at("2026-01-05 10:00"), at("2026-01-08 10:00")]
    verdict = check("email", "marketing", "a@b.c", {}, rules, now, sent)
    assert (verdict.action, verdict.until) == (POSTPONE, at("2026-01-11 09:00"))
    assert verdict.reason == "frequency cap (3 email per P7D)"
    assert check("email", "marketing", "a@b.c", {}, rules, now, sent[:2]).action == SEND
    # older than the window: does not count
    assert (
        check("email", "marketing", "a@b.c", {}, rules, now, [at("2026-01-01"), *sent[1:]]).action
        == SEND
    )
    assert check("email", "transactional", "a@b.c", {}, rules, now, sent).action == SEND
    assert check("sms", "marketing", "a@b.c", {"SMS": "+331"}, rules, now, sent).action == SEND


# --- settings and backoff -------------------------------------------------------------------


def test_environment_wins_over_the_settings_table(sqlite_store: Engine) -> None:
    with writer(sqlite_store).begin() as connection:
        set_setting(connection, "smtp.host", "table.example")
        set_setting(connection, "smtp.port", 2525)
        set_setting(connection, "smtp.starttls", True)
    with sqlite_store.connect() as connection:
        rules = MessagingSettings.load(connection, {"LEADFLOW_SMTP_HOST": "env.example"})
        plain = MessagingSettings.load(connection, {})
    assert (rules.smtp_host, rules.smtp_port, rules.smtp_starttls) == ("env.example", 2525, True)
    assert plain.smtp_host == "table.example"
    shown = {d["key"]: d for d in rules.describe()}
    assert shown["smtp.host"]["from"] == "env LEADFLOW_SMTP_HOST"
    assert shown["smtp.port"]["from"] == "settings table"
    assert shown["smtp.user"]["from"] == "default"
    with writer(sqlite_store).begin() as connection:
        with pytest.raises(BadSetting, match=r"unknown setting 'smtp\.hots'"):
            set_setting(connection, "smtp.hots", "x")
        with pytest.raises(BadSetting, match=r"setting smtp\.port"):
            set_setting(connection, "smtp.port", "twenty")
        with pytest.raises(BadSetting, match="unknown time zone"):
            set_setting(connection, "quiet_hours.default_timezone", "Mars/Olympus")
        set_setting(connection, "smtp.port", None)
    with sqlite_store.connect() as connection:
        assert MessagingSettings.load(connection, {}).smtp_port == 25


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("frequency_caps", {"email": {"max": 0, "per": "P1D"}}, "email: max: expected 1 or more"),
        ("frequency_caps", {"email": {"max": -1, "per": "P1D"}}, "expected 1 or more, found -1"),
        ("frequency_caps", {"email": {"max": 1}}, r"\{max: N, per: DURATION\}; per missing"),
        ("frequency_caps", {"email": {"max": True, "per": "P1D"}}, "max: expected a whole"),
        ("frequency_caps", {"email": {"max": [1], "per": "P1D"}}, "max: expected a whole"),
        ("webhook.headers", "abc", r"expected \{URL prefix: \{header name: value\}\}"),
        ("webhook.headers", {"https://x/": "Bearer t"}, "https://x/: expected"),
        ("webhook.headers", {"https://x/": {"A": {"b": 1}}}, "https://x/: expected"),
    ],
)
def test_settings_that_would_break_every_delivery_round_are_refused(
    key: str, value: Any, message: str
) -> None:
    """A cap of 0 made each round fail with an IndexError, and headers that were not an
    object of objects failed every webhook (found by a reviewing helper)."""
    with pytest.raises(BadSetting, match=rf"setting {re.escape(key)}: .*{message}"):
        coerce(key, BY_KEY[key].kind, value)


def test_a_bad_environment_value_names_its_variable() -> None:
    with pytest.raises(
        BadSetting,
        match=r"setting smtp\.port: expected a whole number, found 'abc' "
        r"\(from the environment variable LEADFLOW_SMTP_PORT\)",
    ):
        MessagingSettings.from_values({}, {"LEADFLOW_SMTP_PORT": "abc"})
    with pytest.raises(BadSetting, match=r"smtp\.timeout: expected a number, found 'soon'"):
        MessagingSettings.from_values({"smtp.timeout": "soon"})


def test_backoff_doubles_with_deterministic_jitter() -> None:
    rules = settings(**{"delivery.backoff_seconds": 10, "delivery.backoff_max_seconds": 100})
    delays = [backoff(7, n, rules).total_seconds() for n in range(1, 7)]
    assert delays == [backoff(7, n, rules).total_seconds() for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        full = min(100, 10 * 2 ** (n - 1))
        assert full / 2 <= delay < full
    assert backoff(7, 1, rules) != backoff(8, 1, rules)


# --- the outbox commands (no delivery here) ----------------------------------------------


def test_outbox_list_show_retry_and_settings_commands(sqlite_store: Engine, tmp_path: Path) -> None:
    flows = [workflow("w", {"m": {"type": "send_email", "template": "welcome-a"}})]
    flow = make_flow(sqlite_store, tmp_path, flows)
    flow.track("ann@acme.com", "Go")
    flow.track("bob@acme.com", "Go")
    url = str(sqlite_store.url)
    cli = CliRunner()
    listed = cli.invoke(main, ["outbox", "--db", url])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("pending") == 2
    assert "welcome-a" in listed.output
    as_json = cli.invoke(main, ["outbox", "--db", url, "--status", "pending", "--json"])
    import json

    rows = json.loads(as_json.output)
    assert [r["contact"] for r in rows] == ["ann@acme.com", "bob@acme.com"]
    assert (
        cli.invoke(main, ["outbox", "--db", url, "--status", "sent", "--json"]).output.strip()
        == "[]"
    )
    bad = cli.invoke(main, ["outbox", "--db", url, "--status", "lost"])
    assert bad.exit_code == 2
    missing = cli.invoke(main, ["outbox", "retry", "999", "--db", url])
    assert missing.exit_code == 1
    assert "no outbox message 999" in missing.output
    with writer(sqlite_store).begin() as connection:
        connection.execute(
            outbox.update().where(outbox.c.id == rows[0]["id"]).values(status="dead", attempts=8)
        )
    retried = cli.invoke(main, ["outbox", "retry", str(rows[0]["id"]), "--db", url])
    assert retried.exit_code == 0, retried.output
    row = outbox_rows(sqlite_store)[0]
    assert (row.status, row.retry_from, row.note) == ("pending", 8, "re-queued by hand")
    # after an outage: every dead one at once, or several ids
    with writer(sqlite_store).begin() as connection:
        connection.execute(outbox.update().values(status="dead", attempts=3))
    everyone = cli.invoke(main, ["outbox", "retry", "--status", "dead", "--db", url])
    assert (everyone.exit_code, everyone.output) == (0, "2 outbox message(s) re-queued\n")
    assert [(r.status, r.retry_from) for r in outbox_rows(sqlite_store)] == [("pending", 3)] * 2
    ids = [str(r["id"]) for r in rows]
    several = cli.invoke(main, ["outbox", "retry", *ids, "999", "--db", url])
    assert several.exit_code == 1
    assert "no outbox message 999" in several.output
    assert "2 outbox message(s) re-queued" in several.output
    for wrong in ([], [ids[0], "--status", "dead"]):
        assert cli.invoke(main, ["outbox", "retry", *wrong, "--db", url]).exit_code == 2
    shown = cli.invoke(main, ["outbox", "show", str(rows[0]["id"]), "--db", url])
    assert "status: pending" in shown.output and "attempts: none" in shown.output
    assert cli.invoke(main, ["outbox", "show", "999", "--db", url]).exit_code == 1
    setting = cli.invoke(main, ["outbox", "settings", "quiet_hours", "21:00-08:00", "--db", url])
    assert setting.exit_code == 0, setting.output
    assert setting.output.strip() == 'quiet_hours = "21:00-08:00"  [settings table]'
    caps = cli.invoke(
        main,
        [
            "outbox",
            "settings",
            "frequency_caps",
            '{"email": {"max": 3, "per": "P7D"}}',
            "--db",
            url,
        ],
    )
    assert caps.exit_code == 0, caps.output
    wrong = cli.invoke(main, ["outbox", "settings", "frequency_caps", "3", "--db", url])
    assert wrong.exit_code == 1
    assert "setting frequency_caps" in wrong.output
    unset = cli.invoke(main, ["outbox", "settings", "quiet_hours", "--unset", "--db", url])
    assert unset.output.strip() == "quiet_hours = null  [default]"
