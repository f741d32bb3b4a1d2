"""The catalog lists workflows in id order by code point on every backend, whatever the
database's collation: it is the order in which the workflows one signal triggers are
entered, so it must not differ between SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import pg_database

from engine.catalog import Catalog, deploy
from engine.store.db import make_engine, upgrade
from engine.validation import validate_documents

WELCOME = json.loads(
    (Path(__file__).resolve().parent.parent / "workflows" / "welcome-series.json").read_text()
)
IDS = ["welcome_b", "welcome0", "welcome-b", "welcome.c"]  # collations disagree on these


@pytest.fixture(params=["sqlite", "postgresql-icu"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store; on PostgreSQL a database of its own with an ICU en-US collation,
    which sorts ``_`` and ``-`` before digits and ignores case at first."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
    with pg_database("leadflow_icu", icu) as url:
        yield url


def test_workflows_load_in_code_point_order(url: str) -> None:
    documents: list[dict[str, Any]] = []
    for workflow_id in IDS:
        document = copy.deepcopy(WELCOME)
        document["id"] = document["name"] = workflow_id
        documents.append(document)
    validation = validate_documents([(f"{d['id']}.json", d) for d in documents])
    assert validation.ok, validation.problems
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.begin() as connection:
            deploy(connection, validation.workflows, datetime(2026, 1, 5, tzinfo=UTC))
        with engine.connect() as connection:
            if url.startswith("postgresql"):  # the collation does disagree here
                collated = connection.exec_driver_sql(
                    "SELECT workflow_id FROM workflow_versions ORDER BY workflow_id"
                ).scalars()
                assert list(collated) != sorted(IDS)
            assert list(Catalog.load(connection).latest) == sorted(IDS)
    finally:
        engine.dispose()
