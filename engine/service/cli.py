"""``leadflow serve`` and ``leadflow keys create|list|revoke``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli_common import (
    EXIT_INPUT,
    PORT,
    ROW_ID,
    db_option,
    echo_json,
    open_store,
    template_catalog,
    templates_option,
)
from engine.clock import format_timestamp


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=PORT, help="Port to listen on.")
@db_option
@click.option(
    "--no-apply",
    is_flag=True,
    help="Only accept events; leave applying the inbox to another server process.",
)
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@templates_option
def serve_command(
    host: str,
    port: int,
    db_url: str | None,
    no_apply: bool,
    log_level: str,
    template_dirs: tuple[Path, ...],
) -> None:
    """Serve the HTTP API: Segment-compatible /v1, Brevo-compatible /v3, Leadflow's /api,
    /health, /metrics, /openapi.json and /docs. Keys come from `leadflow keys create`."""
    import uvicorn

    from engine.service.app import create_app

    engine = open_store(db_url)
    app = create_app(engine=engine, apply=not no_apply, templates=template_catalog(template_dirs))
    # requests wait less for the interpreter while the inbox is being applied beside them
    sys.setswitchinterval(0.001)
    click.echo(f"leadflow serving on http://{host}:{port} (docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@click.group("keys")
def keys_group() -> None:
    """API keys for the HTTP service: create, list, revoke."""


@keys_group.command("create")
@click.option("--name", default="default", show_default=True, help="A name to tell keys apart.")
@click.option(
    "--scope",
    type=click.Choice(["ingest", "admin"]),
    default="ingest",
    show_default=True,
    help="ingest: send events (/v1, /v3/events); admin: everything.",
)
@db_option
def keys_create(name: str, scope: str, db_url: str | None) -> None:
    """Create a key and print it as the last line (it is not shown again)."""
    from engine.service.keys import create_key

    key = create_key(open_store(db_url), name, scope)
    click.echo(f"created {scope} key {name!r}; store it now, it cannot be shown again:", err=True)
    click.echo(key)


@keys_group.command("list")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_list(db_url: str | None, as_json: bool) -> None:
    """Keys: id, name, scope, created, last used, revoked (never the key itself)."""
    from rich.table import Table

    from engine.console import terminal
    from engine.service.keys import list_keys

    rows = list_keys(open_store(db_url))
    for row in rows:
        for field in ("created_at", "last_used_at", "revoked_at"):
            row[field] = format_timestamp(row[field]) if row[field] else None
    if as_json:
        echo_json(rows)
        return

    def minute(stamp: str | None) -> str:
        return stamp.replace("T", " ")[:16] if stamp else ""

    table = Table("id", "name", "scope", "key starts", "created", "last used", "revoked")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            row["scope"],
            row["prefix"],
            minute(row["created_at"]),
            minute(row["last_used_at"]) or "never",
            minute(row["revoked_at"]),
        )
    terminal().print(table)


@keys_group.command("revoke")
@click.argument("key_id", type=ROW_ID)
@db_option
def keys_revoke(key_id: int, db_url: str | None) -> None:
    """Revoke a key by id (see `leadflow keys list`); servers stop taking it within 5 s."""
    from engine.service.keys import revoke_key

    if not revoke_key(open_store(db_url), key_id):
        click.echo(f"error: no unrevoked key with id {key_id}", err=True)
        sys.exit(EXIT_INPUT)
    click.echo(f"revoked key {key_id}")
