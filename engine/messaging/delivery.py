"""Delivering the outbox.

A row's life: ``pending`` (queued by a run, or re-queued by hand) → ``sending`` (claimed,
with a lease) → ``sent``; or ``failed`` (waiting for its retry) and after too many
failures ``dead``; or ``suppressed`` (a consent rule said no; never sent).

One batch:

1. **Claim** (one transaction): due rows are selected ``FOR UPDATE SKIP LOCKED`` on
   PostgreSQL (SQLite serialises writers), so workers never share a row. The consent rules
   (engine/messaging/consent.py) run here: a suppressed row is closed, a row in quiet
   hours or over its frequency cap gets a later ``next_attempt_at`` (not an attempt). The
   others become ``sending`` with a lease (owner, until) and an attempt row whose outcome
   is still unknown (``ok`` NULL).
2. **Send** each claimed row with its provider. A batch that has gone on for a while
   (5 s, or half the lease) renews the leases of the rows it has left, in one short
   transaction, and reads their contacts again: a row whose lease ran out and that another
   worker took over is left to it, and a contact who unsubscribed or entered quiet hours
   since the claim is not written to (the row is closed or put back without counting as
   an attempt).
3. **Record** (one transaction per row): the attempt's outcome and the row's new status.

A crash between 2 and 3 leaves the row ``sending``. When its lease runs out, the next
batch takes it over: the open attempt is closed as "outcome unknown" and the message is
sent again with the same idempotency key. Nothing is lost. Webhooks and SMS gateways get
the key as an ``Idempotency-Key`` header, so a receiver that honours it acts once. SMTP has
no such header: the email goes out again with the same Message-ID (at least once; the
window is one message per crashed worker, between the server's 250 and the record's
commit, and on PostgreSQL also the records of the last fraction of a second before a
crash of the database server itself, because records commit with ``synchronous_commit``
off). On SQLite the WAL is synced at each batch's last record, so a power cut does not
take back the records of a batch already done, however long the store goes between
checkpoints. Mail clients and many servers drop a second copy with the same Message-ID.

Failures are retried after ``delivery.backoff_seconds * 2**(attempt-1)`` (capped at
``delivery.backoff_max_seconds``), scaled by a jitter factor in [0.5, 1) derived from the
row id and attempt number (deterministic: tests and simulations can predict it). After
``delivery.max_attempts`` failures since the last hand re-queue, or one permanent failure
(a refused recipient, a 4xx answer), the row is ``dead``.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, bindparam, or_, select, text, update

from engine.clock import Clock
from engine.messaging.consent import (
    POSTPONE,
    SEND,
    SUPPRESS,
    Verdict,
    address,
    check,
    suppressed,
    suppression_key,
)
from engine.messaging.providers import DeliveryError, Outgoing, Providers
from engine.messaging.render import MARKETING
from engine.messaging.settings import MessagingSettings
from engine.store.db import writer
from engine.store.sql import chunks, is_postgres
from engine.store.tables import contacts, delivery_attempts, outbox

log = logging.getLogger("leadflow.delivery")

STATUSES = ("pending", "sending", "sent", "failed", "dead", "suppressed")
RETRYABLE = ("pending", "failed")
UNKNOWN_OUTCOME = (
    "outcome unknown: the worker stopped between sending and recording; "
    "sent again with the same idempotency key"
)


@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    suppressed: int = 0
    postponed: int = 0
    recovered: int = 0

    def add(self, other: DeliveryReport) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def __str__(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in asdict(self).items() if k != "claimed")


UNCONFIGURED_WAIT = timedelta(minutes=10)
"""How often an email or SMS waiting for its server's settings is looked at again."""


RECHECK_SECONDS = 5.0
"""How long a batch goes before its remaining rows' leases are renewed and their contacts
read again (half the lease, if that is shorter)."""


def unconfigured(channel: str, settings: MessagingSettings) -> str | None:
    """Why a channel cannot send at all yet, or None. Such a row waits: it used to spend
    its attempts and be dead within the hour, before anyone had set the server up."""
    if channel == "email" and not settings.smtp_host:
        return "waiting: email is not configured (set LEADFLOW_SMTP_HOST or smtp.host)"
    if channel == "sms" and not settings.sms_url:
        return "waiting: SMS is not configured (set LEADFLOW_SMS_URL or sms.url)"
    return None


def backoff(outbox_id: int, attempt: int, settings: MessagingSettings) -> timedelta:
    """Exponential backoff with a jitter seeded by the row and attempt (deterministic)."""
    delay = min(settings.backoff_max, settings.backoff_base * 2 ** max(attempt - 1, 0))
    digest = hashlib.sha256(f"{outbox_id}:{attempt}".encode()).digest()
    jitter = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=delay * (0.5 + 0.5 * jitter))


def category(payload: Mapping[str, Any], channel: str) -> str:
    rendered = payload.get("rendered")
    if channel == "email" and isinstance(rendered, Mapping):
        return str(rendered.get("category", MARKETING))
    return MARKETING


AfterSend = Callable[[Outgoing, "DeliveryError | None"], None]


class Deliverer:
    """Delivers due outbox rows. One per worker thread; any number share a database."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        owner: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.engine = engine
        self.writer = writer(engine)
        self.clock = clock
        self.owner = owner or f"delivery-{uuid.uuid4().hex[:12]}"
        self.environ = environ
        self.after_send: AfterSend | None = None
        """Called between a send and its record (tests simulate a crash here)."""

    # --- the public face ------------------------------------------------------------------

    def deliver(self, max_batches: int | None = None) -> DeliveryReport:
        """Batches until nothing is due (or ``max_batches`` were done)."""
        total = DeliveryReport()
        done = 0
        while max_batches is None or done < max_batches:
            report = self.deliver_batch()
            total.add(report)
            done += 1
            if not report.claimed:
                break
        return total

    def deliver_batch(self) -> DeliveryReport:
        report = DeliveryReport()
        settings, claimed = self._claim(report)
        if not claimed:
            return report
        providers = Providers(settings, self.clock)
        # one connection for the batch's records (a checkout per record costs a ping)
        records = self.writer.connect()
        checked = self.clock.now()  # the claim read the rows and their contacts
        every = timedelta(seconds=min(RECHECK_SECONDS, settings.lease_seconds / 2))
        kept = {item.id for item in claimed}
        try:
            for position, item in enumerate(claimed, 1):
                if self.clock.now() - checked >= every:  # a slow batch: look again
                    kept = self._recheck(records, claimed[position - 1 :], settings, report)
                    checked = self.clock.now()
                if item.id not in kept:
                    continue
                error: DeliveryError | None = None
                response = ""
                try:
                    response = providers.send(item)
                except DeliveryError as exc:
                    error = exc
                except Exception as exc:  # a bug or an odd library error: retried, logged
                    log.exception("delivery of outbox row %d failed", item.id)
                    error = DeliveryError(f"{type(exc).__name__}: {exc}")
                if self.after_send is not None:
                    self.after_send(item, error)
                last = position == len(claimed)
                with _synced(records) if last else nullcontext():
                    self._record(records, item, response, error, settings, report)
        finally:
            providers.close()
            records.close()
        return report

    # --- claiming ---------------------------------------------------------------------------

    def _claim(self, report: DeliveryReport) -> tuple[MessagingSettings, list[Outgoing]]:
        now = self.clock.now()
        with self.writer.begin() as connection:
            settings = MessagingSettings.load(connection, self.environ)
            due = or_(
                and_(
                    outbox.c.status.in_(RETRYABLE),
                    or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
                ),
                and_(outbox.c.status == "sending", outbox.c.lease_until <= now),
            )
            query = (
                select(outbox)
                .where(due)
                .order_by(outbox.c.next_attempt_at, outbox.c.id)
                .limit(max(settings.batch, 1))
            )
            if is_postgres(connection):
                query = query.with_for_update(skip_locked=True)
            rows = list(connection.execute(query))
            if not rows:
                return settings, []
            report.claimed = len(rows)
            people = [r for r in rows if r.channel in ("email", "sms")]
            _lock_capped(connection, people, settings)
            attributes = _contacts(connection, {r.contact_id for r in people})
            blocked = _blocked(connection, people, attributes)
            recent = _recent(connection, people, settings, now)
            lease_until = now + timedelta(seconds=settings.lease_seconds)
            take: list[Outgoing] = []
            closes: list[dict[str, Any]] = []
            postpones: list[dict[str, Any]] = []
            unknown: list[dict[str, Any]] = []
            for row in rows:
                if row.status == "sending":
                    report.recovered += 1
                    unknown.append({"b_outbox": row.id, "b_attempt": row.attempts})
                kind = category(row.payload, row.channel)
                found = attributes.get(row.contact_id)
                history = recent[(row.contact_id, row.channel)]
                verdict = check(row.channel, kind, row.contact_id, found, settings, now, history)
                if verdict.action != SUPPRESS and row.id in blocked:
                    verdict = blocked[row.id]
                missing = unconfigured(row.channel, settings)
                if verdict.action == SEND and missing is not None:
                    # waits for its server's settings, spending no attempt
                    verdict = Verdict(POSTPONE, missing, now + UNCONFIGURED_WAIT)
                if verdict.action == SUPPRESS:
                    report.suppressed += 1
                    closes.append({"b_id": row.id, "note": verdict.reason})
                elif verdict.action == POSTPONE:
                    report.postponed += 1
                    postpones.append(
                        {"b_id": row.id, "until": verdict.until, "note": verdict.reason}
                    )
                else:
                    assert verdict.action == SEND
                    to = address(row.channel, row.contact_id, found or {})
                    if row.channel == "webhook":
                        to = str(row.payload.get("url", ""))
                    if kind == MARKETING and row.channel in settings.frequency_caps:
                        history.append(now)  # in flight: counts against the cap at once
                    take.append(
                        Outgoing(
                            row.id,
                            row.idempotency_key,
                            row.channel,
                            row.contact_id,
                            to or "",
                            row.payload,
                            row.attempts + 1,
                            row.retry_from or 0,
                        )
                    )
            if unknown:
                connection.execute(
                    update(delivery_attempts)
                    .where(
                        delivery_attempts.c.outbox_id == bindparam("b_outbox"),
                        delivery_attempts.c.attempt == bindparam("b_attempt"),
                        delivery_attempts.c.ok.is_(None),
                    )
                    .values(ok=False, error=UNKNOWN_OUTCOME),
                    unknown,
                )
            if closes:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.id == bindparam("b_id"))
                    .values(
                        status="suppressed",
                        note=bindparam("note"),
                        lease_owner=None,
                        lease_until=None,
                        next_attempt_at=None,
                    ),
                    closes,
                )
            if postpones:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.id == bindparam("b_id"))
                    .values(
                        status="pending",
                        next_attempt_at=bindparam("until"),
                        note=bindparam("note"),
                        lease_owner=None,
                        lease_until=None,
                    ),
                    postpones,
                )
            if take:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.id == bindparam("b_id"))
                    .values(
                        status="sending",
                        attempts=bindparam("attempt"),
                        lease_owner=self.owner,
                        lease_until=lease_until,
                        note=None,
                    ),
                    [{"b_id": item.id, "attempt": item.attempt} for item in take],
                )
                connection.execute(
                    delivery_attempts.insert(),
                    [
                        {"outbox_id": item.id, "attempt": item.attempt, "at": now, "ok": None}
                        for item in take
                    ],
                )
        return settings, take

    # --- a batch that goes on for a while ----------------------------------------------------

    def _recheck(
        self,
        records: Connection,
        items: list[Outgoing],
        settings: MessagingSettings,
        report: DeliveryReport,
    ) -> set[int]:
        """The ids of ``items`` (the rest of a batch) still to send, with their leases
        renewed; the others are left or put back. Done when the batch has gone on for a
        while (:data:`RECHECK_SECONDS`, or half the lease if shorter), in one transaction.

        A batch can take longer than its lease (a slow server, a hundred messages a few
        seconds each): without the renewal another worker took the rest of the batch over
        while this one was still sending it, and both sent. And a contact who unsubscribed,
        or whose quiet hours began, since the claim is not written to: the row is closed or
        put back without counting as an attempt. A row already taken over is left to the
        worker that has it."""
        now = self.clock.now()
        by_id = {item.id: item for item in items}
        with records.begin():
            renewed: list[Any] = []
            for part in chunks(sorted(by_id)):  # a batch may hold more ids than binds
                renewed += records.execute(
                    update(outbox)
                    .where(
                        outbox.c.id.in_(part),
                        outbox.c.status == "sending",
                        outbox.c.lease_owner == self.owner,
                    )
                    .values(lease_until=now + timedelta(seconds=settings.lease_seconds))
                    .returning(outbox.c.id, outbox.c.attempts)
                ).all()
            ours = {row_id for row_id, attempts in renewed if by_id[row_id].attempt == attempts}
            lost = sorted(set(by_id) - ours)
            if lost:
                log.warning(
                    "outbox rows %s: not sent, their lease ran out before their turn and "
                    "another worker (or a hand re-queue) has them now",
                    lost,
                )
            people = [by_id[i] for i in sorted(ours) if by_id[i].channel in ("email", "sms")]
            found = _contacts(records, {item.contact_id for item in people})
            emails = [item.to for item in people if item.channel == "email" and item.to]
            gone = suppressed(records, emails) if emails else {}
            back: list[tuple[Outgoing, Verdict]] = []
            for item in people:
                kind = category(item.payload, item.channel)
                # frequency caps were counted at the claim, with this row in flight
                attributes = found.get(item.contact_id)
                verdict = check(item.channel, kind, item.contact_id, attributes, settings, now)
                where = suppression_key(item.to) if item.channel == "email" else ""
                if verdict.action == SEND and where in gone and kind == MARKETING:
                    verdict = _unsubscribed(where, gone[where])
                if verdict.action != SEND:
                    back.append((item, verdict))
            for item, verdict in back:
                ours.discard(item.id)
                records.execute(
                    delivery_attempts.delete().where(
                        delivery_attempts.c.outbox_id == item.id,
                        delivery_attempts.c.attempt == item.attempt,
                    )
                )
                suppressed_now = verdict.action == SUPPRESS
                records.execute(
                    update(outbox)
                    .where(outbox.c.id == item.id)
                    .values(
                        status="suppressed" if suppressed_now else "pending",
                        attempts=item.attempt - 1,
                        next_attempt_at=None if suppressed_now else verdict.until,
                        note=verdict.reason,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
                if suppressed_now:
                    report.suppressed += 1
                else:
                    report.postponed += 1
        return ours

    # --- recording --------------------------------------------------------------------------

    def _record(
        self,
        records: Connection,
        item: Outgoing,
        response: str,
        error: DeliveryError | None,
        settings: MessagingSettings,
        report: DeliveryReport,
    ) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if error is None:
            values.update(status="sent", sent_at=now, last_error=None, next_attempt_at=None)
            report.sent += 1
        else:
            spent = item.attempt - item.retry_from
            values["last_error"] = str(error)[:2000]
            if error.permanent or spent >= settings.max_attempts:
                values.update(status="dead", next_attempt_at=None)
                report.dead += 1
            else:
                retry_at = now + backoff(item.id, item.attempt, settings)
                values.update(status="failed", next_attempt_at=retry_at)
                report.failed += 1
        with records.begin():
            connection = records
            if is_postgres(connection):
                # The record need not wait for the WAL flush (~10 ms on a busy disk): a
                # worker crash cannot lose it, and a database crash in the next fraction
                # of a second only means the row is sent again, as after any crash here.
                connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
            # the outbox row first, as a claim locks them: the other order deadlocked
            # with a takeover's claim on PostgreSQL
            moved = connection.execute(
                update(outbox)
                .where(
                    outbox.c.id == item.id,
                    outbox.c.status == "sending",
                    outbox.c.attempts == item.attempt,
                )
                .values(**values)
            ).rowcount
            connection.execute(
                update(delivery_attempts)
                .where(
                    delivery_attempts.c.outbox_id == item.id,
                    delivery_attempts.c.attempt == item.attempt,
                    # not over another worker's "outcome unknown" after a takeover
                    delivery_attempts.c.ok.is_(None),
                )
                .values(
                    ok=error is None,
                    error=None if error is None else str(error)[:2000],
                    response=(response if error is None else error.response or None),
                )
            )
        if not moved:
            log.warning(
                "outbox row %d: the lease ran out before the outcome was recorded "
                "(another worker took it over)",
                item.id,
            )


_LOCK_CONTACTS = text(
    "SELECT pg_advisory_xact_lock(hashtextextended('leadflow-outbox-cap:' || s.k, 0)) "
    "FROM (SELECT u.k FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS u(k, n) "
    "ORDER BY u.n OFFSET 0) AS s"
)


def _lock_capped(connection: Connection, rows: list[Row[Any]], settings: MessagingSettings) -> None:
    """PostgreSQL: one claim at a time per contact with capped messages in this batch,
    until this transaction ends. SKIP LOCKED hands two workers two rows of one contact,
    and neither saw the other's uncommitted ``sending`` row when it counted the cap: with
    six workers, most contacts got more than their one email a day. The second worker now
    waits here, and then counts the first one's row. Locks are taken in id order, so two
    claims never wait on each other. SQLite serialises writers already."""
    if not is_postgres(connection):
        return
    keys = sorted({r.contact_id for r in rows if r.channel in settings.frequency_caps})
    if keys:
        connection.execute(_LOCK_CONTACTS, {"keys": keys})


def _blocked(
    connection: Connection, rows: list[Row[Any]], attributes: Mapping[str, dict[str, Any]]
) -> dict[int, Verdict]:
    """Email rows whose address was unsubscribed, through whichever contact: a second
    contact with the same address (never merged) was written to after the first one
    unsubscribed."""
    to: dict[int, str] = {}
    for row in rows:
        # marketing only: the double opt-in confirmation (transactional) is how an
        # unsubscribed address asks to be written to again; blocking it kept the
        # address blocked for ever
        if row.channel == "email" and category(row.payload, "email") == MARKETING:
            found = address("email", row.contact_id, attributes.get(row.contact_id) or {})
            if found is not None:
                to[row.id] = suppression_key(found)
    gone = suppressed(connection, to.values()) if to else {}
    return {
        row_id: _unsubscribed(where, gone[where]) for row_id, where in to.items() if where in gone
    }


def _unsubscribed(where: str, by: str) -> Verdict:
    return Verdict(SUPPRESS, f"unsubscribed ({where} unsubscribed as contact {by})")


def _contacts(connection: Connection, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Attributes by contact id; a merged contact answers with the one it was merged into."""
    found: dict[str, dict[str, Any]] = {}
    redirect: dict[str, str] = {}
    wanted = sorted(ids)
    for _ in range(3):  # merges chain rarely; three hops is plenty
        if not wanted:
            break
        later: list[str] = []
        for part in chunks(wanted):
            query = select(contacts.c.id, contacts.c.attributes, contacts.c.merged_into).where(
                contacts.c.id.in_(part)
            )
            for row in connection.execute(query):
                if row.merged_into is not None:
                    redirect[row.id] = row.merged_into
                    later.append(row.merged_into)
                else:
                    found[row.id] = dict(row.attributes)
        wanted = sorted(set(later) - set(found))
    for source, target in redirect.items():
        while target in redirect and target != redirect[target]:
            target = redirect[target]
        if target in found:
            found[source] = found[target]
    return found


def _recent(
    connection: Connection, rows: list[Row[Any]], settings: MessagingSettings, now: datetime
) -> dict[tuple[str, str], list[datetime]]:
    """When each contact's marketing messages went out within the cap windows (in-flight
    ones count as now)."""
    recent: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    by_channel: dict[str, set[str]] = defaultdict(set)
    claimed = {row.id for row in rows}
    for row in rows:
        if row.channel in settings.frequency_caps:
            by_channel[row.channel].add(row.contact_id)
    for channel, ids in by_channel.items():
        since = settings.frequency_caps[channel].per.before(now)
        for part in chunks(sorted(ids)):
            query = select(
                outbox.c.id,
                outbox.c.contact_id,
                outbox.c.status,
                outbox.c.sent_at,
                outbox.c.payload,
            ).where(
                outbox.c.contact_id.in_(part),
                outbox.c.channel == channel,
                or_(
                    and_(outbox.c.status == "sent", outbox.c.sent_at > since),
                    outbox.c.status == "sending",
                ),
            )
            for item in connection.execute(query):
                if item.id in claimed or category(item.payload, channel) != MARKETING:
                    continue
                moment = item.sent_at if item.status == "sent" else now
                recent[(item.contact_id, channel)].append(moment)
    return recent


def requeue(connection: Connection, outbox_id: int, now: datetime) -> bool:
    """Put a row back in line now, with a fresh dead-letter budget; False if no such row
    or the row is being sent right now."""
    row = connection.execute(
        select(outbox.c.status, outbox.c.attempts).where(outbox.c.id == outbox_id)
    ).first()
    if row is None or row.status == "sending":
        return False
    moved = connection.execute(
        update(outbox)
        # as read: a worker that claimed the row since (PostgreSQL does not lock on
        # read) keeps it, instead of its row going back in line to be sent twice
        .where(
            outbox.c.id == outbox_id,
            outbox.c.status == row.status,
            outbox.c.attempts == row.attempts,
        )
        .values(
            status="pending",
            next_attempt_at=now,
            retry_from=row.attempts,
            note="re-queued by hand",
            lease_owner=None,
            lease_until=None,
        )
    ).rowcount
    return bool(moved)


def requeue_all(connection: Connection, status: str, now: datetime) -> int:
    """:func:`requeue` for every row in ``status`` (failed, dead or suppressed), in one
    statement; how many."""
    if status not in ("failed", "dead", "suppressed"):
        raise ValueError(f"only failed, dead or suppressed rows are re-queued, not {status}")
    return int(
        connection.execute(
            update(outbox)
            .where(outbox.c.status == status)
            .values(
                status="pending",
                next_attempt_at=now,
                retry_from=outbox.c.attempts,
                note="re-queued by hand",
                lease_owner=None,
                lease_until=None,
            )
        ).rowcount
        or 0
    )


@contextmanager
def _synced(connection: Connection) -> Iterator[None]:
    """SQLite: the next commit on ``connection`` fsyncs the WAL (``synchronous=FULL``).

    With ``synchronous=NORMAL`` the WAL reaches the disk only at a checkpoint, and the
    worker checkpoints every 32,768 pages (``WORKER_CHECKPOINT_PAGES``): a power cut could
    take back the records of every message sent since, and each would be sent again. The
    log is written in order, so syncing it at a batch's last record makes the whole
    batch's records durable, for one fsync a batch instead of one a message. The
    connection's own setting is put back after."""
    if is_postgres(connection):
        yield
        return
    # on the driver's connection, outside SQLAlchemy's transaction (which a statement on
    # ``connection`` would begin); the driver is in autocommit mode (engine.store.db)
    raw: Any = connection.connection.driver_connection
    (before,) = raw.execute("PRAGMA synchronous").fetchone()
    raw.execute("PRAGMA synchronous=FULL")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA synchronous={int(before)}")
