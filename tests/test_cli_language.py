"""`leadflow validate`, `leadflow graph` and `leadflow schema` through click's CliRunner."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.graph import to_dot, to_mermaid
from engine.model import compile_workflow

INVALID = Path(__file__).parent / "invalid"
LINE = re.compile(
    r"^(?P<file>[^:]+\.json): (?P<pointer>/\S*|line \d+, column \d+): (?P<message>.+)$"
)


def leadflow(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture(scope="module")
def shipped() -> Iterator[Path]:
    with as_file(files("workflows")) as folder:
        yield Path(folder)


def shipped_count() -> int:
    return sum(
        1
        for entry in files("workflows").iterdir()
        if entry.name.endswith(".json") and entry.name != "schema.json"
    )


# --- validate -----------------------------------------------------------------------------


def test_validate_the_shipped_folder(shipped: Path) -> None:
    result = leadflow("validate", str(shipped))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith(f"{shipped_count()} workflow(s)")
    assert result.stderr.endswith(" valid\n")


def test_validate_one_shipped_file(shipped: Path) -> None:
    result = leadflow("validate", str(shipped / "consideration-stage.json"))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.startswith("1 workflow(s)")


def test_validate_json_on_valid_input(shipped: Path) -> None:
    result = leadflow("validate", "--json", str(shipped))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_validate_an_invalid_file() -> None:
    path = INVALID / "unknown-node-type.json"
    result = leadflow("validate", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        f"{path}: /nodes/points/type: unknown node type 'update_scor'; "
        "did you mean 'update_score'?\n"
    )
    assert "valid" not in result.stderr


def test_validate_bad_json_names_line_and_column() -> None:
    path = INVALID / "bad-json.json"
    result = leadflow("validate", str(path))
    assert result.exit_code == 1
    assert result.stdout == (
        f"{path}: line 7, column 50: invalid JSON: Expecting property name enclosed in "
        "double quotes\n"
    )


def test_validate_reports_every_problem_of_every_file_one_line_each() -> None:
    result = leadflow("validate", str(INVALID))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    names = {Path(match["file"]).name for match in parsed if match}
    expected = {p.name for p in INVALID.glob("*.json")} - {"duplicate-version-a.json"}
    assert names == expected


def test_validate_mixes_files_and_folders(shipped: Path) -> None:
    bad = INVALID / "wrong-type.json"
    result = leadflow("validate", str(shipped), str(bad))
    assert result.exit_code == 1
    assert result.stdout == f'{bad}: /nodes/points/add: expected a number, found text "30"\n'


def test_validate_json_lists_the_problems() -> None:
    path = INVALID / "bad-cron.json"
    result = leadflow("validate", "--json", str(path))
    assert result.exit_code == 1
    problems: list[dict[str, Any]] = json.loads(result.stdout)
    assert [(p["file"], p["pointer"]) for p in problems] == [(str(path), "/triggers/0/cron")]
    assert problems[0]["message"].startswith("expected a 5-field crontab")


def test_validate_json_on_many_files() -> None:
    result = leadflow("validate", "--json", str(INVALID))
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert all(set(p) == {"file", "pointer", "message"} for p in problems)
    lines = leadflow("validate", str(INVALID)).stdout.splitlines()
    assert [f"{p['file']}: {p['pointer'] or '/'}: {p['message']}" for p in problems] == lines


def test_validate_a_document_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    path.write_text("[1, 2]", encoding="utf-8")
    result = leadflow("validate", str(path))
    assert (result.exit_code, result.stdout) == (
        1,
        f"{path}: /: expected a workflow object, found a list\n",
    )


def test_validate_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"id": "caf\xe9"}')
    result = leadflow("validate", str(path))
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{path}: /: cannot read the file: ")


def test_validate_an_empty_folder(tmp_path: Path) -> None:
    result = leadflow("validate", str(tmp_path))
    assert (result.exit_code, result.stdout) == (0, "")
    assert result.stderr.startswith("0 workflow(s)")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["validate"], "Missing argument 'PATHS...'"),
        (["validate", "no/such/file.json"], "does not exist"),
        (["validate", "--jsn", "x"], "No such option '--jsn'"),
        (["graph"], "Missing argument 'FILE'"),
        (["graph", "no/such/file.json"], "does not exist"),
        (["graph", str(INVALID)], "is a directory"),
        (["graph", str(INVALID / "bad-id.json"), "--format", "svg"], "'svg' is not one of"),
        (["schema", "extra"], "Got unexpected extra argument"),
    ],
)
def test_wrong_usage_exits_2(args: list[str], error: str) -> None:
    result = leadflow(*args)
    assert result.exit_code == 2
    assert error in result.stderr
    assert result.stdout == ""


# --- graph --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        (
            "consideration-stage.json",
            [
                '["+30 SCORE"]',
                '{"if SCORE > 80"}',
                '["+ list Sales-qualified leads"]',
                '(("exit"))',
            ],
        ),
        ("welcome-series.json", ['("wait 2 days")', '("wait 5 days")', '{"split 50% / 50%"}']),
        ("score-decay-floor.json", ['["-10% SCORE (min 50)"]', '(["cron 0 3 * * 1 for ']),
        ("careers-page-negative.json", ['["-10 SCORE (min 0)"]', "url matches /pricing*"]),
        ("double-opt-in.json", ['["CONSENT = true"]', '("wait for Subscription Confirmed']),
        ("video-percent-watched.json", ['{"if percent ≥ 75"}', '["+20 SCORE"]']),
    ],
)
def test_graph_mermaid_labels(shipped: Path, name: str, labels: list[str]) -> None:
    result = leadflow("graph", str(shipped / name))
    assert result.exit_code == 0
    assert result.stdout.startswith("flowchart TD\n")
    present = [label for label in labels if label in result.stdout]
    if name == "careers-page-negative.json":  # its trigger is the careers page, not pricing
        assert present == [labels[0]]
        assert '(["on Page Viewed where url matches /careers*"])' in result.stdout
    else:
        assert present == labels, result.stdout


def test_graph_dot_labels(shipped: Path) -> None:
    result = leadflow("graph", str(shipped / "welcome-series.json"), "--format", "dot")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith('digraph "welcome-series" {\n')
    assert out.endswith("}\n")
    assert '"wait-2d" [label="wait 2 days", shape=ellipse];' in out
    assert '"ab-test" [label="split 50% / 50%", shape=diamond];' in out
    assert '"ab-test" -> "welcome-a" [label="50%"];' in out
    assert '"sms-allowed" [label="if not CONSENT = false", shape=diamond];' in out
    assert '"sms-allowed" -> "done" [label="no"];' in out
    assert '"trigger 0" [label="on new contact", shape=cds];' in out


def test_graph_of_an_invalid_file_reports_the_problems() -> None:
    path = INVALID / "instant-loop.json"
    result = leadflow("graph", str(path))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"{path}: /nodes/check: loop without a wait")


def test_graph_defaults_to_mermaid(shipped: Path) -> None:
    path = str(shipped / "nps-survey.json")
    assert leadflow("graph", path).stdout == leadflow("graph", path, "--format", "mermaid").stdout


DRAWN: dict[str, Any] = {
    "id": "drawn",
    "version": 1,
    "triggers": [{"type": "score_crossed", "above": 50}],
    "start": "ab",
    "nodes": {
        "ab": {
            "type": "split",
            "branches": [{"weight": 1, "next": "a"}, {"weight": 3, "next": "w"}],
        },
        "a": {"type": "update_score", "add": 30, "next": "w"},
        "w": {
            "type": "wait_for_event",
            "event": "Email Clicked",
            "timeout": "P3D",
            "next": "q",
            "on_timeout": "end",
        },
        "q": {
            "type": "condition",
            "if": {"score": "SCORE", "gt": 80},
            "then": "hook",
            "else": "end",
        },
        "hook": {"type": "webhook", "url": "https://crm.example.com/h", "body": {"a": '"|"'}},
        "end": {"type": "exit"},
    },
}


def test_to_mermaid_exactly() -> None:
    assert to_mermaid(compile_workflow(DRAWN)) == (
        "flowchart TD\n"
        '    t0(["SCORE reaches 50"]) --> n0\n'
        '    n0{"split 25% / 75%"}\n'
        '    n1["+30 SCORE"]\n'
        '    n2("wait for Email Clicked (≤ 3 days)")\n'
        '    n3{"if SCORE > 80"}\n'
        '    n4["webhook crm.example.com"]\n'
        '    n5(("exit"))\n'
        "    n0 -->|25%| n1\n"
        "    n0 -->|75%| n2\n"
        "    n1 --> n2\n"
        "    n2 --> n3\n"
        "    n2 -->|timeout| n5\n"
        "    n3 -->|yes| n4\n"
        "    n3 -->|no| n5\n"
    )


def test_to_dot_exactly() -> None:
    assert to_dot(compile_workflow(DRAWN)) == (
        'digraph "drawn" {\n'
        "    rankdir=TB;\n"
        '    node [fontname="Helvetica"];\n'
        '    "trigger 0" [label="SCORE reaches 50", shape=cds];\n'
        '    "trigger 0" -> "ab";\n'
        '    "ab" [label="split 25% / 75%", shape=diamond];\n'
        '    "a" [label="+30 SCORE", shape=box];\n'
        '    "w" [label="wait for Email Clicked (≤ 3 days)", shape=ellipse];\n'
        '    "q" [label="if SCORE > 80", shape=diamond];\n'
        '    "hook" [label="webhook crm.example.com", shape=box];\n'
        '    "end" [label="exit", shape=doublecircle];\n'
        '    "ab" -> "a" [label="25%"];\n'
        '    "ab" -> "w" [label="75%"];\n'
        '    "a" -> "w";\n'
        '    "w" -> "q";\n'
        '    "w" -> "end" [label="timeout"];\n'
        '    "q" -> "hook" [label="yes"];\n'
        '    "q" -> "end" [label="no"];\n'
        "}\n"
    )


def test_labels_are_escaped(tmp_path: Path) -> None:
    document = json.loads(json.dumps(DRAWN))
    document["nodes"]["end"] = {"type": "send_sms", "text": 'Say "hi" | bye \\ now'}
    path = tmp_path / "escaped.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    mermaid = leadflow("graph", str(path)).stdout
    assert '["SMS “Say #quot;hi#quot; #124; bye \\ now”"]' in mermaid
    dot = leadflow("graph", str(path), "--format", "dot").stdout
    assert '[label="SMS “Say \\"hi\\" | bye \\\\ now”", shape=box]' in dot


# --- schema -------------------------------------------------------------------------------


def test_schema_prints_the_committed_schema() -> None:
    result = leadflow("schema")
    assert result.exit_code == 0
    committed = files("workflows").joinpath("schema.json").read_text(encoding="utf-8")
    assert result.stdout == committed
    assert json.loads(result.stdout)["title"] == "Leadflow workflow"


@pytest.mark.parametrize("command", ["validate", "graph", "schema"])
def test_help(command: str) -> None:
    result = leadflow(command, "--help")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: main {command}")
