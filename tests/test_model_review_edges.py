"""Backtest, calibrate, review, versions and report: cases a reviewing helper found wrong
(session 14), each failing before its fix."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.api import Leadflow
from engine.backtest import Variant, backtest, score_model
from engine.calibrate import calibrate
from engine.cli import main
from engine.clock import VirtualClock
from engine.report.charts import report_png
from engine.report.data import gather
from engine.report.page import render_html
from engine.review import review_items
from engine.store.db import open_engine
from engine.validation import validate_paths
from engine.versions import Revision, diff_documents, history

MERGE_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def one_step(workflow_id: str, event: str, node: dict[str, Any]) -> dict[str, Any]:
    """A workflow of one node, entered on every ``event``."""
    return {
        "id": workflow_id,
        "version": 1,
        "name": workflow_id,
        "reentry": "always",
        "triggers": [{"type": "event", "event": event}],
        "start": "a",
        "nodes": {"a": node},
    }


READY_MODEL = {
    "kind": "score_model",
    "id": "ready",
    "version": 1,
    "name": "Ready",
    "score": "SCORE",
    "sales_ready": 100,
}


MERGE_DEMO = one_step("demo", "Demo Watched", {"type": "update_score", "score": "SCORE", "add": 50})


MERGE_SPAM = one_step(
    "spam", "Spam Report", {"type": "update_score", "score": "SCORE", "subtract": 60, "min": 0}
)


def merge_stamp(hours: float) -> str:
    return (MERGE_START + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def test_merge_keeps_the_peak_for_backtest(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    for doc in (READY_MODEL, MERGE_DEMO, MERGE_SPAM):
        (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
    lines = [
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Demo Watched",
            "timestamp": merge_stamp(0),
            "messageId": "1",
        },
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Demo Watched",
            "timestamp": merge_stamp(1),
            "messageId": "2",
        },
        {
            "type": "track",
            "anonymousId": "anon-1",
            "event": "Spam Report",
            "timestamp": merge_stamp(2),
            "messageId": "3",
        },
        {
            "type": "identify",
            "anonymousId": "anon-1",
            "userId": "ann",
            "traits": {},
            "timestamp": merge_stamp(3),
            "messageId": "4",
        },
        {
            "type": "track",
            "userId": "ann",
            "event": "Lead Converted",
            "timestamp": merge_stamp(48),
            "messageId": "5",
        },
        {
            "type": "identify",
            "userId": "bob",
            "traits": {},
            "timestamp": merge_stamp(4),
            "messageId": "6",
        },
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = backtest([Variant.parse(str(folder))], events, "Lead Converted")
    (v,) = result.variants
    assert v.converters == 1
    # ann reached 100 (as anon-1) before converting: one sales-ready lead, flagged
    assert v.flagged == 1
    assert v.flagged <= v.sales_ready, (v.flagged, v.sales_ready)
    assert v.sales_ready == 1
    assert v.quality == 1.0


CALIBRATE_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def calibrate_model(version: int, ready: int) -> dict:
    return {
        "kind": "score_model",
        "id": "ready",
        "version": version,
        "name": f"Ready v{version}",
        "score": "SCORE",
        "sales_ready": ready,
    }


CALIBRATE_DEMO = one_step(
    "demo", "Demo Watched", {"type": "update_score", "score": "SCORE", "add": 10}
)


def test_calibrate_uses_the_newest_score_model_version(tmp_path: Path) -> None:
    base = tmp_path / "base"
    revised = tmp_path / "revised"
    base.mkdir()
    revised.mkdir()
    (base / "ready.json").write_text(json.dumps(calibrate_model(1, 100)))
    (base / "demo.json").write_text(json.dumps(CALIBRATE_DEMO))
    (revised / "ready.json").write_text(json.dumps(calibrate_model(2, 60)))
    lines = []
    for n in range(4):
        for k in range(4):
            lines.append(
                {
                    "type": "track",
                    "userId": f"c{n}",
                    "event": "Demo Watched",
                    "timestamp": (CALIBRATE_START + timedelta(hours=n * 10 + k)).isoformat(),
                    "messageId": f"d{n}-{k}",
                }
            )
        lines.append(
            {
                "type": "track",
                "userId": f"c{n}",
                "event": "Lead Converted",
                "timestamp": (CALIBRATE_START + timedelta(hours=n * 10 + 5)).isoformat(),
                "messageId": f"c{n}",
            }
        )
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))

    paths = [base, revised]
    newest = score_model(validate_paths(paths), "SCORE")
    assert newest is not None and newest.version == 2 and newest.sales_ready == 60

    result = calibrate(paths, events, "Lead Converted")
    # 4 demos before converting: 60 / 4 = 15 points per action (v2), not 100 / 4 = 25 (v1)
    assert result.threshold == 60, (result.threshold, result.threshold_source)
    assert result.points == 15


LEFT_START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


LEFT_DEMO = one_step("demo", "Demo Watched", {"type": "update_score", "score": "SCORE", "add": 100})


LEFT_TRIAL = one_step("trial", "Trial Started", {"type": "add_to_list", "list": "Trial"})


LEFT_TRIAL_END = one_step("trial-end", "Trial Ended", {"type": "remove_from_list", "list": "Trial"})


def test_review_counts_contacts_that_ever_reached_the_list(tmp_path: Path) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    for doc in (READY_MODEL, LEFT_DEMO, LEFT_TRIAL, LEFT_TRIAL_END):
        (folder / f"{doc['id']}.json").write_text(json.dumps(doc))
    lines = []
    for n, event in enumerate(["Demo Watched", "Trial Started", "Trial Ended"]):
        lines.append(
            {
                "type": "track",
                "userId": "ann",
                "event": event,
                "messageId": f"m{n}",
                "timestamp": (LEFT_START + timedelta(days=n)).isoformat(),
            }
        )
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    keep = tmp_path / "keep"
    result = backtest([Variant.parse(str(folder))], events, "list:Trial", keep=keep)
    assert result.variants[0].flagged == 1  # backtest: ann reached the outcome after sales-ready

    engine = open_engine(f"sqlite:///{keep / '1.db'}")
    with engine.connect() as connection:
        items = review_items(connection, LEFT_START + timedelta(days=100), "list:Trial")
    engine.dispose()
    demo = next(item for item in items if item.workflow_id == "demo")
    assert demo.ready == 1
    assert demo.reached == 1, "review: 0 of 1 sales-ready contacts reached list:Trial"


LABELS_V1 = {
    "kind": "grade_model",
    "id": "fit",
    "version": 1,
    "name": "Fit",
    "grade": "GRADE",
    "rules": [
        {"if": {"attribute": "company_size", "gte": 500}, "points": 20, "label": "company size"},
        {"if": {"attribute": "company_size", "gte": 50}, "points": 10, "label": "company size"},
    ],
    "letters": {"A": 25, "B": 10},
}


def labels_revisions():
    v2 = copy.deepcopy(LABELS_V1)
    v2["version"] = 2
    v2["rules"][0]["points"] = 30
    at = datetime(2026, 1, 5, tzinfo=UTC)
    return [
        Revision("fit", 1, "Fit", "", LABELS_V1, at),
        Revision("fit", 2, "Fit", "", v2, at),
    ]


def test_history_keeps_both_rules() -> None:
    table = history(labels_revisions())
    cells = [values for label, values in table.rows if label.startswith("rule")]
    assert ["+20", "+30"] in cells, table.rows
    assert ["+10", "+10"] in cells, table.rows


def test_diff_reports_the_change_that_was_made() -> None:
    v1, v2 = (r.document for r in labels_revisions())
    texts = [change.text for change in diff_documents(v1, v2)]
    assert any("+20 -> +30" in t for t in texts), texts
    assert not any("+20 -> +10" in t for t in texts), texts


DOLLAR_START = datetime(2026, 1, 5, 10, tzinfo=UTC)


@pytest.mark.parametrize("name", ["$$ VIPs", "ARR $10k_$50k"])
def test_report_charts_take_dollar_signs_in_list_names(tmp_path: Path, name: str) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    clock = VirtualClock(DOLLAR_START)
    with Leadflow(url, clock) as flow:
        flow.deploy(
            [
                {
                    "kind": "score_model",
                    "id": "m",
                    "version": 1,
                    "name": "m",
                    "score": "SCORE",
                    "sales_ready": 100,
                    "bands": [{"list": "Low", "below": 50}, {"list": name, "from": 50}],
                },
                {
                    "id": "d",
                    "version": 1,
                    "name": "d",
                    "reentry": "always",
                    "triggers": [{"type": "event", "event": "Demo"}],
                    "start": "a",
                    "nodes": {"a": {"type": "update_score", "score": "SCORE", "add": 40}},
                },
            ]
        )
        for k in range(3):
            flow.track(
                "ann", "Demo", timestamp=DOLLAR_START + timedelta(hours=k), message_id=f"m{k}"
            )
        flow.track("bob", "Demo", timestamp=DOLLAR_START, message_id="b")
    engine = open_engine(url)
    with engine.connect() as connection:
        report = gather(connection)
    engine.dispose()
    assert [b.list for b in report.bands] == ["Low", name]
    html = render_html(report)  # ValueError: mathtext ParseException
    assert "<svg" in html
    assert report_png(report).startswith(b"\x89PNG")


SCORES_START = datetime(2026, 1, 5, 10, tzinfo=UTC)


def test_sales_ready_counts_only_the_score_with_the_threshold(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Leadflow(url, VirtualClock(SCORES_START)) as flow:
        flow.deploy(
            [
                {
                    "kind": "score_model",
                    "id": "crm-ready",
                    "version": 1,
                    "name": "CRM",
                    "score": "SCORE_CRM",
                    "sales_ready": 50,
                },
                {
                    "id": "interest",
                    "version": 1,
                    "name": "product interest",
                    "reentry": "always",
                    "triggers": [{"type": "event", "event": "Page Viewed"}],
                    "start": "which",
                    "nodes": {
                        "which": {
                            "type": "condition",
                            "if": {"property": "url", "matches": "/crm*"},
                            "then": "crm",
                            "else": "ads",
                        },
                        "crm": {"type": "update_score", "score": "SCORE_CRM", "add": 30},
                        "ads": {"type": "update_score", "score": "SCORE_ADS", "add": 30},
                    },
                },
            ]
        )
        for k in range(2):  # ann: SCORE_ADS 60, SCORE_CRM none
            flow.track(
                "ann", "Page Viewed", {"url": "/ads"}, SCORES_START + timedelta(hours=k), f"a{k}"
            )
        flow.track("bob", "Page Viewed", {"url": "/crm"}, SCORES_START, "b0")  # bob: SCORE_CRM 30
        flow.track("ann", "Order Completed", {}, SCORES_START + timedelta(days=1), "a-order")
    engine = open_engine(url)
    with engine.connect() as connection:
        items = review_items(connection, SCORES_START + timedelta(days=10), "Order Completed")
    engine.dispose()
    item = next(i for i in items if i.workflow_id == "interest")
    assert item.sales_ready == 50
    assert item.ready == 0, "ann's SCORE_ADS 60 was judged against SCORE_CRM's threshold"
    assert item.reached == 0


REJECTED_ROOT = Path(__file__).resolve().parents[1]


def test_backtest_names_the_rejected_lines(tmp_path: Path) -> None:
    events = tmp_path / "leads.csv"
    events.write_text("Prospect ID,Converted\nabc,1\ndef,0\n")
    result = CliRunner().invoke(
        main,
        [
            "backtest",
            "--events",
            str(events),
            "--outcome",
            "Converted",
            "--workflows",
            str(REJECTED_ROOT / "workflows/examples/x-education"),
        ],
    )
    assert result.exit_code == 1
    assert "line 1" in result.output and "rejected" in result.output, result.output
