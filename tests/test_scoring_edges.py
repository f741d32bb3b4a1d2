"""Accounts, roll-ups and decay: cases a reviewing helper found wrong (session 14), each
failing before its fix."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import at
from sqlalchemy import select
from test_scoring_models import group, identify, points, run, score_model, track, ts

from engine.accounts_view import account_view
from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.durations import Duration
from engine.store.tables import audit
from engine.validation import validate_documents


def anon_track(anonymous: str, event: str, when: str) -> dict[str, Any]:
    return {"type": "track", "anonymousId": anonymous, "event": event, "timestamp": ts(when)}


def anon_group(anonymous: str, account: str, when: str) -> dict[str, Any]:
    return {"type": "group", "anonymousId": anonymous, "groupId": account, "timestamp": ts(when)}


def merging(user: str, anonymous: str, when: str) -> dict[str, Any]:
    """An identify with both ids: the anonymous contact merges into the known one."""
    return {**identify(user, when), "anonymousId": anonymous}


def alias(previous: str, user: str, when: str) -> dict[str, Any]:
    return {"type": "alias", "previousId": previous, "userId": user, "timestamp": ts(when)}


VIEW = points("Page Viewed", 10)


# --- a merge and the accounts --------------------------------------------------------------


def test_a_merge_inside_one_account_counts_the_anonymous_score_once(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        [VIEW],
        [
            group("bob@acme.com", "acme", "2026-01-05 09:00"),
            track("bob@acme.com", "Page Viewed", "2026-01-05 09:01"),
            anon_group("anon-1", "acme", "2026-01-05 09:02"),
            anon_track("anon-1", "Page Viewed", "2026-01-05 09:03"),
            anon_track("anon-1", "Page Viewed", "2026-01-05 09:04"),
            merging("bob@acme.com", "anon-1", "2026-01-05 10:00"),
        ],
    )
    assert outcome.contacts["bob@acme.com"]["scores"]["SCORE"] == 30
    assert outcome.result["accounts"]["acme"]["scores"]["SCORE"] == 30  # was 50


def test_an_alias_into_a_contact_without_account_brings_its_score_along(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        [VIEW],
        [
            track("ann@x.com", "Page Viewed", "2026-01-05 09:01"),
            anon_group("anon-2", "acme", "2026-01-05 09:02"),
            anon_track("anon-2", "Page Viewed", "2026-01-05 09:03"),
            alias("anon-2", "ann@x.com", "2026-01-05 10:00"),
        ],
    )
    ann = outcome.contacts["ann@x.com"]
    assert (ann["account"], ann["scores"]["SCORE"]) == ("acme", 20)
    assert outcome.result["accounts"]["acme"]["scores"]["SCORE"] == 20  # was 10


def test_a_merge_across_accounts_empties_the_old_one(tmp_path: Path) -> None:
    outcome = run(
        tmp_path,
        [VIEW],
        [
            group("bob@acme.com", "acme", "2026-01-05 09:00"),
            track("bob@acme.com", "Page Viewed", "2026-01-05 09:01"),
            anon_group("anon-3", "globex", "2026-01-05 09:02"),
            anon_track("anon-3", "Page Viewed", "2026-01-05 09:03"),
            merging("bob@acme.com", "anon-3", "2026-01-05 10:00"),
        ],
    )
    assert outcome.contacts["bob@acme.com"]["scores"]["SCORE"] == 20
    assert outcome.result["accounts"]["acme"]["scores"]["SCORE"] == 20
    globex = outcome.result["accounts"].get("globex", {"scores": {}})
    assert globex["scores"].get("SCORE", 0) == 0  # held anon-3's 10 with no member left


@pytest.mark.parametrize("rollup", [{"method": "top", "top": 2}, {"method": "average"}])
def test_recomputed_roll_ups_no_longer_count_the_merged_contact(
    tmp_path: Path, rollup: dict[str, Any]
) -> None:
    outcome = run(
        tmp_path,
        [VIEW, score_model("m", rollup=rollup)],
        [
            group("bob@acme.com", "acme", "2026-01-05 09:00"),
            track("bob@acme.com", "Page Viewed", "2026-01-05 09:01"),
            anon_group("anon-1", "acme", "2026-01-05 09:02"),
            anon_track("anon-1", "Page Viewed", "2026-01-05 09:03"),
            anon_track("anon-1", "Page Viewed", "2026-01-05 09:04"),
            merging("bob@acme.com", "anon-1", "2026-01-05 10:00"),
        ],
    )
    assert outcome.contacts["bob@acme.com"]["scores"]["SCORE"] == 30
    assert outcome.result["accounts"]["acme"]["scores"]["SCORE"] == 30  # 50 and 25 before


# --- the roll-up method in force changes ---------------------------------------------------


def _max_rolled_up(tmp_path: Path) -> tuple[Leadflow, str, dict[str, Any]]:
    url = f"sqlite:///{tmp_path}/s.db"
    flow = Leadflow(url, clock=VirtualClock(at("2026-01-05 10:00")))
    model = score_model("m", rollup={"method": "max"})
    flow.deploy([VIEW, model])
    messages: list[dict[str, Any]] = []
    for user, views in (("a", 5), ("b", 3)):
        messages.append({"type": "group", "userId": user, "groupId": "acme"})
        messages += [{"type": "track", "userId": user, "event": "Page Viewed"}] * views
    flow.send(messages)
    return flow, url, model


def _acme(flow: Leadflow) -> tuple[float, dict[str, Any]]:
    with flow.engine.connect() as connection:
        view = account_view(connection, "acme")
    return view["scores"]["SCORE"], view["rollups"]["SCORE"]


def test_a_new_model_version_with_another_roll_up_recomputes_the_accounts(
    tmp_path: Path,
) -> None:
    flow, _, model = _max_rolled_up(tmp_path)
    assert _acme(flow)[0] == 50  # max(50, 30)
    flow.deploy([dict(model, version=2, rollup={"method": "sum"})])
    flow.track("a", "Page Viewed")  # a: 60, b: 30
    value, rollup = _acme(flow)
    assert (rollup["method"], value) == ("sum", 90)  # was 60: the old max + 10
    flow.close()


def test_pausing_the_model_falls_back_to_a_sum_of_the_members(tmp_path: Path) -> None:
    flow, url, _ = _max_rolled_up(tmp_path)
    result = CliRunner().invoke(main, ["pause", "m", "--db", url])
    assert result.exit_code == 0, result.output
    flow.track("b", "Page Viewed")  # a: 50, b: 40
    value, rollup = _acme(flow)
    assert (rollup["method"], value) == ("sum", 90)  # was 60: the max + 10
    flow.close()


# --- decay -----------------------------------------------------------------------------------


@pytest.mark.parametrize("every", ["PT0S", "P0D"])
def test_a_zero_decay_interval_is_refused(every: str) -> None:
    """It validated, and then simulate and the worker looped for ever on one tick."""
    model = score_model("m", decay={"after": "P1D", "every": every, "points": 1})
    result = validate_documents([("m.json", model)])
    assert [p.pointer for p in result.problems] == ["/decay/every"]


def test_decay_brought_back_by_a_new_version_starts_from_that_deploy(tmp_path: Path) -> None:
    """v2 dropped decay, v3 brought it back: every weekly tick since v1's last was made up
    at once (98 -> 88), where a resumed model already decays from its resumption."""
    v1 = score_model("m", decay={"after": "P7D", "every": "P7D", "points": 1})
    v2 = {k: v for k, v in v1.items() if k != "decay"} | {"version": 2}
    clock = VirtualClock(at("2026-01-01 00:00"))
    flow = Leadflow(f"sqlite:///{tmp_path}/w.db", clock=clock)
    flow.deploy([points("Page Viewed", 100), v1])
    flow.track("a", "Page Viewed", timestamp=at("2026-01-01 00:00"))
    clock.advance_to(at("2026-01-20 00:00"))
    flow.run_due()
    assert flow.contact("a")["scores"] == {"SCORE": 98}  # ticks Jan 8, Jan 15
    flow.deploy([v2])
    clock.advance_to(at("2026-04-01 00:00"))
    flow.run_due()
    assert flow.contact("a")["scores"] == {"SCORE": 98}
    flow.deploy([dict(v1, version=3)])
    flow.run_due()
    assert flow.contact("a")["scores"] == {"SCORE": 98}  # v3's first tick is on Apr 8
    clock.advance_to(at("2026-04-08 00:00"))
    flow.run_due()
    assert flow.contact("a")["scores"] == {"SCORE": 97}
    flow.close()


def test_a_monthly_decay_keeps_the_day_of_its_start(tmp_path: Path) -> None:
    """Ticks were chained from the tick before: deployed on 31 January, a monthly decay
    ticked on 28 February and then on the 28th for ever."""
    model = score_model("m", decay={"after": "P1D", "every": "P1M", "points": 1})
    outcome = run(
        tmp_path,
        [points("Page Viewed", 10), model],
        [track("a", "Page Viewed", "2026-01-31 00:00")],  # the deploy is the first event
        until="2026-05-01 00:00",
    )
    ticks = [row.at.date().isoformat() for row in outcome.audit("score", "a", node="decay")]
    assert ticks == ["2026-02-28", "2026-03-31", "2026-04-30"]


@pytest.mark.parametrize(
    ("every", "start", "moment", "tick"),
    [
        ("P1M", "2026-01-31 00:00", "2026-01-31 00:00", "2026-02-28 00:00"),
        ("P1M", "2026-01-31 00:00", "2026-02-28 00:00", "2026-03-31 00:00"),
        ("P1M", "2026-01-31 00:00", "2026-12-30 00:00", "2026-12-31 00:00"),
        ("P1MT1H", "2026-01-31 00:00", "2026-02-28 01:00", "2026-03-31 02:00"),
        ("P7D", "2026-01-01 00:00", "2026-01-08 00:00", "2026-01-15 00:00"),
        ("P7D", "2026-01-01 00:00", "2025-12-01 00:00", "2026-01-08 00:00"),
        ("PT1H", "2026-01-01 00:00", "2026-01-01 05:30", "2026-01-01 06:00"),
    ],
)
def test_the_first_tick_after_a_moment_counts_from_the_start(
    every: str, start: str, moment: str, tick: str
) -> None:
    assert Duration.parse(every).first_after(at(start), at(moment)) == at(tick)


# --- a model deployed, revised or resumed acts on the contacts that exist -----------------

BANDS_V1 = score_model("m", bands=[{"list": "Cold", "below": 20}, {"list": "Warm", "from": 20}])
BANDS_V2 = dict(
    BANDS_V1,
    version=2,
    bands=[{"list": "Cold leads", "below": 40}, {"list": "Warm leads", "from": 40}],
)


def _banded(store_url: str) -> Leadflow:
    flow = Leadflow(store_url, clock=VirtualClock(at("2026-01-05 10:00")))
    flow.deploy([VIEW, BANDS_V1])
    flow.send([{"type": "track", "userId": "a", "event": "Page Viewed"}] * 3)  # 30
    flow.identify("never@acme.com", {})
    assert flow.contact("a")["lists"] == ["Warm"]
    return flow


def test_new_bands_move_the_contacts_at_the_deploy_on_both_backends(store_url: str) -> None:
    """They stayed on the old band list, and at their next score change joined the new
    one as well: two band lists at once."""
    with _banded(store_url) as flow:
        flow.deploy([BANDS_V2])
        assert flow.contact("a")["lists"] == ["Cold leads"]  # 30 is under v2's 40
        assert flow.contact("never@acme.com")["lists"] == []  # never scored: no band
        flow.track("a", "Page Viewed")  # 40
        assert flow.contact("a")["lists"] == ["Warm leads"]
        with flow.engine.connect() as connection:
            moved = connection.execute(
                select(audit.c.name, audit.c.new, audit.c.version)
                .where(
                    audit.c.contact_id == "a",
                    audit.c.subject == "list",
                    audit.c.cause == "m v2 deployed",
                )
                .order_by(audit.c.id)
            ).all()
    assert [tuple(row) for row in moved] == [("Warm", False, 2), ("Cold leads", True, 2)]


def test_a_grade_model_deployed_later_grades_the_contacts_there(tmp_path: Path) -> None:
    flow = Leadflow(f"sqlite:///{tmp_path}/g.db", clock=VirtualClock(at("2026-01-05 10:00")))
    traits = {"job_title": "VP Marketing", "company_size": 500, "country": "US"}
    flow.identify("ann@acme.com", {**traits, "industry": "Retail"})
    grade = json.loads((files("workflows") / "models" / "b2b-grade.json").read_text())
    flow.deploy([grade])
    assert flow.contact("ann@acme.com")["grades"] == {"GRADE": "A"}  # was {}
    flow.close()


def test_resuming_a_model_puts_the_bands_right(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/r.db"
    with _banded(url) as flow:
        assert CliRunner().invoke(main, ["pause", "m", "--db", url]).exit_code == 0
        flow.send([{"type": "track", "userId": "a", "event": "Page Viewed"}] * 2)  # 50
        assert flow.contact("a")["lists"] == ["Warm"]  # a paused model moves no one
        flow.send([{"type": "track", "userId": "b", "event": "Page Viewed"}] * 3)
        assert flow.contact("b")["lists"] == []
        assert CliRunner().invoke(main, ["resume", "m", "--db", url]).exit_code == 0
        assert flow.contact("b")["lists"] == ["Warm"]


HALVING = score_model(
    "m", decay={"after": "P7D", "every": "P7D", "percent": 50, "without": ["Page Viewed"]}
)


@pytest.mark.parametrize("how", ["a worker ten seconds late", "an ingest of history"])
def test_a_late_decay_tick_takes_its_share_of_the_score_held_at_its_moment(
    tmp_path: Path, how: str
) -> None:
    """Ticks on Jan 8 and Jan 15 halve 40 to 20 and 10; a quote 5 s after the second adds
    100: 110, as simulate says. A tick run after the quote took half of it too (60)."""
    clock = VirtualClock(at("2026-01-01 00:00"))
    view = {"type": "track", "userId": "a", "event": "Page Viewed", "messageId": "m1"}
    quote = {"type": "track", "userId": "a", "event": "Quote Requested", "messageId": "m2"}
    view["timestamp"], quote["timestamp"] = "2026-01-01T00:00:00Z", "2026-01-15T00:00:05Z"
    with Leadflow(f"sqlite:///{tmp_path}/w.db", clock=clock) as flow:
        flow.deploy([points("Page Viewed", 40), points("Quote Requested", 100), HALVING])
        if how == "an ingest of history":
            clock.advance_to(at("2026-01-15 00:00:10"))
            flow.send([view, quote])
        else:
            flow.send([view])
            clock.advance_to(at("2026-01-08 00:00"))
            flow.run_due()
            assert flow.contact("a")["scores"] == {"SCORE": 20}
            clock.advance_to(at("2026-01-15 00:00:05"))
            flow.send([quote])
        clock.advance_to(at("2026-01-15 00:00:15"))  # the worker's next round
        flow.run_due()
        assert flow.contact("a")["scores"] == {"SCORE": 110}


def test_cold_as_of_a_past_moment_reads_the_audit_for_later_increases(tmp_path: Path) -> None:
    """``segment --cold P30D --at 2026-02-15`` left out a lead cold since Jan 2 because it
    scored again on Mar 1 (after --at); one that also scored on Feb 10 is not cold then."""
    outcome = run(
        tmp_path,
        [VIEW],
        [
            track("a", "Page Viewed", "2026-01-01 00:00"),
            track("a", "Page Viewed", "2026-01-02 00:00"),
            track("a", "Page Viewed", "2026-03-01 00:00"),
            track("b", "Page Viewed", "2026-01-01 00:00"),
            track("b", "Page Viewed", "2026-02-10 00:00"),
            track("b", "Page Viewed", "2026-03-01 00:00"),
        ],
    )
    args = ["segment", "--cold", "P30D", "--format", "jsonl", "--db", outcome.url]
    for at_moment, cold in (("2026-02-15T00:00:00Z", ["a"]), ("2026-03-02T00:00:00Z", [])):
        result = CliRunner().invoke(main, [*args, "--at", at_moment])
        assert result.exit_code == 0, result.output
        assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == cold
    limited = CliRunner().invoke(main, [*args, "--at", "2026-02-15T00:00:00Z", "--limit", "1"])
    assert [json.loads(line)["id"] for line in limited.stdout.splitlines()] == ["a"]
