"""``leadflow backtest`` on generated histories whose figures are known in advance."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.backtest import (
    BacktestError,
    Variant,
    backtest,
    duration_words,
    name_variants,
)
from engine.cli import main
from engine.errors import InvalidWorkflow

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY = 86400
HOUR = 3600
OUTCOME = "Lead Converted"

MODEL = {
    "kind": "score_model",
    "id": "demo-ready",
    "version": 1,
    "name": "Demo score",
    "score": "SCORE",
    "sales_ready": 100,
    "bands": [
        {"list": "Cold", "below": 50},
        {"list": "Warm", "from": 50, "below": 100},
        {"list": "Ready", "from": 100},
    ],
}


def points_workflow(points: int, version: int = 1) -> dict[str, Any]:
    return {
        "id": "demo-points",
        "version": version,
        "name": f"{points} points per demo",
        "triggers": [{"type": "event", "event": "Demo Watched"}],
        "reentry": "always",
        "start": "add",
        "nodes": {"add": {"type": "update_score", "score": "SCORE", "add": points}},
    }


def write(folder: Path, *documents: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for document in documents:
        (folder / f"{document['id']}-v{document['version']}.json").write_text(json.dumps(document))
    return folder


class History:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def add(self, contact: str, seconds: float, kind: str = "track", **fields: Any) -> None:
        key = "anonymousId" if contact.startswith("anon-") else "userId"
        line = {
            "type": kind,
            key: contact,
            "messageId": f"m{len(self.lines):05d}",
            "timestamp": (START + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z"),
            **fields,
        }
        self.lines.append(line)

    def demo(self, contact: str, seconds: float) -> None:
        self.add(contact, seconds, event="Demo Watched")

    def convert(self, contact: str, seconds: float) -> None:
        self.add(contact, seconds, event=OUTCOME)

    def save(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        return path


def known_history(path: Path) -> Path:
    """100 contacts, 25 of them convert. With 50 points a demo (sales-ready at 2 demos):

    - 15 reach 100 and then convert (9 of them watched 3 demos, 6 watched 2), contact i
      converting i days after its last demo (i = 1..15);
    - 5 reach 100 and never convert (1 with 3 demos, 4 with 2);
    - 10 convert without reaching 100: 6 after one demo, 4 without any;
    - 20 watch one demo and 50 do nothing, neither converting.
    """
    history = History()
    for n in range(100):
        history.add(f"c{n:03d}", n, kind="identify", traits={"n": n})
    t = 1000
    for i in range(1, 16):  # the 15 flagged converters
        contact = f"c{i - 1:03d}"
        demos = 3 if i <= 9 else 2
        for k in range(demos):
            history.demo(contact, t + k * HOUR)
        history.convert(contact, t + (demos - 1) * HOUR + i * DAY)
        t += 10
    for n in range(15, 20):  # sales-ready, never converted
        for k in range(3 if n == 15 else 2):
            history.demo(f"c{n:03d}", t + k * HOUR)
        t += 10
    for n in range(20, 26):  # one demo, then converted
        history.demo(f"c{n:03d}", t)
        history.convert(f"c{n:03d}", t + 2 * DAY)
        t += 10
    for n in range(26, 30):  # converted without a demo
        history.convert(f"c{n:03d}", t + 3 * DAY)
        t += 10
    for n in range(30, 50):  # one demo, no conversion
        history.demo(f"c{n:03d}", t)
        t += 10
    return history.save(path)


@pytest.fixture
def variants(tmp_path: Path) -> list[Variant]:
    fifty = write(tmp_path / "fifty", MODEL, points_workflow(50))
    thirty_four = write(tmp_path / "thirty-four", MODEL, points_workflow(34))
    return [Variant.parse(str(fifty)), Variant.parse(f"v2={thirty_four}")]


def test_two_variants_side_by_side_with_exact_figures(
    tmp_path: Path, variants: list[Variant]
) -> None:
    events = known_history(tmp_path / "events.jsonl")
    result = backtest(variants, events, OUTCOME)
    assert [v.name for v in result.variants] == ["fifty", "v2"]
    fifty, v2 = result.variants

    assert (fifty.contacts, fifty.converters, fifty.threshold) == (100, 25, 100)
    assert fifty.threshold_source == "score model demo-ready"
    assert (fifty.sales_ready, fifty.flagged, fifty.late) == (20, 15, 0)
    assert fifty.base_rate == 25 / 100
    assert fifty.quality == 15 / 20
    assert fifty.recall == 15 / 25
    assert fifty.lift == (15 / 20) / (25 / 100) == 3.0
    # sales-ready at the 2nd demo, converted i days after the last one (plus the hour to
    # the 3rd demo for i <= 9): the median of the 15 is i = 8
    assert fifty.median_lead_time == 8 * DAY + HOUR
    assert {b.list: (b.converters, b.share) for b in fifty.bands} == {
        "Cold": (0, 0.0),
        "Warm": (6, 6 / 25),
        "Ready": (15, 15 / 25),
        "no score": (4, 4 / 25),
    }

    # 34 points a demo: 3 demos (102) are needed; 2 demos (68) stay Warm, 1 (34) Cold
    assert (v2.contacts, v2.converters) == (100, 25)
    assert (v2.sales_ready, v2.flagged, v2.late) == (10, 9, 0)
    assert v2.quality == 9 / 10
    assert v2.recall == 9 / 25
    assert v2.lift == pytest.approx((9 / 10) / (25 / 100))
    assert v2.median_lead_time == 5 * DAY  # converters 1..9, i days after the 3rd demo
    assert {b.list: b.converters for b in v2.bands} == {
        "Cold": 6,
        "Warm": 6,
        "Ready": 9,
        "no score": 4,
    }

    data = result.as_json()
    assert data["events"] == len((tmp_path / "events.jsonl").read_text().splitlines())
    first = data["variants"][0]
    assert first["quality"] == 0.75
    assert first["recall"] == 0.6
    assert first["lift"] == 3.0
    assert first["median_lead_time_days"] == 8.04
    assert first["median_lead_time_seconds"] == 8 * DAY + HOUR
    assert data["variants"][1]["quality"] == 0.9


def test_threshold_option_overrides_the_model(tmp_path: Path, variants: list[Variant]) -> None:
    events = known_history(tmp_path / "events.jsonl")
    result = backtest(variants[:1], events, OUTCOME, threshold=150)
    (fifty,) = result.variants
    # 150 takes 3 demos at 50: the 9 converters and 1 non-converter that watched 3
    assert (fifty.threshold, fifty.threshold_source) == (150, "--threshold")
    assert (fifty.sales_ready, fifty.flagged) == (10, 9)
    assert fifty.quality == 0.9
    assert fifty.median_lead_time == 5 * DAY


def test_cli_table_and_json(tmp_path: Path, variants: list[Variant]) -> None:
    events = known_history(tmp_path / "events.jsonl")
    args = ["backtest", "--events", str(events), "--outcome", OUTCOME]
    for variant in variants:
        args += ["--workflows", ",".join(str(p) for p in variant.paths)]
    runner = CliRunner()
    done = runner.invoke(main, [*args, "--json"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert [v["sales_ready"] for v in data["variants"]] == [20, 10]
    assert [v["converted_after_sales_ready"] for v in data["variants"]] == [15, 9]

    done = runner.invoke(main, args, env={"COLUMNS": "120"})
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()

    def row(label: str) -> list[str]:
        found = [line for line in lines if line.startswith(f"│ {label}")]
        assert len(found) == 1, (label, done.output)
        return [cell.strip() for cell in found[0].strip("│").split("│")][1:]

    assert row("reached sales-ready") == ["20 (20.0 %)", "10 (10.0 %)"]
    assert row("  converted after") == ["15", "9"]
    assert row("quality") == ["75.0 %", "90.0 %"]
    assert row("recall") == ["60.0 %", "36.0 %"]
    assert row("lift") == ["3.00x", "3.60x"]
    assert row("median lead time") == ["8.0 days", "5.0 days"]
    assert row("converted (base rate)") == ["25 (25.0 %)", "25 (25.0 %)"]
    assert row("  Ready") == ["60.0 % (15)", "36.0 % (9)"]
    assert row("  no score") == ["16.0 % (4)", "16.0 % (4)"]


def test_late_converters_merges_and_the_outcomes_own_points(tmp_path: Path) -> None:
    """Converting first and reaching 100 later is not a flag; points the outcome event
    itself gives do not flag either; an anonymous visitor merged into a known contact
    counts once, with its history."""
    bonus = {
        "id": "converted-bonus",
        "version": 1,
        "name": "Customers get 100",
        "triggers": [{"type": "event", "event": OUTCOME}],
        "start": "add",
        "nodes": {"add": {"type": "update_score", "score": "SCORE", "add": 100}},
    }
    folder = write(tmp_path / "wf", MODEL, points_workflow(50), bonus)
    history = History()
    history.demo("late", 0)
    history.convert("late", DAY)  # +100 from the bonus, at the conversion: not before
    history.demo("late", 2 * DAY)
    history.demo("anon-1", 0)
    history.demo("anon-1", HOUR)  # sales-ready while anonymous
    history.add("known", 2 * HOUR, kind="identify", anonymousId="anon-1", traits={})
    history.convert("known", 3 * DAY)
    history.demo("flag-same-moment", 0)
    history.demo("flag-same-moment", DAY)
    history.convert("flag-same-moment", DAY)  # ready at the same moment, by the demo
    history.add("idle", 0, kind="identify", traits={})
    events = history.save(tmp_path / "events.jsonl")
    (result,) = backtest([Variant.parse(str(folder))], events, OUTCOME).variants
    assert result.contacts == 4  # late, known (anon-1 merged in), flag-same-moment, idle
    assert result.converters == 3
    assert (result.sales_ready, result.flagged, result.late) == (3, 2, 1)
    assert sorted(result.lead_times) == [0.0, 3 * DAY - HOUR]
    assert {b.list: b.converters for b in result.bands if b.converters} == {
        "Warm": 1,
        "Ready": 2,
    }


def test_list_outcome_reads_the_audit(tmp_path: Path) -> None:
    """``list:NAME``: converting is joining the list; a list filled by the score crossing
    itself is joined at the same moment, after the score change."""
    qualify = {
        "id": "qualify",
        "version": 1,
        "name": "Ready with a budget go to sales",
        "triggers": [{"type": "score_crossed", "score": "SCORE", "above": 100}],
        "start": "has-budget",
        "nodes": {
            "has-budget": {
                "type": "condition",
                "if": {"attribute": "budget", "exists": True},
                "then": "sales",
                "else": "done",
            },
            "sales": {"type": "add_to_list", "list": "Sales"},
            "done": {"type": "exit"},
        },
    }
    folder = write(tmp_path / "wf", MODEL, points_workflow(50), qualify)
    history = History()
    for n in range(10):
        history.add(f"c{n}", 0, kind="identify", traits={"budget": 1} if n < 3 else {})
        for k in range(2 if n < 6 else 1):
            history.demo(f"c{n}", 10 + k * HOUR)
    events = history.save(tmp_path / "events.jsonl")
    (result,) = backtest([Variant.parse(str(folder))], events, "list:Sales").variants
    assert (result.contacts, result.converters, result.sales_ready) == (10, 3, 6)
    assert (result.flagged, result.late) == (3, 0)
    assert result.quality == 0.5
    assert result.recall == 1.0
    assert result.lift == pytest.approx(0.5 / 0.3)
    assert result.median_lead_time == 0.0
    assert {b.list: b.converters for b in result.bands if b.converters} == {"Ready": 3}


def test_bad_input_is_explained(tmp_path: Path) -> None:
    folder = write(tmp_path / "wf", MODEL, points_workflow(50))
    events = known_history(tmp_path / "events.jsonl")
    variant = Variant.parse(str(folder))
    with pytest.raises(BacktestError, match="did you mean 'Lead Converted'"):
        backtest([variant], events, "Lead Convertd")
    with pytest.raises(BacktestError, match="did you mean 'Ready'"):
        backtest([variant], events, "list:Redy")
    with pytest.raises(BacktestError, match="list:NAME"):
        backtest([variant], events, "list:")
    with pytest.raises(BacktestError, match="no such file"):
        Variant.parse(f"{folder},{tmp_path / 'missing.json'}")
    broken = write(tmp_path / "broken", {**points_workflow(50), "start": "nowhere"})
    with pytest.raises(InvalidWorkflow):
        backtest([Variant.parse(str(broken))], events, OUTCOME)
    done = CliRunner().invoke(
        main,
        ["backtest", "--workflows", str(folder), "--events", str(events), "--outcome", "Nope"],
    )
    assert done.exit_code == 1
    assert "unknown outcome" in done.output


def test_a_base_folder_plus_a_revised_version_is_one_variant(tmp_path: Path) -> None:
    base = write(tmp_path / "base", MODEL, points_workflow(50))
    revised = write(tmp_path / "revised", points_workflow(34, version=2))
    events = known_history(tmp_path / "events.jsonl")
    joined = Variant.parse(f"{base},{revised / 'demo-points-v2.json'}")
    assert joined.name == "base+1"
    (result,) = backtest([joined], events, OUTCOME).variants
    assert (result.sales_ready, result.flagged) == (10, 9)  # version 2 (34 points) runs


def test_names_and_durations() -> None:
    a, b = Variant("x", (Path("one/x"),)), Variant("x", (Path("two/x"),))
    assert [v.name for v in name_variants([a, b])] == ["one/x", "two/x"]
    assert [v.name for v in name_variants([a, a])] == ["one/x", "one/x #2"]
    assert duration_words(3 * DAY + 6 * HOUR) == "3.2 days"
    assert duration_words(5 * HOUR) == "5.0 hours"
    assert duration_words(720) == "12 minutes"
    assert duration_words(None) == "-"


def test_keep_leaves_the_stores(tmp_path: Path, variants: list[Variant]) -> None:
    events = known_history(tmp_path / "events.jsonl")
    backtest(variants, events, OUTCOME, keep=tmp_path / "kept")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir() if p.suffix == ".db") == [
        "1.db",
        "2.db",
    ]
    # the replay leaves out the audit's index by contact while it runs; a kept store has
    # it again, as ``contacts show`` and ``explain`` on it need
    for name in ("1.db", "2.db"):
        with sqlite3.connect(tmp_path / "kept" / name) as db:
            found = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        assert {"ix_audit_contact_at", "ix_events_contact_ts_name"} <= found


def test_variants_in_processes_of_their_own_give_the_same_figures(
    tmp_path: Path, variants: list[Variant]
) -> None:
    events = known_history(tmp_path / "events.jsonl")

    def figures(jobs: int) -> list[dict[str, Any]]:
        data = backtest(variants, events, OUTCOME, jobs=jobs).as_json()["variants"]
        return [{k: v for k, v in item.items() if k != "seconds"} for item in data]

    assert figures(2) == figures(1)
