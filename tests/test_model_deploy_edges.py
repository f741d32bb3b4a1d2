"""Deploying models: cases a review of this session's changes found wrong (session 14),
each failing before its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import at
from test_scoring_models import points, score_model

from engine.api import Leadflow
from engine.cli import main
from engine.clock import VirtualClock
from engine.errors import InvalidWorkflow
from engine.validation import validate_documents

SKIPPED_VIEW = points("Page Viewed", 10)


SKIPPED_V1 = score_model("m", bands=[{"list": "Cold", "below": 20}, {"list": "Warm", "from": 20}])


SKIPPED_V2 = dict(
    SKIPPED_V1, version=2, bands=[{"list": "Cold 2", "below": 40}, {"list": "Warm 2", "from": 40}]
)


SKIPPED_V3 = dict(
    SKIPPED_V1, version=3, bands=[{"list": "Cold 3", "below": 40}, {"list": "Warm 3", "from": 40}]
)


def _banded_flow(url: str) -> Leadflow:
    flow = Leadflow(url, clock=VirtualClock(at("2026-01-05 10:00")))
    flow.deploy([SKIPPED_VIEW, SKIPPED_V1])
    flow.send([{"type": "track", "userId": "a", "event": "Page Viewed"}] * 3)  # 30
    assert flow.contact("a")["lists"] == ["Warm"]
    return flow


def test_two_revisions_while_paused_then_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/p.db"
    with _banded_flow(url) as flow:
        assert CliRunner().invoke(main, ["pause", "m", "--db", url]).exit_code == 0
        flow.deploy([SKIPPED_V2])
        flow.deploy([SKIPPED_V3])
        assert CliRunner().invoke(main, ["resume", "m", "--db", url]).exit_code == 0
        # was ['Cold 3', 'Warm']: v1's band list kept beside v3's
        assert flow.contact("a")["lists"] == ["Cold 3"]


def test_two_versions_in_one_deploy(tmp_path: Path) -> None:
    with _banded_flow(f"sqlite:///{tmp_path}/d.db") as flow:
        flow.deploy([SKIPPED_V2, SKIPPED_V3])
        assert flow.contact("a")["lists"] == ["Cold 3"]  # was ['Cold 3', 'Warm']


LONG_LIST = score_model("m", bands=[{"list": "L" * 250, "from": 0}])


LONG_SCORE = score_model("m", score="S" * 120)


LONG_ID = score_model("m" * 230)


LONG_NAME = dict(points("Page Viewed", 10), name="N" * 301)


@pytest.mark.parametrize(
    "document",
    [LONG_LIST, LONG_SCORE, LONG_ID, LONG_NAME],
    ids=["band", "score", "id", "name"],
)
def test_validate_refuses_what_the_store_cannot_keep(document: dict) -> None:
    assert validate_documents([("d.json", document)]).problems  # HEAD: no problem


def test_a_long_band_list_is_the_same_on_both_backends(store_url: str) -> None:
    flow = Leadflow(store_url, clock=VirtualClock(at("2026-01-05 10:00")))
    try:
        flow.deploy([points("Page Viewed", 10), LONG_LIST])
    except InvalidWorkflow:
        flow.close()
        return  # refused up front: fine
    flow.track("a", "Page Viewed")
    lists = flow.contact("a")["lists"]
    flow.close()
    assert lists == ["L" * 250]  # PostgreSQL: cut to 200 characters


def test_a_long_name_deploys_or_is_refused_alike(store_url: str) -> None:
    flow = Leadflow(store_url, clock=VirtualClock(at("2026-01-05 10:00")))
    try:
        flow.deploy([LONG_NAME])
    except InvalidWorkflow:
        pass  # refused by validation on every backend: fine
    finally:
        flow.close()  # PostgreSQL: sqlalchemy DataError (value too long) escapes


KEY_MODEL = score_model("m" * 198, decay={"after": "P1D", "every": "P1D", "percent": 50})


def test_a_long_model_id_decays_or_is_refused(store_url: str) -> None:
    clock = VirtualClock(at("2026-01-05 10:00"))
    flow = Leadflow(store_url, clock=clock)
    try:
        try:
            flow.deploy([points("Page Viewed", 10), KEY_MODEL])
        except InvalidWorkflow:
            return  # refused up front on every backend: fine
        flow.track("a", "Page Viewed")
        clock.advance_to(at("2026-01-07 11:00"))
        # two ticks due before this message: PostgreSQL raises DataError here
        flow.track("a", "Other", timestamp=at("2026-01-07 11:00"))
        assert flow.contact("a")["scores"] == {"SCORE": 2.5}
    finally:
        flow.close()
