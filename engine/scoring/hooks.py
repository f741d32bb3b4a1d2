"""What the score and grade models do when a contact changes: keep band lists in step with
the score, regrade on attribute changes, and note account roll-up work."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from engine.catalog import Catalog
from engine.scoring.models import ScoreModel
from engine.state import ContactFacts, ContactState

if TYPE_CHECKING:
    from engine.runner import Wake


class ScoringHooks:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def score_changed(
        self,
        wake: Wake,
        state: ContactState,
        name: str,
        old: float,
        new: float,
        moment: datetime,
        cause: str,
    ) -> None:
        for model in self.catalog.score_models.get(name, ()):
            self.place_in_band(wake, state, model, moment, cause)
        if state.account_id is not None:
            wake.accounts.member_changed(state.account_id, name, old, new)

    @staticmethod
    def place_in_band(
        wake: Wake, state: ContactState, model: ScoreModel, moment: datetime, cause: str
    ) -> None:
        """Exactly the band list of the current score, none of the others; compared with
        the real memberships, so a contact that missed a move is put right."""
        band = model.band_of(state.scores.get(model.score, 0.0))
        origin = (model.id, model.version, "bands")
        for other in model.bands:
            if other is not band and other.list in state.lists:
                wake.change_list(state, other.list, False, moment, cause, origin)
        if band is not None and band.list not in state.lists:
            wake.change_list(state, band.list, True, moment, cause, origin)

    def regrade(self, wake: Wake, state: ContactState, moment: datetime, cause: str) -> None:
        if not self.catalog.grade_models:
            return
        facts = ContactFacts(wake.batch, state, moment, {})
        for model in self.catalog.grade_models:
            letter = model.grade_of(facts)
            if state.grades.get(model.grade) != letter:
                wake.change_grade(
                    state, model.grade, letter, moment, cause, (model.id, model.version, "grade")
                )
