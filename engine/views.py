"""Read models: a contact, an account, the simulation summary, as plain JSON-ready dicts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from engine.clock import format_timestamp
from engine.errors import UnknownContact
from engine.store.order import by_code_point, code_point_suffix
from engine.store.raw import RawReader
from engine.store.sql import chunks, is_postgres
from engine.store.tables import (
    RUN_FAILED,
    RUN_IN_FLIGHT,
    account_scores,
    accounts,
    audit,
    contacts,
    list_members,
    rejected,
    runs,
    scores,
    workflow_status,
    workflow_versions,
)


def contact_view(connection: Connection, contact_id: str, history: bool = False) -> dict[str, Any]:
    """One contact as simulate's ``contacts`` entry; ``history`` adds runs and score changes."""
    if "\x00" in contact_id:  # no contact has one; PostgreSQL refuses the query's text
        raise UnknownContact(f"no contact with id {contact_id!r}")
    row = connection.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    if row is None:
        raise UnknownContact(f"no contact with id {contact_id!r}")
    if row.merged_into:
        return contact_view(connection, row.merged_into, history)
    view = contact_views(connection, [contact_id])[contact_id]
    view["id"] = contact_id
    if history:
        view["runs"] = [
            {
                "id": r.id,
                "workflow": r.workflow_id,
                "version": r.version,
                "state": r.state,
                "node": r.node,
                "entered_at": format_timestamp(r.entered_at),
            }
            for r in connection.execute(
                select(runs)
                .where(runs.c.contact_id == contact_id, RUN_IN_FLIGHT)
                .order_by(runs.c.entered_at)
            )
        ]
        view["failed_runs"] = failed_runs(connection, contact_id)
        view["score_history"] = [
            {
                "at": format_timestamp(a.at),
                "score": a.name,
                "old": a.old,
                "new": a.new,
                "workflow": a.workflow_id,
                "version": a.version,
                "node": a.node,
                "cause": a.cause,
                "text": describe_change(
                    a.name, a.old, a.new, a.workflow_id, a.version, a.cause, format_timestamp(a.at)
                ),
            }
            for a in connection.execute(
                select(audit)
                .where(audit.c.contact_id == contact_id, audit.c.subject == "score")
                .order_by(audit.c.at, audit.c.id)
            )
        ]
    return view


def describe_change(
    name: str,
    old: Any,
    new: Any,
    workflow: str | None,
    version: int | None,
    cause: str | None,
    at: str,
) -> str:
    """``+30 SCORE by consideration-stage v2 on track Quote Requested, 2026-01-05 10:02``."""
    delta = (new or 0) - (old or 0)
    amount = f"{delta:+g} {name} (now {new:g})"
    by = f" by {workflow} v{version}" if workflow else ""
    on = f" on {cause}" if cause else ""
    return f"{amount}{by}{on}, {at.replace('T', ' ').removesuffix('Z')[:16]}"


def contact_views(
    connection: Connection, ids: Iterable[str], share: _Share | None = None
) -> dict[str, dict[str, Any]]:
    """``share``: one string object for equal names and values (see :class:`_Share`)."""
    ids = list(ids)
    text = share or _Share()
    views: dict[str, dict[str, Any]] = {}
    for part in chunks(ids):
        for row in connection.execute(select(contacts).where(contacts.c.id.in_(part))):
            grades = text.mapping(row.grades)
            views[text(row.id)] = {
                "scores": {},
                "grade": grades.get("GRADE"),
                "grades": grades,
                "lists": [],
                "attributes": text.mapping(row.attributes),
                "account": text(row.account_id),
            }
        for row in connection.execute(select(scores).where(scores.c.contact_id.in_(part))):
            views[row.contact_id]["scores"][text(row.name)] = _number(row.value)
        members = select(list_members.c.contact_id, list_members.c.list_name).where(
            list_members.c.contact_id.in_(part)
        )
        for contact_id, name in connection.execute(members):
            views[contact_id]["lists"].append(text(name))
    for view in views.values():
        view["lists"].sort()
        view["scores"] = dict(sorted(view["scores"].items()))
    return {text(i): views[i] for i in ids if i in views}  # in the order asked for


class _Share:
    """One string object for equal strings: a summary of many contacts and messages holds
    the same names, values, channels and templates over and over (each read from the
    store as a string of its own), which is most of its memory after the email texts."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, value: Any) -> Any:
        if type(value) is str:
            return self._seen.setdefault(value, value)
        return value

    def mapping(self, items: dict[str, Any]) -> dict[str, Any]:
        """A copy of a decoded JSON object with its keys and string values shared."""
        seen = self._seen
        return {
            seen.setdefault(key, key): seen.setdefault(value, value)
            if type(value) is str
            else value
            for key, value in items.items()
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 6)


def summary(connection: Connection) -> dict[str, Any]:
    """Everything simulate --json prints (see :func:`summary_pieces`)."""
    return summary_of(connection).done()


def summary_of(connection: Connection) -> Summary:
    """The summary, with the failed runs beside it."""
    result = Summary()
    for kind, piece in summary_pieces(connection):
        result.add(kind, piece)
    return result


Piece = tuple[str, Any]
"""A part of a summary: ``("contacts", {id: view})``, ``("accounts", {id: view})``,
``("messages", [(moment, entry), ...])`` or ``("rejected", [entry, ...])``."""


def summary_pieces(connection: Connection, size: int = 5_000) -> Iterator[Piece]:
    """The summary in pieces of about ``size`` contacts or messages, as it is read: a
    split simulation sends its parts' summaries over a pipe in these pieces, and neither
    end ever holds a whole summary's pickle. Equal strings are shared (the rendered texts
    aside), so a large summary takes about half the memory it would otherwise.

    Messages come in the order they were made, those of one moment by contact, and a
    contact's own in the order they were queued: an order that does not depend on how a
    simulation was split (:mod:`engine.simulate_parts`)."""
    text = _Share()
    ids = connection.scalars(
        select(contacts.c.id)
        .where(contacts.c.merged_into.is_(None))
        .order_by(by_code_point(contacts.c.id))
    ).all()
    for part in chunks(ids, size):
        yield "contacts", contact_views(connection, part, text)
    del ids
    rolled: dict[str, dict[str, float]] = defaultdict(dict)
    for row in connection.execute(select(account_scores)):
        rolled[row.account_id][text(row.name)] = _number(row.value)
    yield (
        "accounts",
        {
            text(row.id): {
                "scores": dict(sorted(rolled.get(row.id, {}).items())),
                "traits": text.mapping(row.traits),
            }
            for row in connection.execute(select(accounts).order_by(by_code_point(accounts.c.id)))
        },
    )
    messages: list[tuple[datetime, dict[str, Any]]] = []
    for contact_id, channel, payload, created_at in _outbox_in_order(connection, size):
        entry: dict[str, Any] = {"contact": text(contact_id), "channel": text(channel)}
        rendered = payload.get("rendered")
        done = rendered if isinstance(rendered, dict) else {}
        for key in ("template", "subject", "text", "url"):
            # an email's subject may come from its template's Subject line: only the
            # rendered payload has it then
            if key in payload or (key == "subject" and done.get("subject")):
                # what the contact gets: an SMS's text and a subject as rendered, not
                # their templates ({{ contact.attributes.FIRSTNAME }})
                value = (
                    done.get(key, payload.get(key)) if key in ("subject", "text") else payload[key]
                )
                entry[key] = value if key == "text" else text(value)
        entry["workflow"] = text(payload.get("workflow"))
        entry["at"] = format_timestamp(created_at)
        messages.append((created_at, entry))
        if len(messages) >= size:
            yield "messages", messages
            messages = []
    if messages:
        yield "messages", messages
    yield (
        "rejected",
        [
            {"line": row.line, "error": row.reason}
            for row in connection.execute(
                select(rejected.c.line, rejected.c.reason).order_by(rejected.c.id)
            )
        ],
    )
    yield "failed", failed_runs(connection)


def failed_runs(connection: Connection, contact_id: str | None = None) -> list[dict[str, Any]]:
    """Runs that failed, with their reasons, in the order they ended (a contact's only,
    if given)."""
    query = select(
        runs.c.contact_id,
        runs.c.workflow_id,
        runs.c.version,
        runs.c.node,
        runs.c.ended_at,
        runs.c.error,
        runs.c.end_reason,
    ).where(runs.c.state == "failed")
    if contact_id is not None:
        query = query.where(runs.c.contact_id == contact_id)
    return [
        {
            "contact": row.contact_id,
            "workflow": row.workflow_id,
            "version": row.version,
            "node": row.node,
            "at": format_timestamp(row.ended_at),
            "error": row.error or row.end_reason,
        }
        for row in connection.execute(
            query.order_by(runs.c.ended_at, by_code_point(runs.c.contact_id), runs.c.id)
        )
    ]


def _outbox_in_order_sql(dialect_name: str) -> str:
    return (
        "SELECT contact_id, channel, payload, created_at FROM outbox"
        f" ORDER BY created_at, contact_id{code_point_suffix(dialect_name)}, id"
    )


def _outbox_in_order(
    connection: Connection, size: int
) -> Iterator[tuple[str, str, dict[str, Any], datetime]]:
    """Every outbox record in the summary's order, read raw from the driver (the column
    types' processing of a payload and a moment per row was most of a summary's time)."""
    read = RawReader(is_postgres(connection))
    moment, document = read.moment, read.document
    result = connection.exec_driver_sql(_outbox_in_order_sql(connection.dialect.name))
    while rows := result.fetchmany(size):
        for contact_id, channel, payload, created_at in rows:
            yield contact_id, channel, document(payload), moment(created_at)


class Summary:
    """A summary put together from pieces, of one store (``merged=False``: in order as
    they come) or of several whose contacts are apart (a split simulation's parts, in
    any order, ``merged=True``): contacts and accounts by id, messages by moment and
    contact (a contact's own in the order they came), rejected lines by line number."""

    __slots__ = ("accounts", "contacts", "failed", "merged", "messages", "moments", "rejected")

    def __init__(self, merged: bool = False) -> None:
        self.merged = merged
        self.contacts: dict[str, Any] = {}
        self.accounts: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.moments: list[datetime] = []
        """Each message's moment, for the order of a merged summary (else left empty)."""
        self.rejected: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        """Failed runs, beside the summary (not in the contract's object)."""

    def add(self, kind: str, piece: Any) -> None:
        if kind == "contacts":
            self.contacts.update(piece)
        elif kind == "accounts":
            self.accounts.update(piece)
        elif kind == "messages":
            self.messages.extend(entry for _, entry in piece)
            if self.merged:
                self.moments.extend(moment for moment, _ in piece)
        elif kind == "failed":
            self.failed.extend(piece)
        else:
            self.rejected.extend(piece)

    def done(self) -> dict[str, Any]:
        found, accounts_, messages = self.contacts, self.accounts, self.messages
        if self.merged:
            found = dict(sorted(found.items()))
            accounts_ = dict(sorted(accounts_.items()))
            moments = self.moments
            # stable: a contact's messages of one moment keep their store's order
            order = sorted(range(len(messages)), key=lambda i: (moments[i], messages[i]["contact"]))
            messages = [messages[i] for i in order]
            self.rejected.sort(key=lambda entry: entry["line"] or 0)
            self.failed.sort(key=lambda entry: (entry["at"], entry["contact"]))
        return {
            "contacts": found,
            "accounts": accounts_,
            "messages": messages,
            "rejected": self.rejected,
        }


def deployed_workflows(connection: Connection) -> list[dict[str, Any]]:
    """Deployed workflows and models: newest version, name, paused or not, active and
    failed runs (of every version)."""
    newest = dict(
        connection.execute(
            select(workflow_versions.c.workflow_id, func.max(workflow_versions.c.version)).group_by(
                workflow_versions.c.workflow_id
            )
        ).all()
    )
    paused = dict(
        connection.execute(select(workflow_status.c.workflow_id, workflow_status.c.paused)).all()
    )
    active: dict[str, int] = dict(
        connection.execute(
            select(runs.c.workflow_id, func.count())
            .where(RUN_IN_FLIGHT)
            .group_by(runs.c.workflow_id)
        ).all()
    )
    failed: dict[str, int] = dict(
        connection.execute(
            select(runs.c.workflow_id, func.count()).where(RUN_FAILED).group_by(runs.c.workflow_id)
        ).all()
    )
    names = {
        (row.workflow_id, row.version): row.name
        for row in connection.execute(
            select(
                workflow_versions.c.workflow_id,
                workflow_versions.c.version,
                workflow_versions.c.name,
            )
        )
    }
    return [
        {
            "id": wid,
            "version": version,
            "name": names.get((wid, version)),
            "paused": bool(paused.get(wid)),
            "active_runs": int(active.get(wid, 0)),
            "failed_runs": int(failed.get(wid, 0)),
        }
        for wid, version in sorted(newest.items())
    ]
