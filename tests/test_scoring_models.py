"""Score models, grade models and account roll-ups, as scenarios through simulate.

Small hand-written models, workflows and Segment events go into a temporary folder; the
simulation runs on a store the test can read afterwards (audit rows, band moves, decay
ticks at their exact moments). Decay ticks come every ``every`` from the deploy, which in
a simulation is the first event's timestamp. The shipped models (workflows/models, read
through importlib.resources) each get a scenario of their own, and bad model documents get
the same pointer-and-message problems as workflows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from engine.clock import format_timestamp, parse_timestamp
from engine.scoring.models import compile_score_model
from engine.simulate import simulate
from engine.store.db import make_engine
from engine.store.tables import audit, outbox
from engine.validation import validate_documents

# --- building scenarios -----------------------------------------------------------------


def ts(text: str) -> str:
    """``ts("2026-01-05 10:00")`` -> ``"2026-01-05T10:00:00Z"``."""
    date, _, time = text.partition(" ")
    time = time or "00:00"
    if time.count(":") == 1:
        time += ":00"
    return f"{date}T{time}Z"


def track(user: str, event: str, when: str, **properties: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": user,
        "event": event,
        "properties": properties,
        "timestamp": ts(when),
    }


def identify(user: str, when: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": traits, "timestamp": ts(when)}


def group(user: str, account: str, when: str, **traits: Any) -> dict[str, Any]:
    return {
        "type": "group",
        "userId": user,
        "groupId": account,
        "traits": traits,
        "timestamp": ts(when),
    }


def points(
    event: str,
    amount: float,
    score: str = "SCORE",
    op: str = "add",
    workflow_id: str | None = None,
    where: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A workflow: every ``event`` changes ``score`` by ``op`` ``amount`` (node 'points')."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{op}-{score}-{event}".lower()).strip("-")
    trigger: dict[str, Any] = {"type": "event", "event": event}
    if where is not None:
        trigger["where"] = dict(where)
    return {
        "id": workflow_id or slug,
        "version": 1,
        "triggers": [trigger],
        "reentry": "always",
        "start": "points",
        "nodes": {"points": {"type": "update_score", "score": score, op: amount}},
    }


def score_model(model_id: str, score: str = "SCORE", **fields: Any) -> dict[str, Any]:
    return {"kind": "score_model", "id": model_id, "version": 1, "score": score, **fields}


STAGE_BANDS = [
    {"list": "New leads", "below": 20},
    {"list": "Warm leads", "from": 20, "below": 50},
    {"list": "Qualified leads", "from": 50, "to": 80},
    {"list": "Sales-qualified leads", "above": 80},
]


def shipped(name: str) -> dict[str, Any]:
    """A shipped model or workflow, read from the installed package."""
    folder = files("workflows")
    resource = folder / "models" / name
    if not resource.is_file():
        resource = folder / name
    document: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return document


@dataclass
class Outcome:
    result: dict[str, Any]
    url: str

    @property
    def contacts(self) -> dict[str, Any]:
        return self.result["contacts"]  # type: ignore[no-any-return]

    @property
    def accounts(self) -> dict[str, Any]:
        return self.result["accounts"]  # type: ignore[no-any-return]

    def score(self, contact: str, name: str = "SCORE") -> Any:
        return self.contacts[contact]["scores"].get(name)

    def lists(self, contact: str) -> list[str]:
        return self.contacts[contact]["lists"]  # type: ignore[no-any-return]

    def grade(self, contact: str, name: str = "GRADE") -> Any:
        return self.contacts[contact]["grades"].get(name)

    def account_score(self, account: str, name: str = "SCORE") -> Any:
        return self.accounts[account]["scores"].get(name)

    def hooks(self, url_part: str = "") -> list[tuple[str, str]]:
        return [
            (m["contact"], m["at"])
            for m in self.result["messages"]
            if m["channel"] == "webhook" and url_part in m.get("url", "")
        ]

    def audit(
        self, subject: str | None = None, contact: str | None = None, node: str | None = None
    ) -> list[Any]:
        engine = make_engine(self.url)
        try:
            query = select(audit).order_by(audit.c.at, audit.c.id)
            if subject is not None:
                query = query.where(audit.c.subject == subject)
            if contact is not None:
                query = query.where(audit.c.contact_id == contact)
            if node is not None:
                query = query.where(audit.c.node == node)
            with engine.connect() as connection:
                return list(connection.execute(query))
        finally:
            engine.dispose()

    def decay_ticks(self, contact: str, score: str = "SCORE") -> list[tuple[str, float, float]]:
        """(moment, old, new) of every decay of ``score``."""
        return [
            (format_timestamp(row.at), float(row.old), float(row.new))
            for row in self.audit("score", contact, "decay")
            if row.name == score
        ]


_counter = 0


def run(
    folder: Path,
    documents: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    until: str | None = None,
    database_url: str | None = None,
) -> Outcome:
    """Simulate ``documents`` over ``events`` on a store that outlives the simulation (a
    SQLite file in ``folder`` unless ``database_url`` names one)."""
    global _counter
    _counter += 1
    here = folder / f"scenario-{_counter}"
    (here / "workflows").mkdir(parents=True)
    for document in documents:
        path = here / "workflows" / f"{document['id']}.json"
        path.write_text(json.dumps(document), encoding="utf-8")
    lines = []
    for number, event in enumerate(events, start=1):
        lines.append(json.dumps({"messageId": f"m-{number}", **event}))
    events_path = here / "events.jsonl"
    events_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = database_url or f"sqlite:///{here / 'store.db'}"
    simulation = simulate(
        [here / "workflows"],
        events_path,
        parse_timestamp(ts(until)) if until else None,
        database_url=url,
    )
    return Outcome(simulation.result, url)


def band_history(outcome: Outcome, contact: str, lists: Iterable[str]) -> list[list[str]]:
    """The band lists the contact is on after each moment that moved any of them."""
    watched = set(lists)
    held: set[str] = set()
    history: list[list[str]] = []
    moment = None
    for row in outcome.audit("list", contact):
        if row.name not in watched:
            continue
        if moment is not None and row.at != moment:
            history.append(sorted(held))
        moment = row.at
        (held.add if row.new is True else held.discard)(row.name)
    if moment is not None:
        history.append(sorted(held))
    return history


# --- bands ----------------------------------------------------------------------------------


def test_bands_move_contacts_between_lists_atomically(tmp_path: Path) -> None:
    bands = [b["list"] for b in STAGE_BANDS]
    watcher = {
        "id": "warm-watcher",
        "version": 1,
        "triggers": [{"type": "list_added", "list": "Warm leads"}],
        "reentry": "always",
        "start": "check",
        "nodes": {
            "check": {
                "type": "condition",
                "if": {"any": [{"in_list": b} for b in bands if b != "Warm leads"]},
                "then": "two",
                "else": "one",
            },
            "two": {"type": "add_to_list", "list": "Saw two bands"},
            "one": {"type": "add_to_list", "list": "Saw one band"},
        },
    }
    out = run(
        tmp_path,
        [
            score_model("stage-bands", bands=STAGE_BANDS),
            points("Click", 10),
            points("Quote", 30),
            points("Nudge", 1),
            points("Drop31", 31, op="subtract"),
            points("Drop40", 40, op="subtract"),
            watcher,
        ],
        [
            track("ann", "Click", "2026-01-01"),  # 10 New
            track("ann", "Click", "2026-01-02"),  # 20 Warm (edge included)
            track("ann", "Quote", "2026-01-03"),  # 50 Qualified (edge included)
            track("ann", "Quote", "2026-01-04"),  # 80 Qualified (upper edge included)
            track("ann", "Nudge", "2026-01-05"),  # 81 Sales-qualified
            track("ann", "Drop31", "2026-01-06"),  # 50 Qualified
            track("ann", "Drop40", "2026-01-07"),  # 10 New
            track("ann", "Click", "2026-01-08"),  # 20 Warm again
            identify("bob", "2026-01-08", job_title="CEO"),  # no score: no band
        ],
    )
    assert band_history(out, "ann", bands) == [
        ["New leads"],
        ["Warm leads"],
        ["Qualified leads"],
        ["Sales-qualified leads"],
        ["Qualified leads"],
        ["New leads"],
        ["Warm leads"],
    ]
    # each move is one removal and one addition at the same moment, made by the model
    moves = out.audit("list", "ann", "bands")
    assert {(r.workflow_id, r.version) for r in moves} == {("stage-bands", 1)}
    assert [(r.name, r.new) for r in moves[1:3]] == [("New leads", False), ("Warm leads", True)]
    assert moves[1].at == moves[2].at
    assert moves[1].cause == "track Click (m-2)"
    # a workflow woken by the move sees the contact on exactly one band, twice
    assert "Saw one band" in out.lists("ann")
    assert "Saw two bands" not in out.lists("ann")
    assert len([r for r in out.audit("list", "ann") if r.name == "Saw one band"]) == 1
    assert out.score("ann") == 20
    assert out.lists("bob") == []


def test_a_paused_model_acts_as_if_it_were_not_deployed(tmp_path: Path) -> None:
    """``leadflow pause`` said "paused" for a model, which went on moving band lists (found
    by a reviewing helper). Paused, it does nothing; resumed, it is back."""
    from click.testing import CliRunner

    from engine.api import Leadflow
    from engine.cli import main
    from engine.clock import VirtualClock

    url = f"sqlite:///{tmp_path / 'store.db'}"
    clock = VirtualClock(parse_timestamp("2026-01-05T10:00:00Z"))
    with Leadflow(url, clock) as flow:
        flow.deploy([score_model("stage-bands", bands=STAGE_BANDS), points("Click", 30)])
        assert CliRunner().invoke(main, ["pause", "stage-bands", "--db", url]).exit_code == 0
        flow.track("ann", "Click", message_id="c1")
        assert flow.contact("ann")["lists"] == []
        assert CliRunner().invoke(main, ["resume", "stage-bands", "--db", url]).exit_code == 0
        flow.track("ann", "Click", message_id="c2")
        assert flow.contact("ann")["lists"] == ["Qualified leads"]


# --- decay ----------------------------------------------------------------------------------


def test_decay_with_a_fixed_floor_stops_there_and_never_lifts(
    tmp_path: Path, store_url: str
) -> None:
    model = score_model(
        "fixed",
        decay={"after": "P7D", "without": ["Click"], "every": "P7D", "points": 10, "floor": 25},
    )
    out = run(
        tmp_path,
        [model, points("Click", 50), points("Low", 10)],
        [
            identify("starter", "2026-01-01", plan="free"),  # deploy: ticks Jan 8, 15, 22...
            track("ann", "Click", "2026-01-02"),
            track("bob", "Low", "2026-01-02"),
        ],
        until="2026-02-06",
        database_url=store_url,
    )
    # Jan 8: ann clicked on Jan 2, inside the 7 days: no decay. Then 10 a tick to 25.
    assert out.decay_ticks("ann") == [
        ("2026-01-15T00:00:00Z", 50, 40),
        ("2026-01-22T00:00:00Z", 40, 30),
        ("2026-01-29T00:00:00Z", 30, 25),
    ]
    assert out.score("ann") == 25
    # bob is under the floor from the start: never lowered, never lifted
    assert out.decay_ticks("bob") == []
    assert out.score("bob") == 10
    row = out.audit("score", "ann", "decay")[0]
    assert (row.workflow_id, row.version, row.cause) == ("fixed", 1, "decay by fixed v1")


def test_decay_with_floor_of_peak(tmp_path: Path, store_url: str) -> None:
    model = score_model(
        "peaky", decay={"after": "P1D", "every": "P1D", "percent": 50, "floor_of_peak": 0.4}
    )
    out = run(
        tmp_path,
        [model, points("Big", 100), points("Cut", 30, op="set"), points("More", 10)],
        [
            track("ann", "Big", "2026-01-01"),
            track("bob", "Big", "2026-01-01"),
            track("bob", "Cut", "2026-01-01 12:00"),  # 30, under 40 % of its peak of 100
            track("cat", "Big", "2026-01-01"),
            track("cat", "More", "2026-01-03 12:00"),  # an increase: quiet again a day later
        ],
        until="2026-01-06",
        database_url=store_url,
    )
    assert out.decay_ticks("ann") == [
        ("2026-01-02T00:00:00Z", 100, 50),
        ("2026-01-03T00:00:00Z", 50, 40),  # 25 would be under 40 % of the peak
    ]
    assert out.score("ann") == 40
    assert out.decay_ticks("bob") == []
    assert out.score("bob") == 30
    assert out.decay_ticks("cat") == [
        ("2026-01-02T00:00:00Z", 100, 50),
        ("2026-01-03T00:00:00Z", 50, 40),
        ("2026-01-05T00:00:00Z", 50, 40),  # Jan 4 is within a day of the increase
    ]
    assert out.score("cat") == 40


def test_decay_with_floor_of_sales_ready(tmp_path: Path, store_url: str) -> None:
    model = score_model(
        "half",
        sales_ready=100,
        decay={
            "after": "P1D",
            "without": ["Click"],
            "every": "P1D",
            "percent": 10,
            "floor_of_sales_ready": 0.5,
        },
    )
    out = run(
        tmp_path,
        [model, points("Click", 90)],
        [track("ann", "Click", "2026-01-01")],
        until="2026-01-09",
        database_url=store_url,
    )
    assert out.decay_ticks("ann") == [
        ("2026-01-02T00:00:00Z", 90, 81),
        ("2026-01-03T00:00:00Z", 81, 72.9),
        ("2026-01-04T00:00:00Z", 72.9, 65.61),
        ("2026-01-05T00:00:00Z", 65.61, 59.049),
        ("2026-01-06T00:00:00Z", 59.049, 53.1441),
        ("2026-01-07T00:00:00Z", 53.1441, 50),  # 47.82969 is under half of 100
    ]
    assert out.score("ann") == 50


def test_decay_across_a_band_edge_moves_the_list_and_fires_score_crossed(
    tmp_path: Path,
    store_url: str,
) -> None:
    model = score_model(
        "cooling",
        bands=[{"list": "Hot", "from": 50}, {"list": "Cool", "below": 50}],
        decay={"after": "P7D", "every": "P7D", "points": 10},
    )
    cooled = {
        "id": "cooled",
        "version": 1,
        "triggers": [{"type": "score_crossed", "score": "SCORE", "below": 50}],
        "start": "list",
        "nodes": {
            "list": {"type": "add_to_list", "list": "Cooled", "next": "hook"},
            "hook": {"type": "webhook", "url": "https://crm.example.com/cooled"},
        },
    }
    out = run(
        tmp_path,
        [model, cooled, points("Quote", 55)],
        [track("ann", "Quote", "2026-01-01")],
        until="2026-01-16",
        database_url=store_url,
    )
    assert out.decay_ticks("ann") == [
        ("2026-01-08T00:00:00Z", 55, 45),
        ("2026-01-15T00:00:00Z", 45, 35),
    ]
    assert out.lists("ann") == ["Cool", "Cooled"]
    moves = [
        (format_timestamp(r.at), r.name, r.new, r.cause) for r in out.audit("list", "ann", "bands")
    ]
    assert moves == [
        ("2026-01-01T00:00:00Z", "Hot", True, "track Quote (m-1)"),
        ("2026-01-08T00:00:00Z", "Hot", False, "decay by cooling v1"),
        ("2026-01-08T00:00:00Z", "Cool", True, "decay by cooling v1"),
    ]
    assert out.hooks("cooled") == [("ann", "2026-01-08T00:00:00Z")]


def test_decay_onto_a_bound_moves_only_when_the_bound_belongs_to_the_lower_band(
    tmp_path: Path, store_url: str
) -> None:
    """The tick picks its band movers in SQL by which side of each bound includes it:
    landing on ``to 80`` leaves ``above 80``; landing on ``from 50`` (also the floor) stays
    in that band; landing on a threshold is not crossing below it."""
    model = score_model(
        "edges",
        bands=[
            {"list": "Low", "below": 50},
            {"list": "Mid", "from": 50, "to": 80},
            {"list": "Top", "above": 80},
        ],
        decay={"after": "P7D", "every": "P7D", "points": 5, "floor": 50},
    )
    below_85 = {
        "id": "below-85",
        "version": 1,
        "triggers": [{"type": "score_crossed", "score": "SCORE", "below": 85}],
        "reentry": "always",
        "start": "list",
        "nodes": {"list": {"type": "add_to_list", "list": "Under 85"}},
    }
    out = run(
        tmp_path,
        [model, below_85, points("Q85", 85), points("Q55", 55), points("Q90", 90)],
        [
            track("ann", "Q85", "2026-01-01"),  # 85 -> 80: Top to Mid, and under 85
            track("bob", "Q55", "2026-01-01"),  # 55 -> 50 (floor and bound): stays in Mid
            track("cat", "Q90", "2026-01-01"),  # 90 -> 85: on the threshold, not under it
        ],
        until="2026-01-09",
        database_url=store_url,
    )
    assert out.decay_ticks("ann") == [("2026-01-08T00:00:00Z", 85, 80)]
    assert out.decay_ticks("bob") == [("2026-01-08T00:00:00Z", 55, 50)]
    assert out.decay_ticks("cat") == [("2026-01-08T00:00:00Z", 90, 85)]
    assert out.lists("ann") == ["Mid", "Under 85"]
    assert out.lists("bob") == ["Mid"]
    assert out.lists("cat") == ["Top"]
    assert [r.name for r in out.audit("list", "bob", "bands")] == ["Mid"]


def test_decay_with_a_negative_floor_raises_a_negative_score_across_a_band_edge(
    tmp_path: Path, store_url: str
) -> None:
    """A percentage of a negative score brings it up towards zero; with a floor under it,
    the tick does that, and the band it rises into takes the contact (the tick looks for
    upward crossings only when a floor is negative)."""
    model = score_model(
        "sub-zero",
        bands=[{"list": "Negative", "below": -10}, {"list": "Neutral", "from": -10}],
        decay={"after": "P7D", "every": "P7D", "percent": 50, "floor": -50},
    )
    out = run(
        tmp_path,
        [model, points("Complaint", 20, op="subtract")],
        [track("ann", "Complaint", "2026-01-01")],
        until="2026-01-09",
        database_url=store_url,
    )
    assert out.decay_ticks("ann") == [("2026-01-08T00:00:00Z", -20, -10)]
    assert compile_score_model(model).decay.apply(-20, 0) == -10  # type: ignore[union-attr]
    assert out.lists("ann") == ["Neutral"]
    assert [(r.name, r.new) for r in out.audit("list", "ann", "bands")] == [
        ("Negative", True),
        ("Negative", False),
        ("Neutral", True),
    ]


# --- grades ---------------------------------------------------------------------------------

GRADE = {
    "kind": "grade_model",
    "id": "fit",
    "version": 1,
    "grade": "GRADE",
    "rules": [
        {"if": {"attribute": "job_title", "matches": "*VP*"}, "points": 30, "label": "VP"},
        {"if": {"attribute": "company_size", "gte": 200}, "points": 25, "label": "200+"},
        {"if": {"attribute": "job_title", "eq": "Manager"}, "points": 10, "label": "manager"},
        {"if": {"attribute": "job_title", "eq": "Student"}, "points": -40, "label": "student"},
    ],
    "letters": {"A": 50, "B": 30, "C": 20, "D": 10, "E": 1},
}


def test_grades_are_recomputed_on_identify_and_never_touch_scores(tmp_path: Path) -> None:
    fit_check = {
        "id": "fit-check",
        "version": 1,
        "triggers": [{"type": "event", "event": "Quote"}],
        "reentry": "always",
        "start": "is-fit",
        "nodes": {
            "is-fit": {
                "type": "condition",
                "if": {"grade": "GRADE", "in": ["A", "B"]},
                "then": "fit",
                "else": "unfit",
            },
            "fit": {"type": "add_to_list", "list": "Fit"},
            "unfit": {"type": "add_to_list", "list": "Unfit"},
        },
    }
    out = run(
        tmp_path,
        [GRADE, fit_check, points("Quote", 30)],
        [
            identify("ann", "2026-01-01", job_title="VP Sales", company_size=500),  # 55: A
            track("ann", "Quote", "2026-01-02"),
            identify("ann", "2026-01-03", job_title="Student"),  # 25 - 40 = -15: F
            identify("ann", "2026-01-04", company_size=10),  # -40: still F, no change
            identify("bob", "2026-01-01", job_title="Manager", company_size=250),  # 35: B
            identify("cat", "2026-01-01", job_title="Manager", company_size=20),  # 10: D
            identify("dan", "2026-01-01", job_title="Manager", company_size=200),  # 35 -> B
            identify("dan", "2026-01-02", company_size=199),  # 10: D
            identify("eve", "2026-01-01", country="US"),  # 0: F
        ],
    )
    grades = [(r.old, r.new) for r in out.audit("grade", "ann")]
    assert grades == [(None, "A"), ("A", "F")]
    assert {(r.workflow_id, r.version, r.node) for r in out.audit("grade")} == {("fit", 1, "grade")}
    assert out.grade("ann") == "F"
    assert out.contacts["ann"]["grade"] == "F"
    assert out.lists("ann") == ["Fit"]  # graded A when the quote came
    # the grade changes never moved the score: one score change, by the workflow
    assert [(r.old, r.new, r.workflow_id) for r in out.audit("score", "ann")] == [
        (0, 30, "add-score-quote")
    ]
    assert out.score("ann") == 30
    assert {c: out.grade(c) for c in ("bob", "cat", "dan", "eve")} == {
        "bob": "B",
        "cat": "D",
        "dan": "D",
        "eve": "F",
    }
    assert out.contacts["bob"]["scores"] == {}


def test_shipped_qualify_on_score_and_grade_keeps_the_student_from_sales(
    tmp_path: Path,
) -> None:
    out = run(
        tmp_path,
        [
            shipped("b2b-grade.json"),
            shipped("qualify-on-score-and-grade.json"),
            points("Quote Requested", 45),
        ],
        [
            identify(
                "vp@acme.com",
                "2026-01-05",
                job_title="VP Marketing",
                company_size=500,
                country="US",
            ),
            identify("sam@uni.example", "2026-01-05", job_title="Student", company_size=1),
            track("vp@acme.com", "Quote Requested", "2026-01-06 10:00"),
            track("sam@uni.example", "Quote Requested", "2026-01-06 10:00"),
            track("vp@acme.com", "Quote Requested", "2026-01-07 10:00"),  # 90: crosses 81
            track("sam@uni.example", "Quote Requested", "2026-01-07 10:00"),
        ],
    )
    assert out.grade("vp@acme.com") == "A"
    assert out.grade("sam@uni.example") == "F"
    assert out.score("vp@acme.com") == out.score("sam@uni.example") == 90
    assert "Sales-qualified leads" in out.lists("vp@acme.com")
    assert out.lists("sam@uni.example") == ["Nurture"]
    assert out.hooks("hot-lead") == [("vp@acme.com", "2026-01-07T10:00:00Z")]


# --- accounts -------------------------------------------------------------------------------

ROLLUP_SCORES = {"S_SUM": None, "S_MAX": "max", "S_AVG": "average", "S_TOP": "top"}


def _rollup_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for score, method in ROLLUP_SCORES.items():
        fields: dict[str, Any] = {}
        if method is not None:
            fields["rollup"] = {"method": method, **({"top": 2} if method == "top" else {})}
        documents.append(score_model(score.lower().replace("_", "-"), score, **fields))
    for amount in (10, 30, 50):
        names = list(ROLLUP_SCORES)
        nodes = {
            f"n{i}": {
                "type": "update_score",
                "score": name,
                "add": amount,
                **({"next": f"n{i + 1}"} if i + 1 < len(names) else {}),
            }
            for i, name in enumerate(names)
        }
        documents.append(
            {
                "id": f"act-{amount}",
                "version": 1,
                "triggers": [{"type": "event", "event": f"Act{amount}"}],
                "reentry": "always",
                "start": "n0",
                "nodes": nodes,
            }
        )
    return documents


@pytest.mark.parametrize(
    ("until", "expected"),
    [
        (
            "2026-01-02",
            {"acme": {"S_SUM": 90, "S_MAX": 50, "S_AVG": 30, "S_TOP": 80}, "globex": {}},
        ),
        (
            None,
            {
                "acme": {"S_SUM": 40, "S_MAX": 30, "S_AVG": 20, "S_TOP": 40},
                "globex": {"S_SUM": 60, "S_MAX": 50, "S_AVG": 30, "S_TOP": 60},
            },
        ),
    ],
)
def test_account_rollup_sum_max_average_top(
    tmp_path: Path, store_url: str, until: str | None, expected: dict[str, dict[str, float]]
) -> None:
    out = run(
        tmp_path,
        _rollup_documents(),
        [
            group("a", "acme", "2026-01-01 09:00", name="Acme"),
            group("b", "acme", "2026-01-01 09:00"),
            group("c", "acme", "2026-01-01 09:00"),
            track("a", "Act10", "2026-01-01 10:00"),
            track("b", "Act30", "2026-01-01 10:00"),
            track("c", "Act50", "2026-01-01 10:00"),
            track("d", "Act10", "2026-01-01 10:00"),
            group("globex-seed", "globex", "2026-01-01 11:00"),
            # c moves to globex; d joins it with the score it already has
            group("c", "globex", "2026-01-03 09:00"),
            group("d", "globex", "2026-01-03 09:00"),
        ],
        until=until,
        database_url=store_url,
    )
    got = {
        account: {k: v for k, v in out.accounts[account]["scores"].items() if v != 0}
        for account in expected
    }
    assert got == expected
    assert out.accounts["acme"]["traits"] == {"name": "Acme"}


def test_account_score_crossed_enters_every_member(tmp_path: Path, store_url: str) -> None:
    ready = {
        "id": "ready",
        "version": 1,
        "triggers": [{"type": "score_crossed", "score": "SCORE", "above": 100, "of": "account"}],
        "start": "list",
        "nodes": {
            "list": {"type": "add_to_list", "list": "Ready accounts", "next": "hook"},
            "hook": {"type": "webhook", "url": "https://crm.example.com/ready"},
        },
    }
    out = run(
        tmp_path,
        [ready, points("Quote", 60), points("Click", 10)],
        [
            group("a", "acme", "2026-01-01 09:00"),
            group("b", "acme", "2026-01-01 09:00"),
            group("z", "acme", "2026-01-01 09:00"),  # no score of its own
            group("o", "globex", "2026-01-01 09:00"),
            track("o", "Quote", "2026-01-01 10:00"),
            track("o", "Quote", "2026-01-01 10:01"),  # globex 120 too, but later
            track("a", "Quote", "2026-01-02 10:00"),
            track("b", "Quote", "2026-01-02 11:00"),  # acme 120: crosses
            track("b", "Click", "2026-01-02 12:00"),  # 130: no second crossing
        ],
        database_url=store_url,
    )
    assert out.account_score("acme") == 130
    for member in ("a", "b", "z"):
        assert out.lists(member) == ["Ready accounts"]
    assert sorted(out.hooks("ready")) == [
        ("a", "2026-01-02T11:00:00Z"),
        ("b", "2026-01-02T11:00:00Z"),
        ("o", "2026-01-01T10:01:00Z"),
        ("z", "2026-01-02T11:00:00Z"),
    ]


# --- the shipped models ---------------------------------------------------------------------


def test_every_shipped_model_is_valid_and_documented() -> None:
    folder = files("workflows") / "models"
    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.name.endswith(".json") and not p.name.endswith("schema.json")
    )
    assert {"sales-ready.json", "b2b-grade.json", "activity.json"} <= set(names)
    documents = [(name, shipped(name)) for name in names]
    result = validate_documents(documents)
    assert result.problems == []
    assert len(result.models) + len(result.workflows) == len(names)
    for _, document in documents:
        assert len(document.get("notes", "")) > 80


def test_shipped_sales_ready_bands_and_top_three_rollup(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        [shipped("sales-ready.json"), points("Quote Requested", 30), points("Signed Up", 10)],
        [
            *(group(c, "acme", "2026-01-01 09:00") for c in ("a", "b", "c", "d")),
            track("a", "Signed Up", "2026-01-01 10:00"),  # 10: New
            track("b", "Quote Requested", "2026-01-01 10:00"),  # 30: Warm
            *(track("c", "Quote Requested", f"2026-01-01 1{i}:00") for i in range(2)),  # 60
            *(track("d", "Quote Requested", f"2026-01-01 1{i}:00") for i in range(3)),  # 90
        ],
    )
    assert {c: out.lists(c) for c in "abcd"} == {
        "a": ["New leads"],
        "b": ["Warm leads"],
        "c": ["Qualified leads"],
        "d": ["Sales-qualified leads"],
    }
    assert out.account_score("acme") == 90 + 60 + 30  # the three most engaged


def test_shipped_sales_ready_decays_weekly_to_half_of_sales_ready(
    tmp_path: Path, store_url: str
) -> None:
    out = run(
        tmp_path,
        [shipped("sales-ready.json"), points("Quote Requested", 30)],
        [track("d", "Quote Requested", f"2026-01-01 0{i}:00") for i in range(3)],
        until="2026-03-20",
        database_url=store_url,
    )
    # ticks every 7 days from Jan 1; quiet once 30 days passed without engagement
    assert out.decay_ticks("d") == [
        ("2026-02-05T00:00:00Z", 90, 81),
        ("2026-02-12T00:00:00Z", 81, 72.9),
        ("2026-02-19T00:00:00Z", 72.9, 65.61),
        ("2026-02-26T00:00:00Z", 65.61, 59.049),
        ("2026-03-05T00:00:00Z", 59.049, 53.1441),
        ("2026-03-12T00:00:00Z", 53.1441, 50),
    ]
    assert out.lists("d") == ["Qualified leads"]
    moved = [(format_timestamp(r.at), r.name, r.new) for r in out.audit("list", "d", "bands")]
    assert moved[-2:] == [
        ("2026-02-12T00:00:00Z", "Sales-qualified leads", False),
        ("2026-02-12T00:00:00Z", "Qualified leads", True),
    ]


@pytest.mark.parametrize(
    ("model", "product", "score", "band"),
    [
        ("product-ads.json", "ads", "SCORE_ADS", "Interested in Ads"),
        ("product-analytics.json", "analytics", "SCORE_ANALYTICS", "Interested in Analytics"),
        ("product-crm.json", "crm", "SCORE_CRM", "Interested in CRM"),
    ],
)
def test_shipped_product_interest_models(
    tmp_path: Path, model: str, product: str, score: str, band: str
) -> None:
    viewed = points("Page Viewed", 35, score, where={"property": "product", "eq": product})
    small = points("Webinar", 15, score)
    out = run(
        tmp_path,
        [shipped(model), viewed, small],
        [
            group("a", "acme", "2026-01-01"),
            group("b", "acme", "2026-01-01"),
            track("a", "Page Viewed", "2026-01-01", product=product),
            track("a", "Page Viewed", "2026-01-01", product="something else"),
            track("b", "Webinar", "2026-01-01"),
        ],
        until="2026-03-13",
    )
    # a viewed a page (engagement) on Jan 1: quiet from 30 days later; ticks every 14 days
    assert out.decay_ticks("a", score) == [
        ("2026-02-12T00:00:00Z", 35, 30),
        ("2026-02-26T00:00:00Z", 30, 25),
        ("2026-03-12T00:00:00Z", 25, 20),
    ]
    # b only attended a webinar, which is not engagement here: decays from the first tick
    assert out.decay_ticks("b", score)[0] == ("2026-01-15T00:00:00Z", 15, 10)
    assert out.score("b", score) == 0
    assert band not in out.lists("a")
    assert [(r.new, format_timestamp(r.at)) for r in out.audit("list", "a", "bands")] == [
        (True, "2026-01-01T00:00:00Z"),
        (False, "2026-02-26T00:00:00Z"),
    ]
    assert out.account_score("acme", score) == 20  # the highest member


def test_shipped_b2b_grade(tmp_path: Path) -> None:
    people = {
        "vp": ({"job_title": "VP Marketing", "company_size": 500, "country": "US"}, "A"),
        "it": ({"job_title": "IT Manager", "company_size": 500, "country": "US"}, "B"),
        "mm": ({"job_title": "Marketing Manager", "company_size": 50}, "C"),
        "an": ({"job_title": "Analyst", "company_size": 20}, "D"),
        "co": ({"job_title": "Consultant", "country": "FR"}, "E"),
        "st": ({"job_title": "Student", "company_size": 1}, "F"),
    }
    out = run(
        tmp_path,
        [shipped("b2b-grade.json")],
        [identify(who, "2026-01-01", **traits) for who, (traits, _) in people.items()],
    )
    assert {who: out.grade(who) for who in people} == {w: g for w, (_, g) in people.items()}
    assert all(out.contacts[who]["scores"] == {} for who in people)


def test_shipped_activity_score_and_model(tmp_path: Path) -> None:
    out = run(
        tmp_path,
        [shipped("activity.json"), shipped("activity-score.json")],
        [
            track("cust", "Order Completed", "2026-01-01 00:00", order_id="o-1"),
            track("cust", "Order Completed", "2026-01-01 01:00", order_id="o-2"),  # 40
            track("prospect", "Page Viewed", "2026-01-01 02:00", url="/pricing"),
        ],
        until="2026-01-30",
    )
    assert out.decay_ticks("cust", "ACTIVITY") == [
        ("2026-01-15T00:00:00Z", 40, 30),
        ("2026-01-22T00:00:00Z", 30, 22.5),
        ("2026-01-29T00:00:00Z", 22.5, 16.875),
    ]
    assert [(r.new, format_timestamp(r.at)) for r in out.audit("list", "cust", "bands")] == [
        (True, "2026-01-01T01:00:00Z"),
        (False, "2026-01-15T00:00:00Z"),
    ]
    assert out.contacts["prospect"]["scores"] == {}


def test_shipped_account_ready_with_sales_ready_rollup(tmp_path: Path) -> None:
    members = {"a": 3, "b": 2, "c": 2, "d": 1}  # quotes: 90, 60, 60, 30
    events: list[dict[str, Any]] = [group(m, "acme", "2026-01-01") for m in members]
    events.append(group("e", "globex", "2026-01-01"))
    hour = 0
    for member, count in members.items():
        for _ in range(count):
            hour += 1
            events.append(track(member, "Quote Requested", f"2026-01-02 {hour:02d}:00"))
    events.extend(track("e", "Quote Requested", f"2026-01-03 0{i}:00") for i in range(5))
    out = run(
        tmp_path,
        [shipped("sales-ready.json"), shipped("account-ready.json"), points("Quote Requested", 30)],
        events,
    )
    assert out.account_score("acme") == 210  # top 3: 90 + 60 + 60; d's 30 not counted
    assert out.account_score("globex") == 150
    # the crossing came with c's second quote (hour 7): 90 + 60 + 60
    assert sorted(out.hooks("ready-account")) == [
        (m, "2026-01-02T07:00:00Z") for m in ("a", "b", "c", "d")
    ]
    assert all("Ready accounts" in out.lists(m) for m in members)
    assert "Ready accounts" not in out.lists("e")
    engine = make_engine(out.url)
    try:
        with engine.connect() as connection:
            bodies = sorted(
                payload["rendered"]["body"]["contact"]
                + "@"
                + payload["rendered"]["body"]["account"]
                for payload in connection.scalars(select(outbox.c.payload))
            )
    finally:
        engine.dispose()
    assert bodies == ["a@acme", "b@acme", "c@acme", "d@acme"]


# --- bad model documents --------------------------------------------------------------------

_SCORE = {"kind": "score_model", "id": "m", "version": 1, "score": "SCORE"}
_GRADE = {
    "kind": "grade_model",
    "id": "g",
    "version": 1,
    "grade": "GRADE",
    "rules": [{"if": {"attribute": "job_title", "eq": "CEO"}, "points": 10}],
    "letters": {"A": 10},
}
_DECAY = {"after": "P30D", "every": "P7D"}


@pytest.mark.parametrize(
    ("document", "pointer", "message"),
    [
        (
            {**_SCORE, "bands": [{"list": "Low", "below": 50}, {"list": "High", "from": 40}]},
            "/bands/1",
            "band 'High' (≥ 40) overlaps band 'Low' (< 50)",
        ),
        (
            {**_SCORE, "bands": [{"list": "Hot", "from": 50, "below": 50}]},
            "/bands/0",
            "the band is empty",
        ),
        (
            {**_SCORE, "decay": {**_DECAY, "percent": 10, "points": 5}},
            "/decay",
            "give exactly one of 'percent' or 'points'",
        ),
        (
            {**_SCORE, "decay": {**_DECAY, "percent": 10, "floor": 5, "floor_of_peak": 0.5}},
            "/decay",
            "give at most one floor, found floor, floor_of_peak",
        ),
        (
            {**_SCORE, "decay": {**_DECAY, "percent": 10, "floor_of_sales_ready": 0.5}},
            "/decay/floor_of_sales_ready",
            "needs 'sales_ready'",
        ),
        ({**_SCORE, "rollup": {"method": "top"}}, "/rollup", "method 'top' needs 'top'"),
        (
            {**_GRADE, "letters": {"A": 10, "B": 20}},
            "/letters/B",
            "B needs fewer points than A (10), found 20",
        ),
        ({**_SCORE, "bandz": []}, "/bandz", "unknown key 'bandz'"),
        (
            {**_SCORE, "decay": {**_DECAY, "percent": 10, "flor": 1}},
            "/decay/flor",
            "did you mean 'floor'?",
        ),
        ({**_SCORE, "kind": "score_modle"}, "/kind", "did you mean 'score_model'?"),
        (
            {**_GRADE, "rules": [{"if": {"atribute": "x", "eq": 1}, "points": 5}]},
            "/rules/0/if",
            "did you mean 'attribute'?",
        ),
        (
            {**_SCORE, "decay": {**_DECAY, "percent": 150}},
            "/decay/percent",
            "at most 100",
        ),
    ],
    ids=[
        "overlapping-bands",
        "empty-band",
        "percent-and-points",
        "two-floors",
        "floor-of-sales-ready-without-sales-ready",
        "top-without-n",
        "letters-out-of-order",
        "unknown-key",
        "unknown-decay-key",
        "unknown-kind",
        "bad-rule-condition",
        "percent-over-100",
    ],
)
def test_bad_model_documents(document: dict[str, Any], pointer: str, message: str) -> None:
    result = validate_documents([("model.json", document)])
    assert not result.ok
    assert result.models == []
    found = [(p.pointer, p.message) for p in result.problems]
    assert any(p == pointer and message in m for p, m in found), found
    assert all(str(p).startswith("model.json: /") for p in result.problems)


def test_unknown_key_suggestion_names_the_model(tmp_path: Path) -> None:
    """The CLI says the same: one line per problem, FILE: /pointer: message, exit 1."""
    from click.testing import CliRunner

    from engine.cli import main

    path = tmp_path / "m.json"
    path.write_text(json.dumps({**_SCORE, "bandz": []}), encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.stdout.startswith(f"{path}: /bandz: unknown key 'bandz'")
    assert "did you mean 'bands'?" in result.stdout


def test_a_decay_crossings_own_change_is_rolled_up_once(tmp_path: Path, store_url: str) -> None:
    """A workflow a decay crossing starts changes the decaying score: the tick rolls up
    every account from its members, that change included, and it is not added again."""
    model = score_model(
        "fixed",
        decay={"after": "P7D", "without": ["Click"], "every": "P7D", "points": 10, "floor": 0},
    )
    rescue = {
        "id": "rescue",
        "version": 1,
        "triggers": [{"type": "score_crossed", "score": "SCORE", "below": 45}],
        "reentry": "always",
        "start": "p",
        "nodes": {"p": {"type": "update_score", "score": "SCORE", "add": 1}},
    }
    out = run(
        tmp_path,
        [model, rescue, points("Click", 50)],
        [
            group("ann", "acme", "2026-01-01"),  # deployed Jan 1: ticks Jan 8, 15, ...
            track("ann", "Click", "2026-01-02"),
        ],
        until="2026-01-16",
        database_url=store_url,
    )
    assert out.score("ann") == 41  # 50, decayed to 40 on Jan 15, +1 by rescue
    assert out.account_score("acme") == out.score("ann")
