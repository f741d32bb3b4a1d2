"""``leadflow contacts explain``, ``leadflow accounts show`` and ``leadflow segment`` on a
store filled by a simulation, on SQLite and on PostgreSQL."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import update
from test_scoring_models import GRADE, STAGE_BANDS, group, identify, points, run, track

from engine import segments
from engine.cli import main
from engine.explain import MINUS, TIMES, reason_of
from engine.store.db import make_engine
from engine.store.tables import scores

SCENARIO_END = "2026-01-30"
READY = {
    "kind": "score_model",
    "id": "ready",
    "version": 1,
    "score": "SCORE",
    "sales_ready": 100,
    "bands": STAGE_BANDS,
    "decay": {
        "after": "P7D",
        "without": ["Quote Requested", "Email Clicked"],
        "every": "P7D",
        "percent": 10,
        "floor": 20,
    },
}


def _documents() -> list[dict[str, Any]]:
    click = points("Email Clicked", 10, workflow_id="engagement")
    click["nodes"] = {"click-points": click["nodes"]["points"]}
    click["start"] = "click-points"
    return [
        READY,
        GRADE,
        points("Quote Requested", 30, workflow_id="consideration"),
        click,
        points("Careers Viewed", 5, op="subtract", workflow_id="careers"),
    ]


def _events() -> list[dict[str, Any]]:
    anon = {
        "type": "identify",
        "userId": "eve@x.com",
        "anonymousId": "anon-1",
        "traits": {},
        "timestamp": "2026-01-05T00:00:00Z",
    }
    return [
        identify(
            "ann@acme.com",
            "2026-01-01",
            email=" Ann@Acme.com ",
            job_title="VP Sales",
            company_size=500,
        ),
        identify("zed@zeta.io", "2026-01-01", plan="free"),
        group("ann@acme.com", "acme", "2026-01-01", name="Acme", industry="Retail"),
        track("ann@acme.com", "Quote Requested", "2026-01-01 10:00"),
        track("ann@acme.com", "Quote Requested", "2026-01-02 10:00"),
        track("ann@acme.com", "Email Clicked", "2026-01-03 10:00"),
        track("ann@acme.com", "Careers Viewed", "2026-01-03 12:00"),
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Email Clicked",
            "properties": {},
            "timestamp": "2026-01-04T00:00:00Z",
        },
        anon,
        track("eve@x.com", "Quote Requested", "2026-01-06"),
        identify("bob@acme.com", "2026-01-10", job_title="Manager", company_size=250),
        group("bob@acme.com", "acme", "2026-01-10"),
        track("bob@acme.com", "Email Clicked", "2026-01-20"),
        track("cat-123", "Quote Requested", "2026-01-25"),
        identify("dan@globex.com", "2026-01-26", job_title="Student"),
        *(track("dan@globex.com", "Quote Requested", f"2026-01-26 1{i}:00") for i in range(3)),
        identify("late@zeta.io", "2026-01-28", plan="free"),
    ]


@pytest.fixture
def filled(store_url: str, tmp_path: Path) -> str:
    """The store after the scenario; returns its URL."""
    run(tmp_path, _documents(), _events(), until=SCENARIO_END, database_url=store_url)
    return store_url


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


# --- contacts explain -------------------------------------------------------------------


def test_reason_of_causes() -> None:
    assert reason_of("track Quote Requested (m-2)") == ("track Quote Requested", "Quote Requested")
    assert reason_of("identify (m-1)") == ("identify", "identify")
    assert reason_of("wait over") == ("wait over", None)
    assert reason_of(None) == ("an unrecorded cause", None)


def test_explain_sums_points_and_decay_and_they_add_up(filled: str) -> None:
    result = cli(
        "contacts", "explain", "ann@acme.com", "--score", "SCORE", "--db", filled, "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["id"] == "ann@acme.com"
    assert data["grades"] == {"GRADE": "A"}
    item = data["scores"]["SCORE"]
    parts = [
        (p["kind"], p["workflow"], p["version"], p["node"], p["event"], p["count"], p["delta"])
        for p in item["parts"]
    ]
    # 30 + 30 + 10 - 5 = 65; decay 10 % on Jan 15, 22, 29: 58.5, 52.65, 47.385
    assert parts == [
        ("points", "consideration", 1, "points", "Quote Requested", 2, 60),
        ("points", "engagement", 1, "click-points", "Email Clicked", 1, 10),
        ("points", "careers", 1, "points", "Careers Viewed", 1, -5),
        ("decay", "ready", 1, "decay", None, 3, -17.615),
    ]
    assert item["value"] == item["sum"] == 47.385
    assert item["adds_up"] is True
    assert item["difference"] == 0
    assert item["peak"] == 70
    assert item["last_increase"] == "2026-01-03T10:00:00Z"
    assert item["band"] == {"list": "Warm leads", "model": "ready v1"}
    assert [(m["at"], m["from"], m["to"]) for m in item["band_moves"]] == [
        ("2026-01-01T10:00:00Z", [], ["Warm leads"]),
        ("2026-01-02T10:00:00Z", ["Warm leads"], ["Qualified leads"]),
        ("2026-01-29T00:00:00Z", ["Qualified leads"], ["Warm leads"]),
    ]
    assert item["band_moves"][2]["cause"] == "decay by ready v1"
    decay = item["parts"][3]
    assert (decay["first_at"], decay["last_at"]) == ("2026-01-15T00:00:00Z", "2026-01-29T00:00:00Z")

    plain = cli("contacts", "explain", "ann@acme.com", "--db", filled)
    assert plain.exit_code == 0, plain.output
    lines = [line.strip() for line in plain.stdout.splitlines()]
    assert f"+60 from consideration v1 'points' on 2 {TIMES} Quote Requested" in lines
    assert f"+10 from engagement v1 'click-points' on 1 {TIMES} Email Clicked" in lines
    assert f"{MINUS}5 from careers v1 'points' on 1 {TIMES} Careers Viewed" in lines
    assert f"{MINUS}17.615 by decay of ready v1 (3 ticks, 2026-01-15 to 2026-01-29)" in lines
    assert "= 47.385: the parts add up to the current value" in lines
    assert any(line.startswith("SCORE = 47.385 (peak 70;") for line in lines)
    assert any("Qualified leads → Warm leads" in line for line in lines)


def test_explain_follows_a_merge_and_does_not_count_it_twice(filled: str) -> None:
    result = cli("contacts", "explain", "anon-1", "--db", filled, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["id"], data["asked"]) == ("eve@x.com", "anon-1")
    item = data["scores"]["SCORE"]
    assert [(p["kind"], p["delta"], p["counted"]) for p in item["parts"]] == [
        ("points", 10, True),  # the anonymous click, now eve's history
        ("merge", 10, False),
        ("points", 30, True),
        ("decay", -10.84, True),  # 40 -> 36 -> 32.4 -> 29.16 on Jan 15, 22, 29
    ]
    assert item["value"] == item["sum"] == 29.16
    assert item["adds_up"] is True


def test_explain_reports_what_the_audit_does_not_explain(filled: str) -> None:
    engine = make_engine(filled)
    with engine.begin() as connection:
        connection.execute(
            update(scores)
            .where(scores.c.contact_id == "cat-123", scores.c.name == "SCORE")
            .values(value=42.5)
        )
    engine.dispose()
    result = cli("contacts", "explain", "cat-123", "--db", filled, "--json")
    item = json.loads(result.stdout)["scores"]["SCORE"]
    assert (item["sum"], item["value"], item["adds_up"], item["difference"]) == (
        30,
        42.5,
        False,
        12.5,
    )
    plain = cli("contacts", "explain", "cat-123", "--db", filled)
    assert "+12.5 is not explained by the audit log" in plain.stdout


def test_explain_unknown_contact_and_unknown_score(filled: str) -> None:
    result = cli("contacts", "explain", "nobody@nowhere.io", "--db", filled)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no contact with id 'nobody@nowhere.io'"
    assert result.stdout == ""
    result = cli("contacts", "explain", "zed@zeta.io", "--score", "SCORE_CRM", "--db", filled)
    assert result.exit_code == 0
    assert "SCORE_CRM = 0" in result.stdout
    assert "no change recorded" in result.stdout


# --- accounts show --------------------------------------------------------------------------


def test_accounts_show(filled: str) -> None:
    result = cli("accounts", "show", "acme", "--db", filled, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["traits"] == {"name": "Acme", "industry": "Retail"}
    assert data["scores"] == {"SCORE": 57.385}  # 47.385 + 10, summed by default
    rollup = data["rollups"]["SCORE"]
    assert (rollup["method"], rollup["members"], rollup["in_step"]) == ("sum", 2, True)
    assert rollup["declared"] is False
    assert [(m["id"], m["scores"], m["grade"]) for m in data["members"]] == [
        ("ann@acme.com", {"SCORE": 47.385}, "A"),
        ("bob@acme.com", {"SCORE": 10}, "B"),
    ]
    plain = cli("accounts", "show", "acme", "--db", filled)
    assert plain.exit_code == 0
    assert "SCORE 57.385  (sum of the members' scores of 2 member(s), the default)" in plain.stdout
    assert "ann@acme.com: SCORE 47.385; GRADE A" in plain.stdout
    missing = cli("accounts", "show", "initech", "--db", filled)
    assert missing.exit_code == 1
    assert "no account with id 'initech'" in missing.stderr


# --- segment --------------------------------------------------------------------------------


def rows(result: Result) -> list[dict[str, str]]:
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.stdout)))


def records(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_segment_csv_filters_sorts_and_limits(filled: str) -> None:
    everyone = rows(cli("segment", "--db", filled))
    assert [r["id"] for r in everyone] == [
        "ann@acme.com",
        "bob@acme.com",
        "cat-123",
        "dan@globex.com",
        "eve@x.com",
        "late@zeta.io",
        "zed@zeta.io",
    ]  # merged anon-1 is not a contact of its own
    assert list(everyone[0]) == ["id", "email", "score:SCORE", "grade:GRADE", "lists", "account"]
    assert everyone[0] == {
        "id": "ann@acme.com",
        "email": " Ann@Acme.com ",
        "score:SCORE": "47.385",
        "grade:GRADE": "A",
        "lists": "Warm leads",
        "account": "acme",
    }
    assert everyone[2]["email"] == ""  # cat-123: no email attribute, id not an address

    by_score = rows(cli("segment", "--sort", "score:SCORE", "--db", filled))
    assert [(r["id"], r["score:SCORE"]) for r in by_score] == [
        ("dan@globex.com", "90"),
        ("ann@acme.com", "47.385"),
        ("cat-123", "30"),
        ("eve@x.com", "29.16"),
        ("bob@acme.com", "10"),
        ("late@zeta.io", ""),
        ("zed@zeta.io", ""),
    ]
    lowest = rows(cli("segment", "--sort", "score:SCORE", "--asc", "--limit", "3", "--db", filled))
    assert [r["id"] for r in lowest] == ["late@zeta.io", "zed@zeta.io", "bob@acme.com"]

    fit = rows(
        cli(
            "segment",
            "--where",
            '{"grade": "GRADE", "in": ["A", "B"]}',
            "--sort",
            "score:SCORE",
            "--db",
            filled,
        )
    )
    assert [r["id"] for r in fit] == ["ann@acme.com", "bob@acme.com"]

    by_grade = rows(cli("segment", "--sort", "grade:GRADE", "--db", filled))
    assert [(r["id"], r["grade:GRADE"]) for r in by_grade][:3] == [
        ("ann@acme.com", "A"),
        ("bob@acme.com", "B"),
        ("dan@globex.com", "F"),
    ]
    worst = rows(cli("segment", "--sort", "grade:GRADE", "--asc", "--limit", "1", "--db", filled))
    assert [r["id"] for r in worst] == ["dan@globex.com"]

    none = rows(cli("segment", "--limit", "0", "--db", filled))
    assert none == []


def test_segment_jsonl_hashed_and_event_counts(filled: str) -> None:
    found = records(
        cli(
            "segment",
            "--format",
            "jsonl",
            "--hashed",
            "--where",
            '{"event": "Quote Requested", "within": "P30D", "gte": 2}',
            "--at",
            "2026-01-30T00:00:00Z",
            "--db",
            filled,
        )
    )
    assert [r["id"] for r in found] == ["ann@acme.com", "dan@globex.com"]
    ann = found[0]
    assert ann["email"] == " Ann@Acme.com "
    assert ann["email_sha256"] == hashlib.sha256(b"ann@acme.com").hexdigest()
    assert ann["scores"] == {"SCORE": 47.385}
    assert ann["grades"] == {"GRADE": "A"}
    assert ann["lists"] == ["Warm leads"]
    assert ann["account"] == "acme"
    assert found[1]["email_sha256"] == hashlib.sha256(b"dan@globex.com").hexdigest()
    # two days later ann's first quote is out of the 30-day window
    later = records(
        cli(
            "segment",
            "--format",
            "jsonl",
            "--where",
            '{"event": "Quote Requested", "within": "P30D", "gte": 2}',
            "--at",
            "2026-02-01T00:00:00Z",
            "--db",
            filled,
        )
    )
    assert [r["id"] for r in later] == ["dan@globex.com"]
    assert "email_sha256" not in later[0]
    nobody = records(cli("segment", "--format", "jsonl", "--hashed", "--db", filled))
    assert {r["id"]: r["email_sha256"] for r in nobody}["cat-123"] is None


def test_segment_cold_leads(filled: str) -> None:
    cold = rows(cli("segment", "--cold", "P14D", "--at", "2026-01-30T00:00:00Z", "--db", filled))
    # ann last rose on Jan 3, eve on Jan 6; zed never rose and exists since Jan 1;
    # bob (Jan 20), cat (Jan 25), dan (Jan 26) rose lately; late@ is only two days old
    assert [r["id"] for r in cold] == ["ann@acme.com", "eve@x.com", "zed@zeta.io"]
    other = rows(
        cli(
            "segment",
            "--cold",
            "P14D",
            "--score",
            "SCORE_CRM",
            "--at",
            "2026-01-30T00:00:00Z",
            "--db",
            filled,
        )
    )
    assert [r["id"] for r in other] == [
        "ann@acme.com",
        "bob@acme.com",
        "eve@x.com",
        "zed@zeta.io",
    ]  # nobody has SCORE_CRM: everyone old enough is cold on it


def test_segment_streams_in_chunks(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("segment", "--sort", "score:SCORE", "--where", '{"score": "SCORE", "gte": 10}')
    whole = rows(cli(*args, "--db", filled))
    monkeypatch.setattr(segments, "CHUNK", 2)
    chunked = rows(cli(*args, "--db", filled))
    assert chunked == whole
    assert [r["id"] for r in chunked] == [
        "dan@globex.com",
        "ann@acme.com",
        "cat-123",
        "eve@x.com",
        "bob@acme.com",
    ]
    limited = rows(cli(*args, "--limit", "3", "--db", filled))
    assert limited == whole[:3]


def test_segment_out_file(filled: str, tmp_path: Path) -> None:
    target = tmp_path / "top.jsonl"
    result = cli(
        "segment", "--format", "jsonl", "--limit", "2", "--out", str(target), "--db", filled
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.strip() == f"2 contact(s) written to {target}"
    assert len(target.read_text(encoding="utf-8").splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--where", '{"all": '], 1, "--where: line 1, column 9: invalid JSON: Expecting value"),
        (
            ["--where", '{"all": [{"scor": "SCORE", "gt": 1}]}'],
            1,
            "--where: /all/0: expected exactly one of",
        ),
        (["--where", '{"all": [{"scor": "SCORE", "gt": 1}]}'], 1, "did you mean 'score'?"),
        (["--where", '{"score": "SCORE", "gt": [1]}'], 1, "--where: /gt: expected a number"),
        (["--where", "[]"], 1, "--where: /: expected a condition object"),
        (["--sort", "SCORE"], 2, "expected score:NAME or grade:NAME"),
        (["--cold", "30 days"], 2, "expected an ISO-8601 duration"),
        (["--limit", "-1"], 2, "--limit"),
        (["--format", "xml"], 2, "--format"),
        (["--at", "yesterday"], 2, "expected an ISO-8601 timestamp"),
        # refused before the store is read, with the exit code `report --html` gives
        (["--out", "no-such-folder/top.csv"], 2, "the folder no-such-folder does not exist"),
    ],
)
def test_segment_bad_input_and_usage(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    result = cli("segment", *args, "--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == code, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_normalised_email_hash() -> None:
    assert segments.email_sha256(" Ann@Acme.com ") == hashlib.sha256(b"ann@acme.com").hexdigest()
    assert segments.email_of("ann@acme.com", {}) == "ann@acme.com"
    assert segments.email_of("u-1", {"EMAIL": "x@y.io"}) == "x@y.io"
    assert segments.email_of("u-1", {"email": "  "}) is None
