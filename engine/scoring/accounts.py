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


@dataclass
class AccountRollup:
    """Pending account-score work of one transaction."""

    catalog: Catalog
    deltas: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    touched: set[tuple[str, str]] = field(default_factory=set)

    def member_changed(self, account_id: str, score: str, old: float, new: float) -> None:
        self.deltas[(account_id, score)] += new - old
        self.touched.add((account_id, score))

    def forget(self, score: str) -> None:
        """Drop the pending work on ``score``: the caller has just recomputed every
        account's ``score`` from the members as written (a decay tick), and a sum's
        pending deltas would add the same changes a second time."""
        for key in [key for key in self.touched if key[1] == score]:
            self.touched.discard(key)
            self.deltas.pop(key, None)

    def apply(self, connection: Connection, moment: datetime) -> list[AccountChange]:
        """Write the roll-ups (after the member scores are flushed); returns what changed."""
        changes: list[AccountChange] = []
        keys = sorted(self.touched)
        self.touched.clear()
        deltas = dict(self.deltas)
        self.deltas.clear()
        if not keys:
            return changes
        insert_ignore(
            connection,
            account_scores,
            [{"account_id": a, "name": n, "value": 0.0, "updated_at": moment} for a, n in keys],
        )
        for account_id, name in keys:
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
                    .values(value=account_scores.c.value + delta, updated_at=moment)
                    .returning(account_scores.c.value)
                ).scalar_one()
                changes.append(AccountChange(account_id, name, new - delta, new))
                continue
            old = connection.execute(
                select(account_scores.c.value).where(where).with_for_update()
            ).scalar_one()
            new = recompute(connection, account_id, name, method, model.top if model else None)
            if new != old:
                connection.execute(
                    update(account_scores).where(where).values(value=new, updated_at=moment)
                )
                changes.append(AccountChange(account_id, name, old, new))
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


def refresh_rollups(connection: Connection, names: set[str], moment: datetime) -> None:
    """Recompute every account's ``names`` scores from the members, by the roll-up now in
    force: after a deploy, pause or resume changed which model (and method) rolls a score
    up, the stored values were made by the old method and a sum's deltas would be added
    on top of them."""
    catalog = Catalog.load(connection)
    for name in sorted(names):
        model = catalog.rollup(name)
        method = model.rollup if model else "sum"
        top = model.top if model else None
        connection.execute(
            update(account_scores)
            .where(account_scores.c.name == name)
            .values(
                value=rollup_of(account_scores.c.account_id, name, method, top),
                updated_at=moment,
            )
        )
