"""The ``leadflow report`` command."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from engine.cli_common import EXIT_INPUT, OutputFile, db_option, echo_json, open_store
from engine.clock import parse_timestamp
from engine.durations import Duration
from engine.report.data import DEFAULT_COLD


def _duration(_ctx: Any, _param: Any, value: str) -> Duration:
    try:
        return Duration.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _moment(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("report")
@db_option
@click.option("--score", default="SCORE", show_default=True, help="The score to report on.")
@click.option(
    "--cold",
    "cold_after",
    default=DEFAULT_COLD,
    show_default=True,
    callback=_duration,
    metavar="DURATION",
    help="A lead is cold after this long without a score increase (ISO-8601 duration).",
)
@click.option(
    "--now",
    callback=_moment,
    metavar="TIMESTAMP",
    help="Report as of this moment [default: the newest event in the store].",
)
@click.option(
    "--html",
    "html_path",
    type=OutputFile(),
    help="Write a self-contained HTML page with the charts (opens with no network).",
)
@click.option(
    "--png",
    "png_path",
    type=OutputFile(),
    help="Write the main charts as one PNG image.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def report_command(
    db_url: str | None,
    score: str,
    cold_after: Duration,
    now: datetime | None,
    html_path: Path | None,
    png_path: Path | None,
    as_json: bool,
) -> None:
    """Share of contacts per band (buying stage), score distribution, grade by band, cold
    leads, list sizes, the funnel between stages and messages per channel per week."""
    from engine.report.data import gather

    engine = open_store(db_url)
    with engine.connect() as connection:
        report = gather(connection, score, cold_after, now)
    try:
        if html_path is not None:
            from engine.report.page import render_html

            html_path.write_text(render_html(report), encoding="utf-8")
        if png_path is not None:
            from engine.report.charts import report_png

            png_path.write_bytes(report_png(report))
    except OSError as exc:
        click.echo(f"error: cannot write {exc.filename}: {exc.strerror}", err=True)
        sys.exit(EXIT_INPUT)
    if as_json:
        echo_json(report.as_json())
        return
    from engine.report.terminal import print_report

    print_report(report)
    for label, path in (("HTML page", html_path), ("PNG", png_path)):
        if path is not None:
            click.echo(f"{label} written to {path}", err=True)
