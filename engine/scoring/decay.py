"""Score decay, set-wise: one UPDATE per policy and tick, never a loop over contacts.

The statement lowers every quiet contact's score by a percentage or a number of points,
never below the floor (a fixed number, or a share of the contact's peak) and never lifting
a score already under it. The audit rows are written by one INSERT ... SELECT. Only the
contacts whose decay moved them across a band edge or a ``score_crossed`` threshold are
then loaded, so band lists and triggers react as they would to any other change.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    String,
    cast,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)

from engine.kinds import Signal
from engine.scoring.accounts import AccountChange, recompute
from engine.scoring.models import ScoreModel
from engine.store.sql import is_postgres
from engine.store.tables import account_scores, audit, contacts, events, scores

if TYPE_CHECKING:
    from engine.runner import Runner


def _greatest(connection: Connection, a: Any, b: Any) -> ColumnElement[Any]:
    return func.greatest(a, b) if is_postgres(connection) else func.max(a, b)


def _as_json(connection: Connection, column: Any) -> ColumnElement[Any]:
    return func.to_json(column) if is_postgres(connection) else cast(column, String)


def decay_once(runner: Runner, model: ScoreModel, tick: datetime) -> int:
    """Apply one tick of ``model``'s decay at ``tick``; returns how many scores fell."""
    policy = model.decay
    assert policy is not None
    cause = f"decay by {model.id} v{model.version}"
    with runner.writer.begin() as connection:
        floor: Any = literal(float(policy.floor or 0.0))
        if policy.floor_of_peak is not None:
            floor = _greatest(connection, floor, scores.c.peak * policy.floor_of_peak)
        if policy.percent is not None:
            lowered: Any = scores.c.value * (1 - policy.percent / 100)
        else:
            lowered = scores.c.value - float(policy.points or 0.0)
        quiet_since = policy.after.before(tick)
        if policy.without:
            engaged = exists().where(
                events.c.contact_id == scores.c.contact_id,
                events.c.name.in_(policy.without),
                events.c.timestamp > quiet_since,
                events.c.timestamp <= tick,
            )
            quiet: Any = ~engaged
        else:
            quiet = func.coalesce(scores.c.increased_at, scores.c.updated_at) <= quiet_since
        statement = (
            update(scores)
            .where(scores.c.name == model.score, scores.c.value > floor, quiet)
            .values(
                decayed_from=scores.c.value,
                value=func.round(_greatest(connection, lowered, floor), 6),
                decayed_at=tick,
                updated_at=tick,
            )
            .returning(scores.c.contact_id, scores.c.decayed_from, scores.c.value)
        )
        changed = [tuple(row) for row in connection.execute(statement)]
        if not changed:
            return 0
        connection.execute(
            insert(audit).from_select(
                [
                    "contact_id",
                    "at",
                    "subject",
                    "name",
                    "old",
                    "new",
                    "workflow_id",
                    "version",
                    "node",
                    "cause",
                ],
                select(
                    scores.c.contact_id,
                    literal(tick),
                    literal("score"),
                    scores.c.name,
                    _as_json(connection, scores.c.decayed_from),
                    _as_json(connection, scores.c.value),
                    literal(model.id),
                    literal(model.version),
                    literal("decay"),
                    literal(cause),
                ).where(scores.c.name == model.score, scores.c.decayed_at == tick),
            )
        )
        _follow_up(runner, connection, model, changed, tick, cause)
    return len(changed)


def _follow_up(
    runner: Runner,
    connection: Connection,
    model: ScoreModel,
    changed: list[Any],
    tick: datetime,
    cause: str,
) -> None:
    """Band moves, crossings and account roll-ups for the scores that fell."""
    from engine.runner import Wake

    wake = Wake(runner, connection)
    wake.seen(tick)
    key = ("score_changed", model.score)
    thresholds = [getattr(t, "threshold", None) for _, t in wake.catalog.index.get(key, ())]
    crossing = [t for t in thresholds if t is not None]
    models = wake.catalog.score_models.get(model.score, [])
    affected = [
        (contact_id, old, new)
        for contact_id, old, new in changed
        if any(new < t <= old for t in crossing)
        or any(m.band_of(old) is not m.band_of(new) for m in models)
    ]
    if affected:
        wake.load({contact_id: tick for contact_id, _, _ in affected})
        for contact_id, old, new in affected:
            state = wake.batch.contacts[contact_id]
            for band_model in models:
                wake.scoring.place_in_band(wake, state, band_model, tick, cause)
            wake.queue.append(Signal("score_changed", model.score, old, new))
            wake.drain(state, tick, cause)
    wake.batch.flush()
    wake._account_crossings(_refresh_accounts(wake, connection, model, tick), tick)
    wake.finish()


def _refresh_accounts(
    wake: Any, connection: Connection, model: ScoreModel, tick: datetime
) -> list[AccountChange]:
    """Recompute the roll-up of every account holding this score, in one statement for
    sums; returns the accounts whose score changed."""
    before = dict(
        connection.execute(
            select(account_scores.c.account_id, account_scores.c.value).where(
                account_scores.c.name == model.score
            )
        ).all()
    )
    if not before:
        return []
    changes = []
    if model.rollup == "sum":
        members = (
            select(func.coalesce(func.sum(scores.c.value), 0.0))
            .join(contacts, contacts.c.id == scores.c.contact_id)
            .where(
                contacts.c.account_id == account_scores.c.account_id,
                contacts.c.merged_into.is_(None),
                scores.c.name == model.score,
            )
            .scalar_subquery()
        )
        after: list[tuple[Any, float]] = [
            tuple(row)
            for row in connection.execute(
                update(account_scores)
                .where(account_scores.c.name == model.score)
                .values(value=members, updated_at=tick)
                .returning(account_scores.c.account_id, account_scores.c.value)
            )
        ]
    else:
        after = []
        for account_id in before:
            value = recompute(connection, account_id, model.score, model.rollup, model.top)
            connection.execute(
                update(account_scores)
                .where(
                    account_scores.c.account_id == account_id, account_scores.c.name == model.score
                )
                .values(value=value, updated_at=tick)
            )
            after.append((account_id, value))
    for account_id, value in after:
        if abs(value - before[account_id]) > 1e-9:
            changes.append(AccountChange(account_id, model.score, before[account_id], value))
    return changes
