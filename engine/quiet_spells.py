"""Quiet spells at deploy time: the contacts a new inactivity trigger watches from the start.

An inactivity trigger's spells live in ``quiet_watch``, one row per workflow, trigger
position and contact, made when a contact is created or sends one of the trigger's
events. Without a row a contact never goes quiet. So the newest version of a workflow,
when it is deployed, gives every contact that has no row yet a spell:

- a trigger that the version before held at another position (a trigger put in front of
  it, say) takes that position's rows, fired or not, so no spell starts again or is lost;
- every other contact's spell starts at its latest of the trigger's events, else at its
  creation, but no earlier than one ``for`` before the deploy: a contact quiet for a year
  goes quiet at the deploy, not a year ago, since no workflow acted back then.

Positions the new version no longer holds an inactivity trigger at are cleared, so a
later version's trigger there does not inherit spells it never watched.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, literal, null, select, update

from engine.kinds import QuietDriven
from engine.model import Workflow
from engine.store.sql import insert_for
from engine.store.tables import contacts, events, quiet_watch


def start_spells(
    connection: Connection, workflow: Workflow, before: Workflow | None, now: datetime
) -> None:
    """``workflow`` is the new newest version; ``before`` the newest until now, if any."""
    quiet = {
        position: trigger
        for position, trigger in enumerate(workflow.triggers)
        if isinstance(trigger, QuietDriven)
    }
    if before is not None:
        # a position keeps its rows only if it holds the same trigger as before; one that
        # now holds another trigger takes the rows of that trigger's old position (it was
        # moved), else it starts afresh, as does a position no longer watched at all
        kept = {
            position
            for position, trigger in quiet.items()
            if position < len(before.triggers) and before.triggers[position] == trigger
        }
        moves = {}
        for position, trigger in quiet.items():
            if position in kept:
                continue
            moved_from = next(
                (p for p, t in enumerate(before.triggers) if t == trigger and p != position),
                None,
            )
            if moved_from is not None:
                moves[position] = moved_from
        cleared = [
            position
            for position, trigger in enumerate(before.triggers)
            if isinstance(trigger, QuietDriven) and position not in kept
        ]
        # staged at negative positions first, so two triggers that swap places both
        # take the other's old rows before either is cleared
        for position, source in moves.items():
            _copy(connection, workflow.id, source, -1 - position)
        if cleared:
            connection.execute(
                quiet_watch.delete().where(
                    quiet_watch.c.workflow_id == workflow.id,
                    quiet_watch.c.trigger_index.in_(cleared),
                )
            )
        if moves:
            connection.execute(
                update(quiet_watch)
                .where(quiet_watch.c.workflow_id == workflow.id, quiet_watch.c.trigger_index < 0)
                .values(trigger_index=-1 - quiet_watch.c.trigger_index)
            )
    for position, trigger in quiet.items():
        _seed(connection, workflow.id, position, trigger, now)


def _copy(connection: Connection, workflow_id: str, source: int, target: int) -> None:
    rows = select(
        quiet_watch.c.workflow_id,
        literal(target),
        quiet_watch.c.contact_id,
        quiet_watch.c.last_at,
        quiet_watch.c.fired_at,
    ).where(quiet_watch.c.workflow_id == workflow_id, quiet_watch.c.trigger_index == source)
    connection.execute(
        insert_for(connection, quiet_watch)
        .from_select(["workflow_id", "trigger_index", "contact_id", "last_at", "fired_at"], rows)
        .on_conflict_do_nothing()
    )


def _seed(
    connection: Connection, workflow_id: str, position: int, trigger: QuietDriven, now: datetime
) -> None:
    """One statement for every contact without a spell here (ON CONFLICT keeps those that
    have one): their latest such event from the events index, else their creation."""
    latest = (
        select(func.max(events.c.timestamp))
        .where(
            events.c.contact_id == contacts.c.id,
            events.c.type == "track",
            events.c.name.in_(trigger.events),
        )
        .scalar_subquery()
    )
    began = func.coalesce(latest, contacts.c.created_at)
    floor = trigger.quiet_for.before(now)
    while trigger.quiet_for.after(floor) < now:  # month ends clamp: 30 March less a month
        floor += timedelta(days=1)  # is 28 February, whose month ends on 28 March
    last_at = case((began > floor, began), else_=literal(floor, quiet_watch.c.last_at.type))
    rows = select(
        literal(workflow_id, quiet_watch.c.workflow_id.type),
        literal(position),
        contacts.c.id,
        last_at,
        null(),
    ).where(contacts.c.merged_into.is_(None))
    connection.execute(
        insert_for(connection, quiet_watch)
        .from_select(["workflow_id", "trigger_index", "contact_id", "last_at", "fired_at"], rows)
        .on_conflict_do_nothing()
    )
