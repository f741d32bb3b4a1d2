"""Pieces every command module shares: the --db option, opening a store, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from sqlalchemy import Engine

EXIT_INPUT = 1
"""Exit code for a problem with the input or data (click uses 2 for wrong usage)."""


def echo_json(data: Any) -> None:
    """Written in pieces: a simulation's summary of 100,000 contacts would otherwise be
    built as one string several hundred MiB long before the first byte went out."""
    stream = sys.stdout
    json.dump(data, stream, indent=2, ensure_ascii=False, default=str)
    stream.write("\n")
    stream.flush()


db_option = click.option(
    "--db",
    "db_url",
    envvar="LEADFLOW_DB",
    default=None,
    metavar="URL",
    help="SQLAlchemy URL of the store [env LEADFLOW_DB; default sqlite:///leadflow.db].",
)


def open_store(db_url: str | None, checkpoint_pages: int | None = None) -> Engine:
    from engine.store.db import open_engine

    try:
        engine = open_engine(db_url, checkpoint_pages=checkpoint_pages)
    except Exception as exc:  # a bad URL or an unreachable server is input, not a crash
        raise click.ClickException(f"cannot open the store {db_url or ''}: {exc}") from None
    context = click.get_current_context(silent=True)
    if context is not None:  # close the pool's connections when the command ends
        context.call_on_close(engine.dispose)
    return engine
