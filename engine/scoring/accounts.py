"""Account scores: a roll-up of the members' scores, kept current as they change.

A sum is kept incrementally (``value = value + delta``: concurrent workers never lose an
update); max, average and top-N are recomputed for the touched accounts only, after the
batch's member scores are written. Crossings of an account score fire ``score_crossed``
triggers declared with ``"of": "account"``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, desc, func, select, update

from engine.catalog import Catalog
from engine.store.sql import insert_ignore
from engine.store.tables import account_scores, contacts, scores


@dataclass(frozen=True, slots=True)
class AccountChange:
    account_id: str
    score: str
    old: float
    new: float
    at: datetime
    """The moment of the last member change that went into ``new``."""


@dataclass
class AccountRollup:
    """Pending account-score work of one transaction."""

    catalog: Catalog
    deltas: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    touched: set[tuple[str, str]] = field(default_factory=set)
    moments: dict[tuple[str, str], datetime] = field(default_factory=dict)
    """When each touched account score last had a member change: a transaction (a
    worker's lease of due waits) spans many moments, and an account's roll-up, and the
    crossing it may fire, are stamped with its own members' latest, not the batch's."""

    def member_changed(
        self, account_id: str, score: str, old: float, new: float, moment: datetime
    ) -> None:
        key = (account_id, score)
        self.deltas[key] += new - old
        self.touched.add(key)
        last = self.moments.get(key)
        if last is None or moment > last:
            self.moments[key] = moment

    def apply(self, connection: Connection, moment: datetime) -> list[AccountChange]:
        """Write the roll-ups (after the member scores are flushed); returns what changed.
        ``moment``: the stamp of a touched score whose members' change has none."""
        changes: list[AccountChange] = []
        keys = sorted(self.touched)
        self.touched.clear()
        deltas = dict(self.deltas)
        self.deltas.clear()
        stamps = {key: self.moments.get(key, moment) for key in keys}
        self.moments.clear()
        if not keys:
            return changes
        insert_ignore(
            connection,
            account_scores,
            [
                {"account_id": a, "name": n, "value": 0.0, "updated_at": stamps[(a, n)]}
                for a, n in keys
            ],
        )
        for account_id, name in keys:
            at = stamps[(account_id, name)]
            model = self.catalog.rollup(name)
            method = model.rollup if model else "sum"
            where = (account_scores.c.account_id == account_id) & (account_scores.c.name == name)
            if method == "sum":
                delta = deltas.get((account_id, name), 0.0)
                if not delta:
                    continue
                new = connection.execute(
                    update(account_scores)
                    .where(where)
                    .values(value=account_scores.c.value + delta, updated_at=at)
                    .returning(account_scores.c.value)
                ).scalar_one()
                changes.append(AccountChange(account_id, name, new - delta, new, at))
                continue
            old = connection.execute(
                select(account_scores.c.value).where(where).with_for_update()
            ).scalar_one()
            new = recompute(connection, account_id, name, method, model.top if model else None)
            if new != old:
                connection.execute(
                    update(account_scores).where(where).values(value=new, updated_at=at)
                )
                changes.append(AccountChange(account_id, name, old, new, at))
        return changes


def rollup_of(
    account: str | ColumnElement[Any], name: str, method: str, top: int | None
) -> ColumnElement[Any]:
    """The roll-up of ``account``'s members' ``name`` score as a scalar SQL expression
    (0.0 with no member). ``account`` is a literal id or a column, so the same expression
    computes one account here and, correlated to ``account_scores.account_id``, every
    account in one UPDATE during a decay tick. The plan walks the account's members
    through ``ix_contacts_account_id`` and their scores by primary key."""
    joined = scores.join(contacts, contacts.c.id == scores.c.contact_id)
    member = and_(
        contacts.c.account_id == account,
        contacts.c.merged_into.is_(None),
        scores.c.name == name,
    )
    if method == "top":
        ranked = (
            select(scores.c.value)
            .select_from(joined)
            .where(member)
            .order_by(desc(scores.c.value))
            .limit(top or 1)
        )
        if isinstance(account, ColumnElement):
            # A derived table is not correlated by itself: name the outer table.
            ranked = ranked.correlate(account_scores)
        top_values = ranked.subquery()
        return select(func.coalesce(func.sum(top_values.c.value), 0.0)).scalar_subquery()
    combined: ColumnElement[Any]
    if method == "max":
        combined = func.max(scores.c.value)
    elif method == "average":
        combined = func.avg(scores.c.value)
    else:
        combined = func.sum(scores.c.value)
    return select(func.coalesce(combined, 0.0)).select_from(joined).where(member).scalar_subquery()


def recompute(
    connection: Connection, account_id: str, name: str, method: str, top: int | None
) -> float:
    return float(connection.scalar(select(rollup_of(account_id, name, method, top))) or 0.0)
