"""``leadflow accounts show ID``: an account's traits, its rolled-up scores (and how each
is rolled up, as the score model says), and its members with their scores and grades."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from sqlalchemy import Connection, select

from engine.catalog import Catalog
from engine.cli_common import EXIT_INPUT, db_option, echo_json, open_store
from engine.clock import format_timestamp
from engine.explain import number, plain
from engine.store.order import by_code_point
from engine.store.tables import account_scores, accounts, contacts
from engine.views import contact_views


class UnknownAccount(LookupError):
    """No account has the id that was asked for."""


def rollup_value(values: list[float], method: str, top: int | None) -> float:
    """The roll-up of member scores, as engine.scoring.accounts computes it in SQL."""
    if not values:
        return 0.0
    if method == "max":
        return max(values)
    if method == "average":
        return sum(values) / len(values)
    if method == "top":
        return sum(sorted(values, reverse=True)[: top or 1])
    return sum(values)


def describe_rollup(method: str, top: int | None) -> str:
    return {
        "sum": "sum of the members' scores",
        "max": "highest member score",
        "average": "average of the members' scores",
        "top": f"sum of the top {top or 1} members' scores",
    }.get(method, method)


def account_view(connection: Connection, account_id: str) -> dict[str, Any]:
    """One account: traits, scores with their roll-up, and members (best first)."""
    if "\x00" in account_id:  # no account has one; PostgreSQL refuses the query's text
        raise UnknownAccount(f"no account with id {account_id!r}")
    row = connection.execute(select(accounts).where(accounts.c.id == account_id)).first()
    member_ids = list(
        connection.scalars(
            select(contacts.c.id)
            .where(contacts.c.account_id == account_id, contacts.c.merged_into.is_(None))
            .order_by(by_code_point(contacts.c.id))
        )
    )
    if row is None and not member_ids:
        raise UnknownAccount(f"no account with id {account_id!r}")
    catalog = Catalog.load(connection)
    members = contact_views(connection, member_ids)
    rolled = {
        r.name: (r.value, r.updated_at)
        for r in connection.execute(
            select(account_scores).where(account_scores.c.account_id == account_id)
        )
    }
    names = sorted(set(rolled) | {n for m in members.values() for n in m["scores"]})
    scores: dict[str, float | int] = {}
    rollups: dict[str, dict[str, Any]] = {}
    for name in names:
        model = catalog.rollup(name)
        method = model.rollup if model else "sum"
        top = model.top if model and method == "top" else None
        value, updated = rolled.get(name, (0.0, None))
        values = [float(m["scores"][name]) for m in members.values() if name in m["scores"]]
        expected = rollup_value(values, method, top)
        scores[name] = number(value)
        rollups[name] = {
            "method": method,
            **({"top": top} if top is not None else {}),
            "model": f"{model.id} v{model.version}" if model else None,
            "declared": model is not None and "rollup" in model.document,
            "members": len(values),
            "from_members": number(expected),
            "in_step": abs(expected - value) <= 1e-6 * max(1.0, abs(value)),
            "updated_at": format_timestamp(updated) if updated is not None else None,
        }
    ranked = sorted(members.items(), key=lambda item: (-sum(item[1]["scores"].values()), item[0]))
    return {
        "id": account_id,
        "traits": dict(row.traits) if row is not None else {},
        "scores": scores,
        "rollups": rollups,
        "members": [
            {
                "id": contact_id,
                "scores": view["scores"],
                "grade": view["grade"],
                "grades": view["grades"],
                "lists": view["lists"],
            }
            for contact_id, view in ranked
        ],
    }


@click.group("accounts")
def accounts_group() -> None:
    """Look at accounts (companies) and their rolled-up scores."""


@accounts_group.command("show")
@click.argument("account_id")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the account as one JSON object.")
def accounts_show(account_id: str, db_url: str | None, as_json: bool) -> None:
    """Traits, account scores with their roll-up method, and members with scores and grades."""
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            view = account_view(connection, account_id)
    except UnknownAccount as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    finally:
        engine.dispose()
    if as_json:
        echo_json(view)
        return
    click.echo(f"account {view['id']}")
    for key, value in sorted(view["traits"].items()):
        click.echo(f"  {key}: {json.dumps(value, ensure_ascii=False)}")
    click.echo("scores:" if view["scores"] else "scores: none")
    for name, value in view["scores"].items():
        rollup = view["rollups"][name]
        how = describe_rollup(rollup["method"], rollup.get("top"))
        source = f", per {rollup['model']}" if rollup["declared"] else ", the default"
        line = f"  {name} {plain(value)}  ({how} of {rollup['members']} member(s){source})"
        if not rollup["in_step"]:
            line += f"  [members now give {plain(rollup['from_members'])}]"
        click.echo(line)
    click.echo(f"members: {len(view['members'])}" if view["members"] else "members: none")
    for member in view["members"]:
        scores = ", ".join(f"{k} {plain(v)}" for k, v in member["scores"].items()) or "no score"
        grades = ", ".join(f"{k} {v}" for k, v in sorted(member["grades"].items())) or "no grade"
        click.echo(f"  {member['id']}: {scores}; {grades}")
