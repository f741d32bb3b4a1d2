"""``leadflow calibrate`` on generated histories whose answer is known in advance."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note
from hypothesis import strategies as st

from engine.calibrate import CalibrationError, calibrate, new_versions
from engine.cli import main
from engine.validation import validate_paths

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
STAGES = [WORKFLOWS / f"{name}-stage.json" for name in ("awareness", "engagement", "consideration")]
MODEL = WORKFLOWS / "models" / "sales-ready.json"
START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
OUTCOME = "Order Completed"

# What every converter does before ordering: 5 awareness (2 sign-ups, 3 events attended),
# 3 engagement (1 ebook, 2 clicks) and 4 consideration actions (1 quote, 1 contact sales,
# 2 pricing page views): 5 + 3 + 4 = 12, and 100 / 12 = 8.33, so 8 points per action.
AWARENESS = [("Signed Up", {})] * 2 + [("Event Attended", {"event_name": "Expo"})] * 3
ENGAGEMENT = [("Ebook Downloaded", {"ebook": "Guide"})] + [("Email Clicked", {})] * 2
CONSIDERATION = [
    ("Quote Requested", {}),
    ("Contact Sales Requested", {}),
    ("Page Viewed", {"url": "/pricing"}),
    ("Page Viewed", {"url": "/pricing/enterprise"}),
]
# Not actions of any stage: they must never count.
NOISE = [("Page Viewed", {"url": "/blog/post"}), ("Email Opened", {}), ("Page Viewed", {})]


class History:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def add(self, kind: str, contact: str, moment: datetime, **fields: Any) -> None:
        key = "anonymousId" if contact.startswith("anon-") else "userId"
        message = {"type": kind, key: contact, "timestamp": _iso(moment), **fields}
        message["messageId"] = f"m-{len(self.lines) + 1}"
        self.lines.append(message)

    def track(self, contact: str, moment: datetime, event: str, props: dict[str, Any]) -> None:
        self.add("track", contact, moment, event=event, properties=props)

    def write(self, path: Path) -> Path:
        path.write_text("".join(json.dumps(line) + "\n" for line in self.lines))
        return path


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def known_history(converters: int = 30, others: int = 20) -> History:
    """Converters who each do exactly 5 + 3 + 4 stage actions before ordering, with noise
    before and every kind of action again after ordering; non-converters who do plenty."""
    history = History()
    for i in range(converters):
        contact = f"buyer{i:02d}@acme.example"
        moment = START + timedelta(days=i % 7, minutes=i)
        # the first buyer starts anonymous; identify folds that history into her
        first = f"anon-{i:02d}" if i == 0 else contact
        history.add("identify", contact, moment, traits={"job_title": "Buyer"})
        for j, (event, props) in enumerate([*AWARENESS, *ENGAGEMENT, *CONSIDERATION]):
            moment += timedelta(hours=5)
            who = first if j < 2 else contact
            history.track(who, moment, event, props)
            if j == 1 and i == 0:
                moment += timedelta(minutes=1)
                history.add("identify", contact, moment, anonymousId=first, traits={})
            if j % 4 == 0:
                noise_event, noise_props = NOISE[j % len(NOISE)]
                history.track(contact, moment + timedelta(minutes=1), noise_event, noise_props)
        history.track(contact, moment + timedelta(days=1), OUTCOME, {"total": 990})
        after = moment + timedelta(days=2)
        for event, props in [*AWARENESS, *ENGAGEMENT, *CONSIDERATION, (OUTCOME, {})]:
            after += timedelta(hours=1)
            history.track(contact, after, event, props)
    for i in range(others):
        contact = f"browser{i:02d}@other.example"
        moment = START + timedelta(hours=i)
        for event, props in [*AWARENESS, *AWARENESS, *ENGAGEMENT, *NOISE]:
            moment += timedelta(hours=3)
            history.track(contact, moment, event, props)
    history.lines.sort(key=lambda line: line["timestamp"])
    return history


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return known_history().write(tmp_path_factory.mktemp("calibrate") / "events.jsonl")


def run_cli(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["calibrate", *map(str, args)])


def stage_args() -> list[str]:
    return [item for path in [*STAGES, MODEL] for item in ("--workflows", str(path))]


# --- the known answer -----------------------------------------------------------------------


def test_medians_total_and_points_on_a_known_history(events: Path) -> None:
    result = calibrate([*STAGES, MODEL], events, OUTCOME)
    assert len(result.converters) == 30
    assert result.contacts == 50
    assert [s.workflow.id for s in result.stages] == [
        "awareness-stage",
        "engagement-stage",
        "consideration-stage",
    ]
    assert [s.median for s in result.stages] == [5, 3, 4]
    assert result.typical_total == 12
    assert result.threshold == 100
    assert result.threshold_source == "score model sales-ready"
    assert result.points == 8
    actions = {
        (s.workflow.id, a.label): (sorted(set(a.counts)), sorted(a.points_now))
        for s in result.stages
        for a in s.actions
    }
    assert actions == {
        ("awareness-stage", "on Signed Up"): ([2], [5]),
        ("awareness-stage", "on Event Attended"): ([3], [10]),
        ("engagement-stage", "on Ebook Downloaded"): ([1], [15]),
        ("engagement-stage", "on Email Clicked"): ([2], [10]),
        ("consideration-stage", "on Quote Requested"): ([1], [30]),
        ("consideration-stage", "on Contact Sales Requested"): ([1], [30]),
        ("consideration-stage", "on Page Viewed where url matches /pricing*"): ([2], [30]),
    }


def test_json_shape(events: Path) -> None:
    result = run_cli(*stage_args(), "--events", events, "--outcome", OUTCOME, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {
        "outcome",
        "score",
        "threshold",
        "threshold_source",
        "contacts",
        "converters",
        "first_event",
        "last_event",
        "stages",
        "typical_total",
        "points_per_action",
        "points_exact",
    }
    assert (data["converters"], data["typical_total"], data["points_per_action"]) == (30, 12, 8)
    assert data["points_exact"] == pytest.approx(100 / 12, abs=1e-4)
    assert data["threshold"] == 100
    stage = data["stages"][0]
    assert set(stage) == {"workflow", "version", "name", "median", "mean", "share", "actions"}
    assert (stage["workflow"], stage["median"], stage["mean"], stage["share"]) == (
        "awareness-stage",
        5,
        5,
        1,
    )
    action = stage["actions"][1]
    assert action == {
        "event": "Event Attended",
        "where": None,
        "label": "on Event Attended",
        "median": 3,
        "mean": 3,
        "share": 1,
        "points_now": [10],
        "points_calibrated": 8,
    }
    pricing = data["stages"][2]["actions"][2]
    assert pricing["where"] == {"property": "url", "matches": "/pricing*"}
    assert pricing["median"] == 2


def test_table_output(events: Path) -> None:
    result = run_cli(*stage_args(), "--events", events, "--outcome", OUTCOME)
    assert result.exit_code == 0, result.output
    assert "30 converter(s) of 50 contact(s)" in result.output
    assert "5 + 3 + 4 = 12 interactions" in result.output
    assert "so 8 points per action" in result.output
    assert "on Event Attended" in result.output


def test_threshold_option_and_default(events: Path) -> None:
    assert calibrate(STAGES, events, OUTCOME, threshold=60).points == 5  # 60 / 12
    plain = calibrate(STAGES, events, OUTCOME)  # no model given: the default 100
    assert (plain.threshold, plain.threshold_source, plain.points) == (100, "default", 8)


def test_medians_of_varied_histories(tmp_path: Path) -> None:
    """Converters doing 3, 5 and 9 sign-ups (median 5, mean 5.67) and one who never did an
    engagement action (share 2/3)."""
    history = History()
    plan = [(3, 1), (5, 0), (9, 4)]
    for i, (signups, clicks) in enumerate(plan):
        contact = f"c{i}"
        moment = START
        for event in ["Signed Up"] * signups + ["Email Clicked"] * clicks:
            moment += timedelta(hours=1)
            history.track(contact, moment, event, {})
        history.track(contact, moment + timedelta(hours=1), OUTCOME, {})
    result = calibrate(STAGES, history.write(tmp_path / "e.jsonl"), OUTCOME)
    data = result.as_json()
    awareness, engagement = data["stages"][0], data["stages"][1]
    assert (awareness["median"], awareness["mean"]) == (5, 5.67)
    assert (engagement["median"], engagement["share"]) == (1, 0.6667)
    assert data["typical_total"] == 6  # 5 + 1 + 0 (nobody was in consideration)
    assert data["points_per_action"] == 17  # 100 / 6 = 16.67


def test_list_outcome_matches_the_event_outcome(tmp_path: Path, events: Path) -> None:
    customers = tmp_path / "customers.json"
    customers.write_text(
        json.dumps(
            {
                "id": "customers",
                "version": 1,
                "triggers": [{"type": "event", "event": OUTCOME}],
                "reentry": "always",
                "start": "add",
                "nodes": {"add": {"type": "add_to_list", "list": "Customers"}},
            }
        )
    )
    by_list = calibrate([*STAGES, customers], events, "list:Customers")
    by_event = calibrate([*STAGES, customers], events, OUTCOME)
    assert sorted(by_list.converters) == sorted(by_event.converters)
    assert [s.median for s in by_list.stages] == [5, 3, 4]
    assert (by_list.typical_total, by_list.points) == (12, 8)


# --- writing new versions ----------------------------------------------------------------------


def test_write_makes_valid_next_versions(tmp_path: Path, events: Path) -> None:
    out = tmp_path / "calibrated"
    result = run_cli(*stage_args(), "--events", events, "--outcome", OUTCOME, "--write", out)
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.json"))
    assert [f.name for f in files] == [
        "awareness-stage.json",
        "consideration-stage.json",
        "engagement-stage.json",
    ]
    check = validate_paths(files)
    assert check.ok, check.problems
    for document in (json.loads(f.read_text()) for f in files):
        original = json.loads((WORKFLOWS / f"{document['id']}.json").read_text())
        assert document["version"] == original["version"] + 1
        adds = [n["add"] for n in document["nodes"].values() if "add" in n]
        assert adds and all(add == 8 for add in adds)
        notes = document["notes"]
        assert "30 of 50 contacts converted" in notes
        assert "awareness-stage 5, engagement-stage 3, consideration-stage 4" in notes
        assert "a typical buyer has 12" in notes
        assert "threshold 100" in notes and "100 / 12 = 8.33, rounded to 8 points" in notes
        assert "up to 2026-01" in notes  # the date of the last event
        assert "Earlier notes: " + original["notes"] in notes
        # everything else is as it was
        rest = {k: v for k, v in document.items() if k not in ("version", "notes", "nodes")}
        assert rest == {k: v for k, v in original.items() if k not in ("version", "notes", "nodes")}
    # the new versions calibrate again (an older version given too is not a second stage),
    # and their notes do not pile up
    again = calibrate([*STAGES, *files, MODEL], events, OUTCOME)
    assert [(s.workflow.id, s.workflow.version) for s in again.stages] == [
        ("awareness-stage", 2),
        ("engagement-stage", 2),
        ("consideration-stage", 2),
    ]
    assert {p for s in again.stages for a in s.actions for p in a.points_now} == {8}
    [second] = [d for d in new_versions(again) if d["id"] == "awareness-stage"]
    assert second["version"] == 3
    assert second["notes"].count("Calibrated by leadflow calibrate") == 1
    assert second["notes"].count("Earlier notes:") == 1


def test_write_replaces_only_an_older_version(tmp_path: Path, events: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "awareness-stage.json").write_text(json.dumps({"id": "awareness-stage", "version": 1}))
    (out / "engagement-stage.json").write_text(json.dumps({"id": "something-else", "version": 1}))
    args = [*stage_args(), "--events", events, "--outcome", OUTCOME, "--write", out]
    result = run_cli(*args)
    assert result.exit_code == 1
    assert "engagement-stage.json exists" in result.output
    assert "nothing was written" in result.output
    assert json.loads((out / "awareness-stage.json").read_text())["version"] == 1
    assert not (out / "consideration-stage.json").exists()
    (out / "engagement-stage.json").unlink()
    assert run_cli(*args).exit_code == 0
    assert json.loads((out / "awareness-stage.json").read_text())["version"] == 2


def test_write_never_writes_an_invalid_file(tmp_path: Path, events: Path) -> None:
    # calibrated points far over any sensible value still validate; an invalid document
    # can only come from a broken source, which is refused before anything is measured
    bad = tmp_path / "bad.json"
    document = json.loads(STAGES[0].read_text())
    document["nodes"]["count"]["next"] = "nowhere"
    bad.write_text(json.dumps(document))
    out = tmp_path / "out"
    result = run_cli("--workflows", bad, "--events", events, "--outcome", OUTCOME, "--write", out)
    assert result.exit_code == 1
    assert "not valid" in result.output
    assert "/nodes/count/next" in result.output
    assert not out.exists()


# --- bad input: one clear message, exit 1, no traceback --------------------------------------


def _assert_clean_failure(result: Result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_unknown_outcome_event(events: Path) -> None:
    result = run_cli(*stage_args(), "--events", events, "--outcome", "Order Complete")
    _assert_clean_failure(result, "unknown outcome", "did you mean 'Order Completed'")


def test_unknown_outcome_list(events: Path) -> None:
    result = run_cli(*stage_args(), "--events", events, "--outcome", "list:Sales-qualified lead")
    _assert_clean_failure(result, "unknown outcome", "did you mean 'Sales-qualified leads'")
    result = run_cli(*stage_args(), "--events", events, "--outcome", "list:")
    _assert_clean_failure(result, "needs the list's name")


def test_no_converters_on_a_list(tmp_path: Path, events: Path) -> None:
    # nobody in the history reaches Sales-qualified leads through these workflows alone
    history = History()
    history.track("x", START, "Signed Up", {})
    path = history.write(tmp_path / "few.jsonl")
    result = run_cli(*stage_args(), "--events", path, "--outcome", "list:Sales-qualified leads")
    _assert_clean_failure(result, "no converters")


def test_converters_without_stage_actions(tmp_path: Path) -> None:
    history = History()
    history.track("x", START, OUTCOME, {})
    history.track("x", START + timedelta(hours=1), "Signed Up", {})  # after: does not count
    path = history.write(tmp_path / "e.jsonl")
    result = run_cli(*stage_args(), "--events", path, "--outcome", OUTCOME)
    _assert_clean_failure(result, "nothing to calibrate")


def test_invalid_workflows(tmp_path: Path, events: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"id": "x", "version": 1, "start": "a", "nodes": {"a": {"type": "nope"}}}')
    result = run_cli("--workflows", broken, "--events", events, "--outcome", OUTCOME)
    _assert_clean_failure(result, "not valid", "unknown node type 'nope'")


def test_no_scoring_workflow(events: Path) -> None:
    welcome = WORKFLOWS / "welcome-series.json"
    result = run_cli("--workflows", welcome, "--events", events, "--outcome", OUTCOME)
    _assert_clean_failure(result, "no scoring workflow")


def test_bad_event_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"type": "track", "userId": "a", "event": "Signed Up", "timestamp": "2026-01-05"}\n'
        "not json\n"
        '{"type": "track", "userId": "a"}\n'
    )
    result = run_cli(*stage_args(), "--events", path, "--outcome", OUTCOME)
    _assert_clean_failure(result, "2 line(s) rejected", "line 2: invalid JSON", "line 3:")


def test_unreadable_write_target_is_a_clean_error(tmp_path: Path, events: Path) -> None:
    target = tmp_path / "a-file"
    target.write_text("")
    result = run_cli(*stage_args(), "--events", events, "--outcome", OUTCOME, "--write", target)
    assert result.exit_code in (1, 2)  # click refuses a file where a folder is wanted
    assert "Traceback" not in result.output


def test_calibrate_error_is_a_leadflow_error() -> None:
    from engine.errors import LeadflowError

    assert issubclass(CalibrationError, LeadflowError)


# --- property: never a traceback ---------------------------------------------------------------

EVENT_NAMES = [
    "Signed Up",
    "Event Attended",
    "Ebook Downloaded",
    "Email Clicked",
    "Quote Requested",
    "Page Viewed",
    OUTCOME,
    "Other",
]
properties = st.dictionaries(
    st.sampled_from(["url", "event_name", "ebook", "x"]),
    st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans()),
    max_size=3,
)


def track_lines(events: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda contact, event, props, minute, with_id: json.dumps(
            {
                "type": "track",
                "userId": contact,
                "event": event,
                "properties": props,
                "timestamp": _iso(START + timedelta(minutes=minute)),
                **({"messageId": f"m{minute}"} if with_id else {}),
            }
        ),
        st.sampled_from(["a", "b", "c", "d"]),
        st.sampled_from(events),
        properties,
        st.integers(0, 10_000),
        st.booleans(),
    )


other_lines = st.sampled_from(
    [
        '{"type": "identify", "userId": "a", "anonymousId": "b", "traits": {"x": 1}}',
        '{"type": "alias", "userId": "c", "previousId": "d"}',
        "",
    ]
)
bad_lines = st.sampled_from(
    [
        "{broken",
        '{"type": "track", "userId": "a", "event": "Signed Up", "timestamp": "nope"}',
        '{"type": "track", "userId": "a"}',
        "[]",
    ]
)


def history_lines() -> st.SearchStrategy[list[str]]:
    """Mostly usable histories (so calibrations succeed too), sometimes a bad line."""
    return st.builds(
        lambda tracks, outcomes, others, bad: [
            *tracks,
            *outcomes,
            *others,
            *([bad] if bad else []),
        ],
        st.lists(track_lines(EVENT_NAMES), max_size=40),
        st.lists(track_lines([OUTCOME]), max_size=3),
        st.lists(other_lines, max_size=3),
        st.one_of(st.none(), st.none(), st.none(), bad_lines),
    ).flatmap(st.permutations)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="calibrate-") as folder:
        yield Path(folder)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=history_lines(),
    outcome=st.sampled_from([OUTCOME, OUTCOME, OUTCOME, "Signed Up", "Never Sent", " "]),
    threshold=st.sampled_from([None, "1", "100", "0.5", "1e6"]),
    write=st.booleans(),
)
def test_calibrate_never_raises(
    lines: list[str], outcome: str, threshold: str | None, write: bool
) -> None:
    with scratch() as folder:
        path = folder / "events.jsonl"
        path.write_text("\n".join(lines) + "\n")
        args: list[str | Path] = [*stage_args(), "--events", path, "--outcome", outcome]
        if threshold is not None:
            args += ["--threshold", threshold]
        if write:
            args += ["--write", folder / "out"]
        result = run_cli(*args, "--json")
        note(f"exit {result.exit_code}")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert result.exit_code in (0, 1), result.output
        if result.exit_code == 0:
            data = json.loads(result.output)
            assert data["points_per_action"] >= 1
            if write:
                assert validate_paths([folder / "out"]).ok


@settings(max_examples=10, deadline=None)
@given(lines=history_lines())
def test_calibrate_on_a_list_never_raises(lines: list[str]) -> None:
    with scratch() as folder:
        path = folder / "events.jsonl"
        path.write_text("\n".join(lines) + "\n")
        result = run_cli(*stage_args(), "--events", path, "--outcome", "list:Sales-qualified leads")
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert result.exit_code in (0, 1), result.output
