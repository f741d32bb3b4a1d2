"""``leadflow calibrate``: points per action from the history of contacts that converted.

The practice (domain.md 002): count how many interactions a typical buyer has in each
buying stage before converting (e.g. 5 + 3 + 4 = 12), and give every action the points that
make that typical buyer reach the sales-ready threshold (100 / 12, about 8 each); sales
feedback then moves points up or down.

Here a *stage* is a scoring workflow: one with event triggers and ``update_score`` nodes
that ``add`` to the score being calibrated. Its *actions* are its event triggers, ``where``
filters included. A *converter* is a contact that sent the outcome event, or that a
simulation of the workflows puts on the outcome list; only what it did before converting
counts. ``--write`` turns the measurement into new versions of the stage workflows.
"""

from __future__ import annotations

import copy
import json
import math
import os
import statistics
import sys
import tempfile
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from actions.condition import Condition
from actions.update_score import UpdateScore
from engine.cli_common import EXIT_INPUT, FiniteFloat, echo_json
from engine.clock import format_timestamp
from engine.console import terminal
from engine.errors import LeadflowError
from engine.kinds import Signal
from engine.model import Workflow
from engine.problems import suggest
from engine.scoring.models import ScoreModel
from engine.segment import Message, first_of_each_id
from engine.validation import Validation, validate_documents, validate_paths

DEFAULT_THRESHOLD = 100.0
LIST_PREFIX = "list:"
MAX_TRACE_STEPS = 10_000
"""Paths explored when tracing what one action scores (splits multiply paths)."""


class CalibrationError(LeadflowError):
    """Input that cannot be calibrated; ``details`` are extra lines (problems, bad lines)."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


# --- what a trigger's ``where`` and a condition node may look at ------------------------


@dataclass
class _Facts:
    """The event that woke a trigger, with what the history says of its contact."""

    now: datetime
    properties: Mapping[str, Any]
    attributes: Mapping[str, Any] = field(default_factory=dict)
    timeline: Mapping[str, list[datetime]] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    grades: Mapping[str, str] = field(default_factory=dict)
    lists: Container[str] = frozenset()

    def count_events(self, name: str, since: datetime | None) -> int:
        times = self.timeline.get(name, [])
        upto = bisect_right(times, self.now)
        after = bisect_right(times, since) if since is not None else 0
        return max(0, upto - after)


# --- results ------------------------------------------------------------------------------


def _number(value: float) -> float | int:
    """Whole numbers as int (JSON ``8``, not ``8.0``), the rest rounded to 2 places."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


def _show(value: float) -> str:
    return f"{_number(value):g}"


def _half_up(value: float) -> int:
    return math.floor(value + 0.5)


@dataclass
class Action:
    """One event trigger of a stage and what converters did of it."""

    index: int
    event: str
    where: Any
    label: str
    counts: list[int] = field(default_factory=list)
    """Per converter (in converter order): interactions before converting."""
    points_now: set[float] = field(default_factory=set)

    def as_json(self, converters: int, points: int) -> dict[str, Any]:
        return {
            "event": self.event,
            "where": self.where,
            "label": self.label,
            **_stats(self.counts, converters),
            "points_now": [_number(p) for p in sorted(self.points_now)],
            "points_calibrated": points,
        }


@dataclass
class Stage:
    """One scoring workflow."""

    workflow: Workflow
    actions: list[Action]
    counts: list[int] = field(default_factory=list)
    lead_days: list[float] = field(default_factory=list)
    """Per converter who did the stage: days from its first interaction to converting."""

    @property
    def median(self) -> float:
        return statistics.median(self.counts) if self.counts else 0.0

    def as_json(self, converters: int, points: int) -> dict[str, Any]:
        return {
            "workflow": self.workflow.id,
            "version": self.workflow.version,
            "name": self.workflow.name,
            **_stats(self.counts, converters),
            "actions": [action.as_json(converters, points) for action in self.actions],
        }


def _stats(counts: list[int], converters: int) -> dict[str, Any]:
    if not counts:
        return {"median": 0, "mean": 0, "share": 0}
    did = sum(1 for c in counts if c > 0)
    return {
        "median": _number(statistics.median(counts)),
        "mean": _number(statistics.fmean(counts)),
        "share": round(did / converters, 4) if converters else 0,
    }


@dataclass
class Calibration:
    outcome: str
    score: str
    threshold: float
    threshold_source: str
    contacts: int
    converters: list[str]
    stages: list[Stage]
    first_event: datetime | None
    last_event: datetime | None

    @property
    def typical_total(self) -> float:
        return sum(stage.median for stage in self.stages)

    @property
    def exact_points(self) -> float:
        return self.threshold / self.typical_total

    @property
    def points(self) -> int:
        """Points per action, a whole number, never below 1."""
        return max(1, _half_up(self.exact_points))

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "score": self.score,
            "threshold": _number(self.threshold),
            "threshold_source": self.threshold_source,
            "contacts": self.contacts,
            "converters": len(self.converters),
            "first_event": _stamp(self.first_event),
            "last_event": _stamp(self.last_event),
            "stages": [s.as_json(len(self.converters), self.points) for s in self.stages],
            "typical_total": _number(self.typical_total),
            "points_per_action": self.points,
            "points_exact": round(self.exact_points, 4),
        }


def _stamp(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


# --- measuring ----------------------------------------------------------------------------


def load_workflows(workflow_paths: Iterable[Path]) -> Validation:
    validation = validate_paths(list(workflow_paths))
    if not validation.ok:
        raise CalibrationError(
            "the workflows are not valid; fix them first (leadflow validate)",
            [str(problem) for problem in validation.problems],
        )
    return validation


def is_stage(workflow: Workflow, score: str) -> bool:
    """Event triggers and an update_score node adding points to ``score``."""
    has_event = any(getattr(t, "type", None) == "event" for t in workflow.triggers)
    return has_event and any(_adds(node, score) for node in workflow.nodes.values())


def _adds(node: object, score: str) -> bool:
    return (
        isinstance(node, UpdateScore)
        and node.score == score
        and node.operation == "add"
        and node.amount > 0
    )


def trace_points(workflow: Workflow, score: str, facts: _Facts) -> set[float]:
    """Points ``score`` gains on each path a run may take from the start for this event:
    conditions are decided on the event's facts, every other edge (split branches, waits'
    timeouts) is followed."""
    totals: set[float] = set()
    stack: list[tuple[str | None, float, int]] = [(workflow.start, 0.0, 0)]
    limit = len(workflow.nodes) + 1
    steps = 0
    while stack and steps < MAX_TRACE_STEPS:
        steps += 1
        node_id, total, depth = stack.pop()
        node = workflow.nodes.get(node_id) if node_id is not None else None
        if node is None or depth > limit:
            totals.add(total)
            continue
        if isinstance(node, UpdateScore) and node.score == score and node.operation == "add":
            total += node.amount
        if isinstance(node, Condition):
            targets = [node.then if node.test(facts) else node.otherwise]
        else:
            targets = [edge.target for edge in node.edges()]
        if not targets:
            totals.add(total)
        stack.extend((target, total, depth + 1) for target in targets)
    return totals


def _union_find(messages: Sequence[Message]) -> dict[str, str]:
    """Anonymous ids and alias ``previousId`` folded into the id they were merged into."""
    parent: dict[str, str] = {}

    def find(item: str) -> str:
        root = item
        while parent.get(root, root) != root:
            root = parent[root]
        return root

    for message in messages:
        if message.merge_from:
            source, target = find(message.merge_from), find(message.contact_id)
            if source != target:
                parent[source] = target
    return {item: find(item) for item in parent}


def read_history(events_path: Path) -> list[Message]:
    from engine.simulate import read_event_file

    try:
        messages, rejections = read_event_file(events_path)
    except OSError as exc:
        raise CalibrationError(f"{events_path}: cannot read the events: {exc}") from None
    if rejections:
        shown = [f"{events_path}: line {r.line}: {r.reason}" for r in rejections[:20]]
        if len(rejections) > 20:
            shown.append(f"... and {len(rejections) - 20} more")
        raise CalibrationError(
            f"{events_path}: {len(rejections)} line(s) rejected; calibration needs every "
            "line right (fix or remove them)",
            shown,
        )
    return first_of_each_id(messages)


Cutoffs = dict[str, tuple[int, datetime]]
"""Converter -> (index of the first message that no longer counts, moment of converting)."""


def _cutoffs_by_event(
    messages: Sequence[Message], canon: Mapping[str, str], outcome: str
) -> Cutoffs:
    """Converters and their first outcome event: what comes before it counts."""
    cutoffs: Cutoffs = {}
    for index, message in enumerate(messages):
        if message.type == "track" and message.event == outcome:
            contact = canon.get(message.contact_id, message.contact_id)
            cutoffs.setdefault(contact, (index, message.timestamp))
    if not cutoffs:
        names = sorted({m.event for m in messages if m.type == "track" and m.event})
        hint = suggest(outcome, names)
        raise CalibrationError(
            f"unknown outcome: no {outcome!r} event in the history{hint}"
            + ("" if hint or not names else f" (events seen: {', '.join(names[:15])})")
        )
    return cutoffs


def _cutoffs_by_list(
    validation: Validation,
    workflow_paths: Sequence[Path],
    events_path: Path,
    messages: Sequence[Message],
    canon: Mapping[str, str],
    name: str,
) -> Cutoffs:
    """Converters and the moment a simulation first put them on the list: messages up to
    that moment count (the action that put the contact there is one of them)."""
    from sqlalchemy import select

    from engine.simulate import simulate
    from engine.store.db import open_engine
    from engine.store.tables import audit

    known = validation.lists()
    if name not in known:
        raise CalibrationError(
            f"unknown outcome: no workflow or model puts contacts on list {name!r}"
            + (suggest(name, known) or (f" (lists: {', '.join(sorted(known))})" if known else ""))
        )
    with tempfile.TemporaryDirectory(prefix="leadflow-calibrate-") as folder:
        url = f"sqlite:///{folder}/simulation.db"
        try:
            simulate(workflow_paths, events_path, database_url=url)
        except LeadflowError as exc:
            raise CalibrationError(f"the simulation failed: {exc}") from None
        engine = open_engine(url)
        try:
            with engine.connect() as connection:
                rows = connection.execute(
                    select(audit.c.contact_id, audit.c.at, audit.c.new)
                    .where(audit.c.subject == "list", audit.c.name == name)
                    .order_by(audit.c.at, audit.c.id)
                ).all()
        finally:
            engine.dispose()
    stamps = [m.timestamp for m in messages]
    cutoffs: Cutoffs = {}
    for contact, moment, new in rows:
        if new is True:
            cutoffs.setdefault(canon.get(contact, contact), (bisect_right(stamps, moment), moment))
    return cutoffs


def calibrate(
    workflow_paths: Sequence[Path],
    events_path: Path,
    outcome: str,
    threshold: float | None = None,
    score: str = "SCORE",
) -> Calibration:
    """Measure; raises :class:`CalibrationError` for input that cannot be calibrated."""
    if outcome.startswith(LIST_PREFIX) and not outcome[len(LIST_PREFIX) :].strip():
        raise CalibrationError("--outcome list:NAME needs the list's name")
    if not outcome.strip():
        raise CalibrationError("--outcome needs an event name or list:NAME")
    validation = load_workflows(workflow_paths)
    newest: dict[str, Workflow] = {}
    for workflow in validation.workflows:  # two versions of one workflow are one stage
        if workflow.id not in newest or workflow.version > newest[workflow.id].version:
            newest[workflow.id] = workflow
    workflows = [w for w in newest.values() if is_stage(w, score)]
    if not workflows:
        raise CalibrationError(
            f"no scoring workflow among the workflows given: none has event triggers and an "
            f"update_score node that adds to {score}"
        )
    threshold, source = _threshold(validation, score, threshold)
    messages = read_history(events_path)
    canon = _union_find(messages)
    if outcome.startswith(LIST_PREFIX):
        cutoffs = _cutoffs_by_list(
            validation,
            workflow_paths,
            events_path,
            messages,
            canon,
            outcome[len(LIST_PREFIX) :].strip(),
        )
    else:
        cutoffs = _cutoffs_by_event(messages, canon, outcome)
    if not cutoffs:
        raise CalibrationError(f"no converters: no contact reached the outcome {outcome!r}")
    converters = sorted(cutoffs)
    order = {contact: i for i, contact in enumerate(converters)}
    stages = [
        Stage(
            workflow,
            [
                Action(
                    i,
                    str(getattr(t, "event", "")),
                    getattr(t, "where_spec", None),
                    t.label(),
                    [0] * len(converters),
                )
                for i, t in enumerate(workflow.triggers)
                if getattr(t, "type", None) == "event"
            ],
            [0] * len(converters),
        )
        for workflow in workflows
    ]
    _count(messages, canon, cutoffs, order, stages, score)
    for stage in stages:
        for action in stage.actions:
            if not action.points_now:
                action.points_now = _points_elsewhere(messages, stage.workflow, action, score)
    stages.sort(key=_stage_order)
    result = Calibration(
        outcome=outcome,
        score=score,
        threshold=threshold,
        threshold_source=source,
        contacts=len({canon.get(m.contact_id, m.contact_id) for m in messages}),
        converters=converters,
        stages=stages,
        first_event=messages[0].timestamp if messages else None,
        last_event=messages[-1].timestamp if messages else None,
    )
    if result.typical_total <= 0:
        raise CalibrationError(
            f"the {len(converters)} converter(s) did too few stage actions before converting "
            "(every stage median is 0): nothing to calibrate on"
        )
    return result


def _count(
    messages: Sequence[Message],
    canon: Mapping[str, str],
    cutoffs: Cutoffs,
    order: Mapping[str, int],
    stages: list[Stage],
    score: str,
) -> None:
    attributes: dict[str, dict[str, Any]] = defaultdict(dict)
    timelines: dict[str, dict[str, list[datetime]]] = defaultdict(lambda: defaultdict(list))
    firsts: dict[tuple[int, str], datetime] = {}
    for index, message in enumerate(messages):
        contact = canon.get(message.contact_id, message.contact_id)
        cutoff = cutoffs.get(contact)
        if cutoff is None or index >= cutoff[0]:
            continue
        if message.type == "identify":
            attributes[contact].update(message.traits)
            continue
        if message.type != "track" or not message.event:
            continue
        timelines[contact][message.event].append(message.timestamp)
        facts = _Facts(
            message.timestamp, message.properties, attributes[contact], timelines[contact]
        )
        signal = Signal("event", message.event, properties=message.properties)
        slot = order[contact]
        for number, stage in enumerate(stages):
            for action in stage.actions:
                if action.event != message.event:
                    continue
                trigger = stage.workflow.triggers[action.index]
                if not trigger.matches(signal, facts):
                    continue
                action.counts[slot] += 1
                stage.counts[slot] += 1
                action.points_now |= trace_points(stage.workflow, score, facts)
                firsts.setdefault((number, contact), message.timestamp)
                break  # a workflow is entered once per event, by its first matching trigger
    for (number, contact), first in firsts.items():
        moment = cutoffs[contact][1]
        stages[number].lead_days.append((moment - first).total_seconds() / 86400)


def _points_elsewhere(
    messages: Sequence[Message], workflow: Workflow, action: Action, score: str
) -> set[float]:
    """What an action no converter did gives: traced on the first such event anyone sent,
    else on an event without properties."""
    trigger = workflow.triggers[action.index]
    for message in messages:
        if message.type == "track" and message.event == action.event:
            facts = _Facts(message.timestamp, message.properties)
            if trigger.matches(Signal("event", action.event, properties=message.properties), facts):
                return trace_points(workflow, score, facts)
    return trace_points(workflow, score, _Facts(_epoch(), {}))


def _stage_order(stage: Stage) -> tuple[int, float, str]:
    """Stages buyers reach earliest before converting first, the rest after by id."""
    if not stage.lead_days:
        return (1, 0.0, stage.workflow.id)
    return (0, -statistics.median(stage.lead_days), stage.workflow.id)


def _threshold(validation: Validation, score: str, given: float | None) -> tuple[float, str]:
    if given is not None:
        return given, "--threshold"
    newest: dict[str, ScoreModel] = {}  # a model and its revision: the revision counts
    for model in validation.models:
        if not isinstance(model, ScoreModel) or model.score != score:
            continue
        if model.id not in newest or model.version > newest[model.id].version:
            newest[model.id] = model
    for model in (newest[model_id] for model_id in sorted(newest)):
        if model.sales_ready is not None:
            return float(model.sales_ready), f"score model {model.id}"
    return DEFAULT_THRESHOLD, "default"


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


# --- writing new versions -------------------------------------------------------------------

CALIBRATION_MARK = "Calibrated by leadflow calibrate"


def new_versions(calibration: Calibration) -> list[dict[str, Any]]:
    """The stage workflows at version + 1, every positive ``add`` to the score replaced by
    the calibrated points, with a note of what was measured."""
    documents = []
    medians = ", ".join(f"{s.workflow.id} {_show(s.median)}" for s in calibration.stages)
    last = calibration.last_event
    for stage in calibration.stages:
        document: dict[str, Any] = copy.deepcopy(dict(stage.workflow.document))
        before = sorted(
            {
                _number(spec["add"])
                for node_id, spec in document["nodes"].items()
                if _adds(stage.workflow.nodes.get(node_id), calibration.score)
            }
        )
        for node_id, spec in document["nodes"].items():
            if _adds(stage.workflow.nodes.get(node_id), calibration.score):
                spec["add"] = calibration.points
        old_version = stage.workflow.version
        document["version"] = old_version + 1
        note = (
            f"{CALIBRATION_MARK} on the history up to "
            f"{last.date().isoformat() if last else 'no events'}: "
            f"{len(calibration.converters)} of {calibration.contacts} contacts converted "
            f"(outcome {calibration.outcome}). Median interactions before converting: "
            f"{medians}; a typical buyer has {_show(calibration.typical_total)}. "
            f"Sales-ready threshold {_show(calibration.threshold)} "
            f"({calibration.threshold_source}), so each action is worth "
            f"{_show(calibration.threshold)} / {_show(calibration.typical_total)} = "
            f"{_ratio(calibration)} points of {calibration.score} (version {old_version} gave "
            f"{', '.join(f'{p:g}' for p in before)}). This stage: median "
            f"{_show(stage.median)} ("
            + "; ".join(
                f"{a.label} {_show(statistics.median(a.counts) if a.counts else 0)}"
                for a in stage.actions
            )
            + "). Move points up or down per sales feedback (domain.md 002)."
        )
        kept = _design_notes(str(document.get("notes", "")))
        document["notes"] = note + (f"\n\nEarlier notes: {kept}" if kept else "")
        documents.append(document)
    return documents


def _ratio(calibration: Calibration) -> str:
    """``8`` when the division is exact, else ``8.33, rounded to 8``."""
    exact = calibration.exact_points
    if exact == calibration.points:
        return str(calibration.points)
    return f"{exact:.2f}, rounded to {calibration.points}"


def _design_notes(notes: str) -> str:
    """The notes without an earlier calibration paragraph, so they do not pile up."""
    parts = [p for p in notes.split("\n\n") if not p.startswith(CALIBRATION_MARK)]
    text = "\n\n".join(parts).strip()
    prefix = "Earlier notes: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def write_versions(calibration: Calibration, folder: Path) -> list[Path]:
    """Validate every new version, then write them all (or none) as ``FOLDER/ID.json``.
    A file already there is replaced only when it holds an older version of the same id."""
    documents = new_versions(calibration)
    targets = [folder / f"{document['id']}.json" for document in documents]
    check = validate_documents(
        [(str(t), d) for t, d in zip(targets, documents, strict=True)], check_references=False
    )
    if not check.ok:
        raise CalibrationError(
            "the calibrated workflows would not be valid; nothing was written",
            [str(problem) for problem in check.problems],
        )
    if folder.exists() and not folder.is_dir():
        raise CalibrationError(f"{folder}: --write needs a folder")
    for target, document in zip(targets, documents, strict=True):
        _may_replace(target, document)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for target, document in zip(targets, documents, strict=True):
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(temporary, target)
    except OSError as exc:
        raise CalibrationError(f"cannot write to {folder}: {exc}") from None
    return targets


def _may_replace(target: Path, document: Mapping[str, Any]) -> None:
    if not target.exists():
        return
    try:
        existing = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        existing = None
    if (
        isinstance(existing, dict)
        and existing.get("id") == document["id"]
        and type(existing.get("version")) is int
        and existing["version"] < document["version"]
    ):
        return
    raise CalibrationError(
        f"{target} exists and is not an older version of {document['id']!r}; "
        "choose another --write folder; nothing was written"
    )


# --- the command ----------------------------------------------------------------------------


def _print_table(calibration: Calibration, written: Sequence[Path]) -> None:
    console = terminal()
    count = len(calibration.converters)
    span = ""
    if calibration.first_event and calibration.last_event:
        span = (
            f", events {calibration.first_event.date().isoformat()}"
            f" to {calibration.last_event.date().isoformat()}"
        )
    console.print(
        f"{calibration.score} calibrated on outcome {calibration.outcome!r}: "
        f"{count} converter(s) of {calibration.contacts} contact(s){span}",
        markup=False,
    )
    table = Table(
        "stage / action",
        "median",
        "mean",
        "did it",
        "points now",
        "calibrated",
        title="Interactions before converting",
    )
    for column in table.columns[1:]:
        column.justify = "right"
    for stage in calibration.stages:
        data = stage.as_json(count, calibration.points)
        table.add_row(
            f"[bold]{stage.workflow.id}[/bold] v{stage.workflow.version}",
            f"[bold]{data['median']}[/bold]",
            str(data["mean"]),
            f"{data['share']:.0%}",
            "",
            "",
        )
        for action in data["actions"]:
            now = ", ".join(str(p) for p in action["points_now"]) or "-"
            table.add_row(
                f"  {_escape(action['label'])}",
                str(action["median"]),
                str(action["mean"]),
                f"{action['share']:.0%}",
                now,
                str(calibration.points),
            )
    table.add_section()
    total = " + ".join(_show(s.median) for s in calibration.stages)
    table.add_row("[bold]typical buyer[/bold]", f"[bold]{_show(calibration.typical_total)}[/bold]")
    console.print(table)
    console.print(
        f"{total} = {_show(calibration.typical_total)} interactions before converting; "
        f"threshold {_show(calibration.threshold)} ({calibration.threshold_source}): "
        f"{_show(calibration.threshold)} / {_show(calibration.typical_total)} = "
        f"{calibration.exact_points:.2f}, so {calibration.points} points per action",
        markup=False,
    )
    for path in written:
        console.print(f"wrote {path}", markup=False)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@click.command("calibrate")
@click.option(
    "--workflows",
    "workflow_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="Workflow file or folder (repeatable); its scoring workflows are the stages.",
)
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Segment-spec JSON Lines history.",
)
@click.option(
    "--outcome",
    required=True,
    metavar="EVENT|list:NAME",
    help="What converting means: an event (e.g. 'Order Completed') or list:NAME, a list "
    "that a simulation of the workflows puts the contact on.",
)
@click.option(
    "--threshold",
    type=FiniteFloat(least=0, open_least=True),
    default=None,
    help="Sales-ready score [default: the score model's sales_ready, else 100].",
)
@click.option("--score", default="SCORE", show_default=True, help="Score to calibrate.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurement as JSON.")
@click.option(
    "--write",
    "write_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write new versions of the scoring workflows (version + 1) with the new points.",
)
def calibrate_command(
    workflow_paths: tuple[Path, ...],
    events_path: Path,
    outcome: str,
    threshold: float | None,
    score: str,
    as_json: bool,
    write_dir: Path | None,
) -> None:
    """Points per action from what converted contacts did before converting.

    Per stage (scoring workflow) and action (its event triggers): the median, mean and share
    of converters' interactions before converting; the typical buyer's total (sum of the
    stage medians) and the points per action that bring that buyer to the threshold.
    """
    try:
        calibration = calibrate(workflow_paths, events_path, outcome, threshold, score)
        written = write_versions(calibration, write_dir) if write_dir is not None else []
    except CalibrationError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for line in exc.details:
            click.echo(line, err=True)
        sys.exit(EXIT_INPUT)
    if as_json:
        data = calibration.as_json()
        if write_dir is not None:
            data["written"] = [str(path) for path in written]
        echo_json(data)
        return
    _print_table(calibration, written)
