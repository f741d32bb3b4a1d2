"""What a new user met following the README: cases a reviewing helper found wrong
(session 14), each failing before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main

AT_FLOW = {
    "id": "points",
    "version": 1,
    "triggers": [{"type": "event", "event": "Quote Requested"}],
    "reentry": "always",
    "start": "p",
    "nodes": {"p": {"type": "update_score", "score": "SCORE", "add": 30}},
}


def _AT_track(who: str, when: str, mid: str) -> str:
    return json.dumps(
        {
            "type": "track",
            "userId": who,
            "event": "Quote Requested",
            "timestamp": when,
            "messageId": mid,
        }
    )


def _AT_store(tmp_path: Path) -> list[str]:
    (tmp_path / "points.json").write_text(json.dumps(AT_FLOW), encoding="utf-8")
    events = tmp_path / "events.jsonl"
    events.write_text(
        "\n".join(
            [
                _AT_track("ann@acme.com", "2026-01-05T10:00:00Z", "m1"),
                _AT_track("ann@acme.com", "2026-01-20T10:00:00Z", "m2"),
                _AT_track("bob@acme.com", "2026-01-20T10:00:00Z", "m3"),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    db = ["--db", f"sqlite:///{tmp_path / 'store.db'}"]
    runner = CliRunner()
    assert runner.invoke(main, ["deploy", str(tmp_path / "points.json"), *db]).exit_code == 0
    assert runner.invoke(main, ["ingest", str(events), *db]).exit_code == 0
    return db


def test_segment_at_leaves_out_contacts_created_after_it(tmp_path: Path) -> None:
    at = ["--at", "2026-01-10T00:00:00Z", *_AT_store(tmp_path)]
    everyone = CliRunner().invoke(main, ["segment", *at])
    assert [line.split(",")[0] for line in everyone.stdout.splitlines()[1:]] == [
        "ann@acme.com"
    ]  # bob did not exist yet


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("leadflow.db", "sqlite:///leadflow.db"),
        ("postgres://postgres@127.0.0.1:1/x", "postgresql://postgres@127.0.0.1:1/x"),
    ],
)
def test_a_mistyped_db_url_says_what_to_write(url: str, hint: str) -> None:
    result = CliRunner().invoke(main, ["workflows", "--db", url])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert hint in result.output, result.output


DIST_FLOW = {
    "id": "points",
    "version": 1,
    "triggers": [{"type": "event", "event": "Quote Requested"}],
    "start": "p",
    "nodes": {"p": {"type": "update_score", "score": "SCORE", "set": 80.5}},
}


def test_the_summary_counts_unscored_contacts_apart_and_80_5_above_80(tmp_path: Path) -> None:
    (tmp_path / "points.json").write_text(json.dumps(DIST_FLOW), encoding="utf-8")
    events = tmp_path / "events.jsonl"
    lines = [
        {
            "type": "track",
            "userId": "ann@acme.com",
            "event": "Quote Requested",
            "timestamp": "2026-01-05T10:00:00Z",
            "messageId": "m1",
        },
        {
            "type": "identify",
            "userId": "bob@acme.com",
            "traits": {},
            "timestamp": "2026-01-05T10:00:00Z",
            "messageId": "m2",
        },
    ]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    result = CliRunner().invoke(
        main,
        ["simulate", "--workflows", str(tmp_path / "points.json"), "--events", str(events)],
        env={"COLUMNS": "100"},
    )
    assert result.exit_code == 0, result.output
    rows = {
        cells[0]: cells[1]
        for line in result.stdout.splitlines()
        if (cells := [c.strip() for c in line.strip("│ ").split("│")]) and len(cells) == 2
    }
    assert rows["> 80"] == "1", result.stdout  # ann, 80.5
    assert rows["0-19"] == "0", result.stdout  # bob has no SCORE
    assert rows["no score"] == "1", result.stdout
