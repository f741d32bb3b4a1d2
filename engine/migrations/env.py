"""Alembic environment: runs on the engine handed in by engine.store.db.upgrade()."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from engine.store.tables import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///leadflow.db")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
