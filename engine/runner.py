"""The graph runner: what happens to a contact when a message, a due wait, a quiet spell or
a schedule wakes it.

Work is done in batches: one transaction loads and locks the contacts it touches, runs
every workflow step in memory, and writes all changes (scores, lists, runs, waits, audit,
outbox) back together. A crash mid-batch rolls the whole batch back; nothing is half done
and nothing is sent twice, because effects only ever reach the outbox table.
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import logging
import os
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Engine, Select, and_, func, select, update

from engine.catalog import Catalog
from engine.clock import Clock, ensure_utc, format_timestamp
from engine.errors import ActionFailed
from engine.kinds import AwaitEvent, Continue, QuietDriven, Signal, Sleep, Step, TriggerKind
from engine.model import Workflow
from engine.scoring.accounts import AccountChange, AccountRollup
from engine.scoring.decay import decay_once
from engine.scoring.hooks import ScoringHooks
from engine.scoring.models import ScoreModel
from engine.segment import Message, Rejection, first_of_each_id
from engine.state import Batch, ContactFacts, ContactState, RunState, WaitState
from engine.store.db import writer
from engine.store.moments import stored_moment
from engine.store.order import by_code_point
from engine.store.sql import (
    bulk_update,
    chunks,
    in_values,
    insert_for,
    insert_ignore,
    insert_rows_returning,
    is_postgres,
)
from engine.store.tables import (
    RUN_IN_FLIGHT,
    accounts,
    contacts,
    events,
    list_members,
    outbox,
    quiet_watch,
    rejected,
    runs,
    schedule_fires,
    scores,
    waits,
    workflow_status,
    workflow_versions,
)
from engine.store.tables import audit as audit_table
from engine.templates import TemplateCatalog

log = logging.getLogger("leadflow.runner")

MAX_NODES_PER_WAKE = 1000
"""Loop guard: a run that executes more nodes than this in one wake is failed."""
MAX_ENTRIES_PER_WAKE = 200
"""Cascade guard: workflows entering each other without end are cut off here."""
MAX_ACCOUNT_ROUNDS = 5
"""Account crossings that enter workflows that change scores that cross again: cut off."""
FAN_OUT_LEASE = timedelta(minutes=5)
"""How long a schedule's fan-out may go without finishing a chunk before another worker
takes it over."""
FAN_OUT_RETRY = timedelta(minutes=1)
"""How long after a failed chunk a schedule's fan-out is taken up again."""
BATCH_SIZE = 10000
"""Messages (or contacts woken) per transaction. Each commit writes every page it
touched, and a batch's contacts lie at random places in the contact-keyed tables and
indexes; five times the 2,000 of the first releases shares those pages among five times
the messages (200,000 events ingested in 20.6 s instead of 27.9 s; bench/README.md,
"Fourth round")."""
_NO_ORIGIN = (None, None, None)
EVENT_COLUMNS = (
    "message_id",
    "contact_id",
    "type",
    "name",
    "properties",
    "timestamp",
    "received_at",
)


@dataclass
class IngestReport:
    taken: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    failed_runs: int = 0
    """Runs that failed while these messages were applied (a missing template, bad data):
    the messages were taken, the runs' reasons are in ``failures`` (the first ten)."""
    failures: list[RunFailure] = field(default_factory=list)

    def add(self, other: IngestReport) -> None:
        self.taken += other.taken
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.rejections.extend(other.rejections)
        self.failed_runs += other.failed_runs
        self.failures.extend(other.failures[: max(0, FAILURES_KEPT - len(self.failures))])


@dataclass(frozen=True, slots=True)
class RunFailure:
    """A run that failed, and why, as the reports show it."""

    contact_id: str
    workflow_id: str
    version: int
    at: datetime
    error: str

    def __str__(self) -> str:
        at = format_timestamp(self.at)
        return describe_failure(self.contact_id, self.workflow_id, self.version, at, self.error)


def describe_failure(contact: str, workflow: str, version: int, at: str, error: str) -> str:
    """``ann: welcome v2 failed at 2026-01-05T10:00:00Z: node 'mail' (send_email): ...``"""
    return f"{contact}: {workflow} v{version} failed at {at}: {error}"


FAILURES_KEPT = 10


@dataclass
class ContactUpdate:
    """A direct change to one contact (the Brevo API's contact calls): attributes to set,
    lists to join and to leave. Applied by :meth:`Runner.update_contacts`."""

    attributes: dict[str, Any] = field(default_factory=dict)
    add_lists: tuple[str, ...] = ()
    remove_lists: tuple[str, ...] = ()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_resume = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch runs. A batch allocates a great many
    small objects (rows, states, audit dicts) and hardly any cycles; the collector would
    otherwise walk the whole heap over and over (a sixth of the CPU of an ingest batch).
    It runs again when the batch is done; nested and concurrent batches share one pause.
    The pause should end once the batch's objects are let go (wrap the call that holds
    them, not the block inside it): the collector resumes with a sweep of everything
    made during the pause that is still alive, which was 4 % of an ingest."""
    global _gc_pauses, _gc_resume
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_resume = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_resume:
                gc.enable()


def new_run_id(entered_at: datetime, random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A run id: a UUID version 7 (RFC 9562) as 32 hex digits, its first 48 bits the
    millisecond the run entered, the other 74 random.

    Ids that grow with time keep a store's indexes keyed by run id (runs, waits, the
    outbox's idempotency keys) appending near their end instead of at random pages, and
    the waits that come due together, entered together, sit on neighbouring pages. The
    moment is the run's own (the injected clock's), so a simulation's ids sort by virtual
    time. A naive moment is UTC, as everywhere in the engine; one before 1970 or after
    10889 is clamped into the 48 bits. ``random_bytes``: a seeded source for fixtures."""
    if entered_at.tzinfo is None:
        entered_at = entered_at.replace(tzinfo=UTC)
    millis = min(max(stored_moment(entered_at) // 1000, 0), _MAX_MILLIS)
    raw = bytearray(millis.to_bytes(6, "big") + random_bytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
    raw[8] = (raw[8] & 0x3F) | 0x80  # variant: RFC 9562
    return raw.hex()


_MAX_MILLIS = (1 << 48) - 1


class Runner:
    """Runs deployed workflows against a store. Thread-compatible, not thread-safe: give
    each thread or process its own Runner (they coordinate through the database)."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        templates: TemplateCatalog | None = None,
        catalog: Catalog | None = None,
        owner: str | None = None,
        history: bool = True,
    ) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.clock = clock
        self.history = history
        self._next_decay: tuple[tuple[tuple[str, int], ...], datetime] | None = None
        """The decaying models' versions and their next tick, as last looked up."""
        """Whether the store keeps what no run reads back: the audit log, and the runs
        of ``reentry: always`` workflows that end in the wake that entered them (the
        other rules read a workflow's last entry). Only a store thrown away after one
        run (a simulation's own) goes without: about half the rows a simulation
        writes, which nothing would read."""
        self.templates = templates or TemplateCatalog()
        self._catalog = catalog
        self.owner = owner or uuid.uuid4().hex[:12]
        self.failed_runs = 0
        """Runs failed since this runner was made."""
        self.failures: list[RunFailure] = []
        """The first runs that failed since the last :meth:`ingest` began."""

    # --- the catalog of deployed workflows ----------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            with self.engine.connect() as connection:
                self._catalog = Catalog.load(connection)
        return self._catalog

    def catalog_on(self, connection: Connection) -> Catalog:
        """The catalog, loaded through ``connection`` when it is not loaded yet (a second
        connection could not see, or on in-memory SQLite even open, beside a write)."""
        if self._catalog is None:
            self._catalog = Catalog.load(connection)
        return self._catalog

    def reload(self) -> None:
        """Pick up deploys, pauses and resumes made by other processes."""
        self._catalog = None

    # --- ingestion ---------------------------------------------------------------------

    def ingest(
        self,
        items: Iterable[Message | Rejection],
        source: str = "-",
        batch_size: int = BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
        stored: bool = False,
    ) -> IngestReport:
        """Apply messages in order, in batches; merges run in transactions of their own.

        ``stored``: the messages are already in ``events``, deduplicated (a simulation
        writes its whole history first: ``engine.simulate.store_history``), so they are
        only run."""
        report = IngestReport()
        failed_before, self.failures = self.failed_runs, []
        pending: list[Message] = []
        bad: list[Rejection] = []

        def flush() -> None:
            if pending or bad:
                # the collector resumes only once the batch's objects are let go (see
                # gc_paused): resumed with them alive, it walked them all once more
                with gc_paused():
                    report.add(self._ingest_batch(pending, bad, source, stored))
                if progress is not None:
                    progress(len(pending) + len(bad))
                pending.clear()
                bad.clear()

        decaying = self.catalog.decaying()
        known = self._next_decay
        if known is not None and known[0] != tuple((m.id, m.version) for m in decaying):
            self._next_decay = None  # a model revised, paused or resumed since
        for item in items:
            if decaying and not isinstance(item, Rejection) and self._tick_before(item):
                flush()  # the messages before the tick, then the tick, then this one
                self._decay_before(min(item.timestamp, self.clock.now()))
            if isinstance(item, Rejection):
                bad.append(item)
            elif item.merge_from is not None:
                flush()
                self.merge(item.merge_from, item.contact_id, item.timestamp)
                pending.append(item)
            else:
                pending.append(item)
            if len(pending) + len(bad) >= batch_size:
                flush()
        flush()
        report.failed_runs = self.failed_runs - failed_before
        report.failures = list(self.failures)
        return report

    def _ingest_batch(
        self, messages: list[Message], bad: list[Rejection], source: str, stored: bool = False
    ) -> IngestReport:
        report = IngestReport(rejected=len(bad), rejections=list(bad))
        now = self.clock.now()
        with self.writer.begin() as connection:
            if bad:
                connection.execute(
                    rejected.insert(),
                    [
                        {
                            "source": source,
                            "line": r.line,
                            # a NUL character is escaped: no text column keeps it
                            "raw": r.raw.replace("\x00", "\\u0000"),
                            "reason": r.reason.replace("\x00", "\\u0000"),
                            "at": now,
                        }
                        for r in bad
                    ],
                )
            if not messages:
                return report
            redirect = _merged_into(connection, {m.contact_id for m in messages})
            fresh = messages if stored else _deduplicate(connection, messages)
            report.duplicates = len(messages) - len(fresh)
            report.taken = len(fresh)
            if not fresh:
                return report
            rows: list[tuple[Any, ...]] = []
            for message in fresh:
                contact_id = redirect.get(message.contact_id, message.contact_id)
                rows.append(
                    (
                        message.message_id,
                        contact_id,
                        message.type,
                        message.event,
                        message.properties or message.traits,
                        message.timestamp,
                        now,
                    )
                )
            if not stored:
                # a concurrent worker may have taken the same messageId since
                # _deduplicate looked: only the events this transaction really inserted run
                taken = set(
                    insert_rows_returning(connection, events, EVENT_COLUMNS, rows, "message_id")
                )
                if len(taken) < len({m.message_id for m in fresh}):
                    kept = [
                        (m, r)
                        for m, r in zip(fresh, rows, strict=True)
                        if m.message_id is None or m.message_id in taken
                    ]
                    report.duplicates += len(fresh) - len(kept)
                    report.taken = len(kept)
                    fresh, rows = [m for m, _ in kept], [r for _, r in kept]
                    if not fresh:
                        return report
            wake = Wake(self, connection)
            first_seen: dict[str, datetime] = {}
            for message, row in zip(fresh, rows, strict=True):
                first_seen.setdefault(row[1], message.timestamp)
            wake.load(first_seen)
            contacts_loaded = wake.batch.contacts
            for message, row in zip(fresh, rows, strict=True):
                state = contacts_loaded[row[1]]
                timestamp = message.timestamp
                wake.handle_message(state, message, now if now < timestamp else timestamp)
                wake.settle_accounts()
            wake.finish()
        return report

    # --- merging an anonymous contact into a known one ---------------------------------

    def merge(self, source_id: str, target_id: str, moment: datetime) -> None:
        """Fold ``source_id`` into ``target_id``: scores added, lists united, attributes
        kept where the target has none, and all history (events, audit, runs) re-pointed."""
        with self.writer.begin() as connection:
            redirect = _merged_into(connection, {source_id, target_id})
            target_id = redirect.get(target_id, target_id)
            source_id = redirect.get(source_id, source_id)
            if source_id == target_id:
                return
            exists = connection.scalar(select(contacts.c.id).where(contacts.c.id == source_id))
            wake = Wake(self, connection)
            wake.seen(moment)
            # as handle_message: a message stamped in the future resumes nothing not yet due
            due = min(moment, self.clock.now())
            if exists is None:
                # the source never seen: a target not seen either is left for the message
                # after the merge to create (and fire contact_created), as without the
                # anonymous id; one that exists first runs its due waits
                target_row = select(contacts.c.id).where(contacts.c.id == target_id)
                if connection.scalar(target_row) is not None:
                    wake.load({target_id: moment})
                    wake.resume_due_waits(wake.batch.contacts[target_id], due)
            else:
                wake.load({source_id: moment, target_id: moment})
                source = wake.batch.contacts[source_id]
                target = wake.batch.contacts[target_id]
                # Waits due by the merge run first, each at its own moment, on the contact
                # they were started for; otherwise whether one ran before the merge or after
                # it would depend on where a batch of messages happened to end.
                wake.resume_due_waits(source, due)
                wake.resume_due_waits(target, due)
                cause = f"merge of {source_id}"
                # the source leaves its account (its scores go to the target); a target
                # with no account joins the source's with what it had, before the
                # merged scores are added to it below
                if source.account_id is not None:
                    for name, value in source.scores.items():
                        wake.accounts.member_changed(source.account_id, name, value, 0.0)
                    if target.account_id is None:
                        target.account_id = source.account_id
                        target.dirty = True
                        for name, value in target.scores.items():
                            wake.accounts.member_changed(target.account_id, name, 0.0, value)
                    source.account_id = None
                    source.dirty = True
                for name, value in source.scores.items():
                    wake.change_score(
                        target, name, target.scores.get(name, 0.0) + value, moment, cause
                    )
                    # the highest either person reached: the source's row is deleted below
                    carried = source.peaks.get(name)
                    if carried is not None and carried > target.peaks.get(name, carried - 1):
                        target.peaks[name] = carried
                        target.dirty_scores.add(name)
                for name in sorted(source.lists):
                    wake.change_list(target, name, True, moment, cause)
                # the source's band lists came with the union: back to the one band
                # list of the merged score
                for name in sorted(source.scores):
                    for model in wake.scoring.catalog.score_models.get(name, ()):
                        wake.scoring.place_in_band(wake, target, model, moment, cause)
                for key, value in source.attributes.items():
                    if key not in target.attributes:
                        wake.change_attribute(target, key, value, moment, cause)
                target.runs.extend(source.runs)
                # the later entry of the two people, now one: a workflow the anonymous
                # contact entered counts as entered by the known one (re-entry rules)
                for name, entered in source.last_entries.items():
                    known = target.last_entries.get(name)
                    if known is None or entered > known:
                        target.last_entries[name] = entered
                source.runs = []
                wake.drain(target, moment, cause)
                wake.finish()
                # waits first, found through their runs (waits have no index by contact)
                source_runs = select(runs.c.id).where(runs.c.contact_id == source_id)
                connection.execute(
                    update(waits)
                    .where(waits.c.run_id.in_(source_runs.where(RUN_IN_FLIGHT)))
                    .values(contact_id=target_id)
                )
                # the outbox too: frequency caps count a contact's sent messages by it
                for table in (audit_table, runs, outbox):
                    connection.execute(
                        update(table)
                        .where(table.c.contact_id == source_id)
                        .values(contact_id=target_id)
                    )
                _merge_quiet_spells(connection, source_id, target_id)
                for table in (scores, list_members, quiet_watch):
                    connection.execute(table.delete().where(table.c.contact_id == source_id))
            # the source's events, with or without a contact: one whose events have not run
            # yet may have them stored already (a simulation writes its whole history
            # first, engine.simulate.store_history)
            connection.execute(
                update(events).where(events.c.contact_id == source_id).values(contact_id=target_id)
            )
            insert_ignore(
                connection,
                contacts,
                [
                    {
                        "id": source_id,
                        "attributes": {},
                        "grades": {},
                        "account_id": None,
                        "merged_into": target_id,
                        "created_at": moment,
                        "updated_at": moment,
                    }
                ],
            )
            connection.execute(
                update(contacts)
                .where(contacts.c.id == source_id)
                .values(merged_into=target_id, updated_at=moment)
            )
            wake.finish()

    # --- direct contact changes (the HTTP service's contact calls) ---------------------

    def update_contacts(
        self, changes: Mapping[str, ContactUpdate], moment: datetime, cause: str
    ) -> set[str]:
        """Apply attribute and list changes to contacts (created when missing) in one
        transaction, each change audited and each a signal, so triggers fire as for a
        message. Returns the ids that were created."""
        if not changes:
            return set()
        with self.writer.begin() as connection:
            redirect = _merged_into(connection, set(changes))
            wake = Wake(self, connection)
            wake.load({redirect.get(i, i): moment for i in changes})
            created: set[str] = set()
            for contact_id, change in changes.items():
                state = wake.batch.contacts[redirect.get(contact_id, contact_id)]
                wake.seen(moment)
                wake.resume_due_waits(state, moment)
                if state.new:
                    state.new = False
                    created.add(contact_id)
                    wake.queue.append(Signal("contact_created"))
                for key, value in change.attributes.items():
                    wake.change_attribute(state, key, value, moment, cause)
                for name in change.add_lists:
                    wake.change_list(state, name, True, moment, cause)
                for name in change.remove_lists:
                    wake.change_list(state, name, False, moment, cause)
                wake.drain(state, moment, cause)
            wake.finish()
            return created

    # --- due waits -------------------------------------------------------------------

    def _due_waits(self, catalog: Catalog, now: datetime, limit: int, *columns: str) -> Select[Any]:
        """The next ``limit`` due waits no live lease holds, earliest first: their
        ``columns`` (the run id if none is named)."""
        free = and_(waits.c.due_at <= now, _no_live_lease(now))
        if catalog.paused:  # held waits are not leased, so resume frees them at once
            held = select(runs.c.id).where(
                runs.c.workflow_id.in_(sorted(catalog.paused)),
                RUN_IN_FLIGHT,
                runs.c.state == "waiting",
            )
            free = and_(free, waits.c.run_id.not_in(held))
        picked = [waits.c[name] for name in columns or ("run_id",)]
        return select(*picked).where(free).order_by(waits.c.due_at).limit(limit)

    def claim_due(self, now: datetime, limit: int, lease: timedelta) -> list[str]:
        """Lease due waits in a transaction of their own; returns the contacts to wake. On
        PostgreSQL concurrent workers skip each other's rows (SKIP LOCKED); on SQLite the
        write lock serialises them."""
        with self.writer.begin() as connection:
            pick = self._due_waits(self.catalog_on(connection), now, limit)
            if is_postgres(connection):
                pick = pick.with_for_update(skip_locked=True)
            claimed = connection.execute(
                update(waits)
                .where(waits.c.run_id.in_(pick.scalar_subquery()))
                .values(lease_owner=self.owner, lease_until=now + lease)
                .returning(waits.c.contact_id)
            )
            return list(dict.fromkeys(claimed.scalars()))

    def _take_due(self, connection: Connection, now: datetime, limit: int) -> list[TakenWait]:
        """SQLite: the next due waits, whole, read inside the write transaction that
        resumes them. SQLite has one writer, so no other worker can take these waits
        before this transaction ends, and a crash rolls it back whole; a lease is written
        only for waits that could not be resumed (:meth:`_hold`), instead of an UPDATE of
        every wait and a second commit (bench/README.md, "Seventh round"). The rows are
        read whole so the loader need not look the same waits up again by run id
        ("Eighth round")."""
        query = self._due_waits(self.catalog_on(connection), now, limit, *_TAKEN_COLUMNS)
        return [
            (contact_id, WaitState(run_id, due_at, event_name, next_node, timeout_node))
            for run_id, contact_id, due_at, event_name, next_node, timeout_node in (
                connection.execute(query)
            )
        ]

    def _hold(
        self, connection: Connection, run_ids: list[str], now: datetime, lease: timedelta
    ) -> None:
        """Lease these due waits to this runner until ``now + lease``, so the next batches
        take the waits after them: a wait that fails its batch, or that no run resumes
        (a leftover row), does not hold up the backlog behind it. The lease reaper frees
        them when the lease runs out, and they are tried again."""
        for part in chunks(run_ids):
            connection.execute(
                update(waits)
                .where(
                    in_values(connection, waits.c.run_id, part),
                    waits.c.due_at <= now,
                    _no_live_lease(now),
                )
                .values(lease_owner=self.owner, lease_until=now + lease)
            )

    def resume_due(
        self,
        now: datetime,
        limit: int = 1000,
        lease: timedelta = timedelta(minutes=5),
        chunk: int | None = None,
    ) -> int:
        """Resume up to ``limit`` due waits' contacts; returns how many runs were resumed.

        On PostgreSQL the waits are leased first (:meth:`claim_due`), in a transaction of
        their own, so concurrent workers share the backlog without holding row locks on
        each other's waits; the runs are then resumed in a second transaction. On SQLite
        the waits are read and resumed in one write transaction (:meth:`_take_due`); only
        waits that fail their batch (in a transaction of their own, after the rollback)
        or that no run resumed are leased, for ``lease``, so the waits behind them go on.

        ``chunk``: load, run and write the batch that many contacts at a time, so memory
        stays that of one part while the commit (on SQLite, the checkpoint of every page
        touched) is shared by the whole batch (bench/README.md, "Sixth round"). Parts go
        in id order: neighbouring ids share pages of the contact-keyed tables. The account
        roll-ups the parts cause are applied once, at the end, as one wake over the whole
        batch applies them, so no account crosses a bound on the way that the batch as a
        whole does not cross. Meant for SQLite's single writer: a part's locks come after
        the previous part's. The cyclic collector is paused for the whole batch and only
        sweeps the youngest objects between parts (what the part before left in cycles):
        re-enabled between parts, it walked every live object of each part again, about
        870 times per 200,000 waits (bench/README.md, "Eighth round")."""
        postgres = self.engine.dialect.name == "postgresql"
        contact_ids = self.claim_due(now, limit, lease) if postgres else []
        if postgres and not contact_ids:
            return 0
        known: dict[str, WaitState] = {}  # SQLite: the waits taken, by run id
        try:
            with gc_paused():
                resumed = self._resume_batch(now, limit, lease, chunk, postgres, contact_ids, known)
                known.clear()  # let go before the collector resumes (see gc_paused)
        except Exception:
            if known:  # the failed batch's waits step aside for a while (see above)
                try:
                    with self.writer.begin() as connection:
                        self._hold(connection, list(known), now, lease)
                except Exception:  # the store itself fails: the first error tells why
                    log.exception("could not lease the waits of a failed batch")
            raise
        return resumed

    def _resume_batch(
        self,
        now: datetime,
        limit: int,
        lease: timedelta,
        chunk: int | None,
        postgres: bool,
        contact_ids: list[str],
        known: dict[str, WaitState],
    ) -> int:
        """:meth:`resume_due`'s transaction. ``known`` gets the waits taken on SQLite,
        for the caller to lease should the batch fail."""
        resumed = 0
        with self.writer.begin() as connection:
            if not postgres:
                taken = self._take_due(connection, now, limit)
                if not taken:
                    return 0
                contact_ids = list(dict.fromkeys(contact for contact, _ in taken))
                known.update((wait.run_id, wait) for _, wait in taken)
            wake = Wake(self, connection)
            released = wake.released
            for number, part in enumerate(chunks(sorted(contact_ids), chunk or len(contact_ids))):
                if number:  # a fresh batch of contacts, the same roll-up for all
                    accounts, last_moment = wake.accounts, wake.last_moment
                    wake = Wake(self, connection)
                    wake.accounts, wake.last_moment = accounts, last_moment
                    wake.released = released
                    # the part before is let go here; what of it a reference cycle
                    # still holds (a failed render's traceback holds its frames, and
                    # they the part's Wake) goes now, not when the batch ends
                    gc.collect(0)
                wake.load({contact_id: now for contact_id in part}, known)
                for contact_id in part:
                    wake.resume_due_waits(wake.batch.contacts[contact_id], now)
                wake.batch.flush()
                resumed += wake.resumed
            wake.finish()
            left = [run_id for run_id in known if run_id not in released]
            if left:
                self._hold(connection, left, now, lease)
        return resumed

    def release_leases(self, now: datetime) -> int:
        """The lease reaper: forget leases that expired (their worker died)."""
        with self.writer.begin() as connection:
            result = connection.execute(
                update(waits)
                .where(waits.c.lease_until < now)
                .values(lease_owner=None, lease_until=None)
            )
            return int(result.rowcount or 0)

    def next_due(self, include_waits: bool = True) -> datetime | None:
        """The earliest moment timed work (wait, quiet spell, schedule) comes due."""
        with self.engine.connect() as connection:
            moments = [connection.scalar(select(func.min(waits.c.due_at)))] if include_waits else []
            for workflow, position, trigger in self.catalog.quiet:
                oldest = connection.scalar(
                    select(func.min(quiet_watch.c.last_at)).where(
                        quiet_watch.c.workflow_id == workflow.id,
                        quiet_watch.c.trigger_index == position,
                        quiet_watch.c.fired_at.is_(None),
                    )
                )
                if oldest is not None:
                    moments.append(trigger.quiet_for.after(ensure_utc(oldest)))
            for workflow, position, cron in self.catalog.cron:
                since = self._schedule_since(connection, workflow, position)
                moments.append(cron.next_fire_after(since))
            for model in self.catalog.decaying():
                assert model.decay is not None
                moments.append(self._next_tick(model, *self._decay_since(connection, model)))
        present = [ensure_utc(m) for m in moments if m is not None]
        return min(present) if present else None

    # --- inactivity --------------------------------------------------------------------

    def fire_quiet(self, now: datetime) -> int:
        """Enter every contact that went quiet; one indexed query per inactivity trigger."""
        entered = 0
        for workflow, position, trigger in self.catalog.quiet:
            # after() clamps month ends (one month after 31 January is 28 February), so
            # before(now) is not its inverse: the rows are picked a few days wide and
            # each is judged by after(), as next_due() judges it
            threshold = trigger.quiet_for.before(now)
            if trigger.quiet_for.months:
                threshold += timedelta(days=7)
            match = and_(
                quiet_watch.c.workflow_id == workflow.id,
                quiet_watch.c.trigger_index == position,
                quiet_watch.c.fired_at.is_(None),
                quiet_watch.c.last_at <= threshold,
            )
            with self.engine.connect() as connection:
                found = [
                    contact_id
                    for contact_id, last_at in connection.execute(
                        select(quiet_watch.c.contact_id, quiet_watch.c.last_at).where(match)
                    )
                    if trigger.quiet_for.after(ensure_utc(last_at)) <= now
                ]
            for part in chunks(found, BATCH_SIZE):
                with self.writer.begin() as connection:
                    wake = Wake(self, connection)
                    wake.load({contact_id: now for contact_id in part})
                    rows = connection.execute(
                        select(quiet_watch.c.contact_id, quiet_watch.c.last_at).where(
                            match, in_values(connection, quiet_watch.c.contact_id, part)
                        )
                    )
                    for contact_id, last_at in rows:
                        ended = trigger.quiet_for.after(ensure_utc(last_at))
                        if ended > now:  # an engagement since the first look
                            continue
                        moment = ended
                        state = wake.batch.contacts[contact_id]
                        wake.resume_due_waits(state, moment)
                        cause = f"inactivity of {', '.join(trigger.events)}"
                        if wake.enter(state, workflow, moment, {}, cause):
                            entered += 1
                        wake.drain(state, moment, cause)
                        wake.batch.quiet_fired.append(
                            {
                                "b_w": workflow.id,
                                "b_i": position,
                                "b_c": contact_id,
                                "fired_at": moment,
                            }
                        )
                    wake.finish()
        return entered

    # --- schedules ---------------------------------------------------------------------

    def _schedule_since(
        self, connection: Connection, workflow: Workflow, position: int
    ) -> datetime:
        last = connection.scalar(
            select(func.max(schedule_fires.c.fire_at)).where(
                schedule_fires.c.workflow_id == workflow.id,
                schedule_fires.c.trigger_index == position,
            )
        )
        # the schedule exists since the first of the latest versions that carry it, as it
        # is, at this index: a version that adds it, moves it or changes its cron does not
        # fire the times before it was deployed (nor those of the schedule it replaced)
        trigger = workflow.triggers[position]
        deployed = None
        catalog = self.catalog_on(connection)
        for version, deployed_at in connection.execute(
            select(workflow_versions.c.version, workflow_versions.c.deployed_at)
            .where(
                workflow_versions.c.workflow_id == workflow.id,
                workflow_versions.c.version <= workflow.version,
            )
            .order_by(workflow_versions.c.version.desc())
        ):
            triggers = catalog.version(connection, workflow.id, version).triggers
            if position >= len(triggers) or triggers[position] != trigger:
                break
            deployed = deployed_at
        if deployed is not None and (last is None or ensure_utc(deployed) > ensure_utc(last)):
            last = deployed
        return ensure_utc(last) if last is not None else self.clock.now()

    def fire_schedules(self, now: datetime) -> int:
        """Fire every cron time that has passed since the last one taken, so nothing is
        skipped after a pause; each time is taken by exactly one worker. First, finish
        the fan-outs that stopped part way (:meth:`_finish_fan_outs`)."""
        if not self.catalog.cron:
            return 0
        failures = _Failures()
        entered = self._finish_fan_outs(failures)
        with self.engine.connect() as connection:
            open_fires = set(
                connection.execute(
                    select(schedule_fires.c.workflow_id, schedule_fires.c.trigger_index)
                    .where(schedule_fires.c.finished.is_(False))
                    .distinct()
                ).all()
            )
        for workflow, position, cron in self.catalog.cron:
            if (workflow.id, position) in open_fires:
                # a fire of this schedule is not finished (running, or failed and waiting
                # for its retry): the next ones wait for it, so fires stay in order and a
                # schedule that always fails does not pile up a failed fire a round
                continue
            with self.engine.connect() as connection:
                since = self._schedule_since(connection, workflow, position)
            fire = cron.next_fire_after(since)
            while fire is not None and fire <= now:
                with self.writer.begin() as connection:
                    lease = self.clock.now() + FAN_OUT_LEASE
                    taken = _claim_fire(connection, workflow.id, position, fire, self.owner, lease)
                if taken:
                    with failures.kept(f"schedule {workflow.id} at {format_timestamp(fire)}"):
                        entered += self._fan_out(workflow, position, cron.segment, fire)
                    if failures.first is not None and not self._finished(workflow, position, fire):
                        break  # the later fires wait for this one (see above)
                fire = cron.next_fire_after(fire)
        failures.raise_first()
        return entered

    def _finished(self, workflow: Workflow, position: int, moment: datetime) -> bool:
        with self.engine.connect() as connection:
            return bool(
                connection.scalar(
                    select(schedule_fires.c.finished).where(_fire_is(workflow.id, position, moment))
                )
            )

    def _finish_fan_outs(self, failures: _Failures) -> int:
        """Fires whose fan-out stopped part way: its worker died (the lease ran out) or a
        chunk failed (a minute after). Each is taken over by one worker and goes on after
        the last contact whose chunk committed. Leases are judged by the clock, as they
        are written."""
        now = self.clock.now()
        crons = {(w.id, position): (w, cron) for w, position, cron in self.catalog.cron}
        if not crons:
            return 0
        with self.engine.connect() as connection:
            stopped = connection.execute(
                select(
                    schedule_fires.c.workflow_id,
                    schedule_fires.c.trigger_index,
                    schedule_fires.c.fire_at,
                )
                .where(
                    schedule_fires.c.finished.is_(False),
                    schedule_fires.c.lease_until <= now,
                )
                .order_by(schedule_fires.c.fire_at)
            ).all()
        entered = 0
        for workflow_id, position, moment in stopped:
            found = crons.get((workflow_id, position))
            if found is None:  # paused, or its trigger changed: finished when it is back
                continue
            workflow, cron = found
            moment = ensure_utc(moment)
            with self.writer.begin() as connection:
                # how far it got, as of the takeover: a chunk the last holder committed
                # after the read above counts (on PostgreSQL this waits for it)
                took = connection.execute(
                    update(schedule_fires)
                    .where(
                        _fire_is(workflow_id, position, moment),
                        schedule_fires.c.finished.is_(False),
                        schedule_fires.c.lease_until <= now,
                    )
                    .values(taken_by=self.owner, lease_until=self.clock.now() + FAN_OUT_LEASE)
                    .returning(schedule_fires.c.done_through)
                ).first()
            if took is not None:
                (done_through,) = took
                log.warning(
                    "schedule %s at %s: finishing a fan-out that stopped after %r",
                    workflow_id,
                    moment.isoformat(),
                    done_through,
                )
                with failures.kept(f"schedule {workflow_id} at {format_timestamp(moment)}"):
                    entered += self._fan_out(
                        workflow, position, cron.segment, moment, after=done_through
                    )
        return entered

    def _fan_out(
        self,
        workflow: Workflow,
        position: int,
        segment: Any,
        moment: datetime,
        after: str | None = None,
    ) -> int:
        """Enter the segment, chunk by chunk, each chunk's transaction recording how far
        the fire got and renewing its lease from the clock's now (a fan-out of many
        chunks outlasts a lease counted from the moment it was due). A chunk that fails
        gives the lease up, so the next run (of any worker) goes on from there."""
        with self.engine.connect() as connection:
            everyone = list(
                connection.scalars(
                    select(contacts.c.id)
                    .where(contacts.c.merged_into.is_(None))
                    .order_by(by_code_point(contacts.c.id))
                )
            )
        if after is not None:  # code-point order is Python's order of str
            everyone = everyone[bisect.bisect_right(everyone, after) :]
        mine = and_(
            _fire_is(workflow.id, position, moment),
            schedule_fires.c.taken_by == self.owner,
            schedule_fires.c.finished.is_(False),
        )
        entered = 0
        cause = f"schedule {workflow.id}"
        try:
            for part in chunks(everyone, BATCH_SIZE):
                with self.writer.begin() as connection:
                    held = connection.execute(
                        update(schedule_fires)
                        .where(mine)
                        .values(
                            done_through=part[-1],
                            lease_until=self.clock.now() + FAN_OUT_LEASE,
                        )
                    ).rowcount
                    if not held:  # our lease ran out and another worker took it over
                        return entered
                    wake = Wake(self, connection)
                    wake.load({contact_id: moment for contact_id in part})
                    for contact_id in part:
                        state = wake.batch.contacts[contact_id]
                        wake.resume_due_waits(state, moment)
                        facts = ContactFacts(wake.batch, state, moment, {})
                        if segment is None or segment(facts):
                            if wake.enter(state, workflow, moment, {}, cause):
                                entered += 1
                            wake.drain(state, moment, cause)
                    wake.finish()
        except BaseException:
            # a run a minute later (of any worker) goes on from here; not at once, so a
            # fire that fails every time does not take every timers round
            retry_at = self.clock.now() + FAN_OUT_RETRY
            with self.writer.begin() as connection:
                connection.execute(update(schedule_fires).where(mine).values(lease_until=retry_at))
            raise
        with self.writer.begin() as connection:
            connection.execute(
                update(schedule_fires).where(mine).values(finished=True, lease_until=None)
            )
        return entered

    # --- decay ------------------------------------------------------------------------

    def _decay_key(self, model: ScoreModel) -> str:
        return f"decay:{model.id}"

    def _decay_since(
        self, connection: Connection, model: ScoreModel
    ) -> tuple[datetime, datetime | None]:
        """When the model's ticks are counted from, and its last tick since then (None:
        none yet). Ticks are ``every`` after the start, two after it, and so on, each
        counted from the start: a monthly decay deployed on 31 January ticks on 28
        February, 31 March, 30 April."""
        start = connection.scalar(
            select(func.min(workflow_versions.c.deployed_at)).where(
                workflow_versions.c.workflow_id == model.id
            )
        )
        # a version that brought decay back after versions without it decays from its
        # deploy: the ticks of the versions without decay are not made up all at once
        started = None
        for document, deployed_at in connection.execute(
            select(workflow_versions.c.document, workflow_versions.c.deployed_at)
            .where(workflow_versions.c.workflow_id == model.id)
            .order_by(workflow_versions.c.version.desc())
        ):
            if not isinstance(document, dict) or "decay" not in document:
                break
            started = deployed_at
        if started is not None and (start is None or ensure_utc(started) > ensure_utc(start)):
            start = started
        # a model resumed after a pause decays from its resumption: the ticks it missed
        # while paused are not made up all at once (a paused model acts as if it were not
        # deployed); its status changes when it is paused or resumed
        resumed = connection.scalar(
            select(workflow_status.c.updated_at).where(workflow_status.c.workflow_id == model.id)
        )
        if resumed is not None and (start is None or ensure_utc(resumed) > ensure_utc(start)):
            start = resumed
        begun = ensure_utc(start) if start is not None else self.clock.now()
        last = connection.scalar(
            select(func.max(schedule_fires.c.fire_at)).where(
                schedule_fires.c.workflow_id == self._decay_key(model),
                schedule_fires.c.fire_at >= begun,
            )
        )
        return begun, ensure_utc(last) if last is not None else None

    def _next_tick(self, model: ScoreModel, start: datetime, after: datetime | None) -> datetime:
        assert model.decay is not None
        return model.decay.every.first_after(start, after if after is not None else start)

    def take_decay_tick(self, connection: Connection, model: ScoreModel, tick: datetime) -> bool:
        """Claim ``model``'s tick at ``tick`` in the caller's transaction, so the claim
        and the decay commit together: a tick whose decay fails is rolled back with it and
        taken again on the next run, and a second worker waits on the claim (PostgreSQL)
        or the write lock (SQLite) and then finds it taken."""
        return _claim_fire(connection, self._decay_key(model), 0, tick, self.owner)

    def _tick_before(self, message: Message) -> bool:
        """Whether a decay tick may be due by this message's moment (not looked up yet,
        or the one remembered has come)."""
        known = self._next_decay
        return known is None or min(message.timestamp, self.clock.now()) >= known[1]

    def _decay_before(self, moment: datetime) -> None:
        """Decay ticks due by ``moment`` run before messages stamped after them, as a
        simulation runs them: a tick the worker took up to a round late (or an ingest of
        history, with no worker rounds at all) took its share of points earned after its
        moment. Each tick is still taken once (:meth:`take_decay_tick`). The next tick
        is remembered, so a batch before it costs no query."""
        models = self.catalog.decaying()
        if not models:
            return
        versions = tuple((m.id, m.version) for m in models)
        known = self._next_decay
        if known is not None and known[0] == versions and moment < known[1]:
            return
        self.fire_decay(moment)
        with self.engine.connect() as connection:
            ticks = [self._next_tick(m, *self._decay_since(connection, m)) for m in models]
        self._next_decay = (versions, min(ticks))

    def fire_decay(self, now: datetime) -> int:
        """Every decay tick due by ``now``, each taken by one worker, each at its moment."""
        fallen = 0
        for model in self.catalog.decaying():
            assert model.decay is not None
            with self.engine.connect() as connection:
                start, last = self._decay_since(connection, model)
            tick = self._next_tick(model, start, last)
            while tick <= now:
                fallen += decay_once(self, model, tick)
                tick = self._next_tick(model, start, tick)
        return fallen

    def run_timers(self, now: datetime, limit: int = 1000, chunk: int | None = None) -> int:
        """Everything timed that is due at ``now``: waits (``limit`` a transaction, in
        parts of ``chunk``: :meth:`resume_due`), quiet spells, schedules, decay.

        In time order, as a simulation runs them: the waits due by the earliest quiet
        spell, cron time or decay tick that is due, then that moment's timers, and so on
        up to ``now``. A cron time missed while no worker ran judges its segment on the
        contacts as they were then, not after the waits that came due later."""
        done = 0
        failures = _Failures()
        previous: datetime | None = None
        while True:
            step = self.next_due(include_waits=False)
            if step is None or step > now or (previous is not None and step <= previous):
                step = now  # nothing before now, or a timer that cannot go on (a failed fire)
            while True:
                resumed = self.resume_due(step, limit, chunk=chunk)
                done += resumed
                if not resumed:
                    break
            with failures.kept(f"timers at {format_timestamp(step)}"):
                done += self.fire_timers(step)
            if step >= now:
                failures.raise_first()
                return done
            previous = step

    def fire_timers(self, now: datetime) -> int:
        """Quiet spells, schedules and decay due at ``now``; one that fails does not stop
        the others (its error is raised after them)."""
        done = 0
        failures = _Failures()
        for name, step in (
            ("quiet spells", self.fire_quiet),
            ("schedules", self.fire_schedules),
            ("decay", self.fire_decay),
        ):
            with failures.kept(name):
                done += step(now)
        failures.raise_first()
        return done


TakenWait = tuple[str, WaitState]
"""A wait taken to resume: its contact's id and the wait as stored."""
_TAKEN_COLUMNS = ("run_id", "contact_id", "due_at", "event_name", "next_node", "timeout_node")


def _no_live_lease(now: datetime) -> ColumnElement[bool]:
    """A wait no lease holds at ``now``: never leased, or its lease ran out."""
    return waits.c.lease_until.is_(None) | (waits.c.lease_until < now)


def _merge_quiet_spells(connection: Connection, source_id: str, target_id: str) -> None:
    """The merged contact's quiet spells start at the later engagement of the two."""
    columns = (quiet_watch.c.workflow_id, quiet_watch.c.trigger_index)
    theirs = {
        (w, i): (ensure_utc(last), fired)
        for w, i, last, fired in connection.execute(
            select(*columns, quiet_watch.c.last_at, quiet_watch.c.fired_at).where(
                quiet_watch.c.contact_id == source_id
            )
        )
    }
    if not theirs:
        return
    ours = {
        (w, i): ensure_utc(last)
        for w, i, last in connection.execute(
            select(*columns, quiet_watch.c.last_at).where(quiet_watch.c.contact_id == target_id)
        )
    }
    for (workflow_id, position), (last_at, fired_at) in theirs.items():
        known = ours.get((workflow_id, position))
        if known is not None and known >= last_at:
            continue
        key = and_(
            quiet_watch.c.workflow_id == workflow_id,
            quiet_watch.c.trigger_index == position,
            quiet_watch.c.contact_id == target_id,
        )
        values = {"last_at": last_at, "fired_at": fired_at}
        if known is None:
            connection.execute(
                quiet_watch.insert().values(
                    workflow_id=workflow_id, trigger_index=position, contact_id=target_id, **values
                )
            )
        else:
            connection.execute(update(quiet_watch).where(key).values(**values))


def _merged_into(connection: Connection, ids: set[str]) -> dict[str, str]:
    """Where each merged-away id of ``ids`` now lives, following merges of merges: an
    anonymous id merged into A, and A merged into B later, leads to B (one hop had sent
    the anonymous id's later events to A, merged away). Ids not merged are left out. One
    query when nothing was merged, one more per further hop."""
    redirect = _one_hop(connection, ids)
    further: dict[str, str] = {}
    frontier = asked = set(redirect.values())
    while frontier:
        found = _one_hop(connection, frontier)
        further.update(found)
        frontier = set(found.values()) - asked
        asked = asked | frontier
    if not further:
        return redirect
    for source, target in redirect.items():
        seen = {source}
        while target in further and target not in seen:  # a cycle would never end
            seen.add(target)
            target = further[target]
        redirect[source] = target
    return redirect


def _one_hop(connection: Connection, ids: set[str]) -> dict[str, str]:
    query = select(contacts.c.id, contacts.c.merged_into).where(
        in_values(connection, contacts.c.id, sorted(ids)), contacts.c.merged_into.is_not(None)
    )
    return {row.id: row.merged_into for row in connection.execute(query).all()}


def _deduplicate(connection: Connection, messages: list[Message]) -> list[Message]:
    """Drop messages whose messageId was seen before (in the store or earlier in the batch)."""
    ids = [m.message_id for m in messages if m.message_id is not None]
    seen: set[str] = set()
    if ids:
        seen.update(
            connection.scalars(
                select(events.c.message_id).where(in_values(connection, events.c.message_id, ids))
            )
        )
    return first_of_each_id(messages, seen)


class Wake:
    """One transaction's execution: contacts loaded in a :class:`Batch`, signals queued
    per contact and drained breadth-first, so one workflow's change can trigger another."""

    def __init__(self, runner: Runner, connection: Connection) -> None:
        self.runner = runner
        self.connection = connection
        self.catalog = runner.catalog_on(connection)
        self.batch = Batch(connection)
        # last entries matter only to re-entry rules that look at them (not "always")
        self.batch.entry_workflows = frozenset(
            w.id for w in self.catalog.latest.values() if w.reentry.mode != "always"
        )
        self.keeps_audit = runner.history
        if not runner.history:
            self.batch.unwritten_runs = frozenset(
                w.id for w in self.catalog.latest.values() if w.reentry.mode == "always"
            )
        self.queue: deque[Signal] = deque()
        self.resumed = 0
        self._quiet_by_event = self.catalog.quiet_events()
        self._stored_spells: dict[tuple[str, int, str], tuple[datetime, bool]] = {}
        """Quiet spells as stored when first read, read when a message would end one: the
        spell's start and whether it fired."""
        self._spells_read: set[str] = set()
        self._engaged: dict[tuple[str, int, str], datetime] = {}
        """The latest engagement this wake saw per spell (kept when the batch is flushed
        part way, which empties batch.quiet_resets)."""
        self.scoring = ScoringHooks(self.catalog)
        self.accounts = AccountRollup(self.catalog)
        self.last_moment: datetime | None = None
        self.released: set[str] = set()
        """Runs whose wait this wake took off (resumed, timed out or ended)."""

    def load(
        self, first_seen: Mapping[str, datetime], waits: Mapping[str, WaitState] | None = None
    ) -> None:
        new_ids = self.batch.load(first_seen, min(first_seen.values()), waits)
        for contact_id in new_ids:
            state = self.batch.contacts[contact_id]
            state.created_at = first_seen[contact_id]
            state.updated_at = first_seen[contact_id]
            state.dirty = True
            for workflow, position, _ in self.catalog.quiet:
                spell = (workflow.id, position, contact_id)
                self.batch.quiet_resets[spell] = self._engaged[spell] = state.created_at
        bulk_update(
            self.connection,
            contacts,
            ("id",),
            [{"id": i, "created_at": first_seen[i]} for i in new_ids],
        )

    # --- messages ----------------------------------------------------------------------

    def _end_quiet_spells(self, state: ContactState, event: str, moment: datetime) -> None:
        """A spell this event resets that had already run its length fires first, at the
        moment it ended: the worker's next round (up to 30 s later), or an ingest of older
        events, would otherwise find the spell reset and never fire it. A simulation has
        fired it at its end already, so both agree."""
        for workflow, position in self._quiet_by_event[event]:
            spell = (workflow.id, position, state.id)
            # as Batch.flush's upsert: the later of the stored start and this wake's
            # latest engagement (a late event does not move a spell back)
            stored = self._stored_spell(spell)
            engaged = self._engaged.get(spell)
            if stored is not None and (engaged is None or engaged <= stored[0]):
                began = None if stored[1] else stored[0]
            else:
                began = engaged
            # catalog.quiet holds only QuietDriven triggers: no runtime Protocol check
            # here, once per event (it cost a quarter of an ingest's time)
            trigger = cast(QuietDriven, workflow.triggers[position])
            if began is None or workflow.id in self.catalog.paused:
                continue
            ended = trigger.quiet_for.after(began)
            if ended > moment:
                continue
            if state.runs:
                self.resume_due_waits(state, ended)
            cause = f"inactivity of {', '.join(trigger.events)}"
            self.enter(state, workflow, ended, {}, cause)
            self.drain(state, ended, cause)
            # the event resets the spell next (handle_message), so it is not marked fired

    def _stored_spell(self, spell: tuple[str, int, str]) -> tuple[datetime, bool] | None:
        contact_id = spell[2]
        if contact_id not in self._spells_read:  # one query a trigger for the batch so far
            wanted = sorted(set(self.batch.contacts) - self._spells_read)
            for workflow, position, _ in self.catalog.quiet:
                for part in chunks(wanted):
                    for row in self.connection.execute(
                        select(
                            quiet_watch.c.contact_id, quiet_watch.c.last_at, quiet_watch.c.fired_at
                        ).where(
                            quiet_watch.c.workflow_id == workflow.id,
                            quiet_watch.c.trigger_index == position,
                            in_values(self.connection, quiet_watch.c.contact_id, part),
                        )
                    ):
                        self._stored_spells[(workflow.id, position, row.contact_id)] = (
                            ensure_utc(row.last_at),
                            row.fired_at is not None,
                        )
            self._spells_read.update(wanted)
        return self._stored_spells.get(spell)

    def handle_message(self, state: ContactState, message: Message, moment: datetime) -> None:
        self.seen(moment)
        if message.type == "track" and message.event in self._quiet_by_event:
            self._end_quiet_spells(state, message.event, moment)
        if state.runs:
            self.resume_due_waits(state, moment)
        cause = _describe_message(message)
        if state.new:
            state.new = False
            self.queue.append(Signal("contact_created"))
        if message.type == "identify":
            # grades are recomputed once, on all the traits: no passing grade in between
            before = dict(state.attributes)
            for key, value in message.traits.items():
                self.change_attribute(state, key, value, moment, cause, regrade=False)
            if state.attributes != before:
                self.scoring.regrade(self, state, moment, cause)
        elif message.type == "group":
            assert message.group_id is not None
            if state.account_id != message.group_id:
                self._audit(
                    state, moment, "account", "account", state.account_id, message.group_id, cause
                )
                for name, value in state.scores.items():
                    if state.account_id is not None:
                        self.accounts.member_changed(state.account_id, name, value, 0.0)
                    self.accounts.member_changed(message.group_id, name, 0.0, value)
                state.account_id = message.group_id
                state.dirty = True
                state.updated_at = moment
            self._merge_account(message.group_id, message.traits, moment)
        properties = message.properties
        if message.type == "track":
            assert message.event is not None
            resets = self.batch.quiet_resets
            for workflow, position in self._quiet_by_event.get(message.event, ()):
                spell = (workflow.id, position, state.id)
                known = resets.get(spell)
                if known is None or known < moment:  # the latest engagement counts
                    resets[spell] = moment
                engaged = self._engaged.get(spell)
                if engaged is None or engaged < moment:
                    self._engaged[spell] = moment
        facts: ContactFacts | None = None
        for run in list(state.runs) if state.runs else ():
            if run.state != "waiting":
                continue
            if facts is None:
                facts = ContactFacts(self.batch, state, moment, properties)
            workflow = self._workflow(run)
            if workflow.exit_when is not None and workflow.exit_when(facts):
                self.end(state, run, moment, "exited", "goal")
                continue
            wait = run.wait
            if (
                message.type == "track"
                and wait is not None
                and run.workflow_id not in self.catalog.paused  # held until resumed
                and wait.event_name == message.event
                and self._where_holds(workflow, run, facts)
            ):
                self._release(run)
                run.properties = dict(properties)
                self.resumed += 1
                self.advance(state, run, wait.next_node, moment, cause)
        if message.type == "track":
            self.queue.append(Signal("event", message.event or "", properties=properties))
        self.drain(state, moment, cause)

    def seen(self, moment: datetime) -> None:
        """Remember the latest moment of this transaction (account roll-ups are stamped
        with it)."""
        if self.last_moment is None or moment > self.last_moment:
            self.last_moment = moment

    def finish(self) -> None:
        """Write the batch, then the account roll-ups it caused; account crossings may
        enter member contacts into workflows, whose changes are written in turn."""
        for _ in range(MAX_ACCOUNT_ROUNDS):
            self.batch.flush()
            moment = self.last_moment
            if moment is None:
                break
            changes = self.accounts.apply(self.connection, moment)
            if not self._account_crossings(changes, moment):
                break
        self.batch.flush()

    def settle_accounts(self) -> None:
        """Roll up now the account scores that workflows watch, so an account crossing
        enters the members at the moment of the change that caused it, not at the end of
        the batch (in a simulation one batch may span days)."""
        if any(
            ("account_score_changed", name) in self.catalog.index
            for _, name in self.accounts.touched
        ):
            self.finish()

    def _account_crossings(self, changes: list[AccountChange], moment: datetime) -> bool:
        entered = False
        for change in changes:
            signal = Signal("account_score_changed", change.score, change.old, change.new)
            for workflow, trigger in self.catalog.index.get(signal.key, ()):
                members = list(
                    self.connection.scalars(
                        select(contacts.c.id)
                        .where(
                            contacts.c.account_id == change.account_id,
                            contacts.c.merged_into.is_(None),
                        )
                        .order_by(by_code_point(contacts.c.id))
                    )
                )
                if not members:
                    continue
                self.batch.load(dict.fromkeys(members, moment), moment)
                cause = f"account {change.account_id}: {trigger.label()}"
                first = self.batch.contacts[members[0]]
                if not trigger.matches(signal, ContactFacts(self.batch, first, moment, {})):
                    continue
                for member in members:
                    state = self.batch.contacts[member]
                    if self.enter(state, workflow, moment, {"account": change.account_id}, cause):
                        entered = True
                    self.drain(state, moment, cause)
        return entered

    def _where_holds(self, workflow: Workflow, run: RunState, facts: ContactFacts) -> bool:
        node = workflow.nodes.get(run.node or "")
        where = getattr(node, "where", None)
        return where is None or bool(where(facts))

    def _merge_account(self, account_id: str, traits: dict[str, Any], moment: datetime) -> None:
        row = self.batch.account_rows.get(account_id)
        if row is None:
            existing = self.connection.execute(
                select(accounts.c.traits, accounts.c.created_at).where(accounts.c.id == account_id)
            ).first()
            row = {
                "id": account_id,
                "traits": dict(existing.traits) if existing else {},
                "created_at": existing.created_at if existing else moment,
                "updated_at": moment,
            }
            self.batch.account_rows[account_id] = row
        row["traits"] = {**row["traits"], **traits}
        row["updated_at"] = moment

    # --- timed wakes -------------------------------------------------------------------

    def resume_due_waits(self, state: ContactState, until: datetime) -> None:
        """Resume this contact's waits due by ``until``, earliest first, each at its own
        due moment (so a simulation sees the same order as a live worker)."""
        if not state.runs:
            return
        paused = self.catalog.paused
        repeats: dict[str, tuple[datetime, int]] = {}
        """Resumes of a run at one moment: a wait that parks it again at the moment it
        came due (a timeout of no time on a loop) would be resumed for ever."""
        while True:
            # the earliest (due moment, entry) among due waits; the first of equals
            run: RunState | None = None
            wait: WaitState | None = None
            for candidate in state.runs:
                found = candidate.wait
                if (
                    found is not None
                    and found.due_at <= until
                    and candidate.state == "waiting"
                    and candidate.workflow_id not in paused
                    and (
                        wait is None
                        or run is None
                        or (found.due_at, candidate.entered_at) < (wait.due_at, run.entered_at)
                    )
                ):
                    run, wait = candidate, found
            if run is None or wait is None:
                return
            moment = wait.due_at
            seen_at, count = repeats.get(run.id, (moment, 0))
            count = count + 1 if seen_at == moment else 1
            repeats[run.id] = (moment, count)
            if count > MAX_NODES_PER_WAKE:
                self.end(
                    state,
                    run,
                    moment,
                    "failed",
                    "loop guard",
                    f"resumed more than {MAX_NODES_PER_WAKE} times at one moment "
                    f"(last: {run.node!r})",
                )
                continue
            timed_out = wait.event_name is not None
            self._release(run)
            self.resumed += 1
            cause = f"timeout waiting for {wait.event_name}" if timed_out else "wait over"
            self.advance(
                state, run, wait.timeout_node if timed_out else wait.next_node, moment, cause
            )
            self.drain(state, moment, cause)

    def _release(self, run: RunState) -> None:
        if run.wait is not None:
            self.batch.deleted_waits.append(run.id)
            self.released.add(run.id)
            run.wait = None
        run.state = "active"
        run.dirty = True

    # --- entering and running ----------------------------------------------------------

    def drain(self, state: ContactState, moment: datetime, cause: str) -> None:
        """Let queued signals enter workflows until none are left (or the guard trips)."""
        if not self.queue:
            return
        entries = 0
        queue, index = self.queue, self.catalog.index
        while queue:
            signal = queue.popleft()
            candidates: list[tuple[Workflow | None, TriggerKind | None]]
            if signal.kind == "start":
                candidates = [(self.catalog.latest.get(signal.name), None)]
            else:
                found = index.get(signal.key)
                if not found:  # most changes trigger nothing
                    continue
                candidates = list(found)
            facts = ContactFacts(self.batch, state, moment, signal.properties or {})
            entered: set[str] = set()
            for workflow, trigger in candidates:
                if workflow is None or workflow.id in entered:
                    continue
                if trigger is not None and not trigger.matches(signal, facts):
                    continue
                entries += 1
                if entries > MAX_ENTRIES_PER_WAKE:
                    self._audit(
                        state,
                        moment,
                        "guard",
                        workflow.id,
                        None,
                        f"more than {MAX_ENTRIES_PER_WAKE} workflow entries in one "
                        "wake; the rest were dropped (workflows keep triggering "
                        "each other)",
                        cause,
                    )
                    self.queue.clear()
                    break
                if self.enter(state, workflow, moment, signal.properties or {}, cause):
                    entered.add(workflow.id)
        self._reach_goals(state, moment)

    def _reach_goals(self, state: ContactState, moment: datetime) -> None:
        """End waiting runs whose ``exit_when`` now holds: a goal reached by another run's
        change ends the run at once, not when its wait comes due."""
        for run in state.runs:
            if run.state != "waiting":
                continue
            workflow = self._workflow(run)
            if workflow.exit_when is not None and workflow.exit_when(
                ContactFacts(self.batch, state, moment, run.properties)
            ):
                self.end(state, run, moment, "exited", "goal")

    def enter(
        self,
        state: ContactState,
        workflow: Workflow,
        moment: datetime,
        properties: Mapping[str, Any],
        cause: str,
    ) -> bool:
        if workflow.id in self.catalog.paused:
            return False
        if not workflow.reentry.allows(state.last_entries.get(workflow.id), moment):
            return False
        if workflow.exit_when is not None and workflow.exit_when(
            ContactFacts(self.batch, state, moment, properties)
        ):
            return False
        run = RunState(
            id=new_run_id(moment),
            workflow_id=workflow.id,
            version=workflow.version,
            state="active",
            node=workflow.start,
            steps=0,
            properties=dict(properties),
            entered_at=moment,
            new=True,
        )
        state.runs.append(run)
        state.last_entries[workflow.id] = moment
        self.advance(state, run, workflow.start, moment, cause)
        return True

    def advance(
        self, state: ContactState, run: RunState, node_id: str | None, moment: datetime, cause: str
    ) -> None:
        self.seen(moment)
        workflow = self._workflow(run)
        context = RunContext(self, state, run, workflow, moment, cause)
        exit_when, nodes = workflow.exit_when, workflow.nodes
        executed = 0
        while node_id is not None:
            if exit_when is not None and exit_when(context.facts):
                self.end(state, run, moment, "exited", "goal")
                return
            executed += 1
            if executed > MAX_NODES_PER_WAKE:
                self.end(
                    state,
                    run,
                    moment,
                    "failed",
                    "loop guard",
                    f"more than {MAX_NODES_PER_WAKE} nodes in one wake (last: {node_id!r})",
                )
                return
            node = nodes[node_id]
            run.node = node_id
            run.steps += 1
            context.node_id = node_id
            try:
                step: Step = node.execute(context)
            except ActionFailed as exc:
                self.end(
                    state,
                    run,
                    moment,
                    "failed",
                    "action failed",
                    f"node {node_id!r} ({node.type}): {exc}",
                )
                return
            except (ValueError, TypeError, ArithmeticError, KeyError) as exc:
                self.end(
                    state,
                    run,
                    moment,
                    "failed",
                    "action failed",
                    f"node {node_id!r} ({node.type}): bad data: {exc!r}",
                )
                return
            if isinstance(step, Continue):
                node_id = step.next
            elif isinstance(step, Sleep):
                run.wait = WaitState(run.id, step.until, None, step.next, None)
                run.state = "waiting"
                return
            elif isinstance(step, AwaitEvent):
                run.wait = WaitState(
                    run.id, step.timeout_at, step.event, step.next, step.on_timeout
                )
                run.state = "waiting"
                return
        self.end(state, run, moment, "completed", "completed")

    def end(
        self,
        state: ContactState,
        run: RunState,
        moment: datetime,
        final: str,
        reason: str,
        error: str | None = None,
    ) -> None:
        if run.wait is not None:
            self._release(run)
        run.state = final
        run.end_reason = reason
        run.error = error
        run.ended_at = moment
        run.dirty = True
        if final == "failed":
            runner = self.runner
            runner.failed_runs += 1
            if len(runner.failures) < FAILURES_KEPT:
                failure = RunFailure(
                    state.id, run.workflow_id, run.version, moment, error or reason
                )
                runner.failures.append(failure)

    def _workflow(self, run: RunState) -> Workflow:
        return self.catalog.version(self.connection, run.workflow_id, run.version)

    # --- changes, each audited and each a signal ---------------------------------------

    def change_score(
        self,
        state: ContactState,
        name: str,
        value: float,
        moment: datetime,
        cause: str,
        origin: tuple[str, int, str] | None = None,
    ) -> None:
        old = state.scores.get(name, 0.0)
        if value == old and name in state.scores:
            return
        state.scores[name] = value
        state.peaks[name] = max(state.peaks.get(name, value), value)
        state.dirty_scores.add(name)
        state.updated_at = moment
        self._audit(state, moment, "score", name, old, value, cause, origin)
        self.queue.append(Signal("score_changed", name, old, value))
        if value > old:
            state.increased[name] = moment
        self.scoring.score_changed(self, state, name, old, value, moment, cause)

    def change_attribute(
        self,
        state: ContactState,
        name: str,
        value: Any,
        moment: datetime,
        cause: str,
        origin: tuple[str, int, str] | None = None,
        regrade: bool = True,
    ) -> None:
        old = state.attributes.get(name)
        if old == value and name in state.attributes:
            return
        state.attributes[name] = value
        state.dirty = True
        state.updated_at = moment
        self._audit(state, moment, "attribute", name, old, value, cause, origin)
        self.queue.append(Signal("attribute_changed", name, old, value))
        if regrade:
            self.scoring.regrade(self, state, moment, cause)

    def change_grade(
        self,
        state: ContactState,
        name: str,
        letter: str,
        moment: datetime,
        cause: str,
        origin: tuple[str, int, str] | None = None,
    ) -> None:
        old = state.grades.get(name)
        state.grades[name] = letter
        state.dirty = True
        state.updated_at = moment
        self._audit(state, moment, "grade", name, old, letter, cause, origin)
        self.queue.append(Signal("grade_changed", name, old, letter))

    def change_list(
        self,
        state: ContactState,
        name: str,
        member: bool,
        moment: datetime,
        cause: str,
        origin: tuple[str, int, str] | None = None,
    ) -> None:
        if (name in state.lists) == member:
            return
        if member:
            state.lists.add(name)
            state.added_lists[name] = moment
            state.removed_lists.discard(name)
        else:
            state.lists.discard(name)
            state.added_lists.pop(name, None)
            state.removed_lists.add(name)
        state.updated_at = moment
        self._audit(state, moment, "list", name, not member, member, cause, origin)
        self.queue.append(Signal("list_added" if member else "list_removed", name))

    def _audit(
        self,
        state: ContactState,
        moment: datetime,
        subject: str,
        name: str,
        old: Any,
        new: Any,
        cause: str,
        origin: tuple[str, int, str] | None = None,
    ) -> None:
        if not self.keeps_audit:
            return
        workflow_id, version, node = origin or _NO_ORIGIN
        self.batch.audit_rows.append(  # the columns of engine.state.AUDIT_COLUMNS
            (
                state.id,
                moment,
                subject,
                name,
                old,
                new,
                workflow_id,
                version,
                node,
                cause if len(cause) <= 300 else cause[:300],
            )
        )


class RunContext:
    """The :class:`engine.kinds.NodeContext` a node sees while it runs."""

    def __init__(
        self,
        wake: Wake,
        state: ContactState,
        run: RunState,
        workflow: Workflow,
        moment: datetime,
        cause: str,
    ) -> None:
        self.wake = wake
        self.state = state
        self.run = run
        self.workflow = workflow
        self.moment = moment
        self.cause = cause
        self.node_id = ""
        self._facts: ContactFacts | None = None

    @property
    def now(self) -> datetime:
        return self.moment

    @property
    def facts(self) -> ContactFacts:
        """Made on first use: most runs step through nodes that never look."""
        facts = self._facts
        if facts is None:
            facts = self._facts = ContactFacts(
                self.wake.batch, self.state, self.moment, self.run.properties
            )
        return facts

    def _origin(self) -> tuple[str, int, str]:
        return (self.workflow.id, self.workflow.version, self.node_id)

    def score(self, name: str) -> float:
        return self.state.scores.get(name, 0.0)

    def set_score(self, name: str, value: float) -> None:
        self.wake.change_score(self.state, name, value, self.moment, self.cause, self._origin())

    def attribute(self, name: str) -> Any:
        return self.state.attributes.get(name)

    def set_attribute(self, name: str, value: Any) -> None:
        self.wake.change_attribute(self.state, name, value, self.moment, self.cause, self._origin())

    def add_to_list(self, name: str) -> None:
        self.wake.change_list(self.state, name, True, self.moment, self.cause, self._origin())

    def remove_from_list(self, name: str) -> None:
        self.wake.change_list(self.state, name, False, self.moment, self.cause, self._origin())

    def send(self, channel: str, payload: Mapping[str, Any]) -> None:
        self.wake.batch.outbox_rows.append(
            {
                "idempotency_key": f"{self.run.id}:{self.node_id}:{self.run.steps}",
                "run_id": self.run.id,
                "contact_id": self.state.id,
                "channel": channel,
                "payload": {
                    **payload,
                    "workflow": self.workflow.id,
                    "version": self.workflow.version,
                    "node": self.node_id,
                    "at": format_timestamp(self.moment),
                },
                "status": "pending",
                "attempts": 0,
                "created_at": self.moment,
                "next_attempt_at": self.moment,
                "last_error": None,
            }
        )

    def has_template(self, name: str) -> bool:
        return name in self.wake.runner.templates

    def render_email(self, template: str, subject: str | None) -> dict[str, Any]:
        from engine.messaging.render import render_email

        return render_email(self, template, subject)

    def render_text(self, text: str, what: str) -> str:
        from engine.messaging.render import render_text

        return render_text(self, text, what)

    def start_workflow(self, workflow_id: str) -> None:
        self.wake.queue.append(Signal("start", workflow_id, properties=self.run.properties))

    def split_point(self) -> float:
        # seeded by the split node too: one point for every split of a workflow made its
        # splits correlated (a 50/50 split nested in another sent everyone one way)
        seed = f"{self.state.id}\x00{self.workflow.id}\x00{self.node_id}"
        digest = hashlib.sha256(seed.encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64


class _Failures:
    """Steps that go on when one of them fails: each failure is logged, and the first
    is raised once all have run. A schedule whose fan-out always failed stopped every
    other schedule and all decay behind it."""

    def __init__(self) -> None:
        self.first: Exception | None = None

    @contextmanager
    def kept(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            log.exception("%s failed; the others go on", what)
            if self.first is None:
                self.first = exc

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first


def _claim_fire(
    connection: Connection,
    key: str,
    position: int,
    moment: datetime,
    owner: str,
    lease_until: datetime | None = None,
) -> bool:
    """Whether this worker took the fire (a schedule's or a decay tick's) at ``moment``;
    False when another one had. Told by RETURNING, not by the rowcount: SQLAlchemy 2.1
    reports -1 for an INSERT on psycopg, and -1 is true, so every worker took every fire.
    ``lease_until``: a fan-out that runs after this transaction, unfinished until then;
    without it the fire's work commits with the claim (decay)."""
    claim = (
        insert_for(connection, schedule_fires)
        .on_conflict_do_nothing()
        .returning(schedule_fires.c.fire_at)
    )
    row = connection.execute(
        claim,
        {
            "workflow_id": key,
            "trigger_index": position,
            "fire_at": moment,
            "taken_by": owner,
            "finished": lease_until is None,
            "lease_until": lease_until,
        },
    ).first()
    return row is not None


def _fire_is(workflow_id: str, position: int, moment: datetime) -> ColumnElement[bool]:
    return and_(
        schedule_fires.c.workflow_id == workflow_id,
        schedule_fires.c.trigger_index == position,
        schedule_fires.c.fire_at == moment,
    )


def _describe_message(message: Message) -> str:
    what = f"{message.type} {message.event}" if message.event else message.type
    return f"{what} ({message.message_id})" if message.message_id else what
