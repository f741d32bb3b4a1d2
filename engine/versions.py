"""A model's revisions side by side (``leadflow history``) and what changed between two of
them (``leadflow diff``).

Domain.md (001) keeps a scoring model like a spreadsheet with one new column per revision
and a note on why. Every deployed document (workflow, score model, grade model) is stored as
versions in ``workflow_versions``; here each version becomes one column, and each *setting*
one row:

- workflows: one row per scored action, a trigger and an ``update_score`` node it can reach
  (``on Quote Requested -> points``: ``+30 SCORE``, or ``+12 SCORE when seconds ≥ 120``
  behind condition nodes), one per condition that tests a score or a grade (the workflow's
  thresholds), then re-entry and the exit condition;
- score models: score, sales-ready threshold, each band, the decay settings, the roll-up;
- grade models: grade, each rule's points, each letter's minimum.

Rows line up across versions by a stable key (trigger and node, band list, rule label), so a
setting that changed reads across one row, and one that came or went has blank cells.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from difflib import SequenceMatcher
from typing import Any

import click
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Connection, select

from engine.cli_common import EXIT_INPUT, db_option, echo_json, open_store
from engine.clock import format_timestamp
from engine.conditions import describe_condition
from engine.console import terminal
from engine.durations import Duration
from engine.errors import LeadflowError
from engine.registry import Registry, default_registry
from engine.scoring.models import GRADE_MODEL, SCORE_MODEL
from engine.store.tables import workflow_versions

WORKFLOW = "workflow"
BLANK = "—"
NOTES_SHOWN = 160
"""Characters of a version's notes shown in the terminal table."""


class UnknownVersion(LeadflowError):
    """No deployed document has this id, or not this version."""


# --- reading the versions ------------------------------------------------------------------


@dataclass(frozen=True)
class Revision:
    """One deployed version of a workflow or model."""

    workflow_id: str
    version: int
    name: str
    notes: str
    document: Mapping[str, Any]
    deployed_at: datetime

    @property
    def kind(self) -> str:
        return kind_of(self.document)


def kind_of(document: Mapping[str, Any]) -> str:
    kind = document.get("kind", WORKFLOW)
    return kind if kind in (SCORE_MODEL, GRADE_MODEL) else WORKFLOW


def load_revisions(connection: Connection, workflow_id: str) -> list[Revision]:
    """Every version of ``workflow_id``, oldest first; UnknownVersion when there is none."""
    rows = connection.execute(
        select(workflow_versions)
        .where(workflow_versions.c.workflow_id == workflow_id)
        .order_by(workflow_versions.c.version)
    ).all()
    if not rows:
        from engine.problems import suggest

        known = connection.scalars(select(workflow_versions.c.workflow_id).distinct()).all()
        raise UnknownVersion(
            f"no deployed workflow or model has id {workflow_id!r}{suggest(workflow_id, known)}"
        )
    return [
        Revision(r.workflow_id, r.version, r.name, r.notes, r.document or {}, r.deployed_at)
        for r in rows
    ]


def pick(revisions: Sequence[Revision], version: int) -> Revision:
    for revision in revisions:
        if revision.version == version:
            return revision
    known = ", ".join(str(r.version) for r in revisions)
    raise UnknownVersion(
        f"{revisions[0].workflow_id!r} has no version {version} (versions: {known})"
    )


# --- what a document sets, row by row ------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One row of the history: ``key`` lines rows up across versions, ``label`` names the
    row, ``value`` is the cell. ``detail`` is compared by ``diff`` but not shown as a cell
    (a grade rule's condition)."""

    key: str
    label: str
    value: str
    detail: str = ""


def _number(value: Any) -> str:
    return (
        f"{value:g}"
        if isinstance(value, int | float) and not isinstance(value, bool)
        else str(value)
    )


def _duration(text: Any) -> str:
    try:
        return Duration.parse(text).describe()
    except (ValueError, TypeError):
        return str(text)


def node_label(spec: Any, registry: Registry | None = None) -> str:
    """What a node does in a few words (its kind's label), or its type if it cannot be read."""
    if not isinstance(spec, Mapping):
        return "?"
    registry = registry or default_registry()
    kind = registry.nodes.get(str(spec.get("type")))
    if kind is None:
        return str(spec.get("type", "?"))
    try:
        return kind.parse(spec).label()
    except (ValueError, KeyError, TypeError, LeadflowError):
        return str(spec.get("type", "?"))


def trigger_label(spec: Any, registry: Registry | None = None) -> str:
    if not isinstance(spec, Mapping):
        return "?"
    registry = registry or default_registry()
    kind = registry.triggers.get(str(spec.get("type")))
    if kind is None:
        return str(spec.get("type", "?"))
    try:
        return kind.parse(spec).label()
    except (ValueError, KeyError, TypeError, LeadflowError):
        return str(spec.get("type", "?"))


EDGE_KEYS = ("next", "then", "else", "on_timeout")


def _edges(spec: Mapping[str, Any]) -> list[str]:
    targets = [spec[key] for key in EDGE_KEYS if isinstance(spec.get(key), str)]
    for branch in spec.get("branches", []) or []:
        if isinstance(branch, Mapping) and isinstance(branch.get("next"), str):
            targets.append(branch["next"])
    return targets


def reachable(document: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Node ids reachable from ``start``, depth first in edge order (deterministic), each
    with the conditions that hold on the first path found to it (the ``then`` side of the
    condition nodes passed; an ``else`` side adds nothing)."""
    nodes = document.get("nodes", {}) or {}
    seen: dict[str, tuple[str, ...]] = {}
    stack: list[tuple[Any, tuple[str, ...]]] = [(document.get("start"), ())]
    while stack:
        node_id, conditions = stack.pop()
        if not isinstance(node_id, str) or node_id in seen or node_id not in nodes:
            continue
        seen[node_id] = conditions
        spec = nodes[node_id]
        followed: list[tuple[Any, tuple[str, ...]]] = []
        for target in _edges(spec):
            holds = conditions
            if spec.get("type") == "condition" and target == spec.get("then"):
                holds = (*conditions, _bracketed(spec.get("if")))
            followed.append((target, holds))
        stack.extend(reversed(followed))
    return seen


def _bracketed(spec: Any) -> str:
    text = describe_condition(spec)
    return f"({text})" if isinstance(spec, Mapping) and ("all" in spec or "any" in spec) else text


def _mentions_score(spec: Any) -> bool:
    if isinstance(spec, Mapping):
        return "score" in spec or "grade" in spec or any(_mentions_score(v) for v in spec.values())
    if isinstance(spec, list):
        return any(_mentions_score(item) for item in spec)
    return False


def workflow_settings(document: Mapping[str, Any]) -> list[Setting]:
    registry = default_registry()
    nodes: Mapping[str, Any] = document.get("nodes", {}) or {}
    paths = reachable(document)
    order = list(paths)
    scoring = [n for n in order if nodes[n].get("type") == "update_score"]
    triggers = [trigger_label(t, registry) for t in document.get("triggers", []) or []]
    settings: list[Setting] = []
    seen: set[str] = set()
    for trigger in triggers or ["when started"]:
        for node_id in scoring:
            key = f"action:{trigger}\x00{node_id}"
            if key not in seen:
                seen.add(key)
                label = f"{trigger} -> {node_id}"
                value = node_label(nodes[node_id], registry)
                conditions = paths[node_id]
                if len(conditions) == 1:
                    value += f" when {conditions[0].removeprefix('(').removesuffix(')')}"
                elif conditions:
                    value += " when " + " and ".join(conditions)
                settings.append(Setting(key, label, value))
    for node_id in order:
        spec = nodes[node_id]
        if spec.get("type") == "condition" and _mentions_score(spec.get("if")):
            settings.append(
                Setting(f"node:{node_id}", f"node '{node_id}'", node_label(spec, registry))
            )
    settings.append(Setting("reentry", "re-entry", str(document.get("reentry", "never"))))
    exit_when = document.get("exit_when")
    settings.append(
        Setting("exit_when", "exit when", describe_condition(exit_when) if exit_when else "never")
    )
    return settings


def band_text(spec: Mapping[str, Any]) -> str:
    """``from 20 below 50``: the bounds as the document words them."""
    parts = [
        f"{key} {_number(spec[key])}" for key in ("from", "above", "below", "to") if key in spec
    ]
    return " ".join(parts) or "any score"


def decay_settings(document: Mapping[str, Any]) -> list[Setting]:
    decay = document.get("decay")
    if not isinstance(decay, Mapping):
        return [Setting("decay", "decay", "none")]
    if "percent" in decay:
        by = f"{_number(decay['percent'])} %"
    elif "points" in decay:
        by = f"{_number(decay['points'])} points"
    else:
        by = "?"
    if "floor_of_sales_ready" in decay:
        floor = f"{_number(decay['floor_of_sales_ready'] * 100)} % of sales-ready"
    elif "floor_of_peak" in decay:
        floor = f"{_number(decay['floor_of_peak'] * 100)} % of peak"
    elif "floor" in decay:
        floor = _number(decay["floor"])
    else:
        floor = "none"
    without = decay.get("without")
    return [
        Setting("decay", "decay", f"by {by} every {_duration(decay.get('every'))}"),
        Setting(
            "decay.after",
            "decay after",
            f"{_duration(decay.get('after'))} without "
            + (", ".join(without) if without else "a score increase"),
        ),
        Setting("decay.floor", "decay floor", floor),
    ]


def score_model_settings(document: Mapping[str, Any]) -> list[Setting]:
    settings = [
        Setting("score", "score", str(document.get("score", ""))),
        Setting(
            "sales_ready",
            "sales-ready",
            _number(document["sales_ready"]) if "sales_ready" in document else "none",
        ),
    ]
    for spec in document.get("bands", []) or []:
        name = str(spec.get("list", "?"))
        settings.append(Setting(f"band:{name}", f"band '{name}'", band_text(spec)))
    settings.extend(decay_settings(document))
    rollup = document.get("rollup") or {"method": "sum"}
    method = str(rollup.get("method", "sum"))
    text = f"top {rollup.get('top')}" if method == "top" else method
    settings.append(Setting("rollup", "roll-up", text))
    return settings


def rule_name(spec: Mapping[str, Any]) -> str:
    label = spec.get("label")
    return str(label) if label else f"if {describe_condition(spec.get('if'))}"


def grade_model_settings(document: Mapping[str, Any]) -> list[Setting]:
    settings = [Setting("grade", "grade", str(document.get("grade", "")))]
    for spec in document.get("rules", []) or []:
        name = rule_name(spec)
        points = spec.get("points", 0)
        settings.append(
            Setting(
                f"rule:{name}",
                f"rule '{name}'",
                f"{'+' if points >= 0 else ''}{_number(points)}",
                f"if {describe_condition(spec.get('if'))}",
            )
        )
    letters = document.get("letters", {}) or {}
    for letter in sorted(letters):
        settings.append(
            Setting(f"letter:{letter}", f"letter {letter}", f"≥ {_number(letters[letter])}")
        )
    return settings


def settings_of(document: Mapping[str, Any]) -> list[Setting]:
    kind = kind_of(document)
    if kind == SCORE_MODEL:
        found = score_model_settings(document)
    elif kind == GRADE_MODEL:
        found = grade_model_settings(document)
    else:
        found = workflow_settings(document)
    # two rules may share a label: the second of a key is its own row, not a replacement
    seen: dict[str, int] = {}
    unique = []
    for setting in found:
        seen[setting.key] = seen.get(setting.key, 0) + 1
        count = seen[setting.key]
        if count > 1:
            setting = Setting(
                f"{setting.key}#{count}",
                f"{setting.label} ({count})",
                setting.value,
                setting.detail,
            )
        unique.append(setting)
    return unique


# --- the history table ----------------------------------------------------------------------


@dataclass
class History:
    workflow_id: str
    kind: str
    revisions: list[Revision]
    rows: list[tuple[str, list[str | None]]] = field(default_factory=list)
    """(row label, one cell per revision; None where that version does not have the row)."""

    def header(self) -> list[tuple[str, list[str]]]:
        return [
            ("deployed", [r.deployed_at.date().isoformat() for r in self.revisions]),
            ("name", [r.name for r in self.revisions]),
            ("notes", [r.notes for r in self.revisions]),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.workflow_id,
            "kind": self.kind,
            "versions": [
                {
                    "version": r.version,
                    "name": r.name,
                    "notes": r.notes,
                    "deployed_at": format_timestamp(r.deployed_at),
                }
                for r in self.revisions
            ],
            "rows": [
                {
                    "row": label,
                    "values": {
                        str(r.version): cell for r, cell in zip(self.revisions, cells, strict=True)
                    },
                }
                for label, cells in self.rows
            ],
        }

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["row", *(f"v{r.version}" for r in self.revisions)])
        for label, header_cells in self.header():
            writer.writerow([label, *header_cells])
        for label, cells in self.rows:
            writer.writerow([label, *(cell or "" for cell in cells)])
        return out.getvalue()


def history(revisions: Sequence[Revision]) -> History:
    """Rows in the order they first appear, a row new in a later version placed after the
    row before it in that version."""
    keys: list[str] = []
    labels: dict[str, str] = {}
    cells: dict[str, dict[int, str]] = {}
    for index, revision in enumerate(revisions):
        position = 0
        for setting in settings_of(revision.document):
            if setting.key in cells:
                position = keys.index(setting.key) + 1
            else:
                keys.insert(position, setting.key)
                position += 1
                cells[setting.key] = {}
            labels[setting.key] = setting.label
            cells[setting.key][index] = setting.value
    result = History(revisions[0].workflow_id, revisions[-1].kind, list(revisions))
    result.rows = [
        (labels[key], [cells[key].get(i) for i in range(len(revisions))]) for key in keys
    ]
    return result


def _print_history(table_data: History) -> None:
    console = terminal()
    latest = table_data.revisions[-1]
    console.print(
        f"[bold]{escape(table_data.workflow_id)}[/bold] ({table_data.kind.replace('_', ' ')}): "
        f"{len(table_data.revisions)} version(s), newest v{latest.version} "
        f"{escape(latest.name)}"
    )
    table = Table(show_lines=False)
    table.add_column("")
    for revision in table_data.revisions:
        table.add_column(f"v{revision.version}", overflow="fold")
    cut = False
    for label, header_cells in table_data.header():
        shown_cells = []
        for text in header_cells:
            if len(text) > NOTES_SHOWN:
                text, cut = text[: NOTES_SHOWN - 1].rstrip() + "…", True
            shown_cells.append(escape(text))
        table.add_row(f"[dim]{label}[/dim]", *shown_cells)
    table.add_section()
    for label, cells in table_data.rows:
        shown: list[str] = []
        previous: str | None = None
        for index, cell in enumerate(cells):
            text = escape(cell) if cell is not None else f"[dim]{BLANK}[/dim]"
            if index > 0 and cell != previous:
                text = f"[bold yellow]{text}[/bold yellow]"
            shown.append(text)
            previous = cell
        table.add_row(escape(label), *shown)
    console.print(table)
    if cut:
        console.print(
            f"[dim]notes cut at {NOTES_SHOWN} characters; --csv or --json has them whole[/dim]"
        )


# --- diff -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    subject: str  # name, notes, trigger, node, start, reentry, exit_when, setting, ...
    key: str
    change: str  # added, removed, changed
    old: Any
    new: Any
    text: str

    def as_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "key": self.key,
            "change": self.change,
            "old": self.old,
            "new": self.new,
            "text": self.text,
        }


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def diff_documents(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """What changed from ``old`` to ``new``, in plain words, in document order."""
    changes: list[Change] = []
    old_kind, new_kind = kind_of(old), kind_of(new)
    if old_kind != new_kind:
        changes.append(
            Change("kind", "kind", "changed", old_kind, new_kind, f"kind: {old_kind} -> {new_kind}")
        )
    if old.get("name") != new.get("name"):
        changes.append(
            Change(
                "name",
                "name",
                "changed",
                old.get("name"),
                new.get("name"),
                f"name: {_show(old.get('name'))} -> {_show(new.get('name'))}",
            )
        )
    if (old.get("notes") or "") != (new.get("notes") or ""):
        changes.append(
            Change("notes", "notes", "changed", old.get("notes"), new.get("notes"), "notes changed")
        )
    if old_kind == WORKFLOW and new_kind == WORKFLOW:
        changes.extend(_diff_workflows(old, new))
    else:
        changes.extend(_diff_settings(settings_of(old), settings_of(new)))
    return changes


def _diff_settings(old: Sequence[Setting], new: Sequence[Setting]) -> Iterator[Change]:
    before = {s.key: s for s in old}
    after = {s.key: s for s in new}
    for setting in old:
        if setting.key not in after:
            detail = f" {setting.detail}" if setting.detail else ""
            yield Change(
                "setting",
                setting.key,
                "removed",
                setting.value,
                None,
                f"{setting.label} removed: {setting.value}{detail}",
            )
            continue
        other = after[setting.key]
        if other.value != setting.value:
            yield Change(
                "setting",
                setting.key,
                "changed",
                setting.value,
                other.value,
                f"{setting.label}: {setting.value} -> {other.value}",
            )
        if other.detail != setting.detail:
            yield Change(
                "setting",
                setting.key,
                "changed",
                setting.detail,
                other.detail,
                f"{setting.label}: {setting.detail} -> {other.detail}",
            )
    for setting in new:
        if setting.key not in before:
            detail = f" {setting.detail}" if setting.detail else ""
            yield Change(
                "setting",
                setting.key,
                "added",
                None,
                setting.value,
                f"{setting.label} added: {setting.value}{detail}",
            )


def _diff_workflows(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[Change]:
    registry = default_registry()
    yield from _diff_triggers(old, new, registry)
    for key, title in (("start", "start"), ("reentry", "re-entry")):
        default = "never" if key == "reentry" else None
        a, b = old.get(key, default), new.get(key, default)
        if a != b:
            yield Change(key, key, "changed", a, b, f"{title}: {a} -> {b}")
    a_exit, b_exit = old.get("exit_when"), new.get("exit_when")
    if a_exit != b_exit:
        a_text = describe_condition(a_exit) if a_exit else "never"
        b_text = describe_condition(b_exit) if b_exit else "never"
        yield Change(
            "exit_when", "exit_when", "changed", a_exit, b_exit, f"exit when: {a_text} -> {b_text}"
        )
    old_nodes: Mapping[str, Any] = old.get("nodes", {}) or {}
    new_nodes: Mapping[str, Any] = new.get("nodes", {}) or {}
    for node_id, spec in old_nodes.items():
        if node_id not in new_nodes:
            yield Change(
                "node",
                node_id,
                "removed",
                spec,
                None,
                f"node '{node_id}' removed: {node_label(spec, registry)}",
            )
            continue
        yield from _diff_node(node_id, spec, new_nodes[node_id], registry)
    for node_id, spec in new_nodes.items():
        if node_id not in old_nodes:
            yield Change(
                "node",
                node_id,
                "added",
                None,
                spec,
                f"node '{node_id}' added: {node_label(spec, registry)}",
            )
    known = {
        "id",
        "version",
        "name",
        "notes",
        "triggers",
        "start",
        "reentry",
        "exit_when",
        "nodes",
        "$schema",
        "kind",
    }
    for key in sorted((set(old) | set(new)) - known):
        if old.get(key) != new.get(key):
            yield Change(
                key,
                key,
                "changed",
                old.get(key),
                new.get(key),
                f"{key}: {_show(old.get(key))} -> {_show(new.get(key))}",
            )


def _diff_triggers(
    old: Mapping[str, Any], new: Mapping[str, Any], registry: Registry
) -> Iterator[Change]:
    before = [trigger_label(t, registry) for t in old.get("triggers", []) or []]
    after = [trigger_label(t, registry) for t in new.get("triggers", []) or []]
    old_specs = list(old.get("triggers", []) or [])
    new_specs = list(new.get("triggers", []) or [])
    matcher = SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                if old_specs[i] != new_specs[j]:  # same words, other details
                    yield Change(
                        "trigger",
                        str(j + 1),
                        "changed",
                        old_specs[i],
                        new_specs[j],
                        f"trigger {j + 1}: {_show(old_specs[i])} -> {_show(new_specs[j])}",
                    )
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                yield Change(
                    "trigger",
                    str(j + 1),
                    "changed",
                    old_specs[i],
                    new_specs[j],
                    f"trigger {j + 1}: {before[i]} -> {after[j]}",
                )
            continue
        for i in range(i1, i2):
            yield Change(
                "trigger",
                str(i + 1),
                "removed",
                old_specs[i],
                None,
                f"trigger {i + 1} removed: {before[i]}",
            )
        for j in range(j1, j2):
            yield Change(
                "trigger",
                str(j + 1),
                "added",
                None,
                new_specs[j],
                f"trigger {j + 1} added: {after[j]}",
            )


def _diff_node(
    node_id: str, old: Mapping[str, Any], new: Mapping[str, Any], registry: Registry
) -> Iterator[Change]:
    """The label's change, then edges, then any other field whose change the label does
    not show (tried one field at a time: a webhook body, an email subject)."""
    if old == new:
        return
    where = f"node '{node_id}'"
    old_label, new_label = node_label(old, registry), node_label(new, registry)
    if old_label != new_label:
        yield Change("node", node_id, "changed", old, new, f"{where}: {old_label} -> {new_label}")
    for key in EDGE_KEYS:
        a, b = old.get(key), new.get(key)
        if a != b:
            text = f"{where}: {key} {a or 'none'} -> {b or 'none'}"
            yield Change("node", node_id, "changed", a, b, text)
    a_targets, b_targets = _targets(old.get("branches")), _targets(new.get("branches"))
    if a_targets != b_targets:
        text = f"{where}: branches to {a_targets} -> {b_targets}"
        yield Change("node", node_id, "changed", old.get("branches"), new.get("branches"), text)
    for key in sorted((set(old) | set(new)) - {*EDGE_KEYS, "type"}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        probe = {k: v for k, v in old.items() if k != key}
        if key in new:
            probe[key] = new[key]
        if node_label(probe, registry) != old_label:
            continue  # the label's change says it
        text = f"{where}: {key} {_show(a)} -> {_show(b)}"
        yield Change("node", node_id, "changed", a, b, text)


def _targets(value: Any) -> str:
    if not isinstance(value, list):
        return "none"
    return ", ".join(str(b.get("next") or "end") for b in value if isinstance(b, Mapping))


# --- the commands ---------------------------------------------------------------------------


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_INPUT)


@click.command("history")
@click.argument("workflow_id", metavar="ID")
@click.option("--csv", "as_csv", is_flag=True, help="Print the table as CSV.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@db_option
def history_command(workflow_id: str, as_csv: bool, as_json: bool, db_url: str | None) -> None:
    """A model's revisions side by side: one column per version, one row per scored action,
    threshold, band and decay setting, with each version's deployed date and notes."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json each print the table: give one of them")
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            revisions = load_revisions(connection, workflow_id)
    except UnknownVersion as exc:
        _fail(str(exc))
        return
    result = history(revisions)
    if as_json:
        echo_json(result.as_json())
    elif as_csv:
        click.echo(result.as_csv(), nl=False)
    else:
        _print_history(result)


@click.command("diff")
@click.argument("workflow_id", metavar="ID")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the changes as JSON.")
@db_option
def diff_command(workflow_id: str, v1: int, v2: int, as_json: bool, db_url: str | None) -> None:
    """What changed between two deployed versions, node by node, in plain words."""
    engine = open_store(db_url)
    try:
        with engine.connect() as connection:
            revisions = load_revisions(connection, workflow_id)
        old, new = pick(revisions, v1), pick(revisions, v2)
    except UnknownVersion as exc:
        _fail(str(exc))
        return
    changes = diff_documents(old.document, new.document)
    if as_json:
        echo_json(
            {
                "id": workflow_id,
                "from": {"version": old.version, "deployed_at": format_timestamp(old.deployed_at)},
                "to": {"version": new.version, "deployed_at": format_timestamp(new.deployed_at)},
                "changes": [change.as_json() for change in changes],
            }
        )
        return
    click.echo(
        f"{workflow_id} v{old.version} ({old.deployed_at.date().isoformat()}) -> "
        f"v{new.version} ({new.deployed_at.date().isoformat()}): "
        f"{len(changes)} change(s)"
    )
    for change in changes:
        click.echo(f"  {change.text}")
