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

from sqlalchemy import Connection, desc, func, select, update

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


def recompute(
    connection: Connection, account_id: str, name: str, method: str, top: int | None
) -> float:
    members = (
        select(scores.c.value)
        .join(contacts, contacts.c.id == scores.c.contact_id)
        .where(
            contacts.c.account_id == account_id,
            contacts.c.merged_into.is_(None),
            scores.c.name == name,
        )
    )
    if method == "top":
        ranked = members.order_by(desc(scores.c.value)).limit(top or 1).subquery()
        total = connection.scalar(select(func.coalesce(func.sum(ranked.c.value), 0.0)))
    else:
        sub = members.subquery()
        combined: Any
        if method == "max":
            combined = func.max(sub.c.value)
        elif method == "average":
            combined = func.avg(sub.c.value)
        else:
            combined = func.sum(sub.c.value)
        total = connection.scalar(select(func.coalesce(combined, 0.0)))
    return float(total or 0.0)
