"""The ``leadflow`` command line.

Exit codes: 0 success, 1 a problem with the input or data, 2 wrong usage (click's own).
No command lets a traceback reach the user for bad input.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from engine.accounts_view import accounts_group
from engine.backtest import backtest_command
from engine.calibrate import calibrate_command
from engine.catalog import deploy as deploy_workflows
from engine.catalog import deployed_workflow_ids
from engine.cli_common import (
    EXIT_INPUT,
    LARGEST_STORED,
    db_option,
    echo_json,
    open_store,
    template_catalog,
    templates_option,
)
from engine.clock import SystemClock, format_timestamp, parse_timestamp
from engine.console import terminal
from engine.errors import DeployConflict, InvalidWorkflow, LeadflowError, UnknownContact
from engine.explain import explain_command
from engine.graph import to_dot, to_mermaid
from engine.importer import import_group
from engine.messaging.cli import outbox as outbox_group
from engine.registry import default_registry
from engine.report import report_command
from engine.review import review_group
from engine.runner import FAILURES_KEPT, Runner, describe_failure
from engine.schema import build_schema, render
from engine.scoring.reapply import reapply_models
from engine.segment import read_lines
from engine.segments import segment_command
from engine.service.cli import keys_group, serve_command
from engine.store.db import writer
from engine.store.tables import workflow_status, workflow_versions
from engine.validation import DOCUMENT_KINDS, MODEL_KINDS, model_schema, validate_paths
from engine.versions import diff_command, history_command
from engine.views import contact_view, deployed_workflows


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leadflow")
def main() -> None:
    """Leadflow: workflow automation and lead scoring you can own, test and run at scale."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate workflow files and folders; one line per problem: FILE: /pointer: message."""
    result = validate_paths(paths)
    if as_json:
        click.echo(json.dumps([p.as_json() for p in result.problems], indent=2))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        if result.ok:
            click.echo(
                f"{len(result.workflows)} workflow(s) and {len(result.models)} model(s) valid",
                err=True,
            )
    sys.exit(0 if result.ok else EXIT_INPUT)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: Path, fmt: str) -> None:
    """Print the workflow graph, with node labels that say what each node does."""
    result = validate_paths([file], check_references=False)
    if not result.ok:
        for problem in result.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_INPUT)
    if len(result.workflows) != 1:
        click.echo(f"{file}: /kind: expected a workflow to draw, found a model", err=True)
        sys.exit(EXIT_INPUT)
    (workflow,) = result.workflows
    click.echo(to_mermaid(workflow) if fmt == "mermaid" else to_dot(workflow), nl=False)


@main.command()
@click.option(
    "--kind",
    type=click.Choice(DOCUMENT_KINDS),
    default="workflow",
    show_default=True,
    help="Which document's schema (committed as workflows/schema.json and "
    "workflows/models/KIND.schema.json).",
)
def schema(kind: str) -> None:
    """Print the JSON Schema (draft 2020-12) of workflows, or of a model kind, for editors
    and other tools."""
    document = build_schema(default_registry()) if kind == "workflow" else model_schema(kind)
    click.echo(render(document), nl=False)


def _timestamp(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@db_option
def db_upgrade(db_url: str | None) -> None:
    """Create or migrate the store to the newest schema (every command also does this)."""
    from engine.store.db import current_revision

    engine = open_store(db_url)
    click.echo(f"database at revision {current_revision(engine)}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@db_option
@templates_option
def deploy(paths: tuple[Path, ...], db_url: str | None, template_dirs: tuple[Path, ...]) -> None:
    """Validate workflows and store them as new versions. A start_workflow may name a
    workflow deployed before."""
    engine = open_store(db_url)
    with engine.connect() as connection:
        deployed = deployed_workflow_ids(connection)
    result = validate_paths(paths, known=deployed)
    if not result.ok:
        for problem in result.problems:
            click.echo(str(problem))
        sys.exit(EXIT_INPUT)
    clock = SystemClock()
    try:
        with writer(engine).begin() as connection:
            results = deploy_workflows(connection, [*result.workflows, *result.models], clock.now())
    except DeployConflict as exc:
        raise click.ClickException(str(exc)) from None
    for item in results:
        click.echo(f"{item.workflow_id} v{item.version}: {item.status}")
    fresh = [r.workflow_id for r in results if r.status == "deployed"]
    if {m.id for m in result.models} & set(fresh):
        # contacts that exist are put on the new bands, and graded
        runner = Runner(engine, clock, template_catalog(template_dirs))
        reapply_models(runner, fresh, clock.now())


@main.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def workflows(db_url: str | None, as_json: bool) -> None:
    """List deployed workflows: newest version, paused or not, active runs, and failed runs
    (`contacts show ID` says why a contact's run failed)."""
    engine = open_store(db_url)
    with engine.connect() as connection:
        rows = deployed_workflows(connection)
    if as_json:
        echo_json(rows)
        return
    table = Table("workflow", "version", "state", "active runs", "failed runs")
    for row in rows:
        table.add_row(
            row["id"],
            str(row["version"]),
            "paused" if row["paused"] else "live",
            str(row["active_runs"]),
            str(row["failed_runs"]),
        )
    terminal().print(table)


def _set_paused(
    db_url: str | None, workflow_id: str, paused: bool, template_dirs: tuple[Path, ...] = ()
) -> None:
    engine = open_store(db_url)
    clock = SystemClock()
    with writer(engine).begin() as connection:
        done = connection.execute(
            update(workflow_status)
            .where(workflow_status.c.workflow_id == workflow_id)
            .values(paused=paused, updated_at=clock.now())
        ).rowcount
        document = connection.scalar(
            select(workflow_versions.c.document)
            .where(workflow_versions.c.workflow_id == workflow_id)
            .order_by(workflow_versions.c.version.desc())
            .limit(1)
        )
        if done and isinstance(document, dict) and document.get("kind") == "score_model":
            # the roll-up in force changed (a paused model's falls back to the sum)
            from engine.scoring.accounts import refresh_rollups

            refresh_rollups(connection, {str(document["score"])}, clock.now())
    if not done:
        raise click.ClickException(f"no deployed workflow has id {workflow_id!r}")
    click.echo(f"{workflow_id}: {'paused' if paused else 'resumed'}")
    is_model = isinstance(document, dict) and document.get("kind") in MODEL_KINDS
    if not paused and is_model:  # bands and grades of what changed while it was paused
        runner = Runner(engine, clock, template_catalog(template_dirs))
        reapply_models(runner, [workflow_id], clock.now())


@main.command()
@click.argument("workflow_id")
@db_option
def pause(workflow_id: str, db_url: str | None) -> None:
    """Stop new entries and hold due waits of a workflow until it is resumed; a run
    waiting for an event does not see it meanwhile (after the resumption its timeout may
    have passed). A paused score or grade model acts as if it were not deployed: no
    bands, decay, roll-up rule or grades from it until it is resumed (account scores are
    recomputed by the roll-up then in force)."""
    _set_paused(db_url, workflow_id, True)


@main.command()
@click.argument("workflow_id")
@db_option
@templates_option
def resume(workflow_id: str, db_url: str | None, template_dirs: tuple[Path, ...]) -> None:
    """Let a paused workflow take entries again; held waits resume."""
    _set_paused(db_url, workflow_id, False, template_dirs)


@main.command()
@click.argument("source", type=click.File("rb"))
@db_option
@templates_option
def ingest(source: Any, db_url: str | None, template_dirs: tuple[Path, ...]) -> None:
    """Load Segment-spec JSON Lines (FILE or - for stdin) and run triggered workflows."""
    engine = open_store(db_url)
    clock = SystemClock()
    runner = Runner(engine, clock, template_catalog(template_dirs))
    name = getattr(source, "name", "-")
    report = runner.ingest(read_lines(source, clock.now()), source=name)
    for rejection in report.rejections:
        click.echo(f"{name}: line {rejection.line}: {rejection.reason}", err=True)
    failed = f"; {report.failed_runs} run(s) failed" if report.failed_runs else ""
    click.echo(
        f"{report.taken} taken, {report.duplicates} duplicate(s), {report.rejected} rejected"
        f"{failed}"
    )
    _warn_failures(report.failed_runs, [str(f) for f in report.failures])
    sys.exit(EXIT_INPUT if report.rejected else 0)


def _warn_failures(count: int, shown: list[str]) -> None:
    """Runs that failed (a missing template, bad data) on stderr: the messages were
    taken, but without this a failed run's reason was in no output at all."""
    if not count:
        return
    first = "" if len(shown) >= count else f" (the first {len(shown)})"
    click.echo(f"warning: {count} run(s) failed{first}:", err=True)
    for line in shown:
        click.echo(f"  {line}", err=True)


@main.command()
@db_option
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=LARGEST_STORED),
    default=None,
    help="Waits resumed per transaction [default: 50,000 on SQLite, 10,000 on PostgreSQL].",
)
@click.option("--once", is_flag=True, help="Run everything due now, then exit.")
@templates_option
def worker(
    db_url: str | None, batch: int | None, once: bool, template_dirs: tuple[Path, ...]
) -> None:
    """Run the scheduler: due waits, inactivity and schedule triggers, lease reaping."""
    import logging

    from engine.store.db import WORKER_CHECKPOINT_PAGES
    from engine.worker import Worker, WorkerSettings, wait_lease

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # the worker's own lines, and the libraries' warnings: APScheduler says "Running job"
    # every second and Alembic describes its context at every start
    for chatty in ("apscheduler", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    templates = template_catalog(template_dirs)
    engine = open_store(db_url, checkpoint_pages=WORKER_CHECKPOINT_PAGES)
    runner = Runner(engine, SystemClock(), templates)
    if once:
        from engine.messaging.delivery import Deliverer

        limit, chunk = wait_lease(engine.dialect.name, batch)
        done = runner.run_timers(runner.clock.now(), limit, chunk)
        click.echo(f"{done} run(s) resumed or entered")
        report = Deliverer(engine, runner.clock, owner=runner.owner).deliver()
        click.echo(f"outbox: {report}")
        return
    Worker(runner, WorkerSettings(batch=batch)).run()


@main.group()
def contacts() -> None:
    """Look at contacts."""


@contacts.command("show")
@click.argument("contact_id")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print simulate's contact object.")
def contacts_show(contact_id: str, db_url: str | None, as_json: bool) -> None:
    """Attributes, scores, grade, lists, account, active runs and score history."""
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            view = contact_view(connection, contact_id, history=not as_json)
    except UnknownContact as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json(view)
        return
    console = terminal()
    console.print(
        f"[bold]{view['id']}[/bold]  account: {view['account'] or '-'}"
        f"  grade: {view['grade'] or '-'}"
    )
    scores = ", ".join(f"{k} {v}" for k, v in view["scores"].items()) or "-"
    console.print(f"scores: {scores}")
    console.print(f"lists: {', '.join(view['lists']) or '-'}")
    table = Table("attribute", "value", show_edge=False)
    for key, value in sorted(view["attributes"].items()):
        table.add_row(key, json.dumps(value, ensure_ascii=False))
    console.print(table)
    console.print("active runs:" if view["runs"] else "active runs: none")
    for run in view["runs"]:
        console.print(
            f"  {run['workflow']} v{run['version']} {run['state']} at {run['node']}"
            f" since {run['entered_at']}"
        )
    for failed in view["failed_runs"]:
        console.print(
            f"  failed: {failed['workflow']} v{failed['version']} at {failed['node']}"
            f" on {failed['at']}: {failed['error']}",
            markup=False,
        )
    console.print("score history:" if view["score_history"] else "score history: none")
    for change in view["score_history"]:
        click.echo(f"  {change['text']}")


@main.command()
@click.option(
    "--workflows",
    "workflow_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Workflow file or folder (repeatable).",
)
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Segment-spec JSON Lines file.",
)
@click.option("--until", callback=_timestamp, help="Stop the virtual clock here (ISO-8601).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole outcome as JSON.")
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    help="Processes to split the contacts over (default: one per CPU, as long as each "
    "gets 25,000 messages or more). The outcome is the same for any number.",
)
def simulate(
    workflow_paths: tuple[Path, ...],
    events_path: Path,
    until: datetime | None,
    as_json: bool,
    jobs: int | None,
) -> None:
    """Run workflows over an event history on a throwaway store and a virtual clock."""
    from engine.simulate import simulate as run_simulation

    with _progress() as report:
        try:
            outcome = run_simulation(workflow_paths, events_path, until, report, jobs=jobs)
        except InvalidWorkflow as exc:
            for problem in exc.problems:
                click.echo(str(problem))
            sys.exit(EXIT_INPUT)
    if as_json:
        echo_json(outcome.result)
        if outcome.result["rejected"]:  # exit 0 still: they are part of the outcome
            count = len(outcome.result["rejected"])
            click.echo(f'warning: {count} line(s) rejected, listed under "rejected"', err=True)
    else:
        _print_summary(outcome.result, outcome.events, outcome.started, outcome.ended)
    failed = outcome.failed_runs
    _warn_failures(len(failed), [_failure_line(f) for f in failed[:FAILURES_KEPT]])


def _failure_line(failed: dict[str, Any]) -> str:
    fields = ("contact", "workflow", "version", "at", "error")
    return describe_failure(*(failed[key] for key in fields))


@contextmanager
def _progress() -> Iterator[Any]:
    """A progress bar on stderr, shown only when stderr is a terminal."""
    console = terminal(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("simulating"), BarColumn(), TaskProgressColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("events", total=None)

        def report(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield report


def _print_summary(
    result: dict[str, Any], events: int, started: datetime | None, ended: datetime | None
) -> None:
    console = terminal()
    span = ""
    if started and ended:
        span = f" from {format_timestamp(started)} to {format_timestamp(ended)}"
    people = result["contacts"]
    console.print(f"{events} events, {len(people)} contacts{span}")
    lists: dict[str, int] = {}
    for view in people.values():
        for name in view["lists"]:
            lists[name] = lists.get(name, 0) + 1
    table = Table("list", "contacts", title="Contacts per list")
    for name, count in sorted(lists.items(), key=lambda item: (-item[1], item[0])):
        table.add_row(name, str(count))
    console.print(table)
    names = ["< 0", "0-19", "20-49", "50-80", "> 80", "no score"]
    counts = [0] * len(names)
    for view in people.values():
        value = view["scores"].get("SCORE")
        # the bands of score-bands and sales-ready: 50-80 holds 80, > 80 holds 80.5
        if value is None:
            counts[5] += 1
        else:
            counts[sum(value >= low for low in (0, 20, 50)) + (value > 80)] += 1
    dist = Table("SCORE", "contacts", title="Score distribution")
    for name, count in zip(names, counts, strict=True):
        dist.add_row(name, str(count))
    console.print(dist)
    channels: dict[str, int] = {}
    for message in result["messages"]:
        channels[message["channel"]] = channels.get(message["channel"], 0) + 1
    sent = ", ".join(f"{count} {channel}" for channel, count in sorted(channels.items()))
    # queued, not delivered: delivery's consent rules, quiet hours and caps come later
    console.print(f"messages: {sent or 'none'} (queued; delivery applies consent rules)")
    if result["rejected"]:
        console.print(f"rejected lines: {len(result['rejected'])}")
        for item in result["rejected"]:
            console.print(f"  line {item['line']}: {item['error']}", markup=False)


# Commands that live in their own modules register here, one line each.
main.add_command(backtest_command)
main.add_command(report_command)
contacts.add_command(explain_command)
main.add_command(accounts_group)
main.add_command(segment_command)
main.add_command(calibrate_command)
main.add_command(history_command)
main.add_command(diff_command)
main.add_command(review_group)
main.add_command(import_group)
main.add_command(outbox_group)
main.add_command(serve_command)
main.add_command(keys_group)


def run() -> None:
    """Console entry point: Leadflow's own errors become one line and exit 1."""
    try:
        main(standalone_mode=True)
    except LeadflowError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    except SQLAlchemyError as exc:
        # A store that cannot serve the command (unreachable, or made by an older
        # development build of the schema) is a problem with the data, not a crash.
        origin = getattr(exc, "orig", None)
        reason = str(origin if origin is not None else exc).splitlines()[0]
        click.echo(f"error: the store failed: {reason}", err=True)
        sys.exit(EXIT_INPUT)


if __name__ == "__main__":  # python -m engine.cli
    run()
