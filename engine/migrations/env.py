"""Alembic environment: runs on the engine handed in by engine.store.db.upgrade()."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from engine.store.tables import metadata

config = context.config


def migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # every revision in one transaction on SQLite too (its DDL is transactional):
        # one revision per transaction let a second process, waiting for the write lock,
        # apply a revision between two of the first one's, which then failed on it
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()


held = config.attributes.get("connection")
if held is not None:  # the one holding the migration lock (engine.store.db.upgrade)
    migrate(held)
else:
    engine = config.attributes.get("engine")
    if engine is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///leadflow.db")
    with engine.connect() as connection:
        migrate(connection)
