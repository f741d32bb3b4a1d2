"""Cases a review of this session's last commits found wrong (session 14), each failing
before its fix."""

from __future__ import annotations

import json
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import at
from sqlalchemy import event, func, select

from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.messaging.delivery import Deliverer
from engine.messaging.settings import secret
from engine.messaging.tokens import CONFIRM, UNSUBSCRIBE, make_token
from engine.runner import Runner
from engine.service.app import create_app
from engine.service.keys import create_key
from engine.store.db import make_engine, open_engine, upgrade, writer
from engine.store.tables import consents
from engine.store.tables import settings as settings_table
from engine.templates import TemplateCatalog
from engine.worker import Worker

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient


APPLY_FLOW = {
    "id": "hello",
    "version": 1,
    "triggers": [{"type": "event", "event": "Hello"}],
    "start": "m",
    "nodes": {"m": {"type": "send_email", "template": "hello-mail"}},
}


def test_inbox_apply_uses_the_services_templates(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "hello-mail.txt").write_text("Subject: Hello\n\nHi\n", "utf-8")
    (tmp_path / "hello.json").write_text(json.dumps(APPLY_FLOW), "utf-8")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    deployed = CliRunner().invoke(main, ["deploy", str(tmp_path / "hello.json"), "--db", url])
    assert deployed.exit_code == 0, deployed.output
    engine = open_engine(url)
    key = create_key(engine, "t", "admin")
    app = create_app(engine=engine, apply=False, templates=TemplateCatalog([folder]))
    headers = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        sent = client.post(
            "/v1/track",
            json={
                "userId": "ann@acme.com",
                "event": "Hello",
                "messageId": "h-1",
                "timestamp": "2026-01-05T10:00:00Z",
            },
            headers=headers,
        )
        assert sent.status_code == 200, sent.text
        applied = client.post("/api/inbox/apply", headers=headers)
        assert applied.status_code == 200, applied.text
    listed = json.loads(CliRunner().invoke(main, ["workflows", "--json", "--db", url]).stdout)
    engine.dispose()
    assert listed[0]["failed_runs"] == 0, listed


@pytest.mark.parametrize("kind", [UNSUBSCRIBE, CONFIRM])
def test_a_head_on_a_link_changes_nothing(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = make_engine(url)
    upgrade(store)
    flow = Leadflow(engine=store, clock=VirtualClock(datetime(2026, 1, 5, tzinfo=UTC)))
    flow.identify("ann@acme.com", {"CONSENT": True})
    with writer(store).begin() as connection:
        key = secret(connection)
    token = make_token(key, kind, "ann@acme.com", datetime.now(UTC), "news")
    path = f"/unsubscribe/{token}" if kind == UNSUBSCRIBE else f"/confirm/{token}"
    with TestClient(create_app(engine=store, apply=False)) as client:
        head = client.head(path, headers={"User-Agent": "LinkScanner/1.0"})
        assert head.status_code == 200
    attributes = flow.contact("ann@acme.com")["attributes"]
    with store.connect() as connection:
        proofs = connection.scalar(select(func.count()).select_from(consents))
    flow.close()
    store.dispose()
    assert attributes.get("UNSUBSCRIBED") is not True
    assert proofs == 0  # no unsubscription nor confirmation recorded for a HEAD


STORED_BEFORE = {  # accepted by `leadflow outbox settings frequency_caps ...` before 0892388
    "email": {"max": 3, "per": "P7D"},
    "webhook": {"max": 100, "per": "P1D"},
}


def test_a_stored_setting_refused_now_does_not_stop_every_delivery(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = make_engine(url)
    upgrade(store)
    with writer(store).begin() as connection:
        connection.execute(
            settings_table.insert(), {"key": "frequency_caps", "value": STORED_BEFORE}
        )
    listed = CliRunner().invoke(main, ["outbox", "settings", "--db", url])
    try:
        Deliverer(store, VirtualClock(datetime(2026, 1, 5, tzinfo=UTC))).deliver_batch()
    finally:
        store.dispose()
    assert listed.exit_code == 0, listed.output


def test_the_every_second_waits_poll_does_not_scale_with_cron_workflows(tmp_path: Path) -> None:
    clock = VirtualClock(at("2026-01-05 09:00"))
    with Leadflow(f"sqlite:///{tmp_path}/s.db", clock=clock) as flow:
        flow.deploy(
            [
                {
                    "id": f"digest{i}",
                    "version": 1,
                    "triggers": [{"type": "schedule", "cron": "0 9 * * *"}],
                    "start": "n",
                    "nodes": {"n": {"type": "update_score", "score": "S", "add": 1}},
                }
                for i in range(100)
            ]
        )
        clock.advance_to(at("2026-01-05 09:30"))
        flow.run_due()
        worker = Worker(Runner(flow.engine, clock))
        worker.timers()  # the timers job's round: nothing is due until tomorrow 09:00
        worker.resume_waits()  # a first poll may look everything up
        statements: list[str] = []
        event.listen(flow.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        for second in range(1, 11):  # ten rounds of the waits job, a second apart
            clock.advance_to(at(f"2026-01-05 09:30:{second:02d}"))
            worker.resume_waits()
        assert len(statements) <= 10 * 5, f"{len(statements)} statements in 10 polls"


def test_an_empty_entry_in_leadflow_templates_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    env = {"LEADFLOW_TEMPLATES": os.pathsep + str(folder)}
    url = f"sqlite:///{tmp_path / 'store.db'}"
    result = CliRunner().invoke(main, ["worker", "--once", "--db", url], env=env)
    assert result.exit_code == 0, result.output
