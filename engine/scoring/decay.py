"""Score decay, set-wise: one UPDATE per policy and tick, never a loop over contacts.

The statement lowers every quiet contact's score by a percentage or a number of points,
never below the floor (a fixed number, or a share of the contact's peak) and never lifting
a score already under it. The audit rows are written by one INSERT ... SELECT. Only the
contacts whose decay moved them across a band edge or a ``score_crossed`` threshold are
then loaded, so band lists and triggers react as they would to any other change; they are
picked out in SQL too, so a tick over a million scores never brings a million rows into
Python.

No index holds ``scores.value`` (revision 0002 dropped ``ix_scores_name_value``), so the
UPDATE rewrites table rows only: with that index, every decayed row also moved an index
entry, about two thirds of the UPDATE's time at a million scores (bench/bench_decay.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Numeric,
    String,
    and_,
    cast,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from engine.kinds import Signal
from engine.scoring.accounts import AccountChange, rollup_of
from engine.scoring.models import ScoreModel
from engine.state import AUDIT_COLUMNS
from engine.store.order import by_code_point
from engine.store.sql import is_postgres
from engine.store.tables import TS, account_scores, audit, events, scores

if TYPE_CHECKING:
    from engine.runner import Runner


def _greatest(connection: Connection, a: Any, b: Any) -> ColumnElement[Any]:
    return func.greatest(a, b) if is_postgres(connection) else func.max(a, b)


def _round6(connection: Connection, value: Any) -> ColumnElement[Any]:
    """Round to 6 decimals (PostgreSQL rounds to a number of places only numerics)."""
    if is_postgres(connection):
        return cast(func.round(cast(value, Numeric), 6), Float)
    return func.round(value, 6)


def _as_json(connection: Connection, column: Any) -> ColumnElement[Any]:
    return func.to_json(column) if is_postgres(connection) else cast(column, String)


TICK_CACHE_KIB = 65536
"""SQLite page cache for the length of a tick (the default is 2 MiB). A tick dirties most
pages of ``scores`` and adds an audit row (and an ``ix_audit_contact_at`` entry) per
decayed score; with the default cache dirty pages are spilled to the WAL and read back
(measured in bench_decay.py when ``scores(name, value)`` was still indexed). Set back when
the tick is done."""


@contextmanager
def _tick_cache(connection: Connection) -> Iterator[None]:
    if is_postgres(connection):
        yield
        return
    previous = int(connection.exec_driver_sql("PRAGMA cache_size").scalar() or -2000)
    connection.exec_driver_sql(f"PRAGMA cache_size = -{TICK_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {previous}")


def decay_once(runner: Runner, model: ScoreModel, tick: datetime) -> int:
    """Take and apply one tick of ``model``'s decay at ``tick``, in one transaction;
    returns how many scores fell (0 when another worker took the tick)."""
    policy = model.decay
    assert policy is not None
    cause = f"decay by {model.id} v{model.version}"
    with runner.writer.begin() as connection, _tick_cache(connection):
        if not runner.take_decay_tick(connection, model, tick):
            return 0
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
                value=_round6(connection, _greatest(connection, lowered, floor)),
                decayed_at=tick,
                updated_at=tick,
            )
        )
        fallen = int(connection.execute(statement).rowcount or 0)
        if not fallen:
            return 0
        this_tick = and_(scores.c.name == model.score, scores.c.decayed_at == tick)
        if runner.history:  # else a throwaway store, whose audit log no one reads
            _audit_tick(connection, model, tick, cause, this_tick)
        _follow_up(runner, connection, model, this_tick, tick, cause)
    return fallen


def _audit_tick(
    connection: Connection,
    model: ScoreModel,
    tick: datetime,
    cause: str,
    this_tick: ColumnElement[bool],
) -> None:
    """An audit row per score this tick lowered, by one INSERT ... SELECT."""
    connection.execute(
        insert(audit).from_select(
            list(AUDIT_COLUMNS),
            select(
                scores.c.contact_id,
                literal(tick, TS),
                literal("score"),
                scores.c.name,
                _as_json(connection, scores.c.decayed_from),
                _as_json(connection, scores.c.value),
                literal(model.id),
                literal(model.version),
                literal("decay"),
                literal(cause),
            ).where(this_tick),
        )
    )


def _follow_up(
    runner: Runner,
    connection: Connection,
    model: ScoreModel,
    this_tick: ColumnElement[bool],
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
    # Every band bound and threshold a score can cross, by which side of it belongs with
    # it: a move across a bound that its own side includes (``from``, a threshold) means
    # one end under it and the other at or over it; across a bound its side excludes
    # (``to``: at or under, ``above``: over) one end at or under it and the other over it.
    # Below a band (``below``) is the other band's ``from``. A score with no edge crossed
    # that way kept every band and crossed nothing, so SQL leaves it out (a floor equal to
    # a band's ``from``, as in the shipped sales-ready model, no longer brings back every
    # score that stopped there); the exact test below sorts the rows that come back.
    at_or_over: set[float] = {float(t) for t in crossing}
    over: set[float] = set()
    for band_model in models:
        for band in band_model.bands:
            if band.low is not None:
                (at_or_over if band.low_included else over).add(float(band.low))
            if band.high is not None:
                (over if band.high_included else at_or_over).add(float(band.high))
    old_value, new_value = scores.c.decayed_from, scores.c.value
    # With a floor of zero or more, only scores over it decay and every one of them
    # falls, so only downward crossings can happen (a percentage of a negative score
    # would rise towards zero; that needs a negative floor).
    assert model.decay is not None
    rising = model.decay.may_raise
    near = [
        or_(
            and_(new_value < edge, old_value >= edge),
            *([and_(old_value < edge, new_value >= edge)] if rising else []),
        )
        for edge in sorted(at_or_over)
    ] + [
        or_(
            and_(new_value <= edge, old_value > edge),
            *([and_(old_value <= edge, new_value > edge)] if rising else []),
        )
        for edge in sorted(over)
    ]
    candidates = (
        connection.execute(
            select(scores.c.contact_id, old_value, new_value)
            .where(this_tick, or_(*near))
            .order_by(by_code_point(scores.c.contact_id))
        ).all()
        if near
        else []
    )
    affected = [
        (contact_id, old, new)
        for contact_id, old, new in candidates
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
    # the refresh rolls up every account from its members as now written, with the
    # changes the workflows above made to this score: those are not to be added again
    wake.accounts.forget(model.score)
    wake._account_crossings(_refresh_accounts(connection, model, tick), tick)
    wake.finish()


def _refresh_accounts(
    connection: Connection, model: ScoreModel, tick: datetime
) -> list[AccountChange]:
    """Recompute the roll-up of every account holding this score in one UPDATE, each
    account's members read through ``ix_contacts_account_id`` (the same expression as
    :func:`engine.scoring.accounts.recompute`); returns the accounts whose score changed.
    A window query ranking every member of every account took twice as long at 50,000
    accounts of 10 (bench/bench_decay.py)."""
    before = dict(
        connection.execute(
            select(account_scores.c.account_id, account_scores.c.value).where(
                account_scores.c.name == model.score
            )
        ).all()
    )
    if not before:
        return []
    after = connection.execute(
        update(account_scores)
        .where(account_scores.c.name == model.score)
        .values(
            value=rollup_of(account_scores.c.account_id, model.score, model.rollup, model.top),
            updated_at=tick,
        )
        .returning(account_scores.c.account_id, account_scores.c.value)
    ).all()
    return [  # UPDATE ... RETURNING comes in the plan's order: crossings fire by id
        AccountChange(account_id, model.score, before[account_id], value)
        for account_id, value in sorted(after)
        if abs(value - before[account_id]) > 1e-9
    ]
