"""The runner's commands through click's CliRunner: simulate, ingest, deploy, workflows,
pause/resume, contacts show, db upgrade; exit codes 0/1/2 and never a traceback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from engine.cli import main

QUOTE = {
    "id": "consideration-stage",
    "version": 1,
    "triggers": [{"type": "event", "event": "Quote Requested"}],
    "reentry": "always",
    "start": "points",
    "nodes": {
        "points": {"type": "update_score", "score": "SCORE", "add": 30, "next": "mail"},
        "mail": {"type": "send_email", "template": "welcome-a", "next": "pause"},
        "pause": {"type": "wait", "for": "P2D", "next": "tag"},
        "tag": {"type": "add_to_list", "list": "Warm"},
    },
}

EVENTS = [
    {
        "type": "identify",
        "userId": "ann@acme.com",
        "traits": {"job_title": "VP Marketing"},
        "timestamp": "2026-01-05T10:00:00Z",
        "messageId": "m-1",
    },
    {
        "type": "group",
        "userId": "ann@acme.com",
        "groupId": "acme",
        "traits": {"name": "Acme"},
        "timestamp": "2026-01-05T10:01:00Z",
        "messageId": "m-2",
    },
    {
        "type": "track",
        "userId": "ann@acme.com",
        "event": "Quote Requested",
        "timestamp": "2026-01-05T10:02:00Z",
        "messageId": "m-3",
    },
]


def invoke(
    args: list[str],
    code: int = 0,
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
) -> Result:
    result = CliRunner().invoke(main, args, input=input, env=env)
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, (result.exit_code, everything)
    return result


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "consideration-stage.json").write_text(json.dumps(QUOTE), encoding="utf-8")
    events = tmp_path / "events.jsonl"
    lines = [json.dumps(e) for e in EVENTS] + ['{"type": "track", "userId": "bob"}']
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"flows": flows, "events": events, "db": tmp_path / "store.db"}


def db(files: dict[str, Path]) -> list[str]:
    return ["--db", f"sqlite:///{files['db']}"]


# --- simulate -----------------------------------------------------------------------------


def test_simulate_json_has_the_contract_shape(files: dict[str, Path]) -> None:
    result = invoke(
        [
            "simulate",
            "--workflows",
            str(files["flows"]),
            "--events",
            str(files["events"]),
            "--json",
        ],
        code=0,
    )
    out = json.loads(result.stdout)
    assert set(out) == {"contacts", "accounts", "messages", "rejected"}
    assert 'warning: 1 line(s) rejected, listed under "rejected"' in result.stderr
    ann = out["contacts"]["ann@acme.com"]
    assert {"scores", "grade", "lists", "attributes", "account"} <= set(ann)
    assert ann["scores"] == {"SCORE": 30}
    assert ann["lists"] == ["Warm"]
    assert ann["attributes"] == {"job_title": "VP Marketing"}
    assert ann["account"] == "acme"
    assert out["accounts"] == {"acme": {"scores": {"SCORE": 30}, "traits": {"name": "Acme"}}}
    assert out["messages"] == [
        {
            "contact": "ann@acme.com",
            "channel": "email",
            "template": "welcome-a",
            "subject": "Welcome to Leadflow, there",  # the template's own, rendered
            "workflow": "consideration-stage",
            "at": "2026-01-05T10:02:00Z",
        }
    ]
    assert out["rejected"] == [{"line": 4, "error": "track message needs 'event'"}]


def test_simulate_until_cuts_the_waits(files: dict[str, Path]) -> None:
    result = invoke(
        [
            "simulate",
            "--workflows",
            str(files["flows"]),
            "--events",
            str(files["events"]),
            "--until",
            "2026-01-06T00:00:00Z",
            "--json",
        ]
    )
    assert json.loads(result.stdout)["contacts"]["ann@acme.com"]["lists"] == []


def test_simulate_prints_a_readable_summary(files: dict[str, Path]) -> None:
    result = invoke(
        ["simulate", "--workflows", str(files["flows"]), "--events", str(files["events"])]
    )
    text = result.stdout
    assert "3 events, 1 contacts from 2026-01-05T10:00:00Z to 2026-01-07T10:02:00Z" in text
    assert "Contacts per list" in text
    assert re.search(r"Warm\s+│\s+1", text), text
    assert "Score distribution" in text
    assert re.search(r"20-49\s+│\s+1", text), text
    assert "messages: 1 email" in text
    assert "rejected lines: 1" in text
    assert "line 4: track message needs 'event'" in text


def test_output_to_a_pipe_is_not_wrapped_and_python_m_engine_runs(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    """Rich wrapped lines at 80 columns when the output was not a terminal: a long
    rejected line's reason came out in two, and grep missed it (found by a reviewing
    helper). And ``python -m engine`` (or ``engine.cli``) printed nothing."""
    stamp = "not a moment, " * 8
    reason = f"expected an ISO-8601 timestamp, found {stamp!r}"
    late = {"type": "track", "userId": "ann@acme.com", "event": "X", "timestamp": stamp}
    events = files["events"].read_text() + json.dumps(late) + "\n"
    (tmp_path / "long.jsonl").write_text(events, encoding="utf-8")
    home = str(Path(__file__).resolve().parent.parent)
    for module in ("engine", "engine.cli"):
        done = subprocess.run(
            [sys.executable, "-m", module, "simulate", "--workflows", str(files["flows"]),
             "--events", str(tmp_path / "long.jsonl")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": home},
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert f"line 5: {reason}" in done.stdout.splitlines()[-1]


def test_the_worker_prints_its_own_lines_not_the_libraries_chatter(tmp_path: Path) -> None:
    home = str(Path(__file__).resolve().parent.parent)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "worker",
            "--once",
            "--db",
            f"sqlite:///{tmp_path / 'w.db'}",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": home},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("0 run(s) resumed or entered\n")
    assert "alembic" not in done.stderr and "apscheduler" not in done.stderr, done.stderr


def test_a_failed_runs_reason_is_shown_by_ingest_simulate_and_contacts_show(
    files: dict[str, Path],
) -> None:
    """A run that failed (here: a template that does not exist) had its reason only in
    the runs table: ingest, simulate and contacts show said nothing (found by a reviewing
    helper)."""
    broken = {
        "id": "broken-mail",
        "version": 1,
        "triggers": [{"type": "event", "event": "Quote Requested"}],
        "start": "mail",
        "nodes": {"mail": {"type": "send_email", "template": "does-not-exist"}},
    }
    (files["flows"] / "broken-mail.json").write_text(json.dumps(broken), encoding="utf-8")
    why = (
        "ann@acme.com: broken-mail v1 failed at 2026-01-05T10:02:00Z: node 'mail' "
        "(send_email): unknown email template 'does-not-exist'"
    )
    flows, events = str(files["flows"]), str(files["events"])
    simulated = invoke(["simulate", "--workflows", flows, "--events", events, "--json"])
    assert "warning: 1 run(s) failed:" in simulated.stderr
    assert why in simulated.stderr
    assert "failed" not in json.loads(simulated.stdout)  # the contract's object, as it was
    summary = invoke(["simulate", "--workflows", flows, "--events", events])
    assert why in summary.stderr
    invoke(["deploy", flows, *db(files)])
    ingested = invoke(["ingest", events, *db(files)], code=1)  # line 4 is rejected
    assert "3 taken, 0 duplicate(s), 1 rejected; 1 run(s) failed" in ingested.stdout
    assert why in ingested.stderr
    shown = invoke(["contacts", "show", "ann@acme.com", *db(files)])
    assert (
        "failed: broken-mail v1 at mail on 2026-01-05T10:02:00Z: node 'mail' (send_email): "
        "unknown email template 'does-not-exist'"
    ) in shown.stdout
    listed = {w["id"]: w for w in json.loads(invoke(["workflows", "--json", *db(files)]).stdout)}
    assert (listed["broken-mail"]["failed_runs"], listed["broken-mail"]["active_runs"]) == (1, 0)
    assert {w["failed_runs"] for i, w in listed.items() if i != "broken-mail"} == {0}
    row = next(r for r in invoke(["workflows", *db(files)]).stdout.splitlines() if "broken" in r)
    assert row.replace("│", " ").split()[-2:] == ["0", "1"]  # active runs, failed runs


def test_simulate_with_an_invalid_workflow_lists_the_problems(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    bad = dict(QUOTE, nodes={**QUOTE["nodes"], "tag": {"type": "add_to_lists", "list": "W"}})
    (files["flows"] / "consideration-stage.json").write_text(json.dumps(bad), encoding="utf-8")
    (files["flows"] / "broken.json").write_text("{", encoding="utf-8")
    result = invoke(
        ["simulate", "--workflows", str(files["flows"]), "--events", str(files["events"])],
        code=1,
    )
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    for line in lines:
        assert re.match(r"^\S+\.json: (/\S*|line \d+, column \d+): .+", line), line
    assert any(
        line.startswith(f"{files['flows'] / 'consideration-stage.json'}: /nodes/tag/type: ")
        for line in lines
    ), lines
    assert any(line.startswith(f"{files['flows'] / 'broken.json'}: line 1") for line in lines)


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--events", "EVENTS"],
        ["simulate", "--workflows", "FLOWS"],
        ["simulate", "--workflows", "FLOWS", "--events", "EVENTS", "--until", "soon"],
        ["simulate", "--workflows", "FLOWS", "--events", "missing.jsonl"],
        ["simulate", "--workflows", "FLOWS", "--events", "EVENTS", "--bogus"],
        ["frobnicate"],
        ["deploy"],
        ["pause"],
        ["contacts", "show"],
        ["contacts", "frob"],
        ["ingest"],
        ["ingest", "no-such-file.jsonl"],
        ["db", "downgrade"],
    ],
)
def test_wrong_usage_exits_2(args: list[str], files: dict[str, Path]) -> None:
    names = {"EVENTS": str(files["events"]), "FLOWS": str(files["flows"])}
    invoke([names.get(a, a) for a in args], code=2)


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=lambda p: " ".join(p) or "leadflow")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = invoke([*path, "--help"])
    assert "Usage:" in result.stdout


# --- ingest -------------------------------------------------------------------------------


def test_ingest_a_file_and_stdin(files: dict[str, Path]) -> None:
    invoke(["deploy", str(files["flows"]), *db(files)])
    result = invoke(["ingest", str(files["events"]), *db(files)], code=1)
    assert result.stdout == "3 taken, 0 duplicate(s), 1 rejected\n"
    assert f"{files['events']}: line 4: track message needs 'event'" in result.stderr
    again = invoke(["ingest", "-", *db(files)], input=files["events"].read_bytes(), code=1)
    assert again.stdout == "0 taken, 3 duplicate(s), 1 rejected\n"
    more = json.dumps(
        {
            "type": "track",
            "userId": "ann@acme.com",
            "event": "Quote Requested",
            "timestamp": "2026-01-05T11:00:00Z",
            "messageId": "m-9",
        }
    )
    clean = invoke(["ingest", "-", *db(files)], input=more + "\n\n")
    assert clean.stdout == "1 taken, 0 duplicate(s), 0 rejected\n"
    shown = json.loads(invoke(["contacts", "show", "ann@acme.com", "--json", *db(files)]).stdout)
    assert shown["scores"] == {"SCORE": 60}


# --- deploy, workflows, pause, resume -----------------------------------------------------


def test_deploy_workflows_pause_resume(tmp_path: Path, store_url: str) -> None:
    path = tmp_path / "quote.json"
    path.write_text(json.dumps(QUOTE), encoding="utf-8")
    url = ["--db", store_url]
    assert invoke(["deploy", str(path), *url]).stdout == "consideration-stage v1: deployed\n"
    assert invoke(["deploy", str(path), *url]).stdout == "consideration-stage v1: unchanged\n"
    path.write_text(json.dumps({**QUOTE, "name": "changed"}), encoding="utf-8")
    conflict = invoke(["deploy", str(path), *url], code=1)
    assert "already deployed with a different document" in conflict.stderr
    path.write_text(json.dumps({**QUOTE, "version": 2}), encoding="utf-8")
    assert invoke(["deploy", str(path), *url]).stdout == "consideration-stage v2: deployed\n"
    events = json.dumps(EVENTS[2]) + "\n"
    invoke(["ingest", "-", *url], input=events)
    listed = json.loads(invoke(["workflows", "--json", *url]).stdout)
    assert listed == [
        {
            "id": "consideration-stage",
            "version": 2,
            "name": "consideration-stage",
            "paused": False,
            "active_runs": 1,
            "failed_runs": 0,
        }
    ]
    assert "consideration-stage" in invoke(["workflows", *url]).stdout
    assert invoke(["pause", "consideration-stage", *url]).stdout == (
        "consideration-stage: paused\n"
    )
    assert json.loads(invoke(["workflows", "--json", *url]).stdout)[0]["paused"] is True
    assert invoke(["resume", "consideration-stage", *url]).stdout == (
        "consideration-stage: resumed\n"
    )
    assert json.loads(invoke(["workflows", "--json", *url]).stdout)[0]["paused"] is False
    for command in ("pause", "resume"):
        missing = invoke([command, "nope", *url], code=1)
        assert "no deployed workflow has id 'nope'" in missing.stderr


def test_deploy_an_invalid_workflow_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**QUOTE, "reentry": "sometimes"}), encoding="utf-8")
    result = invoke(["deploy", str(path), "--db", f"sqlite:///{tmp_path / 's.db'}"], code=1)
    assert result.stdout.startswith(f"{path}: /reentry: ")


def test_a_start_workflow_may_name_a_workflow_deployed_before(tmp_path: Path) -> None:
    """Deploying a workflow that starts one already in the store was refused: the other
    had to be deployed again beside it (found by a reviewing helper)."""
    url = ["--db", f"sqlite:///{tmp_path / 's.db'}"]
    target, starter = tmp_path / "quote.json", tmp_path / "starter.json"
    target.write_text(json.dumps(QUOTE), encoding="utf-8")
    starts = {
        "id": "starter",
        "version": 1,
        "triggers": [{"type": "event", "event": "Go"}],
        "start": "go",
        "nodes": {"go": {"type": "start_workflow", "workflow": QUOTE["id"]}},
    }
    starter.write_text(json.dumps(starts), encoding="utf-8")
    refused = invoke(["deploy", str(starter), *url], code=1)
    assert "which is not among the workflows validated together nor deployed" in refused.stdout
    invoke(["deploy", str(target), *url])
    assert invoke(["deploy", str(starter), *url]).stdout == "starter v1: deployed\n"
    # the Python API: a path and a document that name each other, in one call
    from engine.api import Leadflow

    with Leadflow(f"sqlite:///{tmp_path / 'api.db'}") as flow:
        flow.deploy([starts, target])


# --- contacts show, --db and LEADFLOW_DB ---------------------------------------------------


def test_contacts_show_text_and_json(files: dict[str, Path]) -> None:
    invoke(["deploy", str(files["flows"]), *db(files)])
    invoke(["ingest", str(files["events"]), *db(files)], code=1)
    text = invoke(["contacts", "show", "ann@acme.com", *db(files)]).stdout
    assert "account: acme" in text
    assert "scores: SCORE 30" in text
    assert "job_title" in text and '"VP Marketing"' in text
    assert "consideration-stage v1 waiting at pause since 2026-01-05T10:02:00Z" in text
    history = [line.strip() for line in text.splitlines() if " by consideration-stage" in line]
    assert history == [
        "+30 SCORE (now 30) by consideration-stage v1 on track Quote Requested (m-3), "
        "2026-01-05 10:02"
    ]
    view = json.loads(invoke(["contacts", "show", "ann@acme.com", "--json", *db(files)]).stdout)
    assert {"scores", "grade", "lists", "attributes", "account"} <= set(view)
    assert (view["scores"], view["lists"], view["account"]) == ({"SCORE": 30}, [], "acme")
    unknown = invoke(["contacts", "show", "nobody", *db(files)], code=1)
    assert "no contact with id 'nobody'" in unknown.stderr


def test_db_option_and_environment(tmp_path: Path, files: dict[str, Path]) -> None:
    url = f"sqlite:///{tmp_path / 'env.db'}"
    invoke(["deploy", str(files["flows"])], env={"LEADFLOW_DB": url})
    invoke(["ingest", str(files["events"])], env={"LEADFLOW_DB": url}, code=1)
    view = invoke(["contacts", "show", "ann@acme.com", "--json", "--db", url]).stdout
    assert json.loads(view)["scores"] == {"SCORE": 30}
    # --db wins over the environment
    other = f"sqlite:///{tmp_path / 'other.db'}"
    invoke(["contacts", "show", "ann@acme.com", "--db", other], env={"LEADFLOW_DB": url}, code=1)


def test_default_store_is_leadflow_db_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LEADFLOW_DB", raising=False)
    invoke(["db", "upgrade"])
    assert (tmp_path / "leadflow.db").is_file()


def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = ["--db", f"sqlite:///{tmp_path / 'u.db'}"]
    first = invoke(["db", "upgrade", *url]).stdout
    assert re.fullmatch(r"database at revision \S+\n", first)
    assert invoke(["db", "upgrade", *url]).stdout == first


def test_an_unreachable_store_is_an_input_problem(tmp_path: Path) -> None:
    result = invoke(["workflows", "--db", "postgresql://nobody@127.0.0.1:1/none"], code=1)
    assert "cannot open the store" in result.stderr


@pytest.mark.parametrize("batch", ["0", "-5"])
def test_worker_refuses_a_batch_under_one(batch: str, tmp_path: Path) -> None:
    """A LIMIT of 0 would resume nothing forever, and SQLite reads a negative LIMIT as
    no limit at all: the worker says so instead of starting."""
    result = CliRunner().invoke(
        main, ["worker", "--db", f"sqlite:///{tmp_path / 'w.db'}", "--batch", batch, "--once"]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--batch'" in result.output
    assert "1<=x<=" in result.output


def test_worker_once_resumes_due_waits_by_its_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`worker --once` drains due waits with the --batch it is given (in parts of
    BATCH_SIZE on SQLite, as the running worker does), and with the store's default
    batch without it."""
    from datetime import UTC, datetime, timedelta

    from helpers import PAUSE_THEN_SCORE

    from engine.api import Leadflow
    from engine.clock import VirtualClock
    from engine.runner import BATCH_SIZE, Runner
    from engine.store.db import open_engine

    url = f"sqlite:///{tmp_path / 'once.db'}"
    store = open_engine(url)
    flow = Leadflow(engine=store, clock=VirtualClock(datetime(2026, 1, 5, 10, tzinfo=UTC)))
    flow.deploy([PAUSE_THEN_SCORE])
    flow.send(
        [
            {
                "type": "track",
                "userId": f"p{n}",
                "event": "Signed Up",
                "messageId": f"m{n}",
                "timestamp": "2026-01-05T10:00:00Z",
            }
            for n in range(5)
        ]
    )
    store.dispose()
    asked: list[tuple[int, int | None]] = []
    real = Runner.resume_due

    def recording(
        runner: Runner,
        now: datetime,
        limit: int = 1000,
        lease: timedelta = timedelta(minutes=5),
        chunk: int | None = None,
    ) -> int:
        asked.append((limit, chunk))
        return real(runner, now, limit, lease, chunk)

    monkeypatch.setattr(Runner, "resume_due", recording)
    result = CliRunner().invoke(main, ["worker", "--db", url, "--batch", "2", "--once"])
    assert result.exit_code == 0, result.output
    assert "5 run(s) resumed or entered" in result.output
    assert asked == [(2, BATCH_SIZE)] * 4  # 2 + 2 + 1, then none left
    asked.clear()
    result = CliRunner().invoke(main, ["worker", "--db", url, "--once"])
    assert result.exit_code == 0, result.output
    assert asked == [(50_000, BATCH_SIZE)]


def test_the_worker_opens_its_store_with_its_checkpoint_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.runner import Runner
    from engine.store.db import WORKER_CHECKPOINT_PAGES

    seen: list[int] = []

    def pragma_then_nothing(runner: Runner, *_: object) -> int:
        with runner.engine.connect() as connection:
            seen.append(connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar())
        return 0

    monkeypatch.setattr(Runner, "run_timers", pragma_then_nothing)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    result = CliRunner().invoke(main, ["worker", "--db", url, "--once"])
    assert result.exit_code == 0, result.output
    assert seen == [WORKER_CHECKPOINT_PAGES]


HELLO = {
    "id": "hello",
    "version": 1,
    "triggers": [{"type": "event", "event": "Hello"}],
    "start": "w",
    "nodes": {
        "w": {"type": "wait", "for": "PT1M", "next": "m"},
        "m": {"type": "send_email", "template": "hello-mail"},
    },
}


@pytest.mark.parametrize("how", ["--templates", "LEADFLOW_TEMPLATES"])
def test_the_worker_sends_your_own_templates(tmp_path: Path, how: str) -> None:
    """The README says to keep your own templates in a folder beside the workflows:
    simulate found them, but the worker, which resumes every wait, knew only the shipped
    ones, and failed every run that reached the email (found by a reviewing helper)."""
    flows = tmp_path / "flows"
    (flows / "templates").mkdir(parents=True)
    (flows / "hello.json").write_text(json.dumps(HELLO), encoding="utf-8")
    (flows / "templates" / "hello-mail.txt").write_text("Subject: Hello\n\nHi\n", "utf-8")
    message = {"type": "track", "userId": "ann@acme.com", "event": "Hello", "messageId": "h-1"}
    message["timestamp"] = "2026-01-05T10:00:00Z"  # the wait is due by now
    store = ["--db", f"sqlite:///{tmp_path / 'store.db'}"]
    given = ["--templates", str(flows / "templates")] if how == "--templates" else []
    env = {"LEADFLOW_TEMPLATES": str(flows / "templates")} if how != "--templates" else {}
    assert invoke(["deploy", str(flows), *store]).stdout == "hello v1: deployed\n"
    invoke(["ingest", "-", *store, *given], input=json.dumps(message) + "\n", env=env)
    invoke(["worker", "--once", *store, *given], env=env)
    listed = json.loads(invoke(["workflows", "--json", *store]).stdout)
    assert (listed[0]["failed_runs"], listed[0]["active_runs"]) == (0, 0)
