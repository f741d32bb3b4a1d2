"""One transaction's worth of contacts: loaded together, changed in memory, written back
together with executemany. The contacts' rows are locked for the whole transaction
(``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so a score update is a
read-modify-write that no other worker can interleave with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update

from engine.clock import ensure_utc
from engine.store.sql import (
    bulk_delete,
    bulk_insert,
    bulk_update,
    bulk_upsert,
    chunks,
    in_values,
    insert_for,
    is_postgres,
)
from engine.store.tables import (
    accounts,
    audit,
    contacts,
    events,
    list_members,
    outbox,
    quiet_watch,
    runs,
    scores,
    waits,
)


@dataclass(slots=True)
class WaitState:
    run_id: str
    due_at: datetime
    event_name: str | None
    next_node: str | None
    timeout_node: str | None


@dataclass(slots=True)
class RunState:
    id: str
    workflow_id: str
    version: int
    state: str  # active | waiting | completed | exited | failed
    node: str | None
    steps: int
    properties: dict[str, Any]
    entered_at: datetime
    ended_at: datetime | None = None
    end_reason: str | None = None
    error: str | None = None
    wait: WaitState | None = None
    new: bool = False
    dirty: bool = False


@dataclass(slots=True)
class ContactState:
    id: str
    attributes: dict[str, Any]
    grades: dict[str, str]
    account_id: str | None
    created_at: datetime
    scores: dict[str, float] = field(default_factory=dict)
    peaks: dict[str, float] = field(default_factory=dict)
    increased: dict[str, datetime] = field(default_factory=dict)
    lists: set[str] = field(default_factory=set)
    runs: list[RunState] = field(default_factory=list)
    last_entries: dict[str, datetime] = field(default_factory=dict)
    updated_at: datetime | None = None
    new: bool = False
    dirty: bool = False
    dirty_scores: set[str] = field(default_factory=set)
    added_lists: dict[str, datetime] = field(default_factory=dict)
    removed_lists: set[str] = field(default_factory=set)


class ContactFacts:
    """:class:`engine.conditions.Facts` over a loaded contact."""

    __slots__ = ("attributes", "batch", "contact", "grades", "lists", "now", "properties", "scores")

    def __init__(
        self, batch: Batch, contact: ContactState, now: datetime, properties: Mapping[str, Any]
    ) -> None:
        self.batch = batch
        self.contact = contact
        self.now = now
        self.attributes = contact.attributes
        self.scores = contact.scores
        self.grades = contact.grades
        self.lists = contact.lists
        self.properties = properties

    def count_events(self, name: str, since: datetime | None) -> int:
        return self.batch.count_events(self.contact.id, name, since, self.now)


class Batch:
    """Loaded contacts plus every pending write, flushed in one go."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.contacts: dict[str, ContactState] = {}
        self.audit_rows: list[dict[str, Any]] = []
        self.outbox_rows: list[dict[str, Any]] = []
        self.deleted_waits: list[str] = []
        self.quiet_resets: dict[tuple[str, int, str], datetime] = {}
        self.quiet_fired: list[dict[str, Any]] = []
        self.account_rows: dict[str, dict[str, Any]] = {}
        self.entry_workflows: frozenset[str] | None = None
        """Workflows whose last entries :meth:`load` reads (for re-entry rules); None: all.
        The runner leaves out the ``reentry: always`` ones, which never look."""

    # --- loading ---------------------------------------------------------------------

    def load(self, ids: Iterable[str], now: datetime) -> list[str]:
        """Create missing contacts, lock and load them; returns the ids that are new."""
        # One lock order for everyone (by id, across chunks too): batches that share
        # contacts (a contact waking in two workers' batches) never deadlock.
        wanted = sorted({i for i in ids if i not in self.contacts})
        if not wanted:
            return []
        conn = self.connection
        new_ids: list[str] = []
        # one statement per table for the whole batch (in_values: a single array
        # parameter, so the statement is compiled once and needs no chunks)
        present = set(
            conn.scalars(select(contacts.c.id).where(in_values(conn, contacts.c.id, wanted)))
        )
        missing = [i for i in wanted if i not in present]
        for part in chunks(missing):
            # only the rows this transaction really inserted are new: a concurrent
            # worker may have created the same contact a moment ago
            inserted = conn.execute(
                insert_for(conn, contacts).on_conflict_do_nothing().returning(contacts.c.id),
                [
                    {
                        "id": i,
                        "attributes": {},
                        "grades": {},
                        "account_id": None,
                        "merged_into": None,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in part
                ],
            )
            new_ids.extend(inserted.scalars())
        query = select(
            contacts.c.id,
            contacts.c.attributes,
            contacts.c.grades,
            contacts.c.account_id,
            contacts.c.created_at,
            contacts.c.updated_at,
        ).where(in_values(conn, contacts.c.id, wanted))
        if is_postgres(conn):
            query = query.order_by(contacts.c.id).with_for_update()
        loaded = {row.id: row for row in conn.execute(query).all()}
        for contact_id in wanted:  # in id order, whatever order the rows came in
            row = loaded.get(contact_id)
            if row is not None:
                self.contacts[contact_id] = ContactState(
                    id=contact_id,
                    attributes=dict(row.attributes),
                    grades=dict(row.grades),
                    account_id=row.account_id,
                    created_at=row.created_at,
                    updated_at=row.updated_at,
                )
        found = self.contacts
        score_query = select(
            scores.c.contact_id, scores.c.name, scores.c.value, scores.c.peak, scores.c.increased_at
        ).where(in_values(conn, scores.c.contact_id, wanted))
        for contact_id, name, value, peak, increased_at in conn.execute(score_query).all():
            state = found[contact_id]
            state.scores[name] = value
            state.peaks[name] = peak
            if increased_at is not None:
                state.increased[name] = increased_at
        members = select(list_members.c.contact_id, list_members.c.list_name).where(
            in_values(conn, list_members.c.contact_id, wanted)
        )
        for contact_id, list_name in conn.execute(members).all():
            found[contact_id].lists.add(list_name)
        run_query = select(
            runs.c.id,
            runs.c.contact_id,
            runs.c.workflow_id,
            runs.c.version,
            runs.c.state,
            runs.c.node,
            runs.c.steps,
            runs.c.properties,
            runs.c.entered_at,
        ).where(in_values(conn, runs.c.contact_id, wanted), runs.c.state.in_(("active", "waiting")))
        by_run: dict[str, RunState] = {}
        for run_row in conn.execute(run_query).all():
            run = RunState(
                id=run_row.id,
                workflow_id=run_row.workflow_id,
                version=run_row.version,
                state=run_row.state,
                node=run_row.node,
                steps=run_row.steps,
                properties=dict(run_row.properties),
                entered_at=run_row.entered_at,
            )
            by_run[run.id] = run
            found[run_row.contact_id].runs.append(run)
        if by_run:  # contacts without a run in flight have no wait either
            wait_query = select(
                waits.c.run_id,
                waits.c.due_at,
                waits.c.event_name,
                waits.c.next_node,
                waits.c.timeout_node,
            ).where(in_values(conn, waits.c.contact_id, wanted))
            for run_id, due_at, event_name, next_node, timeout_node in conn.execute(wait_query):
                if run_id in by_run:
                    by_run[run_id].wait = WaitState(
                        run_id, due_at, event_name, next_node, timeout_node
                    )
        if self.entry_workflows is None or self.entry_workflows:
            entries = (
                select(runs.c.contact_id, runs.c.workflow_id, func.max(runs.c.entered_at))
                .where(in_values(conn, runs.c.contact_id, wanted))
                .group_by(runs.c.contact_id, runs.c.workflow_id)
            )
            for contact_id, workflow_id, entered in conn.execute(entries).all():
                found[contact_id].last_entries[workflow_id] = _aware(entered)
        for contact_id in new_ids:
            if contact_id in self.contacts:
                self.contacts[contact_id].new = True
        return new_ids

    def count_events(
        self, contact_id: str, name: str, since: datetime | None, now: datetime
    ) -> int:
        query = (
            select(func.count())
            .select_from(events)
            .where(
                events.c.contact_id == contact_id, events.c.name == name, events.c.timestamp <= now
            )
        )
        if since is not None:
            query = query.where(events.c.timestamp > since)
        return int(self.connection.scalar(query) or 0)

    # --- writing ---------------------------------------------------------------------

    def flush(self) -> None:
        conn = self.connection
        contact_rows: list[dict[str, Any]] = []
        score_rows: list[dict[str, Any]] = []
        list_adds: list[dict[str, Any]] = []
        list_removes: list[dict[str, Any]] = []
        new_runs: list[dict[str, Any]] = []
        changed_runs: list[dict[str, Any]] = []
        new_waits: list[dict[str, Any]] = []
        for state in self.contacts.values():
            if state.dirty:
                contact_rows.append(
                    {
                        "id": state.id,
                        "attributes": state.attributes,
                        "grades": state.grades,
                        "account_id": state.account_id,
                        "updated_at": state.updated_at,
                    }
                )
                state.dirty = False
            for name in state.dirty_scores:
                score_rows.append(
                    {
                        "contact_id": state.id,
                        "name": name,
                        "value": state.scores[name],
                        "peak": state.peaks.get(name, state.scores[name]),
                        "updated_at": state.updated_at,
                        "increased_at": state.increased.get(name),
                    }
                )
            state.dirty_scores.clear()
            list_adds.extend(
                {"list_name": n, "contact_id": state.id, "added_at": at}
                for n, at in state.added_lists.items()
            )
            list_removes.extend(
                {"list_name": n, "contact_id": state.id} for n in state.removed_lists
            )
            state.added_lists.clear()
            state.removed_lists.clear()
            for run in state.runs:
                if run.new:
                    new_runs.append(_run_row(run, state.id))
                elif run.dirty:
                    changed_runs.append({"id": run.id, **_run_changes(run)})
                if (run.new or run.dirty) and run.wait is not None and run.state == "waiting":
                    new_waits.append(_wait_row(run.wait, state.id))
                run.new = run.dirty = False
            state.runs = [r for r in state.runs if r.state in ("active", "waiting")]
        bulk_update(conn, contacts, ("id",), contact_rows)
        bulk_upsert(
            conn,
            scores,
            score_rows,
            ("contact_id", "name"),
            ("value", "peak", "updated_at", "increased_at"),
        )
        bulk_delete(conn, list_members, list_removes)
        bulk_insert(conn, list_members, list_adds, ignore=True)
        if self.deleted_waits:
            conn.execute(delete(waits).where(in_values(conn, waits.c.run_id, self.deleted_waits)))
            self.deleted_waits.clear()
        bulk_insert(conn, runs, new_runs)
        bulk_update(conn, runs, ("id",), changed_runs)
        bulk_insert(conn, waits, new_waits)
        if self.audit_rows:
            bulk_insert(conn, audit, self.audit_rows)
            self.audit_rows.clear()
        bulk_insert(conn, outbox, self.outbox_rows, ignore=True)
        self.outbox_rows.clear()
        if self.account_rows:
            bulk_upsert(
                conn, accounts, list(self.account_rows.values()), ("id",), ("traits", "updated_at")
            )
            self.account_rows.clear()
        if self.quiet_resets:
            bulk_upsert(
                conn,
                quiet_watch,
                [
                    {
                        "workflow_id": w,
                        "trigger_index": i,
                        "contact_id": c,
                        "last_at": at,
                        "fired_at": None,
                    }
                    for (w, i, c), at in self.quiet_resets.items()
                ],
                ("workflow_id", "trigger_index", "contact_id"),
                ("last_at", "fired_at"),
            )
            self.quiet_resets.clear()
        if self.quiet_fired:
            conn.execute(
                update(quiet_watch)
                .where(
                    and_(
                        quiet_watch.c.workflow_id == bindparam("b_w"),
                        quiet_watch.c.trigger_index == bindparam("b_i"),
                        quiet_watch.c.contact_id == bindparam("b_c"),
                    )
                )
                .values(fired_at=bindparam("fired_at")),
                self.quiet_fired,
            )
            self.quiet_fired.clear()


def _aware(moment: datetime) -> datetime:
    return ensure_utc(moment)


def _run_row(run: RunState, contact_id: str) -> dict[str, Any]:
    return {
        "id": run.id,
        "contact_id": contact_id,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "entered_at": run.entered_at,
        **_run_changes(run),
    }


def _run_changes(run: RunState) -> dict[str, Any]:
    return {
        "state": run.state,
        "node": run.node,
        "steps": run.steps,
        "properties": run.properties,
        "ended_at": run.ended_at,
        "end_reason": run.end_reason,
        "error": run.error,
    }


def _wait_row(wait: WaitState, contact_id: str) -> dict[str, Any]:
    return {
        "run_id": wait.run_id,
        "contact_id": contact_id,
        "due_at": wait.due_at,
        "event_name": wait.event_name,
        "next_node": wait.next_node,
        "timeout_node": wait.timeout_node,
        "lease_owner": None,
        "lease_until": None,
    }
