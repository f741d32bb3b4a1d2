"""Bad input never gets a traceback and never loses data: inputs a reviewing session
fed the CLI (session 12), each of which once raised a traceback or lost good lines."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.shards import plan_shards

BIG = "999999999999999999999999"
WORKFLOWS = Path(__file__).parent.parent / "workflows"
EVENTS = WORKFLOWS / "examples" / "events.jsonl"

QUOTE = {
    "id": "quote",
    "version": 1,
    "triggers": [{"type": "event", "event": "Quote Requested"}],
    "reentry": "always",
    "start": "points",
    "nodes": {"points": {"type": "update_score", "score": "SCORE", "add": 30}},
}


def good(n: int) -> str:
    return json.dumps(
        {
            "type": "track",
            "userId": f"u{n}@x.com",
            "event": "Quote Requested",
            "timestamp": "2026-01-05T10:00:00Z",
            "messageId": f"m-{n}",
        }
    )


def invoke(args: list[str], codes: tuple[int, ...] = (1,), input: str | None = None) -> Result:
    result = CliRunner().invoke(main, args, input=input)
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in codes, (result.exit_code, everything)
    return result


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def expire(*_: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def rejected(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as connection:
        return list(connection.execute("SELECT line, reason FROM rejected ORDER BY line"))


# --- one bad line, not the batch ---------------------------------------------------------


def test_a_nul_in_a_user_id_rejects_that_line_only(tmp_path: Path, store_url: str) -> None:
    events = tmp_path / "events.jsonl"
    bad = '{"type": "track", "userId": "u\\u0000z", "event": "E", "messageId": "n-1"}'
    events.write_text(f"{good(1)}\n{bad}\n{good(2)}\n", encoding="utf-8")
    result = invoke(["ingest", str(events), "--db", store_url])
    assert result.stdout == "2 taken, 0 duplicate(s), 1 rejected\n"
    assert f"{events}: line 2: " in result.stderr


def test_a_raw_nul_byte_in_a_bad_line_is_kept_in_rejected(tmp_path: Path, store_url: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(good(1).encode() + b'\n{"type":\x00"track"}\n')
    result = invoke(["ingest", str(events), "--db", store_url])
    assert result.stdout == "1 taken, 0 duplicate(s), 1 rejected\n"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_validate_refuses_numbers_json_does_not_have(tmp_path: Path, number: str) -> None:
    """NaN passed validate and deploy; every ingest on that store then failed with
    'NOT NULL constraint failed: scores.value' and kept none of its messages."""
    path = tmp_path / "quote.json"
    path.write_text(json.dumps(QUOTE).replace('"add": 30', f'"add": {number}'), encoding="utf-8")
    result = invoke(["validate", str(path)])
    assert result.stdout.startswith(f"{path}: ")
    deployed = invoke(["deploy", str(path), "--db", f"sqlite:///{tmp_path / 's.db'}"])
    assert "deployed" not in deployed.stdout


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep-array", "[" * 100_000 + "]" * 100_000),
        ("deep-object", '{"a":' * 5_000 + "1" + "}" * 5_000),
        ("huge-add", json.dumps(QUOTE).replace('"add": 30', '"add": 1' + "0" * 400)),
        ("huge-version", json.dumps(QUOTE).replace('"version": 1', '"version": 1' + "0" * 30)),
        ("kind-list", json.dumps({**QUOTE, "kind": ["score_model"]})),
        ("nested-500", json.dumps(QUOTE)[:-1]
         + ', "exit_when": ' + '{"not": ' * 500 + '{"in_list": "x"}' + "}" * 500 + "}"),
    ],
)  # fmt: skip
def test_validate_reports_instead_of_crashing(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(text, encoding="utf-8")
    with deadline(60):
        result = invoke(["validate", str(path)])
    assert result.stdout.startswith(f"{path}: ")


def test_invalid_utf8_is_rejected_not_replaced(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b'{"type":"track","userId":"u\xff3","event":"E","messageId":"a"}\n'
        b'{"type":"track","userId":"u\xfe3","event":"E","messageId":"b"}\n'
    )
    db = tmp_path / "s.db"
    result = invoke(["ingest", str(events), "--db", f"sqlite:///{db}"])
    assert result.stdout == "0 taken, 0 duplicate(s), 2 rejected\n"
    assert [line for line, _ in rejected(db)] == [1, 2]


def test_segment_where_deeply_nested(tmp_path: Path) -> None:
    where = '{"all": ' + "[" * 50_000 + "]" * 50_000 + "}"
    invoke(["segment", "--where", where, "--db", f"sqlite:///{tmp_path / 's.db'}"])


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "revoke", BIG],
        ["outbox", "show", BIG],
        ["outbox", "retry", BIG],
        ["outbox", "--limit", BIG],
        ["segment", "--limit", BIG],
        ["worker", "--once", "--batch", BIG],
    ],
)
def test_big_numbers_are_input_problems(tmp_path: Path, args: list[str]) -> None:
    invoke([*args, "--db", f"sqlite:///{tmp_path / 's.db'}"], codes=(1, 2))


def test_outbox_deliver_refuses_a_negative_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def sleep(seconds: float) -> None:
        assert seconds >= 0, f"slept {seconds} s"
        raise KeyboardInterrupt

    monkeypatch.setattr("engine.messaging.cli.time.sleep", sleep)
    invoke(["outbox", "deliver", "--poll", "-1", "--db", f"sqlite:///{tmp_path / 's.db'}"], (2,))


def test_serve_refuses_a_port_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--port 99999 announced :99999 and listened on 34463 (99999 - 65536)."""
    import uvicorn

    def run(*_: object, **__: object) -> None:
        raise AssertionError("started a server on an invalid port")

    monkeypatch.setattr(uvicorn, "run", run)
    invoke(["serve", "--port", "99999", "--db", f"sqlite:///{tmp_path / 's.db'}"], codes=(2,))


@pytest.mark.parametrize("threshold", ["inf", "nan"])
def test_calibrate_and_backtest_refuse_a_threshold_that_is_not_a_number(
    threshold: str,
) -> None:
    common = ["--events", str(EVENTS), "--outcome", "Order Completed", "--threshold", threshold]
    invoke(["calibrate", "--workflows", str(WORKFLOWS), *common], codes=(2,))
    invoke(["backtest", "--workflows", str(WORKFLOWS), *common], codes=(2,))


@pytest.mark.parametrize("option", ["--html", "--png"])
def test_report_into_a_missing_folder(tmp_path: Path, option: str) -> None:
    target = tmp_path / "no" / "such" / "report.out"
    result = invoke(
        ["report", option, str(target), "--db", f"sqlite:///{tmp_path / 's.db'}"], codes=(2,)
    )
    assert str(target) in result.stderr


def test_a_template_that_is_not_utf8(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "welcome-a.txt").write_bytes(b"Subject: \xff\xfe\n")
    events = tmp_path / "events.jsonl"
    events.write_text(good(1) + "\n", encoding="utf-8")
    result = invoke(
        ["ingest", str(events), "--templates", str(templates),
         "--db", f"sqlite:///{tmp_path / 's.db'}"],
        codes=(0, 1),
    )  # fmt: skip
    assert "welcome-a.txt" in result.stderr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("delivery.batch", "1e300"),
        ("smtp.timeout", "Infinity"),
        ("delivery.backoff_seconds", "NaN"),
        ("smtp.port", "99999999"),
    ],
)
def test_settings_refuse_values_that_break_delivery_later(
    tmp_path: Path, key: str, value: str
) -> None:
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert f"setting {key}: " in invoke(["outbox", "settings", key, value, "--db", db]).stderr
    invoke(["worker", "--once", "--db", db], codes=(0,))


def test_validate_a_nested_not_condition_in_reasonable_time(tmp_path: Path) -> None:
    condition: dict[str, object] = {"attribute": "x", "eq": 1}
    for _ in range(30):  # 14 levels took 28 s, 3x a level; 50 never ended
        condition = {"not": condition}
    path = tmp_path / "deep.json"
    path.write_text(json.dumps({**QUOTE, "exit_when": condition}), encoding="utf-8")
    warm = tmp_path / "warm.json"
    warm.write_text(json.dumps(QUOTE), encoding="utf-8")
    invoke(["validate", str(warm)], codes=(0,))  # build the schema validator first
    started = time.monotonic()
    with deadline(30):
        invoke(["validate", str(path)], codes=(0, 1))
    assert time.monotonic() - started < 3


# --- a byte-order mark --------------------------------------------------------------------


def test_a_bom_does_not_cost_the_first_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\xef\xbb\xbf" + good(1).encode() + b"\n" + good(2).encode() + b"\n")
    result = invoke(["ingest", str(events), "--db", f"sqlite:///{tmp_path / 's.db'}"], codes=(0,))
    assert result.stdout == "2 taken, 0 duplicate(s), 0 rejected\n"


def test_a_bom_line_is_planned_with_its_contact() -> None:
    """The split reads the first line as the reader does: its contact's lines share a
    part (here part 1: three heavier contacts fill the parts first), or the simulation
    would run that contact in two stores."""

    def track(user: str, message_id: str) -> bytes:
        message = {"type": "track", "userId": user, "event": "E", "messageId": message_id}
        return json.dumps(message).encode()

    lines = [track("z", "z1")] + [track(f"u{n % 3}", f"x{n}") for n in range(30)]
    lines.append(track("z", "z2"))
    plain = plan_shards(lines, 2)
    assert plain.line_part[0] == plain.line_part[-1] == 1
    marked = plan_shards([b"\xef\xbb\xbf" + lines[0], *lines[1:]], 2)
    assert marked.line_part == plain.line_part


def test_a_workflow_saved_with_a_bom_validates(tmp_path: Path) -> None:
    path = tmp_path / "quote.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(QUOTE).encode())
    invoke(["validate", str(path)], codes=(0,))


# --- options that contradict each other ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["history", "x", "--csv", "--json"],
        ["outbox", "settings", "smtp.port", "25", "--unset"],
        ["outbox", "settings", "--unset"],
    ],
)
def test_options_that_contradict_each_other_are_usage_errors(
    tmp_path: Path, args: list[str]
) -> None:
    """``history --csv --json`` printed JSON; ``settings KEY VALUE --unset`` unset KEY."""
    db = tmp_path / "s.db"
    result = invoke([*args, "--db", f"sqlite:///{db}"], codes=(2,))
    assert "Error: " in result.stderr
    assert not db.exists() or not [
        row for row in sqlite3.connect(db).execute("SELECT key FROM settings")
    ]
