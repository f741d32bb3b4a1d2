"""``leadflow segment``: select contacts with the condition language, sort them by a score or
a grade, and export them as CSV or JSON Lines (top leads for sales, cold leads for a
nurture campaign, hashed emails for an ad platform's audience upload).

The contacts are read in one ordered, streamed query and looked at in chunks: a million
contacts never sit in memory together. Sorting and the ``--cold`` test run in SQL; the
``--where`` condition is evaluated per contact on the same facts a workflow sees, with the
event counts of a chunk fetched in one grouped query per event leaf.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import click
from sqlalchemy import Connection, and_, exists, func, select

from engine.cli_common import COUNT, EXIT_INPUT, OutputFile, db_option, open_store
from engine.clock import SystemClock, parse_timestamp
from engine.conditions import Predicate, compile_condition
from engine.durations import Duration
from engine.explain import number
from engine.scoring.models import GRADE_MODEL
from engine.store.order import by_code_point
from engine.store.sql import chunks
from engine.store.tables import audit, contacts, events, list_members, scores, workflow_versions
from engine.validation import MAX_DEPTH, portability_problem

CHUNK = 1000
"""Contacts looked at together (one detail query per table per chunk)."""
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Sort:
    subject: str  # score | grade
    name: str


@dataclass(frozen=True)
class SegmentQuery:
    where: Predicate | None = None
    cold: Duration | None = None
    score: str = "SCORE"
    sort: Sort | None = None
    descending: bool = True
    limit: int | None = None
    hashed: bool = False


class WhereError(ValueError):
    """A --where that is not JSON or not a condition; ``pointer`` says where."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(message)
        self.pointer = pointer
        self.message = message

    def __str__(self) -> str:
        return f"--where: {self.pointer or '/'}: {self.message}"


def parse_where(text: str) -> Predicate:
    """A condition from its JSON text; :class:`WhereError` with a pointer when it is bad."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WhereError(
            f"line {exc.lineno}, column {exc.colno}", f"invalid JSON: {exc.msg}"
        ) from None
    except RecursionError:
        raise WhereError("", f"nested too deeply: a document may nest {MAX_DEPTH} levels") from None
    unportable = portability_problem(spec)
    if unportable is not None:
        raise WhereError(*unportable)
    try:
        return compile_condition(spec)
    except ValueError as exc:
        raise WhereError(getattr(exc, "pointer", ""), str(exc)) from None


def normalised_email(email: str) -> str:
    """The form ad platforms hash: surrounding space trimmed, lower case."""
    return email.strip().lower()


def email_sha256(email: str) -> str:
    return hashlib.sha256(normalised_email(email).encode("utf-8")).hexdigest()


def email_of(contact_id: str, attributes: Mapping[str, Any]) -> str | None:
    """The ``email`` attribute (any case), else the id when it looks like an address."""
    for key, value in attributes.items():
        if key.lower() == "email" and isinstance(value, str) and value.strip():
            return value
    return contact_id if _EMAIL.match(contact_id.strip()) else None


class _EventCounts:
    """``count_events`` for one chunk: one grouped query per (event, window)."""

    def __init__(self, connection: Connection, ids: list[str], now: datetime) -> None:
        self.connection = connection
        self.ids = ids
        self.now = now
        self.cache: dict[tuple[str, datetime | None], dict[str, int]] = {}

    def count(self, contact_id: str, name: str, since: datetime | None) -> int:
        key = (name, since)
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = {}
            for part in chunks(self.ids):
                query = (
                    select(events.c.contact_id, func.count())
                    .where(
                        events.c.contact_id.in_(part),
                        events.c.name == name,
                        events.c.timestamp <= self.now,
                    )
                    .group_by(events.c.contact_id)
                )
                if since is not None:
                    query = query.where(events.c.timestamp > since)
                found.update((c, int(n)) for c, n in self.connection.execute(query))
        return found.get(contact_id, 0)


class SegmentFacts:
    """:class:`engine.conditions.Facts` over one contact of a segment (no event woke it:
    property leaves see no properties)."""

    __slots__ = ("attributes", "contact_id", "counts", "grades", "lists", "now", "scores")
    properties: Mapping[str, Any] = {}

    def __init__(
        self, contact_id: str, view: Mapping[str, Any], counts: _EventCounts, now: datetime
    ) -> None:
        self.contact_id = contact_id
        self.attributes: Mapping[str, Any] = view["attributes"]
        self.scores: Mapping[str, float] = view["scores"]
        self.grades: Mapping[str, str] = view["grades"]
        self.lists = frozenset(view["lists"])
        self.counts = counts
        self.now = now

    def count_events(self, name: str, since: datetime | None) -> int:
        return self.counts.count(self.contact_id, name, since)


def _ordered(query: SegmentQuery, now: datetime) -> Any:
    """The candidates in output order (cold test and sort done in SQL), with the columns
    of their own row."""
    statement = select(
        contacts.c.id, contacts.c.attributes, contacts.c.grades, contacts.c.account_id
    ).where(contacts.c.merged_into.is_(None), contacts.c.created_at <= now)
    if query.cold is not None:
        threshold = query.cold.before(now)
        # a last increase after ``now`` (an --at in the past) says nothing of the window:
        # select_contacts reads those contacts' audit
        increased = exists().where(
            scores.c.contact_id == contacts.c.id,
            scores.c.name == query.score,
            scores.c.increased_at > threshold,
            scores.c.increased_at <= now,
        )
        statement = statement.where(contacts.c.created_at <= threshold, ~increased)
    order: list[Any] = []
    if query.sort is not None and query.sort.subject == "score":
        ranked = scores.alias("ranked")
        statement = statement.outerjoin(
            ranked, and_(ranked.c.contact_id == contacts.c.id, ranked.c.name == query.sort.name)
        )
        key = func.coalesce(ranked.c.value, 0.0)
        order.append(key.desc() if query.descending else key.asc())
    elif query.sort is not None:
        letter = contacts.c.grades[query.sort.name].as_string()
        # best first (A) when descending; contacts without the grade last either way
        order.extend([letter.is_(None), letter.asc() if query.descending else letter.desc()])
    order.append(by_code_point(contacts.c.id))
    statement = statement.order_by(*order)
    if query.where is None and query.cold is None and query.limit is not None:
        statement = statement.limit(query.limit)
    return statement


def _views(connection: Connection, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Scores and lists of one chunk of contacts, beside their own columns."""
    views: dict[str, dict[str, Any]] = {
        row.id: {
            "attributes": row.attributes or {},
            "grades": row.grades or {},
            "scores": {},
            "lists": [],
            "account": row.account_id,
        }
        for row in rows
    }
    for part in chunks(list(views)):
        held = select(scores.c.contact_id, scores.c.name, scores.c.value).where(
            scores.c.contact_id.in_(part)
        )
        for contact_id, name, value in connection.execute(held):
            views[contact_id]["scores"][name] = number(value)
        members = select(list_members.c.contact_id, list_members.c.list_name).where(
            list_members.c.contact_id.in_(part)
        )
        for contact_id, name in connection.execute(members):
            views[contact_id]["lists"].append(name)
    for view in views.values():
        view["lists"].sort()
        view["scores"] = dict(sorted(view["scores"].items()))
    return views


def select_contacts(
    connection: Connection, query: SegmentQuery, now: datetime
) -> Iterator[dict[str, Any]]:
    """The segment's contacts, in order, one record each (id, email, scores, grades,
    lists, account; ``email_sha256`` when hashed)."""
    if query.limit == 0:
        return
    given = 0
    result = connection.execution_options(yield_per=CHUNK).execute(_ordered(query, now))
    try:
        for rows in result.partitions(CHUNK):
            views = _views(connection, rows)
            counts = _EventCounts(connection, list(views), now)
            warm = _increased_then(connection, query, [row.id for row in rows], now)
            for row in rows:
                if row.id in warm:
                    continue
                view = views[row.id]
                if query.where is not None and not query.where(
                    SegmentFacts(row.id, view, counts, now)
                ):
                    continue
                yield _record(row.id, view, query.hashed)
                given += 1
                if query.limit is not None and given >= query.limit:
                    return
    finally:
        result.close()


def _increased_then(
    connection: Connection, query: SegmentQuery, ids: list[str], now: datetime
) -> set[str]:
    """With ``--cold`` and an ``--at`` in the past: the contacts whose score last rose
    after ``now``, and, by the audit, had also risen within the cold window before it.
    (A store without an audit, a simulation's, cannot tell: they count as cold.)"""
    if query.cold is None:
        return set()
    later = list(
        connection.scalars(
            select(scores.c.contact_id).where(
                scores.c.name == query.score,
                scores.c.increased_at > now,
                scores.c.contact_id.in_(ids),
            )
        )
    )
    if not later:
        return set()
    rows = connection.execute(
        select(audit.c.contact_id, audit.c.old, audit.c.new).where(
            audit.c.subject == "score",
            audit.c.name == query.score,
            audit.c.at > query.cold.before(now),
            audit.c.at <= now,
            audit.c.contact_id.in_(later),
        )
    )
    return {
        contact_id
        for contact_id, old, new in rows
        if isinstance(new, int | float) and new > (old if isinstance(old, int | float) else 0.0)
    }


def _record(contact_id: str, view: Mapping[str, Any], hashed: bool) -> dict[str, Any]:
    email = email_of(contact_id, view["attributes"])
    record: dict[str, Any] = {"id": contact_id, "email": email}
    if hashed:
        record["email_sha256"] = email_sha256(email) if email else None
    record["scores"] = view["scores"]
    record["grades"] = dict(sorted(view["grades"].items()))
    record["lists"] = view["lists"]
    record["account"] = view["account"]
    return record


def csv_columns(connection: Connection, query: SegmentQuery) -> list[str]:
    """id, email, [email_sha256], one ``score:NAME`` per score held by anyone, one
    ``grade:NAME`` per deployed grade model, lists, account."""
    score_names = set(connection.scalars(select(scores.c.name).distinct()))
    grade_names: set[str] = set()
    for document in connection.scalars(select(workflow_versions.c.document)):
        if isinstance(document, dict) and document.get("kind") == GRADE_MODEL:
            grade_names.add(str(document.get("grade")))
    if query.sort is not None:
        (score_names if query.sort.subject == "score" else grade_names).add(query.sort.name)
    return [
        "id",
        "email",
        *(["email_sha256"] if query.hashed else []),
        *(f"score:{name}" for name in sorted(score_names)),
        *(f"grade:{name}" for name in sorted(grade_names)),
        "lists",
        "account",
    ]


def write_csv(records: Iterator[dict[str, Any]], columns: list[str], handle: IO[str]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    written = 0
    for record in records:
        row = []
        for column in columns:
            if column.startswith("score:"):
                value: Any = record["scores"].get(column.removeprefix("score:"), "")
            elif column.startswith("grade:"):
                value = record["grades"].get(column.removeprefix("grade:"), "")
            elif column == "lists":
                value = "|".join(record["lists"])
            else:
                value = record.get(column)
            row.append("" if value is None else value)
        writer.writerow(row)
        written += 1
    return written


def write_jsonl(records: Iterator[dict[str, Any]], handle: IO[str]) -> int:
    written = 0
    for record in records:
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        written += 1
    return written


def _duration(_ctx: Any, _param: Any, value: str | None) -> Duration | None:
    if value is None:
        return None
    try:
        return Duration.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _sort(_ctx: Any, _param: Any, value: str | None) -> Sort | None:
    if value is None:
        return None
    subject, _, name = value.partition(":")
    if subject not in ("score", "grade") or not name:
        raise click.BadParameter(f"expected score:NAME or grade:NAME, found {value!r}")
    return Sort(subject, name)


def _moment(_ctx: Any, _param: Any, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("segment")
@click.option("--where", "where_text", metavar="JSON", help="Condition the contacts must meet.")
@click.option(
    "--cold",
    callback=_duration,
    metavar="DURATION",
    help="Only contacts whose score (see --score) has not increased for this long (P30D).",
)
@click.option(
    "--score", default="SCORE", show_default=True, metavar="NAME", help="The score --cold watches."
)
@click.option(
    "--sort", callback=_sort, metavar="score:NAME|grade:NAME", help="Order by a score or a grade."
)
@click.option(
    "--desc/--asc",
    "descending",
    default=True,
    show_default=True,
    help="Highest score / best grade first, or the reverse.",
)
@click.option("--limit", type=COUNT, metavar="N", help="At most N contacts.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--hashed", is_flag=True, help="Add email_sha256: SHA-256 of the trimmed, lower-cased email."
)
@click.option(
    "--out",
    type=OutputFile(),
    metavar="FILE",
    help="Write here instead of standard output.",
)
@click.option(
    "--at",
    "moment",
    callback=_moment,
    metavar="ISO",
    help=(
        "Judge --cold, and count the events of --where, as of this moment (now); "
        "contacts created after it are left out. Scores, grades, lists and attributes, "
        "in --where as in the output, are the current ones."
    ),
)
@db_option
def segment_command(
    where_text: str | None,
    cold: Duration | None,
    score: str,
    sort: Sort | None,
    descending: bool,
    limit: int | None,
    fmt: str,
    hashed: bool,
    out: Path | None,
    moment: datetime | None,
    db_url: str | None,
) -> None:
    """Select contacts by condition, sort by score or grade, and export CSV or JSON Lines."""
    where = None
    if where_text is not None:
        try:
            where = parse_where(where_text)
        except WhereError as exc:
            click.echo(str(exc), err=True)
            sys.exit(EXIT_INPUT)
    query = SegmentQuery(where, cold, score, sort, descending, limit, hashed)
    now = moment or SystemClock().now()
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            if out is None:
                written = _export(connection, query, now, fmt, sys.stdout)
            else:
                try:
                    with out.open("w", encoding="utf-8", newline="") as handle:
                        written = _export(connection, query, now, fmt, handle)
                except OSError as exc:
                    click.echo(f"error: cannot write {out}: {exc.strerror or exc}", err=True)
                    sys.exit(EXIT_INPUT)
    finally:
        engine.dispose()
    if out is not None:
        click.echo(f"{written} contact(s) written to {out}", err=True)


def _export(
    connection: Connection, query: SegmentQuery, now: datetime, fmt: str, handle: IO[str]
) -> int:
    records = select_contacts(connection, query, now)
    if fmt == "csv":
        return write_csv(records, csv_columns(connection, query), handle)
    return write_jsonl(records, handle)
