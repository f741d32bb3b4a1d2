"""``leadflow outbox``: list, inspect, re-queue and deliver messages; messaging settings."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from sqlalchemy import select

from engine.cli_common import (
    COUNT,
    EXIT_INPUT,
    ROW_ID,
    FiniteFloat,
    db_option,
    echo_json,
    open_store,
)
from engine.clock import SystemClock, format_timestamp
from engine.store.tables import delivery_attempts
from engine.store.tables import outbox as outbox_table

STATUSES = ("pending", "sending", "sent", "failed", "dead", "suppressed")


def _what(payload: dict[str, Any], channel: str) -> str:
    if channel == "email":
        return str(payload.get("template", ""))
    if channel == "sms":
        return str(payload.get("text", ""))[:40]
    return str(payload.get("url", ""))


def _stamp(value: Any) -> str | None:
    return None if value is None else format_timestamp(value)


def _row_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "channel": row.channel,
        "contact": row.contact_id,
        "what": _what(row.payload, row.channel),
        "attempts": row.attempts,
        "created_at": _stamp(row.created_at),
        "next_attempt_at": _stamp(row.next_attempt_at),
        "sent_at": _stamp(row.sent_at),
        "note": row.note,
        "last_error": row.last_error,
        "idempotency_key": row.idempotency_key,
        "workflow": row.payload.get("workflow"),
    }


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(STATUSES), help="Only rows in this state.")
@click.option("--contact", "contact_id", help="Only this contact's rows.")
@click.option("--limit", type=COUNT, default=100, show_default=True, help="The newest N rows.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def outbox(
    ctx: click.Context,
    status: str | None,
    contact_id: str | None,
    limit: int,
    db_url: str | None,
    as_json: bool,
) -> None:
    """List outbox messages, oldest first (subcommands: show, retry, deliver, settings)."""
    if ctx.invoked_subcommand is not None:
        return
    engine = open_store(db_url)
    query = select(outbox_table).order_by(outbox_table.c.id.desc()).limit(max(limit, 0))
    if status is not None:
        query = query.where(outbox_table.c.status == status)
    if contact_id is not None:
        query = query.where(outbox_table.c.contact_id == contact_id)
    with engine.connect() as connection:
        rows = [_row_view(r) for r in reversed(list(connection.execute(query)))]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no messages", err=True)
        return
    for r in rows:
        when = r["sent_at"] or r["next_attempt_at"] or "-"
        why = r["last_error"] if r["status"] in ("failed", "dead") else r["note"]
        line = (
            f"{r['id']:>6}  {r['status']:<10} {r['channel']:<7} {r['contact']:<28} "
            f"{r['what']:<28} attempts {r['attempts']}  {when}"
        )
        click.echo(line + (f"  ({why})" if why else ""))


@outbox.command("show")
@click.argument("outbox_id", type=ROW_ID)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def outbox_show(outbox_id: int, db_url: str | None, as_json: bool) -> None:
    """One message with its content and every delivery attempt."""
    engine = open_store(db_url)
    with engine.connect() as connection:
        row = connection.execute(select(outbox_table).where(outbox_table.c.id == outbox_id)).first()
        if row is None:
            click.echo(f"error: no outbox message {outbox_id}", err=True)
            sys.exit(EXIT_INPUT)
        attempts = [
            {
                "attempt": a.attempt,
                "at": _stamp(a.at),
                "ok": a.ok,
                "error": a.error,
                "response": a.response,
            }
            for a in connection.execute(
                select(delivery_attempts)
                .where(delivery_attempts.c.outbox_id == outbox_id)
                .order_by(delivery_attempts.c.attempt)
            )
        ]
    view = {**_row_view(row), "payload": row.payload, "delivery_attempts": attempts}
    if as_json:
        echo_json(view)
        return
    for key, value in view.items():
        if key not in ("payload", "delivery_attempts"):
            click.echo(f"{key}: {value if value is not None else '-'}")
    click.echo("payload: " + json.dumps(row.payload, ensure_ascii=False, indent=2))
    click.echo("attempts:" if attempts else "attempts: none")
    for a in attempts:
        outcome = {True: "ok", False: "failed", None: "in flight"}[a["ok"]]
        detail = a["response"] if a["ok"] else a["error"]
        click.echo(f"  #{a['attempt']} {a['at']} {outcome}: {detail or '-'}")


@outbox.command("retry")
@click.argument("outbox_ids", metavar="[ID]...", nargs=-1, type=ROW_ID)
@click.option(
    "--status",
    type=click.Choice(("failed", "dead", "suppressed")),
    help="Every message in this state (after an outage, or a fix to the settings).",
)
@db_option
def outbox_retry(outbox_ids: tuple[int, ...], status: str | None, db_url: str | None) -> None:
    """Re-queue messages now, with a fresh dead-letter budget (failed, dead, suppressed
    or sent rows alike; a suppressed row meets the consent rules again). Give their ids,
    or --status for all in that state."""
    from engine.messaging.delivery import requeue, requeue_all
    from engine.store.db import writer

    if bool(outbox_ids) == bool(status):
        raise click.UsageError("give message ids or --status, one of the two")
    engine = open_store(db_url)
    now = SystemClock().now()
    with writer(engine).begin() as connection:
        if status is not None:
            click.echo(f"{requeue_all(connection, status, now)} outbox message(s) re-queued")
            return
        ids = list(dict.fromkeys(outbox_ids))
        refused = [i for i in ids if not requeue(connection, i, now)]
    for outbox_id in refused:
        click.echo(f"error: no outbox message {outbox_id} that can be re-queued", err=True)
    if len(ids) == 1 and not refused:
        click.echo(f"outbox message {ids[0]} re-queued")
    else:
        click.echo(f"{len(ids) - len(refused)} outbox message(s) re-queued")
    if refused:
        sys.exit(EXIT_INPUT)


@outbox.command("deliver")
@db_option
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
@click.option(
    "--poll",
    type=FiniteFloat(least=0),
    default=5.0,
    show_default=True,
    help="Seconds between rounds (without --once).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report as JSON (without --once: one object a line, for each round).",
)
def outbox_deliver(db_url: str | None, once: bool, poll: float, as_json: bool) -> None:
    """Deliver due messages now (the worker does this too), until stopped or with --once."""
    from engine.messaging.delivery import Deliverer

    engine = open_store(db_url)
    deliverer = Deliverer(engine, SystemClock())
    if once:
        report = deliverer.deliver()
        if as_json:
            echo_json(report.as_dict())
        else:
            click.echo(str(report))
        return
    try:
        while True:
            report = deliverer.deliver()
            if report.claimed:  # with --json, one object a line (JSON Lines)
                click.echo(json.dumps(report.as_dict()) if as_json else str(report))
            time.sleep(poll)
    except KeyboardInterrupt:
        return


@outbox.command("settings")
@click.argument("key", required=False)
@click.argument("value", required=False)
@click.option("--unset", is_flag=True, help="Remove KEY from the settings table.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def outbox_settings(
    key: str | None, value: str | None, unset: bool, db_url: str | None, as_json: bool
) -> None:
    """Show messaging settings, or set KEY to VALUE (JSON, or plain text).

    The environment (LEADFLOW_SMTP_HOST, ...) wins over the settings table."""
    from engine.messaging.settings import BadSetting, MessagingSettings, set_setting
    from engine.store.db import writer

    if unset and value is not None:
        raise click.UsageError(f"--unset removes {key}: give it no VALUE")
    if unset and key is None:
        raise click.UsageError("--unset needs the KEY to remove")
    engine = open_store(db_url)
    if key is not None and (value is not None or unset):
        parsed: Any = None
        if not unset:
            try:
                parsed = json.loads(value or "")
            except ValueError:
                parsed = value
        try:
            with writer(engine).begin() as connection:
                set_setting(connection, key, parsed)
        except BadSetting as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
    with engine.connect() as connection:
        described = MessagingSettings.load(connection).describe()
    if key is not None:
        described = [d for d in described if d["key"] == key]
        if not described:
            click.echo(f"error: unknown setting {key!r}", err=True)
            sys.exit(EXIT_INPUT)
    if as_json:
        echo_json(described)
        return
    for item in described:
        shown = json.dumps(item["value"], ensure_ascii=False)
        click.echo(f"{item['key']} = {shown}  [{item['from']}]")
