"""Pieces every command module shares: the --db option, opening a store, JSON output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy import Engine

EXIT_INPUT = 1
"""Exit code for a problem with the input or data (click uses 2 for wrong usage)."""

LARGEST_STORED = 2**63 - 1
"""The largest integer both stores keep: a number past it is a usage error, not a crash."""

ROW_ID = click.IntRange(min=1, max=LARGEST_STORED)
"""An id the store handed out (an outbox record, an API key)."""

COUNT = click.IntRange(min=0, max=LARGEST_STORED)
"""How many rows at most (``--limit``)."""

PORT = click.IntRange(min=0, max=65535)


if TYPE_CHECKING:
    from engine.templates import TemplateCatalog

    # generic in click's stubs since 8.2; not subscriptable in 8.1 at runtime
    _FloatParam = click.ParamType[float]
else:
    _FloatParam = click.ParamType


class FiniteFloat(_FloatParam):
    """A float that is a number (not ``nan`` or ``inf``, which ``float()`` reads), at
    least ``least`` (or over it, ``open_least``)."""

    name = "number"

    def __init__(self, least: float | None = None, open_least: bool = False) -> None:
        self.least, self.open_least = least, open_least

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if number != number or number in (float("inf"), float("-inf")):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        least = self.least
        if least is not None and (number <= least if self.open_least else number < least):
            bound = f"greater than {least:g}" if self.open_least else f"at least {least:g}"
            self.fail(f"{value!r} is not {bound}", param, ctx)
        return number


class OutputFile(click.Path):
    """A file a command will write: refused as a usage error (exit 2) before any work when
    its folder does not exist, as ``report --html`` and ``segment --out`` both do, rather
    than after the work is done."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        if isinstance(path, Path) and not path.parent.is_dir():
            self.fail(f"{path}: the folder {path.parent} does not exist", param, ctx)
        return path


TEMPLATES_ENV = "LEADFLOW_TEMPLATES"


def templates_option(command: Any) -> Any:
    """``--templates DIR`` (repeatable; env ``LEADFLOW_TEMPLATES``, folders separated by
    the path separator) on every command that runs workflows: a run that sends one of
    your own templates fails wherever its workflow runs without them (a worker resuming
    the wait, the service applying an event, a deploy moving contacts between lists)."""
    return click.option(
        "--templates",
        "template_dirs",
        multiple=True,
        envvar=TEMPLATES_ENV,
        type=_TemplateFolder(file_okay=False, exists=True, path_type=Path),
        callback=lambda _ctx, _param, value: tuple(v for v in value if v is not None),
        help=f"Folder of your own email templates (NAME.txt) [env {TEMPLATES_ENV}].",
    )(command)


class _TemplateFolder(click.Path):
    """An existing folder; an empty entry is skipped (``LEADFLOW_TEMPLATES=$X:/dir`` with
    ``X`` unset leaves one, which click would refuse as "Directory '' does not exist")."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "":
            return None
        return super().convert(value, param, ctx)


def template_catalog(template_dirs: tuple[Path, ...]) -> TemplateCatalog:
    """The shipped templates and the folders given, with a warning for each unreadable
    one (a run that sends it fails, with the reason)."""
    from engine.templates import TemplateCatalog

    templates = TemplateCatalog(template_dirs)
    for reason in templates.unreadable.values():
        click.echo(f"warning: {reason}; a run that sends it fails", err=True)
    return templates


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


def _url_hint(db_url: str | None) -> str:
    """What to write instead, for the two usual mistakes: a file name, and Heroku's
    ``postgres://`` scheme (SQLAlchemy knows it as ``postgresql://``)."""
    if not db_url:
        return ""
    if db_url.startswith("postgres://"):
        return f" (did you mean postgresql://{db_url.removeprefix('postgres://')}?)"
    if "://" not in db_url:
        return f" (a store is a URL, such as sqlite:///{db_url} for a file)"
    return ""


def open_store(db_url: str | None, checkpoint_pages: int | None = None) -> Engine:
    from engine.store.db import open_engine

    try:
        engine = open_engine(db_url, checkpoint_pages=checkpoint_pages)
    except Exception as exc:  # a bad URL or an unreachable server is input, not a crash
        raise click.ClickException(
            f"cannot open the store {db_url or ''}: {exc}{_url_hint(db_url)}"
        ) from None
    context = click.get_current_context(silent=True)
    if context is not None:  # close the pool's connections when the command ends
        context.call_on_close(engine.dispose)
    return engine
