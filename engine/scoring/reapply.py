"""A model deployed, revised or resumed acts on the contacts that already exist.

Band lists and grades follow a contact's own changes (:mod:`engine.scoring.hooks`). A new
version of a score model that renames or moves its bands, or a grade model deployed after
the contacts came, would otherwise leave every contact as the old model (or no model)
left it until that contact next changed: on the old band list and the new one, or with
no grade at all. So the deploy puts them right at once, through the runner, so that the
lists' own triggers fire and the audit says which model version did it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import CompoundSelect, Connection, Select, select, union

from engine.catalog import Catalog
from engine.runner import BATCH_SIZE, Runner, Wake
from engine.scoring.models import SCORE_MODEL, GradeModel, ScoreModel, compile_score_model
from engine.state import ContactState
from engine.store.order import by_code_point
from engine.store.sql import chunks
from engine.store.tables import contacts, list_members, scores, workflow_versions


def reapply_models(runner: Runner, model_ids: Iterable[str], now: datetime) -> int:
    """Put every contact right by the newest versions of ``model_ids`` (paused ones are
    left: a paused model acts as if it were not deployed). Returns the contacts looked at."""
    wanted = set(model_ids)
    with runner.engine.connect() as connection:
        catalog = Catalog.load(connection)
        score_models = [m for ms in catalog.score_models.values() for m in ms if m.id in wanted]
        grade_models = [m for m in catalog.grade_models if m.id in wanted]
        plans = [
            (model, _dropped_lists(connection, model)) for model in sorted(score_models, key=_key)
        ]
        everyone = _live_contacts(connection) if grade_models else []
    looked = 0
    for model, dropped in plans:
        with runner.engine.connect() as connection:
            ids = _banded_contacts(connection, model, dropped)
        looked += _walk(runner, ids, now, partial(_reband, model=model, dropped=dropped, now=now))
    for grade_model in sorted(grade_models, key=_key):
        looked += _walk(runner, everyone, now, partial(_regrade, model=grade_model, now=now))
    return looked


def _key(model: ScoreModel | GradeModel) -> str:
    return model.id


def _walk(
    runner: Runner, ids: list[str], now: datetime, act: Callable[[Wake, ContactState], None]
) -> int:
    """``act`` on each contact, a batch of them to a transaction, as the runner's wakes
    do (contacts locked in id order)."""
    for part in chunks(ids, BATCH_SIZE):
        with runner.writer.begin() as connection:
            wake = Wake(runner, connection)
            wake.load(dict.fromkeys(part, now))
            for contact_id in part:
                state = wake.batch.contacts[contact_id]
                act(wake, state)
            wake.finish()
    return len(ids)


def _reband(
    wake: Wake, state: ContactState, model: ScoreModel, dropped: frozenset[str], now: datetime
) -> None:
    cause = f"{model.id} v{model.version} deployed"
    origin = (model.id, model.version, "bands")
    for name in sorted(dropped & state.lists):
        wake.change_list(state, name, False, now, cause, origin)
    if model.score in state.scores:  # a contact never scored stays on no band
        wake.scoring.place_in_band(wake, state, model, now, cause)
    wake.drain(state, now, cause)


def _regrade(wake: Wake, state: ContactState, model: GradeModel, now: datetime) -> None:
    cause = f"{model.id} v{model.version} deployed"
    wake.scoring.regrade(wake, state, now, cause)
    wake.drain(state, now, cause)


def _dropped_lists(connection: Connection, model: ScoreModel) -> frozenset[str]:
    """Band lists of the versions before this one that this one no longer has: all of
    them, not only the one just before (versions deployed while the model was paused, or
    several in one deploy, were never applied, so their predecessors' lists are still
    held)."""
    earlier: set[str] = set()
    for document in connection.scalars(
        select(workflow_versions.c.document).where(
            workflow_versions.c.workflow_id == model.id,
            workflow_versions.c.version < model.version,
        )
    ):
        if isinstance(document, dict) and document.get("kind") == SCORE_MODEL:
            earlier |= {b.list for b in compile_score_model(document).bands}
    return frozenset(earlier - {b.list for b in model.bands})


def _banded_contacts(
    connection: Connection, model: ScoreModel, dropped: frozenset[str]
) -> list[str]:
    scored = select(scores.c.contact_id.label("id")).where(scores.c.name == model.score)
    query: Select[Any] | CompoundSelect[Any] = scored
    if dropped:
        query = union(
            scored,
            select(list_members.c.contact_id.label("id")).where(
                list_members.c.list_name.in_(sorted(dropped))
            ),
        )
    return sorted(connection.scalars(query))


def _live_contacts(connection: Connection) -> list[str]:
    return list(
        connection.scalars(
            select(contacts.c.id)
            .where(contacts.c.merged_into.is_(None))
            .order_by(by_code_point(contacts.c.id))
        )
    )
