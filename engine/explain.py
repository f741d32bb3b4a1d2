"""``leadflow contacts explain ID``: why a score is what it is.

Read from the audit log: every change of the score, summed by the workflow, version and
node that made it and by the event that caused it ("+60 from consideration-stage v1
'points' on 2 x Quote Requested"); decay on lines of its own ("-12.5 by decay of
sales-ready v1 (3 ticks)"); the band lists the score moved the contact through; and a check
that the parts add up to the current value.

A merge folds an anonymous contact into a known one: its history is re-pointed to the
known contact and listed with the rest, and the merge's own change (the score it brought)
is shown but not counted again.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click
from sqlalchemy import Connection, select

from engine.cli_common import EXIT_INPUT, db_option, echo_json, open_store
from engine.clock import format_timestamp
from engine.errors import UnknownContact
from engine.scoring.models import SCORE_MODEL, ScoreModel, compile_score_model
from engine.store.order import by_code_point
from engine.store.tables import audit, contacts, scores, workflow_versions

MESSAGE_TYPES = ("track", "identify", "group", "alias", "page", "screen")
_MESSAGE_ID = re.compile(r"^(?P<what>.*) \((?P<id>[^()]*)\)$")
TOLERANCE = 1e-6
TIMES = "\u00d7"
MINUS = "\u2212"
"""Plain words use the multiplication and minus signs: "+60 ... on 2 \u00d7 Quote Requested"."""


@dataclass
class Part:
    """Changes of one score with the same origin and the same reason."""

    kind: str  # points | decay | merge | other
    workflow: str | None
    version: int | None
    node: str | None
    reason: str
    event: str | None
    counted: bool = True
    count: int = 0
    delta: float = 0.0
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, delta: float, moment: datetime) -> None:
        self.count += 1
        self.delta += delta
        self.first_at = self.first_at or moment
        self.last_at = moment

    def text(self) -> str:
        amount = signed(self.delta)
        if self.kind == "decay":
            ticks = "1 tick" if self.count == 1 else f"{self.count} ticks"
            span = _day(self.first_at)
            if self.count > 1:
                span += f" to {_day(self.last_at)}"
            return f"{amount} by decay of {self.workflow} v{self.version} ({ticks}, {span})"
        if self.kind == "merge":
            return (
                f"({amount} brought in by {self.reason}: that contact's changes are listed "
                "here already, so not counted again)"
            )
        if self.event is not None:
            why = f"on {self.count} {TIMES} {self.event}"
        else:
            why = f"on {self.reason}" + (f" ({self.count} {TIMES})" if self.count > 1 else "")
        if self.workflow is None:
            return f"{amount} {why}"
        return f"{amount} from {self.workflow} v{self.version} {self.node!r} {why}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "workflow": self.workflow,
            "version": self.version,
            "node": self.node,
            "event": self.event,
            "reason": self.reason,
            "count": self.count,
            "delta": number(self.delta),
            "counted": self.counted,
            "first_at": format_timestamp(self.first_at) if self.first_at else None,
            "last_at": format_timestamp(self.last_at) if self.last_at else None,
            "text": self.text(),
        }


def reason_of(cause: str | None) -> tuple[str, str | None]:
    """The cause without its message id, and the event name when a track caused it:
    ``track Quote Requested (m-2)`` -> (``track Quote Requested``, ``Quote Requested``)."""
    if not cause:
        return "an unrecorded cause", None
    match = _MESSAGE_ID.match(cause)
    what = match["what"] if match else cause
    kind, _, event = what.partition(" ")
    if kind not in MESSAGE_TYPES:
        return cause, None
    if kind == "track" and event:
        return what, event
    return what, (event or kind)


def score_models(connection: Connection, score: str | None = None) -> list[ScoreModel]:
    """Every deployed version of every score model (of ``score`` when given), oldest first."""
    found = []
    query = select(workflow_versions.c.document).order_by(
        by_code_point(workflow_versions.c.workflow_id), workflow_versions.c.version
    )
    for document in connection.scalars(query):
        if not isinstance(document, dict) or document.get("kind") != SCORE_MODEL:
            continue
        if score is not None and document.get("score") != score:
            continue
        try:
            found.append(compile_score_model(document))
        except ValueError:  # deployed documents were valid; a newer engine may disagree
            continue
    return found


def explain_score(connection: Connection, contact_id: str, name: str) -> dict[str, Any]:
    """The explanation of one score of one (unmerged) contact, JSON-ready."""
    row = connection.execute(
        select(scores).where(scores.c.contact_id == contact_id, scores.c.name == name)
    ).first()
    value = float(row.value) if row is not None else 0.0
    parts: dict[tuple[Any, ...], Part] = {}
    changes = connection.execute(
        select(audit)
        .where(audit.c.contact_id == contact_id, audit.c.subject == "score", audit.c.name == name)
        .order_by(audit.c.at, audit.c.id)
    )
    for change in changes:
        delta = _float(change.new) - _float(change.old)
        reason, event = reason_of(change.cause)
        if change.node == "decay" and change.workflow_id is not None:
            key: tuple[Any, ...] = ("decay", change.workflow_id, change.version)
            kind, event = "decay", None
        elif change.workflow_id is None and reason.startswith("merge of "):
            key, kind, event = ("merge", reason), "merge", None
        else:
            kind = "points" if change.workflow_id is not None else "other"
            key = (kind, change.workflow_id, change.version, change.node, reason)
        part = parts.get(key)
        if part is None:
            part = parts[key] = Part(
                kind,
                change.workflow_id,
                change.version,
                change.node,
                reason,
                event,
                counted=kind != "merge",
            )
        part.add(delta, change.at)
    total = sum(p.delta for p in parts.values() if p.counted)
    difference = value - total
    models = score_models(connection, name)
    model_ids = {m.id for m in models}
    latest = {m.id: m for m in models}  # oldest first: the last one per id stays
    band = None
    for model in latest.values():
        found = model.band_of(value)
        if found is not None:
            band = {"list": found.list, "model": f"{model.id} v{model.version}"}
            break
    result: dict[str, Any] = {
        "score": name,
        "value": number(value),
        "peak": number(row.peak) if row is not None else None,
        "last_increase": (
            format_timestamp(row.increased_at)
            if row is not None and row.increased_at is not None
            else None
        ),
        "band": band,
        "parts": [p.as_json() for p in parts.values()],
        "band_moves": _band_moves(connection, contact_id, model_ids),
        "sum": number(total),
        "adds_up": abs(difference) <= TOLERANCE * max(1.0, abs(value), len(parts)),
        "difference": number(difference),
    }
    return result


def _band_moves(connection: Connection, contact_id: str, model_ids: set[str]) -> list[Any]:
    if not model_ids:
        return []
    rows = connection.execute(
        select(audit)
        .where(
            audit.c.contact_id == contact_id,
            audit.c.subject == "list",
            audit.c.node == "bands",
            audit.c.workflow_id.in_(sorted(model_ids)),
        )
        .order_by(audit.c.at, audit.c.id)
    )
    moves: list[dict[str, Any]] = []
    current: tuple[Any, ...] | None = None
    for row in rows:
        key = (row.at, row.cause, row.workflow_id, row.version)
        # one move is the removals from other bands, then at most one addition: a row
        # after an addition starts the next move, even of the same moment and cause
        if key != current or moves[-1]["to"]:
            current = key
            moves.append(
                {
                    "at": format_timestamp(row.at),
                    "from": [],
                    "to": [],
                    "model": f"{row.workflow_id} v{row.version}",
                    "cause": row.cause,
                }
            )
        moves[-1]["to" if row.new is True else "from"].append(row.name)
    for move in moves:
        left = ", ".join(move["from"]) or "no band"
        right = ", ".join(move["to"]) or "no band"
        move["text"] = (
            f"{_minute(move['at'])} {left} → {right} ({move['model']}, on {move['cause']})"
        )
    return moves


def explain_contact(
    connection: Connection, contact_id: str, score: str | None = None
) -> dict[str, Any]:
    """Every score of the contact (or only ``score``) explained; merged ids are followed."""
    if "\x00" in contact_id:  # no contact has one; PostgreSQL refuses the query's text
        raise UnknownContact(f"no contact with id {contact_id!r}")
    row = connection.execute(select(contacts).where(contacts.c.id == contact_id)).first()
    if row is None:
        raise UnknownContact(f"no contact with id {contact_id!r}")
    while row.merged_into:
        row = connection.execute(select(contacts).where(contacts.c.id == row.merged_into)).one()
    if score is not None:
        names = [] if "\x00" in score else [score]  # no score has such a name
    else:
        held = set(connection.scalars(select(scores.c.name).where(scores.c.contact_id == row.id)))
        changed = set(
            connection.scalars(
                select(audit.c.name)
                .where(audit.c.contact_id == row.id, audit.c.subject == "score")
                .distinct()
            )
        )
        names = sorted(held | changed)
    return {
        "id": row.id,
        "asked": contact_id,
        "grades": dict(row.grades),
        "scores": {name: explain_score(connection, row.id, name) for name in names},
    }


def render(explanation: dict[str, Any]) -> str:
    """Plain words for :func:`explain_contact`."""
    lines = []
    grades = ", ".join(f"{k} {v}" for k, v in sorted(explanation["grades"].items()))
    header = explanation["id"]
    if explanation["asked"] != explanation["id"]:
        header += f" (merged from {explanation['asked']})"
    lines.append(header + (f"  grade: {grades}" if grades else ""))
    if not explanation["scores"]:
        lines.append("  no score and no score change recorded")
    for name, item in explanation["scores"].items():
        head = f"{name} = {plain(item['value'])}"
        extra = []
        if item["peak"] is not None:
            extra.append(f"peak {plain(item['peak'])}")
        if item["last_increase"]:
            extra.append(f"last increase {_minute(item['last_increase'])}")
        if item["band"]:
            extra.append(f"band {item['band']['list']!r} of {item['band']['model']}")
        lines.append(head + (f" ({'; '.join(extra)})" if extra else ""))
        if not item["parts"]:
            lines.append("  no change recorded: a score never changed is 0")
        lines.extend(f"  {part['text']}" for part in item["parts"])
        if item["adds_up"]:
            lines.append(f"  = {plain(item['sum'])}: the parts add up to the current value")
        else:
            lines.append(
                f"  = {plain(item['sum'])}, but the score is {plain(item['value'])}: "
                f"{signed(item['difference'])} is not explained by the audit log"
            )
        if item["band_moves"]:
            lines.append("  band moves:")
            lines.extend(f"    {move['text']}" for move in item["band_moves"])
    return "\n".join(lines)


def number(value: float) -> float | int:
    value = round(float(value), 6)
    return int(value) if value.is_integer() else value


def plain(value: float) -> str:
    text = f"{round(float(value), 6):f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text.replace("-", MINUS)


def signed(value: float) -> str:
    text = plain(value)
    return text if text.startswith(MINUS) else f"+{text}"


def _float(value: Any) -> float:
    if value is None:
        return 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _day(moment: datetime | None) -> str:
    return format_timestamp(moment)[:10] if moment else "?"


def _minute(text: str) -> str:
    return text.replace("T", " ").removesuffix("Z")[:16]


@click.command("explain")
@click.argument("contact_id")
@click.option("--score", "score", metavar="NAME", help="Explain this score only.")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@db_option
def explain_command(contact_id: str, score: str | None, as_json: bool, db_url: str | None) -> None:
    """Why a score is what it is: points by workflow, node and event, decay, band moves,
    and a check that the parts add up to the current value."""
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            explanation = explain_contact(connection, contact_id, score)
    except UnknownContact as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    finally:
        engine.dispose()
    if as_json:
        echo_json(explanation)
    else:
        click.echo(render(explanation))
