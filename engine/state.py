"""One transaction's worth of contacts: loaded together, changed in memory, written back
together with executemany. The contacts' rows are locked for the whole transaction
(``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so a score update is a
read-modify-write that no other worker can interleave with."""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, func, select, update

from engine.store.raw import RawReader
from engine.store.sql import (
    bulk_delete_rows,
    bulk_insert,
    bulk_insert_returning,
    bulk_upsert,
    chunks,
    in_values,
    insert_for,
    insert_rows,
    is_postgres,
    update_rows,
    update_rows_at,
    upsert_rows,
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
    rowid: int | None = None
    """SQLite: the row's rowid, read with it in this transaction (see
    :func:`engine.store.sql.update_rows_at`); None on PostgreSQL and for new runs."""


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
        self.audit_rows: list[tuple[Any, ...]] = []
        """Tuples of the :data:`AUDIT_COLUMNS`."""
        self.outbox_rows: list[dict[str, Any]] = []
        self.deleted_waits: list[str] = []
        self.quiet_resets: dict[tuple[str, int, str], datetime] = {}
        self.quiet_fired: list[dict[str, Any]] = []
        self.account_rows: dict[str, dict[str, Any]] = {}
        self.entry_workflows: frozenset[str] | None = None
        """Workflows whose last entries :meth:`load` reads (for re-entry rules); None: all.
        The runner leaves out the ``reentry: always`` ones, which never look."""
        self.unwritten_runs: frozenset[str] = frozenset()
        """Workflows whose runs are not written if they end in the wake that entered them:
        on a store thrown away after a run, no one would read them (see ``Runner``)."""

    # --- loading ---------------------------------------------------------------------

    def load(
        self, ids: Iterable[str], now: datetime, waits: Mapping[str, WaitState] | None = None
    ) -> list[str]:
        """Create missing contacts, lock and load them; returns the ids that are new.

        ``waits``: waits the caller read in this same transaction, by run id (the due
        waits a worker took), so they are not looked up again; the loader reads only the
        waits of the other runs in flight."""
        # One lock order for everyone (by id, across chunks too): batches that share
        # contacts (a contact waking in two workers' batches) never deadlock.
        wanted = sorted({i for i in ids if i not in self.contacts})
        if not wanted:
            return []
        conn = self.connection
        # One statement per table for the whole batch, the ids bound as one parameter, the
        # rows read raw from the driver: the column types' result processing (a
        # TypeDecorator call per datetime, SQLAlchemy's JSON wrapper per document) cost
        # more than the queries. Values come out as the types would give them (see RawReader).
        sql = _load_sql(conn)
        read = RawReader(is_postgres(conn))
        param = (_ids_param(conn, wanted),)

        def fetch(query: str) -> Sequence[Any]:
            return conn.exec_driver_sql(query, param).fetchall()

        loaded: dict[str, Any] | None = None
        if is_postgres(conn):  # rows locked below, in id order, once all exist
            present: Container[str] = {row[0] for row in fetch(sql.present)}
        else:  # one writer: the rows read now are all there will be, bar those added below
            loaded = {row[0]: row for row in fetch(sql.contacts)}
            present = loaded
        missing = [i for i in wanted if i not in present]
        new_ids: list[str] = []
        if missing:
            # only the rows this transaction really inserted are new: a concurrent
            # worker may have created the same contact a moment ago
            inserted: set[str] = set()
            for part in chunks(missing):
                inserted.update(
                    bulk_insert_returning(
                        conn,
                        contacts,
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
                        "id",
                    )
                )
            new_ids = [i for i in missing if i in inserted]
        moment, document = read.moment, read.document
        if loaded is None:
            loaded = {row[0]: row for row in fetch(sql.contacts)}
        elif missing:
            added = conn.exec_driver_sql(sql.contacts, (_ids_param(conn, missing),))
            loaded.update((row[0], row) for row in added.fetchall())
        found = self.contacts
        for contact_id in wanted:  # in id order, whatever order the rows came in
            row = loaded.get(contact_id)
            if row is not None:
                found[contact_id] = ContactState(
                    contact_id,
                    document(row[1]),
                    document(row[2]),
                    row[3],
                    moment(row[4]),
                    updated_at=moment(row[5]),
                )
        for contact_id, name, value, peak, increased_at in fetch(sql.scores):
            state = found[contact_id]
            state.scores[name] = value
            state.peaks[name] = peak
            if increased_at is not None:
                state.increased[name] = moment(increased_at)
        for contact_id, list_name in fetch(sql.members):
            found[contact_id].lists.add(list_name)
        by_run: dict[str, RunState] = {}
        for (
            run_id,
            contact_id,
            workflow_id,
            version,
            state_name,
            node,
            steps,
            properties,
            at,
            rowid,
        ) in fetch(sql.runs):
            run = RunState(
                run_id,
                workflow_id,
                version,
                state_name,
                node,
                steps,
                document(properties),
                moment(at),
                rowid=rowid,
            )
            by_run[run_id] = run
            found[contact_id].runs.append(run)
        unknown = list(by_run)  # only a run in flight has a wait
        if waits:
            unknown = []
            for run_id, run in by_run.items():
                known = waits.get(run_id)
                if known is None:
                    unknown.append(run_id)
                else:
                    run.wait = known
        if unknown:
            found_waits = conn.exec_driver_sql(sql.waits, (_ids_param(conn, unknown),))
            for run_id, due_at, event_name, next_node, timeout_node in found_waits.fetchall():
                by_run[run_id].wait = WaitState(
                    run_id, moment(due_at), event_name, next_node, timeout_node
                )
        entry_workflows = self.entry_workflows
        if entry_workflows is None:
            entries = fetch(sql.entries)
        elif entry_workflows:
            named = _ids_param(conn, sorted(entry_workflows))
            entries = conn.exec_driver_sql(sql.entries_of, (param[0], named)).fetchall()
        else:
            entries = ()
        for contact_id, workflow_id, entered in entries:
            found[contact_id].last_entries[workflow_id] = moment(entered)
        for contact_id in new_ids:
            if contact_id in found:
                found[contact_id].new = True
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
        contact_rows: list[tuple[Any, ...]] = []
        score_rows: list[tuple[Any, ...]] = []
        list_adds: list[tuple[Any, ...]] = []
        list_removes: list[tuple[Any, ...]] = []
        new_runs: list[tuple[Any, ...]] = []
        changed_runs: list[tuple[Any, ...]] = []
        changed_at: list[tuple[Any, ...]] = []  # SQLite: by rowid
        new_waits: list[tuple[Any, ...]] = []
        unwritten = self.unwritten_runs
        for state in self.contacts.values():
            contact_id = state.id
            if state.dirty:
                contact_rows.append(
                    (
                        contact_id,
                        state.attributes,
                        state.grades,
                        state.account_id,
                        state.updated_at,
                    )
                )
                state.dirty = False
            if state.dirty_scores:
                current, peaks, increased = state.scores, state.peaks, state.increased
                for name in state.dirty_scores:
                    value = current[name]
                    score_rows.append(
                        (
                            contact_id,
                            name,
                            value,
                            peaks.get(name, value),
                            state.updated_at,
                            increased.get(name),
                        )
                    )
                state.dirty_scores.clear()
            if state.added_lists:
                list_adds.extend((n, contact_id, at) for n, at in state.added_lists.items())
                state.added_lists.clear()
            if state.removed_lists:
                list_removes.extend((n, contact_id) for n in state.removed_lists)
                state.removed_lists.clear()
            if state.runs:
                ended = False
                for run in state.runs:
                    if (
                        run.new
                        and run.state not in _IN_FLIGHT
                        and run.state != "failed"  # its reason is reported, from the store
                        and run.workflow_id in unwritten
                    ):
                        ended = True
                        run.new = run.dirty = False
                        continue
                    if run.new:
                        new_runs.append(
                            (
                                run.id,
                                contact_id,
                                run.workflow_id,
                                run.version,
                                run.entered_at,
                                run.state,
                                run.node,
                                run.steps,
                                run.properties,
                                run.ended_at,
                                run.end_reason,
                                run.error,
                            )
                        )
                    elif run.dirty:
                        (changed_runs if run.rowid is None else changed_at).append(
                            (
                                run.id if run.rowid is None else run.rowid,
                                run.state,
                                run.node,
                                run.steps,
                                run.properties,
                                run.ended_at,
                                run.end_reason,
                                run.error,
                            )
                        )
                    else:
                        if run.state not in _IN_FLIGHT:
                            ended = True
                        continue
                    wait = run.wait
                    if wait is not None and run.state == "waiting":
                        new_waits.append(
                            (
                                wait.run_id,
                                contact_id,
                                wait.due_at,
                                wait.event_name,
                                wait.next_node,
                                wait.timeout_node,
                                None,
                                None,
                            )
                        )
                    elif run.state not in _IN_FLIGHT:
                        ended = True
                    run.new = run.dirty = False
                if ended:
                    state.runs = [r for r in state.runs if r.state in _IN_FLIGHT]
        update_rows(conn, contacts, ("id",), _CONTACT_COLUMNS, contact_rows)
        upsert_rows(
            conn,
            scores,
            _SCORE_COLUMNS,
            score_rows,
            ("contact_id", "name"),
            ("value", "peak", "updated_at", "increased_at"),
        )
        if list_removes:
            bulk_delete_rows(conn, list_members, ("list_name", "contact_id"), list_removes)
        insert_rows(conn, list_members, ("list_name", "contact_id", "added_at"), list_adds, True)
        if self.deleted_waits:
            conn.execute(delete(waits).where(in_values(conn, waits.c.run_id, self.deleted_waits)))
            self.deleted_waits.clear()
        insert_rows(conn, runs, _RUN_COLUMNS, new_runs)
        update_rows(conn, runs, ("id",), _RUN_CHANGE_COLUMNS, changed_runs)
        update_rows_at(conn, runs, "id", _RUN_CHANGE_COLUMNS, changed_at)
        insert_rows(conn, waits, _WAIT_COLUMNS, new_waits)
        if self.audit_rows:
            insert_rows(conn, audit, AUDIT_COLUMNS, self.audit_rows)
            self.audit_rows.clear()
        bulk_insert(conn, outbox, self.outbox_rows, ignore=True)
        self.outbox_rows.clear()
        if self.account_rows:
            bulk_upsert(
                conn, accounts, list(self.account_rows.values()), ("id",), ("traits", "updated_at")
            )
            self.account_rows.clear()
        if self.quiet_resets:
            # a spell starts at the latest engagement: an event that arrives late (stamped
            # before the one stored) neither moves it back nor re-arms a spell that fired
            statement = insert_for(conn, quiet_watch)
            later = statement.excluded.last_at > quiet_watch.c.last_at
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["workflow_id", "trigger_index", "contact_id"],
                    set_={
                        "last_at": case(
                            (later, statement.excluded.last_at), else_=quiet_watch.c.last_at
                        ),
                        "fired_at": case((later, None), else_=quiet_watch.c.fired_at),
                    },
                ),
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


_IN_FLIGHT = ("active", "waiting")
AUDIT_COLUMNS = (
    "contact_id",
    "at",
    "subject",
    "name",
    "old",
    "new",
    "workflow_id",
    "version",
    "node",
    "cause",
)
"""The columns of :attr:`Batch.audit_rows`' tuples."""
_CONTACT_COLUMNS = ("id", "attributes", "grades", "account_id", "updated_at")
_SCORE_COLUMNS = ("contact_id", "name", "value", "peak", "updated_at", "increased_at")
_RUN_CHANGE_COLUMNS = (
    "id",
    "state",
    "node",
    "steps",
    "properties",
    "ended_at",
    "end_reason",
    "error",
)
_RUN_COLUMNS = (
    "id",
    "contact_id",
    "workflow_id",
    "version",
    "entered_at",
    *_RUN_CHANGE_COLUMNS[1:],
)
_WAIT_COLUMNS = (
    "run_id",
    "contact_id",
    "due_at",
    "event_name",
    "next_node",
    "timeout_node",
    "lease_owner",
    "lease_until",
)

# --- raw loading -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoadSQL:
    present: str
    contacts: str
    scores: str
    members: str
    runs: str
    waits: str
    entries: str
    entries_of: str


def _build_load_sql(postgres: bool) -> _LoadSQL:
    if postgres:
        ids = "= ANY(%b::VARCHAR(320)[])"
        run_ids = "= ANY(%b::VARCHAR(32)[])"
        workflow_ids = "= ANY(%b::VARCHAR(200)[])"
        lock = " ORDER BY id FOR UPDATE"
    else:
        ids = run_ids = workflow_ids = "IN (SELECT value FROM json_each(?))"
        lock = ""
    rowid = "NULL" if postgres else "rowid"
    return _LoadSQL(
        present=f"SELECT id FROM contacts WHERE id {ids}",
        contacts=(
            "SELECT id, attributes, grades, account_id, created_at, updated_at "
            f"FROM contacts WHERE id {ids}{lock}"
        ),
        scores=(
            f"SELECT contact_id, name, value, peak, increased_at FROM scores WHERE contact_id {ids}"
        ),
        members=f"SELECT contact_id, list_name FROM list_members WHERE contact_id {ids}",
        # in the order the runs were made, which is the order a wake steps through them
        runs=(
            "SELECT id, contact_id, workflow_id, version, state, node, steps, properties, "
            f"entered_at, {rowid} FROM runs WHERE contact_id {ids} "
            "AND state IN ('active', 'waiting') AND ended_at IS NULL "
            f"ORDER BY {'seq' if postgres else 'rowid'}"
        ),
        waits=(
            "SELECT run_id, due_at, event_name, next_node, timeout_node "
            f"FROM waits WHERE run_id {run_ids}"
        ),
        entries=(
            "SELECT contact_id, workflow_id, max(entered_at) "
            f"FROM runs WHERE contact_id {ids} GROUP BY contact_id, workflow_id"
        ),
        # the same for the workflows named: the index is read only under those, where a
        # contact's runs of every "always" workflow would be read and thrown away
        entries_of=(
            "SELECT contact_id, workflow_id, max(entered_at) "
            f"FROM runs WHERE contact_id {ids} AND workflow_id {workflow_ids} "
            "GROUP BY contact_id, workflow_id"
        ),
    )


_SQLITE_LOAD = _build_load_sql(postgres=False)
_POSTGRES_LOAD = _build_load_sql(postgres=True)


def _load_sql(connection: Connection) -> _LoadSQL:
    return _POSTGRES_LOAD if is_postgres(connection) else _SQLITE_LOAD


def _ids_param(connection: Connection, ids: list[str]) -> Any:
    """The id list as one parameter: an array on PostgreSQL, a JSON array on SQLite (what
    :func:`engine.store.sql.in_values` binds)."""
    return ids if is_postgres(connection) else json.dumps(ids)
