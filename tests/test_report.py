"""``leadflow report`` on a small store whose figures are known, and its HTML page opened in
a real headless Chromium (Debian's ``chromium``; the test fails when it is missing)."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.backtest import replay
from engine.cli import main
from engine.durations import Duration
from engine.report.charts import chart_svgs, report_png
from engine.report.data import gather, histogram, nice_width
from engine.report.page import inline_svg, render_html
from engine.simulate import read_event_file
from engine.store.db import open_engine
from engine.validation import validate_paths

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday

DOCUMENTS: list[dict[str, Any]] = [
    {
        "kind": "score_model",
        "id": "demo-ready",
        "version": 1,
        "name": "Demo score",
        "score": "SCORE",
        "sales_ready": 100,
        # listed highest first: the report puts them lowest first
        "bands": [
            {"list": "Ready", "from": 100},
            {"list": "Warm", "from": 50, "below": 100},
            {"list": "New", "below": 50},
        ],
    },
    {
        "kind": "grade_model",
        "id": "demo-grade",
        "version": 1,
        "grade": "GRADE",
        "rules": [
            {"if": {"attribute": "job_title", "eq": "CEO"}, "points": 10},
            {"if": {"attribute": "job_title", "eq": "Manager"}, "points": 5},
        ],
        "letters": {"A": 10, "C": 5},
    },
    {
        "id": "demo-points",
        "version": 1,
        "name": "Demos",
        "triggers": [{"type": "event", "event": "Demo Watched"}],
        "reentry": "always",
        "start": "add",
        "nodes": {"add": {"type": "update_score", "score": "SCORE", "add": 50}},
    },
    {
        "id": "unsubscribed",
        "version": 1,
        "name": "Unsubscribes lose 60",
        "triggers": [{"type": "event", "event": "Unsubscribed"}],
        "reentry": "always",
        "start": "less",
        "nodes": {"less": {"type": "update_score", "score": "SCORE", "add": -60}},
    },
    {
        "id": "signup",
        "version": 1,
        "name": "Welcome",
        "triggers": [{"type": "event", "event": "Signed Up"}],
        "start": "list",
        "nodes": {
            "list": {"type": "add_to_list", "list": "Newsletter", "next": "email"},
            "email": {"type": "send_email", "template": "welcome-a", "next": "sms"},
            "sms": {"type": "send_sms", "text": "Welcome!"},
        },
    },
]


def _line(contact: str, day: float, **fields: Any) -> dict[str, Any]:
    moment = START + timedelta(days=day)
    return {
        "userId": contact,
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        **fields,
    }


def known_events() -> list[dict[str, Any]]:
    """Ten contacts; the newest event (the report's "now") is day 45.

    c0 CEO: demos on days 0 and 1 (100, Ready), signs up on day 0.
    c1 CEO: a demo on day 40 (50, Warm), signs up on day 8.
    c2 Manager: demos on days 2 and 3 (100, Ready), unsubscribes on day 10 (40, New).
    c3 Manager: signs up on day 21, never scored.
    c4 Intern (F): a demo on day 45 (Warm).
    c5 (never identified, no grade): a demo on day 44 (Warm).
    c6-c9 (F): identified on day 0 only; c6 signs up on day 1.
    """
    identify = {"c0": "CEO", "c1": "CEO", "c2": "Manager", "c3": "Manager", "c4": "Intern"}
    lines = [
        _line(c, 0, type="identify", traits={"job_title": t} if t else {"n": 1})
        for c, t in [*identify.items(), ("c6", ""), ("c7", ""), ("c8", ""), ("c9", "")]
    ]
    track = [
        ("c0", 0.01, "Demo Watched"),
        ("c0", 0.02, "Signed Up"),
        ("c0", 1, "Demo Watched"),
        ("c6", 1, "Signed Up"),
        ("c2", 2, "Demo Watched"),
        ("c2", 3, "Demo Watched"),
        ("c1", 8, "Signed Up"),
        ("c2", 10, "Unsubscribed"),
        ("c3", 21, "Signed Up"),
        ("c1", 40, "Demo Watched"),
        ("c5", 44, "Demo Watched"),
        ("c4", 45, "Demo Watched"),
    ]
    lines += [_line(c, day, type="track", event=event) for c, day, event in track]
    return lines


def fill_store(folder: Path, url: str) -> None:
    workflows = folder / "workflows"
    workflows.mkdir(exist_ok=True)
    for document in DOCUMENTS:
        (workflows / f"{document['id']}.json").write_text(json.dumps(document))
    events = folder / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in known_events()))
    validation = validate_paths([workflows])
    assert validation.ok, validation.problems
    messages, rejections = read_event_file(events)
    assert not rejections
    replay(validation, [workflows], messages, rejections, url).dispose()


@pytest.fixture
def known_store(store_url: str, tmp_path: Path) -> str:
    """The known store, on SQLite and on PostgreSQL."""
    fill_store(tmp_path, store_url)
    return store_url


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'known.db'}"
    fill_store(tmp_path, url)
    return url


def test_figures_from_a_known_store(known_store: str) -> None:
    engine = open_engine(known_store)
    try:
        with engine.connect() as connection:
            report = gather(connection)
    finally:
        engine.dispose()
    assert report.as_of == START + timedelta(days=45)
    assert report.contacts == 10
    assert [(b.list, b.contacts, b.reached, b.at_least) for b in report.bands] == [
        ("New", 1, 1, 5),
        ("Warm", 3, 5, 5),
        ("Ready", 1, 2, 2),
    ]
    assert report.no_band == 5
    assert report.funnel == [("all contacts", 10), ("New", 5), ("Warm", 5), ("Ready", 2)]
    assert report.scored == 5
    assert [(b.low, b.contacts) for b in report.histogram if b.contacts] == [
        (40, 1),
        (50, 3),
        (100, 1),
    ]
    assert len(report.histogram) == 11  # 0 to 110 in tens
    assert report.score_stats == {"min": 40, "median": 50, "mean": 58.0, "max": 100}
    assert report.grades == ["A", "C", "F", "no grade"]
    assert report.matrix["A"] == {"New": 0, "Warm": 1, "Ready": 1, "no band": 0}
    assert report.matrix["C"] == {"New": 1, "Warm": 0, "Ready": 0, "no band": 1}
    assert report.matrix["F"] == {"New": 0, "Warm": 1, "Ready": 0, "no band": 4}
    assert report.matrix["no grade"] == {"New": 0, "Warm": 1, "Ready": 0, "no band": 0}
    # last increase before day 15: c0 (day 1), c2 (day 3); never scored: c3, c6-c9
    assert (report.cold, report.cold_never_scored) == (7, 5)
    assert report.lists == [("Newsletter", 4), ("Warm", 3), ("New", 1), ("Ready", 1)]
    assert [w.isoformat() for w in report.weeks] == [
        "2026-03-02",
        "2026-03-09",
        "2026-03-16",
        "2026-03-23",
    ]
    assert report.channels == ["email", "sms"]
    assert report.messages == {"email": [2, 1, 0, 1], "sms": [2, 1, 0, 1]}


def test_cold_window_and_now_options(known_store: str) -> None:
    engine = open_engine(known_store)
    try:
        with engine.connect() as connection:
            week = gather(connection, cold_after=Duration.parse("P7D"))
            early = gather(connection, now=START + timedelta(days=20))
    finally:
        engine.dispose()
    # P7D before day 45 is day 38: all but c1 (40), c4 (45) and c5 (44)
    assert week.cold == 7 and week.cold_never_scored == 5
    # as of day 20 (30 days back is before day 0): nobody is cold yet
    assert early.cold == 0


def _rows(output: str, title: str) -> dict[str, list[str]]:
    """The rows of one rich table of the output, by their first cell."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if line.startswith("└"):
            break
        if line.startswith(("│", "┃")):
            cells = [cell.strip() for cell in re.split("[│┃]", line.strip().strip("│┃"))]
            rows[cells[0]] = cells[1:]
    return rows


def test_terminal_tables(known_store: str) -> None:
    done = CliRunner().invoke(main, ["report", "--db", known_store], env={"COLUMNS": "140"})
    assert done.exit_code == 0, done.output
    out = done.output
    assert out.splitlines()[0] == (
        "10 contacts as of 2026-04-16 09:00 UTC; SCORE: score model demo-ready v1, "
        "sales-ready at 100"
    )
    assert _rows(out, "Contacts per band (buying stage)") == {
        "band": ["range", "contacts", "share"],
        "New": ["< 50", "1", "10.0 %"],
        "Warm": ["≥ 50 and < 100", "3", "30.0 %"],
        "Ready": ["≥ 100", "1", "10.0 %"],
        "no band": ["", "5", "50.0 %"],
    }
    histogram_rows = _rows(out, "SCORE distribution")
    assert histogram_rows["40 to < 50"][0] == "1"
    assert histogram_rows["50 to < 60"] == ["3", "█" * 24]
    assert histogram_rows["100 to < 110"][0] == "1"
    assert histogram_rows["no score"][0] == "5"
    assert "median 50, mean 58, max 100" in out
    assert _rows(out, "GRADE \u00d7 band") == {
        "GRADE": ["New", "Warm", "Ready", "no band", "all"],
        "A": ["0", "1", "1", "0", "2"],
        "C": ["1", "0", "0", "1", "2"],
        "F": ["0", "1", "0", "4", "5"],
        "no grade": ["0", "1", "0", "0", "1"],
    }
    assert _rows(out, "Cold leads") == {
        "cold leads": ["contacts", "share"],
        "no SCORE increase in 30 days (since 2026-03-17 09:00)": ["7", "70.0 %"],
        "of them with no increase ever": ["5", "50.0 %"],
    }
    assert _rows(out, "List sizes") == {
        "list": ["contacts", "share"],
        "Newsletter": ["4", "40.0 %"],
        "Warm": ["3", "30.0 %"],
        "New": ["1", "10.0 %"],
        "Ready": ["1", "10.0 %"],
    }
    assert _rows(out, "Funnel between stages") == {
        "stage": ["reached it or a higher one", "of previous", "of all"],
        "all contacts": ["10", "", "100.0 %"],
        "New": ["5", "50.0 %", "50.0 %"],
        "Warm": ["5", "100.0 %", "50.0 %"],
        "Ready": ["2", "40.0 %", "20.0 %"],
    }
    assert _rows(out, "Messages per channel per week") == {
        "week of": ["email", "sms", "all"],
        "2026-03-02": ["2", "2", "4"],
        "2026-03-09": ["1", "1", "2"],
        "2026-03-16": ["0", "0", "0"],
        "2026-03-23": ["1", "1", "2"],
    }


def test_json_and_options(known_store: str) -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["report", "--db", known_store, "--json", "--cold", "P7D"])
    assert done.exit_code == 0, done.output
    data = json.loads(done.output)
    assert data["contacts"] == 10
    assert data["cold"] == {"after": "P7D", "contacts": 7, "share": 0.7, "never_scored": 5}
    assert [s["of_previous"] for s in data["funnel"]] == [None, 0.5, 1.0, 0.4]
    assert data["grade_by_band"]["F"]["no band"] == 4
    assert data["messages_per_week"][0] == {"week": "2026-03-02", "email": 2, "sms": 2}
    bad = runner.invoke(main, ["report", "--db", known_store, "--cold", "30 days"])
    assert bad.exit_code == 2
    assert "ISO-8601 duration" in bad.output
    for option in ("--html", "--png"):
        nowhere = runner.invoke(main, ["report", "--db", known_store, option, "no/page"])
        assert nowhere.exit_code == 2, nowhere.output
        assert f"'{option}': no/page: the folder no does not exist" in nowhere.output


def test_an_empty_store_reports_without_charts_failing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    done = CliRunner().invoke(
        main,
        [
            "report",
            "--db",
            url,
            "--html",
            str(tmp_path / "r.html"),
            "--png",
            str(tmp_path / "r.png"),
        ],
    )
    assert done.exit_code == 0, done.output
    assert "0 contacts" in done.output
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")
    assert "no contacts" in (tmp_path / "r.html").read_text()


def test_a_long_tail_goes_into_one_open_bin() -> None:
    values = [float(v) for v in range(0, 100)] + [5000.0]
    bins = histogram(values)
    assert [(b.low, b.contacts) for b in bins] == [
        *((float(low), 10) for low in range(0, 100, 10)),
        (100.0, 1),
    ]
    assert bins[-1].open and bins[-1].label() == "100 and more"
    assert bins[0].label() == "0 to < 10"


def test_histogram_bins_and_widths() -> None:
    assert nice_width(100) == 5
    assert nice_width(100, most=12) == 10
    assert nice_width(430, most=12) == 50
    assert nice_width(0) == 1
    bins = histogram([-15.0, 0.0, 9.99, 10.0, 30.0], most=12)
    assert [(b.low, b.high, b.contacts) for b in bins] == [
        (-15, -10, 1),
        (-10, -5, 0),
        (-5, 0, 0),
        (0, 5, 1),
        (5, 10, 1),
        (10, 15, 1),
        (15, 20, 0),
        (20, 25, 0),
        (25, 30, 0),
        (30, 35, 1),
    ]


def test_inline_svg_prefixes_ids() -> None:
    svg = (
        '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg><metadata>x</metadata>'
        '<defs><path id="g1"/><clipPath id="p2"/></defs>'
        '<use xlink:href="#g1"/><g clip-path="url(#p2)"/></svg>'
    )
    assert inline_svg(svg, "bands") == (
        '<svg><defs><path id="bands-g1"/><clipPath id="bands-p2"/></defs>'
        '<use xlink:href="#bands-g1"/><g clip-path="url(#bands-p2)"/></svg>'
    )


def _colours(png: bytes) -> int:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        found = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert found is not None
    return len(found)


def test_html_page_renders_in_headless_chromium(sqlite_store: str, tmp_path: Path) -> None:
    assert CHROMIUM.exists(), (
        "Debian's chromium is not installed: apt-get update && apt-get install -y chromium"
    )
    page = tmp_path / "report.html"
    png = tmp_path / "report.png"
    done = CliRunner().invoke(
        main, ["report", "--db", sqlite_store, "--html", str(page), "--png", str(png)]
    )
    assert done.exit_code == 0, done.output
    html = page.read_text()
    # self-contained: nothing to fetch (the SVG namespaces are names, not requests)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?http""", html)
    assert "<script" not in html
    assert _colours(png.read_bytes()) > 50

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-page.png"
    shot.unlink(missing_ok=True)
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--hide-scrollbars",
        "--window-size=1280,2000",
    ]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [str(CHROMIUM), *flags, f"--user-data-dir={tmp_path / 'profile-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    subprocess.run(
        [
            str(CHROMIUM),
            *flags,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    figures = re.findall(r'<figure class="chart" data-chart="([a-z]+)">\s*<svg', dom)
    assert figures == ["bands", "histogram", "funnel", "matrix", "cold", "lists", "messages"]
    assert dom.count("<svg") == 7
    assert dom.count("<path") > 100  # bars, axes and every glyph, drawn as paths
    assert "Leadflow report" in dom

    picture = shot.read_bytes()
    assert picture.startswith(b"\x89PNG")
    from PIL import Image

    with Image.open(io.BytesIO(picture)) as image:
        assert image.size == (1280, 2000)
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        # the band bars of the first chart are drawn in the YlOrRd colours
        warm = sum(
            count
            for count, (red, green, blue) in colours or []
            if red > 200 and blue < 120 and green < 220
        )
    assert colours is not None and len(colours) > 50  # far from a blank page
    assert warm > 500


def test_charts_are_deterministic_svg(sqlite_store: str) -> None:
    engine = open_engine(sqlite_store)
    try:
        with engine.connect() as connection:
            report = gather(connection)
    finally:
        engine.dispose()
    first, second = chart_svgs(report), chart_svgs(report)
    assert first == second
    assert render_html(report) == render_html(report)
    assert report_png(report).startswith(b"\x89PNG")


def test_chromium_is_where_ci_installs_it() -> None:
    """The page test needs Debian's chromium; CI installs it with
    ``apt-get update && apt-get install -y chromium``."""
    assert shutil.which("chromium") == str(CHROMIUM) or CHROMIUM.exists()
