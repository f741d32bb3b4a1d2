"""Opening a store: the engine, SQLite tuning, and migrations on first use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from importlib.resources import as_file, files
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.pool import StaticPool

from engine import __version__
from engine.errors import NotALeadflowStore, StoreFromNewerRelease

DEFAULT_URL = "sqlite:///leadflow.db"
THROWAWAY_PRAGMAS = (
    "PRAGMA journal_mode=TRUNCATE",
    "PRAGMA synchronous=OFF",
    "PRAGMA cache_size=-16000",
)
"""A store nobody keeps (simulate, backtest): a rollback journal instead of a WAL, so
every page is written once, to the file, rather than to the log and again at each
checkpoint; no fsync; and a 16 MB page cache per connection instead of 2 MB. Rollbacks
work as usual; a crash leaves a file nobody reads again. The journal is a file, not
memory (``journal_mode=MEMORY``): it holds the original of every page a transaction
touches, which for a batch of 10,000 messages late in a 1,000,000-event simulation is
about 200 MB of the process's RSS (peak 948 MiB in memory; 300,000 events: 414 MiB in
memory, 320 MiB as a file, for 8 % more time; a WAL: 321 MiB, 16 % more time).
Simulate and backtest use one connection at a time, which a rollback journal needs (a
reader's lock would hold up the writer's commit)."""


PAGE_SIZE = 16384
"""Bytes per page of a new SQLite store (SQLite's default is 4096; an existing store
keeps its size, as SQLite ignores the setting once a file has tables). Fewer, fuller
pages mean shallower trees and fewer pages to write per change: decay ticks, ingests and
simulations run 5-30 % faster. Resuming waits at random places in big tables runs 12 %
slower, as every page it touches is logged whole. Measured side by side in
bench/README.md ("Third round")."""


DURABLE_CACHE_KIB = 32768
"""Page cache per connection of a kept store, in KiB (SQLite's default is 2,000 KiB, 125
pages of :data:`PAGE_SIZE`). A worker's lease of due waits, an ingest batch or a decay
tick touch pages at random across tables of hundreds of MB; with 125 pages cached each
change reads its pages again from the file. 32 MiB: deleting 200,000 due waits out of
1,000,000 took a third less time (bench/README.md, "Seventh round"). SQLite takes pages
as it needs them, so a small store costs no more than before; a connection that has read
a big one keeps up to 32 MiB while it is open (the worker's RSS went from about 110 to 140
MiB, once)."""


WORKER_CHECKPOINT_PAGES = 32768
"""WAL pages (of :data:`PAGE_SIZE`: 512 MiB) the worker's connections let gather before a
commit copies them into the database (SQLite's default, which every other process keeps,
is 1,000). A page written by several transactions between two checkpoints is copied once:
a worker's batch of 50,000 due waits rewrites about 20,000 pages spread over the whole
store, much the same pages as the batch before it, and checkpointing after every other
batch instead of after each took the 1,000,000-wait resume from about 53 to 49 s
(bench/README.md, "Eighth round"). The costs, which is why only ``leadflow worker`` opens
its store so: the WAL file grows to about this size plus one transaction and stays so while
the store is open; and with ``synchronous=NORMAL`` the WAL is fsync'd at checkpoints, so
a power cut (not a crash of the process, which loses nothing committed) can roll back the
transactions since the last one, up to two worker batches instead of one. Small commits
(the HTTP inbox's, one page per request) would gather thousands of requests in that
window for no gain in speed."""


def database_url(url: str | None) -> str:
    """``--db``, else ``LEADFLOW_DB``, else ``leadflow.db`` in the current folder."""
    return url or os.environ.get("LEADFLOW_DB") or DEFAULT_URL


def make_engine(url: str, durable: bool = True, checkpoint_pages: int | None = None) -> Engine:
    """``durable=False`` is for a throwaway SQLite store (simulate, backtest): never
    fsync'd, with a plain rollback journal (:data:`THROWAWAY_PRAGMAS`), so a crash can
    corrupt it. Transactions and rollbacks work as usual. Stores of every other command
    keep their durability (WAL, ``synchronous=NORMAL``). ``checkpoint_pages``: a kept
    SQLite store's WAL checkpoint interval, if not SQLite's default (the worker's:
    :data:`WORKER_CHECKPOINT_PAGES`); other databases ignore it."""
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, **kwargs)
        _tune_sqlite(
            engine, wal=not memory and durable, durable=durable, checkpoint_pages=checkpoint_pages
        )
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


def _tune_sqlite(
    engine: Engine, wal: bool, durable: bool = True, checkpoint_pages: int | None = None
) -> None:
    """WAL for readers beside the writer; see :func:`writer` for write transactions.
    Not ``durable``: no fsync (see :func:`make_engine`)."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # first: switching a new file to WAL takes a lock that another process opening
        # it at the same moment may hold
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute(f"PRAGMA page_size={PAGE_SIZE}")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
        if durable:
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{DURABLE_CACHE_KIB}")
            if wal and checkpoint_pages is not None:
                cursor.execute(f"PRAGMA wal_autocheckpoint={int(checkpoint_pages)}")
        else:
            for pragma in THROWAWAY_PRAGMAS:
                cursor.execute(pragma)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def writer(engine: Engine) -> Engine:
    """The same engine, but its SQLite transactions take the write lock when they begin
    (``BEGIN IMMEDIATE``), so a read-modify-write never meets a concurrent writer halfway.
    Reads keep plain deferred transactions and run beside the writer (WAL)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("engine").joinpath("migrations")))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Bring the database to the newest schema; cheap when it is already there. A store
    at a revision this release does not know (a newer release upgraded it, perhaps to
    several heads) is refused and left as it is."""
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_heads() == (head,):
            return head
    with _one_migration_at_a_time(engine) as holder:
        _upgrade(engine, script, head, holder)
    return head


def _upgrade(
    engine: Engine, script: ScriptDirectory, head: str | None, holder: Connection | None
) -> None:
    """``holder``: the connection holding the migration lock (PostgreSQL), on which the
    migration runs too, so an engine with a pool of one connection can be migrated."""
    with nullcontext(holder) if holder is not None else engine.connect() as connection:
        # again: another process may have just done it
        current = MigrationContext.configure(connection).get_current_heads()
        clashes = [] if current else _tables_in_the_way(connection)
        connection.commit()
    if current == (head,):
        return
    if clashes:
        raise NotALeadflowStore(
            f"the database has no Leadflow schema revision but already holds tables named "
            f"{', '.join(clashes)}: it belongs to another application, or was made by "
            "hand. Use another database (or an empty one); nothing was changed"
        )
    known = {revision.revision for revision in script.walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        named = ", ".join(repr(revision) for revision in unknown)
        raise StoreFromNewerRelease(
            f"the store's schema is at revision {named}, which Leadflow {__version__} does "
            f"not know (its newest is {head!r}): a newer release of Leadflow upgraded it, "
            "or the database belongs to another application. Use that release or a later "
            "one with this store, or a copy of the store made before that upgrade; nothing "
            "was changed"
        )
    config = alembic_config(writer(engine))
    if holder is not None:
        config.attributes["connection"] = holder
    with as_file(files("engine").joinpath("migrations")):
        # SQLite: the migration's transaction takes the write lock as it begins, so a
        # second process waits (busy_timeout), then finds the revision it would write
        command.upgrade(config, "head")


_MIGRATION_LOCK = 0x1EAD_F10E
"""PostgreSQL advisory lock key held while one process migrates a store."""


@contextmanager
def _one_migration_at_a_time(engine: Engine) -> Iterator[Connection | None]:
    """Service replicas or workers started together on a new store all migrated it at
    once: on PostgreSQL all but one failed on a duplicate type, on SQLite with "database
    is locked". On PostgreSQL they now queue on an advisory lock (held on a connection
    of its own, for the session); SQLite's write lock does the same there (see
    :func:`_upgrade`)."""
    if engine.dialect.name != "postgresql":
        yield None
        return
    with engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
        holder.commit()
        try:
            yield holder
        finally:
            holder.rollback()  # a failed migration leaves its transaction open
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
            holder.commit()


def _tables_in_the_way(connection: Connection) -> list[str]:
    """Leadflow's table names a database without a revision already uses: migrating it
    would fail halfway on the first of them."""
    from engine.store.tables import metadata

    present = set(inspect(connection).get_table_names())
    return sorted(present & set(metadata.tables))


def open_engine(
    url: str | None = None, durable: bool = True, checkpoint_pages: int | None = None
) -> Engine:
    """An engine on an up-to-date database: every command creates or upgrades by itself.
    ``durable=False``: a throwaway store (see :func:`make_engine`)."""
    engine = make_engine(database_url(url), durable, checkpoint_pages)
    upgrade(engine)
    return engine
