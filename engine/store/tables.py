"""The schema. Alembic migrations in engine/migrations are generated from this metadata."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    literal_column,
    text,
    true,
)
from sqlalchemy.engine import Dialect

from engine.store.moments import moment_or_none, stored_moment, stored_or_none

metadata = MetaData()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in Python on every backend. PostgreSQL keeps ``timestamptz``; SQLite, which
    has no time type, keeps whole microseconds since the epoch as an integer
    (:mod:`engine.store.moments`), in a column still declared DATETIME."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return stored_or_none
        return super().bind_processor(dialect)

    def literal_processor(self, dialect: Dialect) -> Callable[[Any], str] | None:
        if dialect.name == "sqlite":
            return _sqlite_literal
        return super().literal_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: Any) -> Callable[[Any], Any] | None:
        if dialect.name == "sqlite":
            return moment_or_none
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_literal(value: datetime | None) -> str:
    """A moment written into SQL text (``literal_binds``), as the bind step would store it."""
    return "NULL" if value is None else str(stored_moment(value))


TS = UTCDateTime()

contacts = Table(
    "contacts",
    metadata,
    Column("id", String(320), primary_key=True),
    Column("attributes", JSON, nullable=False),
    Column("grades", JSON, nullable=False),
    Column("account_id", String(320), index=True),
    Column("merged_into", String(320)),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(320), primary_key=True),
    Column("traits", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

scores = Table(
    "scores",
    metadata,
    Column("contact_id", String(320), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("value", Float, nullable=False),
    Column("peak", Float, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("increased_at", TS),
    Column("decayed_at", TS),
    Column("decayed_from", Float),
    # No index on value (revision 0002 dropped ix_scores_name_value): a decay tick rewrites
    # the value of nearly every row, and no query needs scores in value order.
)

account_scores = Table(
    "account_scores",
    metadata,
    Column("account_id", String(320), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("value", Float, nullable=False),
    Column("updated_at", TS, nullable=False),
)

list_members = Table(
    "list_members",
    metadata,
    Column("list_name", String(200), primary_key=True),
    Column("contact_id", String(320), primary_key=True),
    Column("added_at", TS, nullable=False),
    Index("ix_list_members_contact", "contact_id"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(200), unique=True),
    Column("contact_id", String(320), nullable=False),
    Column("type", String(20), nullable=False),
    Column("name", String(200)),
    Column("properties", JSON, nullable=False),
    Column("timestamp", TS, nullable=False),
    Column("received_at", TS, nullable=False),
    Index("ix_events_contact_ts_name", "contact_id", "timestamp", "name"),
)

workflow_versions = Table(
    "workflow_versions",
    metadata,
    Column("workflow_id", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", String(300), nullable=False),
    Column("notes", Text, nullable=False),
    Column("document", JSON, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("deployed_at", TS, nullable=False),
)

workflow_status = Table(
    "workflow_status",
    metadata,
    Column("workflow_id", String(200), primary_key=True),
    Column("paused", Boolean, nullable=False),
    Column("updated_at", TS, nullable=False),
)

reviews = Table(
    "reviews",
    metadata,
    # model reviews (domain.md 001: 60 days after version 1, then every 90 days after the
    # last review), recorded by ``leadflow review done ID --note``
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", String(200), nullable=False),
    Column("reviewed_at", TS, nullable=False),
    Column("note", Text, nullable=False),
    Index("ix_reviews_workflow_at", "workflow_id", "reviewed_at"),
)

_RUN_IN_FLIGHT_SQL = text("ended_at IS NULL")
"""The partial runs indexes' condition; :data:`RUN_IN_FLIGHT` says it in queries."""

_RUN_FAILED_SQL = text("state = 'failed'")
"""``ix_runs_workflow_failed``'s condition; :data:`RUN_FAILED` says it in queries."""

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("contact_id", String(320), nullable=False),
    Column("workflow_id", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("node", String(200)),
    Column("steps", Integer, nullable=False),
    Column("properties", JSON, nullable=False),
    Column("entered_at", TS, nullable=False),
    Column("ended_at", TS),
    Column("end_reason", String(40)),
    Column("error", Text),
    # The order runs were made in, on PostgreSQL (a sequence fills it, revision 0007):
    # a contact's runs in flight load in that order. SQLite's rowid is that order there,
    # and this stays NULL.
    Column("seq", BigInteger),
    # Runs in flight (active or waiting) are the only ones looked up by state, and they
    # are few beside the finished ones: the partial indexes hold just them, so a run that
    # finishes leaves them instead of moving inside them, and a run that ends in the wake
    # that started it never enters them (revision 0004).
    Index(
        "ix_runs_contact_live",
        "contact_id",
        "state",
        sqlite_where=_RUN_IN_FLIGHT_SQL,
        postgresql_where=_RUN_IN_FLIGHT_SQL,
    ),
    Index(
        "ix_runs_workflow_live",
        "workflow_id",
        "state",
        sqlite_where=_RUN_IN_FLIGHT_SQL,
        postgresql_where=_RUN_IN_FLIGHT_SQL,
    ),
    # re-entry rules read each contact's last entry per workflow from this index alone
    Index("ix_runs_contact_entries", "contact_id", "workflow_id", "entered_at"),
    # `leadflow workflows` counts failed runs, few beside the finished ones (revision 0010)
    Index(
        "ix_runs_workflow_failed",
        "workflow_id",
        sqlite_where=_RUN_FAILED_SQL,
        postgresql_where=_RUN_FAILED_SQL,
    ),
)

RUN_IN_FLIGHT = runs.c.ended_at.is_(None)
RUN_FAILED = runs.c.state == literal_column("'failed'")
"""Failed runs, with the state as a literal: a bound parameter would not match the
partial index's condition, and SQLite would read the whole table."""
"""Active or waiting: what the partial ``ix_runs_*_live`` indexes hold. Queries for runs in
flight must say it in these words, so SQLite and PostgreSQL can use those indexes."""

waits = Table(
    "waits",
    metadata,
    Column("run_id", String(32), primary_key=True),
    Column("contact_id", String(320), nullable=False),
    Column("due_at", TS, nullable=False),
    Column("event_name", String(200)),
    Column("next_node", String(200)),
    Column("timeout_node", String(200)),
    Column("lease_owner", String(100)),
    Column("lease_until", TS),
    Index("ix_waits_due", "due_at"),
    # no index by contact: the loader reads waits by run id (revision 0006)
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("contact_id", String(320), nullable=False),
    Column("at", TS, nullable=False),
    Column("subject", String(20), nullable=False),
    Column("name", String(200), nullable=False),
    Column("old", JSON),
    Column("new", JSON),
    Column("workflow_id", String(200)),
    Column("version", Integer),
    Column("node", String(200)),
    Column("cause", String(300)),
    Index("ix_audit_contact_at", "contact_id", "at"),
)

rejected = Table(
    "rejected",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(500), nullable=False),
    Column("line", Integer),
    Column("raw", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", TS, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("idempotency_key", String(300), nullable=False, unique=True),
    Column("run_id", String(32)),
    Column("contact_id", String(320), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("next_attempt_at", TS),
    Column("last_error", Text),
    # delivery (engine/messaging): who holds the row while it is being sent, and until
    # when; when it was sent; why it waits or was suppressed; attempts made before the
    # last hand re-queue (the dead-letter limit counts from there)
    Column("lease_owner", String(100)),
    Column("lease_until", TS),
    Column("sent_at", TS),
    Column("note", Text),
    Column("retry_from", Integer),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
    Index("ix_outbox_contact_channel_sent", "contact_id", "channel", "sent_at"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("outbox_id", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", TS, nullable=False),
    Column("ok", Boolean),
    Column("error", Text),
    Column("response", Text),
    UniqueConstraint("outbox_id", "attempt", name="uq_delivery_attempts_outbox_attempt"),
)

suppressed_addresses = Table(
    "suppressed_addresses",
    metadata,
    # an address unsubscribed through a link, whichever contact holds it (revision 0009)
    Column("channel", String(20), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("contact_id", String(320), nullable=False),
    Column("at", TS, nullable=False),
    Column("reason", String(300), nullable=False),
)

consents = Table(
    "consents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("contact_id", String(320), nullable=False),
    Column("action", String(20), nullable=False),
    Column("at", TS, nullable=False),
    Column("source", String(300), nullable=False),
    Column("ip", String(64)),
    Column("user_agent", Text),
    Column("ref", String(100), nullable=False),
    Column("detail", JSON, nullable=False),
    Index("ix_consents_contact_at", "contact_id", "at"),
    UniqueConstraint("action", "ref", name="uq_consents_action_ref"),
)

quiet_watch = Table(
    "quiet_watch",
    metadata,
    Column("workflow_id", String(200), primary_key=True),
    Column("trigger_index", Integer, primary_key=True),
    Column("contact_id", String(320), primary_key=True),
    Column("last_at", TS, nullable=False),
    Column("fired_at", TS),
    Index("ix_quiet_watch_due", "workflow_id", "trigger_index", "fired_at", "last_at"),
)

schedule_fires = Table(
    "schedule_fires",
    metadata,
    Column("workflow_id", String(200), primary_key=True),
    Column("trigger_index", Integer, primary_key=True),
    Column("fire_at", TS, primary_key=True),
    Column("taken_by", String(100), nullable=False),
    # a schedule's fan-out, chunk by chunk (revision 0008): the last contact id entered,
    # whether all were, and how long the worker holding it may take before a takeover
    Column("done_through", String(320)),
    Column("finished", Boolean, nullable=False, server_default=true()),
    Column("lease_until", TS),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", JSON, nullable=False),
)

# --- the HTTP service (engine/service) ---------------------------------------------------

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(20), nullable=False),
    # the key's public part, to find the row; the secret part is kept only as
    # sha256(salt + secret)
    Column("prefix", String(32), nullable=False, unique=True),
    Column("salt", String(64), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_used_at", TS),
    Column("revoked_at", TS),
)

inbox = Table(
    "inbox",
    metadata,
    # accepted HTTP messages (Segment and Brevo events), durable before the 200 and
    # applied by Runner.ingest shortly after; a row is deleted once applied
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", TS, nullable=False),
    Column("source", String(200), nullable=False),
    Column("count", Integer, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("claimed_by", String(100)),
    Column("claimed_until", TS),
    Column("last_error", Text),
)

contact_numbers = Table(
    "contact_numbers",
    metadata,
    # the numeric id the Brevo API shows for a contact, allocated on first need
    Column("number", Integer, primary_key=True, autoincrement=True),
    Column("contact_id", String(320), nullable=False, unique=True),
    Column("ext_id", String(320), unique=True),
    Column("created_at", TS, nullable=False),
)

lists = Table(
    "lists",
    metadata,
    # numeric ids for list names (the Brevo API names lists by number)
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("folder_id", Integer, nullable=False),
    Column("created_at", TS, nullable=False),
)
