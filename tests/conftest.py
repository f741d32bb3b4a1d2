"""Shared fixtures. Store tests run on both SQLite and PostgreSQL; the PostgreSQL database
is created for this test run and dropped at its end, so runs never see each other's rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import pg_database
from sqlalchemy import Engine, text

# the in-process SMTP server and the SQLite store of the delivery tests, for the other
# messaging tests too
from test_messaging_delivery import smtp, sqlite_store  # noqa: F401

from engine.store.db import make_engine, upgrade
from engine.store.tables import metadata


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this run (fails, never skips, without a server)."""
    with pg_database("leadflow_test") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A URL of an empty, migrated store on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("store") / "leadflow.db"
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    with engine.begin() as connection:
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY"))
    engine.dispose()
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def brevo(store_url: str) -> Iterator[tuple[Any, dict[str, str]]]:
    """The HTTP service on an empty store, with the headers of an admin key for its
    Brevo-compatible endpoints (inbox applied by no one: ``apply=False``)."""
    import warnings

    from engine.service.app import create_app
    from engine.service.keys import create_key
    from engine.store.db import open_engine

    with warnings.catch_warnings():  # starlette's note about httpx2
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    engine = open_engine(store_url)
    key = create_key(engine, "t", "admin")
    app = create_app(engine=engine, apply=False)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, {"api-key": key, "Content-Type": "application/json"}
    finally:
        engine.dispose()
