"""``leadflow review``: which scoring models are due for review, with their figures.

Domain.md (001): review a model 60 days after its first version, then every 90 days. Here
the first review of a model is due 60 days after version 1 was deployed; once a review is
recorded (``leadflow review done ID --note``), the next one is due 90 days after it. A new
version alone is not a review: record the review that led to it.

The models are the deployed score and grade models and the workflows with an
``update_score`` node (in their newest version). For each: versions, contacts with the score
(or grade), contacts that ever reached the sales-ready threshold (their peak, so decay does
not hide them; the threshold comes from the score model of that score) and, with
``--outcome EVENT|list:NAME``, how many of those reached the outcome: the quality ratio of
domain.md 001 (a low ratio means a bad model).

Dates are UTC calendar dates: a review due on 2026-03-06 is "due today" all that day and
"1 day overdue" on 2026-03-07.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy import CompoundSelect, Connection, Select, and_, distinct, func, or_, select, union

from engine.cli_common import EXIT_INPUT, db_option, echo_json, open_store
from engine.clock import SystemClock, format_timestamp, parse_timestamp
from engine.console import terminal
from engine.problems import suggest
from engine.scoring.models import GRADE_MODEL, SCORE_MODEL
from engine.store.db import writer
from engine.store.tables import (
    audit,
    contacts,
    events,
    list_members,
    reviews,
    scores,
    workflow_versions,
)
from engine.versions import UnknownVersion, kind_of, load_revisions

FIRST_REVIEW = timedelta(days=60)
EVERY = timedelta(days=90)
SOON_DAYS = 14
LIST_PREFIX = "list:"


@dataclass
class ReviewItem:
    workflow_id: str
    kind: str
    name: str
    versions: int
    version: int
    first_deployed: datetime
    last_deployed: datetime
    last_review: datetime | None
    last_note: str | None
    reviews: int
    due: date
    days_overdue: int
    """Days past the due date; 0 on the due date, negative before it."""
    scores: tuple[str, ...]
    contacts: int
    sales_ready: float | None
    ready: int | None
    reached: int | None

    @property
    def status(self) -> str:
        if self.days_overdue > 0:
            return "overdue"
        if self.days_overdue == 0:
            return "due"
        return "later"

    @property
    def status_text(self) -> str:
        days = abs(self.days_overdue)
        plural = "s" if days != 1 else ""
        if self.days_overdue > 0:
            return f"{days} day{plural} overdue"
        if self.days_overdue == 0:
            return "due today"
        return f"due in {days} day{plural}"

    @property
    def quality(self) -> float | None:
        if self.ready is None or self.reached is None or not self.ready:
            return None
        return self.reached / self.ready

    def as_json(self, with_outcome: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.workflow_id,
            "kind": self.kind,
            "name": self.name,
            "versions": self.versions,
            "version": self.version,
            "first_deployed": format_timestamp(self.first_deployed),
            "last_deployed": format_timestamp(self.last_deployed),
            "last_review": format_timestamp(self.last_review) if self.last_review else None,
            "last_note": self.last_note,
            "reviews": self.reviews,
            "due": self.due.isoformat(),
            "status": self.status,
            "days_overdue": self.days_overdue,
            "scores": list(self.scores),
            "contacts": self.contacts,
            "sales_ready": self.sales_ready,
            "sales_ready_contacts": self.ready,
        }
        if with_outcome:
            data["reached_outcome"] = self.reached
            data["quality"] = round(self.quality, 4) if self.quality is not None else None
        return data


def due_date(first_deployed: datetime, last_review: datetime | None) -> date:
    """60 days after version 1, or 90 days after the last review."""
    if last_review is None:
        return (first_deployed + FIRST_REVIEW).date()
    return (last_review + EVERY).date()


def _scored(document: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The scores a document is about, or None when it is not a scoring model."""
    kind = kind_of(document)
    if kind == SCORE_MODEL:
        return (str(document.get("score", "SCORE")),)
    if kind == GRADE_MODEL:
        return (str(document.get("grade", "GRADE")),)
    names = sorted(
        {
            str(spec.get("score", "SCORE"))
            for spec in (document.get("nodes", {}) or {}).values()
            if isinstance(spec, Mapping) and spec.get("type") == "update_score"
        }
    )
    return tuple(names) or None


def review_items(
    connection: Connection, now: datetime, outcome: str | None = None
) -> list[ReviewItem]:
    """Every deployed scoring model with its next review, soonest (most overdue) first."""
    rows = connection.execute(
        select(workflow_versions).order_by(
            workflow_versions.c.workflow_id, workflow_versions.c.version
        )
    ).all()
    by_id: dict[str, list[Any]] = {}
    for row in rows:
        by_id.setdefault(row.workflow_id, []).append(row)
    thresholds = _thresholds(by_id)
    last_reviews = _last_reviews(connection)
    review_counts: dict[str, int] = dict(
        connection.execute(
            select(reviews.c.workflow_id, func.count()).group_by(reviews.c.workflow_id)
        ).all()
    )
    today = now.date()
    items: list[ReviewItem] = []
    for workflow_id, versions in by_id.items():
        newest = versions[-1]
        document = newest.document or {}
        names = _scored(document)
        if names is None:
            continue
        kind = kind_of(document)
        reviewed = last_reviews.get(workflow_id)
        due = due_date(versions[0].deployed_at, reviewed[0] if reviewed else None)
        threshold = None
        if kind != GRADE_MODEL:
            threshold = next((thresholds[n] for n in names if n in thresholds), None)
        if kind == GRADE_MODEL:
            count: int | None = _graded(connection, names[0])
        else:
            count = connection.scalar(
                select(func.count(distinct(scores.c.contact_id))).where(scores.c.name.in_(names))
            )
        ready = reached = None
        if threshold is not None:
            # each score against its own model's threshold; a score without one is not judged
            bars = {n: thresholds[n] for n in names if n in thresholds}
            ready, reached = _ready(connection, bars, outcome)
        items.append(
            ReviewItem(
                workflow_id=workflow_id,
                kind=kind,
                name=newest.name,
                versions=len(versions),
                version=newest.version,
                first_deployed=versions[0].deployed_at,
                last_deployed=newest.deployed_at,
                last_review=reviewed[0] if reviewed else None,
                last_note=reviewed[1] if reviewed else None,
                reviews=int(review_counts.get(workflow_id, 0)),
                due=due,
                days_overdue=(today - due).days,
                scores=names,
                contacts=int(count or 0),
                sales_ready=threshold,
                ready=ready,
                reached=reached if outcome else None,
            )
        )
    items.sort(key=lambda item: (item.due, item.workflow_id))
    return items


def _thresholds(by_id: Mapping[str, Sequence[Any]]) -> dict[str, float]:
    """Score name -> sales-ready threshold of the newest version of its score model (the
    first model by id when two describe one score)."""
    found: dict[str, float] = {}
    for workflow_id in sorted(by_id):
        document = by_id[workflow_id][-1].document or {}
        if kind_of(document) == SCORE_MODEL and document.get("sales_ready") is not None:
            found.setdefault(str(document.get("score")), float(document["sales_ready"]))
    return found


def _last_reviews(connection: Connection) -> dict[str, tuple[datetime, str]]:
    latest: dict[str, tuple[datetime, str]] = {}
    for row in connection.execute(
        select(reviews.c.workflow_id, reviews.c.reviewed_at, reviews.c.note).order_by(
            reviews.c.reviewed_at, reviews.c.id
        )
    ):
        latest[row.workflow_id] = (row.reviewed_at, row.note)
    return latest


def _graded(connection: Connection, grade: str) -> int:
    count = 0
    query = select(contacts.c.grades).where(contacts.c.merged_into.is_(None))
    for (grades,) in connection.execute(query.execution_options(yield_per=5000)):
        if isinstance(grades, Mapping) and grades.get(grade) is not None:
            count += 1
    return count


def _ready(
    connection: Connection, bars: Mapping[str, float], outcome: str | None
) -> tuple[int, int | None]:
    condition = [
        or_(*(and_(scores.c.name == name, scores.c.peak >= bar) for name, bar in bars.items()))
    ]
    ready = connection.scalar(select(func.count(distinct(scores.c.contact_id))).where(*condition))
    if not outcome:
        return int(ready or 0), None
    if outcome.startswith(LIST_PREFIX):
        name = outcome[len(LIST_PREFIX) :]
        # on the list now, or ever (the audit: a contact that left it had reached it)
        who: CompoundSelect[Any] | Select[Any] = union(
            select(list_members.c.contact_id).where(list_members.c.list_name == name),
            select(audit.c.contact_id).where(audit.c.subject == "list", audit.c.name == name),
        )
    else:
        who = select(events.c.contact_id).where(events.c.type == "track", events.c.name == outcome)
    reached = connection.scalar(
        select(func.count(distinct(scores.c.contact_id))).where(
            *condition, scores.c.contact_id.in_(who)
        )
    )
    return int(ready or 0), int(reached or 0)


def outcome_warning(connection: Connection, outcome: str) -> str | None:
    """A hint when no contact ever reached the outcome (a typo, most likely)."""
    if outcome.startswith(LIST_PREFIX):
        name = outcome[len(LIST_PREFIX) :]
        known = connection.scalars(select(list_members.c.list_name).distinct()).all()
        if name in known:
            return None
        return f"no contact is on list {name!r}{suggest(name, known)}"
    known = connection.scalars(
        select(events.c.name).where(events.c.type == "track").distinct()
    ).all()
    if outcome in known:
        return None
    return f"no contact has sent {outcome!r}{suggest(outcome, [k for k in known if k])}"


def record_review(connection: Connection, workflow_id: str, note: str, now: datetime) -> date:
    """Store a review; returns the date the next one is due. UnknownVersion for an id that
    was never deployed."""
    load_revisions(connection, workflow_id)
    connection.execute(
        reviews.insert(), [{"workflow_id": workflow_id, "reviewed_at": now, "note": note}]
    )
    return due_date(now, now)


# --- the commands ---------------------------------------------------------------------------


def _now(value: str | None) -> datetime:
    if value is None:
        return SystemClock().now()
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--now'") from None


now_option = click.option(
    "--now", "now_text", hidden=True, metavar="ISO", help="Pretend it is this moment (tests)."
)


def _ratio(item: ReviewItem) -> str:
    if item.ready is None:
        return "-"
    if item.quality is None:
        return f"{item.reached}/0"
    return f"{item.reached}/{item.ready} ({item.quality:.0%})"


def _print(items: Sequence[ReviewItem], outcome: str | None, everything: bool) -> None:
    console = terminal()
    title = "Model reviews" if everything else "Models due for review"
    if outcome:
        title += f" (outcome: {outcome})"
    table = Table(
        "model", "version", "last review", "due", "status", "contacts", "sales-ready", title=title
    )
    if outcome:
        table.add_column("reached outcome")
    for column in table.columns[5:]:
        column.justify = "right"
    for item in items:
        style = {"overdue": "bold red", "due": "bold yellow"}.get(item.status, "")
        status = f"[{style}]{item.status_text}[/{style}]" if style else item.status_text
        cells = [
            f"{escape(item.workflow_id)}\n[dim]{item.kind.replace('_', ' ')}[/dim]",
            f"v{item.version} of {item.versions}",
            item.last_review.date().isoformat() if item.last_review else "never",
            item.due.isoformat(),
            status,
            str(item.contacts),
            "-" if item.ready is None else f"{item.ready} (≥ {item.sales_ready:g})",
        ]
        if outcome:
            cells.append(_ratio(item))
        table.add_row(*cells)
    console.print(table)


@click.group("review", invoke_without_command=True)
@click.option(
    "--outcome",
    metavar="EVENT|list:NAME",
    help="What a good lead goes on to do: an event (e.g. 'Lead Converted') or list:NAME; "
    "adds the share of sales-ready contacts that reached it (the model's quality).",
)
@click.option("--all", "everything", is_flag=True, help="Every scoring model, due or not.")
@click.option(
    "--within",
    type=click.IntRange(min=0),
    default=SOON_DAYS,
    show_default=True,
    help="Also list models due within this many days.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@now_option
@db_option
@click.pass_context
def review_group(
    ctx: click.Context,
    outcome: str | None,
    everything: bool,
    within: int,
    as_json: bool,
    now_text: str | None,
    db_url: str | None,
) -> None:
    """Scoring models due or overdue for review (60 days after version 1, then every 90
    days after the last review), with versions, contacts, sales-ready contacts and, with
    --outcome, how many of those reached it.

    `leadflow review done ID --note "..."` records a review."""
    if ctx.invoked_subcommand is not None:
        return
    now = _now(now_text)
    if outcome is not None and not outcome.removeprefix(LIST_PREFIX).strip():
        raise click.BadParameter("needs an event name or list:NAME", param_hint="'--outcome'")
    engine = open_store(db_url)
    with engine.connect() as connection:
        items = review_items(connection, now, outcome)
        warning = outcome_warning(connection, outcome) if outcome else None
    if warning:
        click.echo(f"warning: {warning}", err=True)
    shown = [i for i in items if everything or i.days_overdue >= -within]
    if as_json:
        echo_json([item.as_json(outcome is not None) for item in shown])
        return
    if not items:
        click.echo("no scoring model is deployed")
        return
    if not shown:
        first = items[0]
        click.echo(
            f"nothing is due for review; next: {first.workflow_id} on {first.due.isoformat()} "
            f"({first.status_text})"
        )
        return
    _print(shown, outcome, everything)


@review_group.command("done")
@click.argument("workflow_id", metavar="ID")
@click.option("--note", required=True, help="What the review found and decided (sales feedback).")
@now_option
@db_option
@click.pass_context
def review_done(
    ctx: click.Context, workflow_id: str, note: str, now_text: str | None, db_url: str | None
) -> None:
    """Record a review of a model; the next one is due 90 days later."""
    group = ctx.parent.params if ctx.parent is not None else {}
    db_url = db_url or group.get("db_url")  # leadflow review --db URL done ID works too
    now = _now(now_text or group.get("now_text"))
    if not note.strip():
        raise click.BadParameter("say what the review found", param_hint="'--note'")
    engine = open_store(db_url)
    try:
        with writer(engine).begin() as connection:
            next_due = record_review(connection, workflow_id, note.strip(), now)
    except UnknownVersion as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    click.echo(
        f"{workflow_id}: reviewed on {now.date().isoformat()}; "
        f"next review due {next_due.isoformat()}"
    )
