"""A workflow compiled from its JSON document: kinds parsed, conditions compiled."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from engine.conditions import ConditionError, Predicate, compile_condition
from engine.durations import Duration
from engine.errors import InvalidWorkflow
from engine.kinds import NodeKind, TriggerKind
from engine.problems import Problem, pointer_of
from engine.registry import Registry, default_registry


@dataclass(frozen=True, slots=True)
class Reentry:
    """When a contact may enter a workflow again."""

    mode: str  # never | always | cooldown
    cooldown: Duration | None = None

    @classmethod
    def parse(cls, text: str) -> Reentry:
        if text in ("never", "always"):
            return cls(text)
        return cls("cooldown", Duration.parse(text))

    def allows(self, last_entry: datetime | None, now: datetime) -> bool:
        if last_entry is None or self.mode == "always":
            return True
        if self.mode == "never":
            return False
        assert self.cooldown is not None
        return self.cooldown.after(last_entry) <= now


@dataclass(frozen=True, eq=False)
class Workflow:
    id: str
    version: int
    name: str
    notes: str
    triggers: tuple[TriggerKind, ...]
    reentry: Reentry
    exit_when: Predicate | None
    start: str
    nodes: Mapping[str, NodeKind]
    document: Mapping[str, Any]
    digest: str

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.version)


def digest(document: Mapping[str, Any]) -> str:
    """Hash of the canonical JSON, to tell a re-deploy from a changed document."""
    return hashlib.sha256(orjson.dumps(document, option=orjson.OPT_SORT_KEYS)).hexdigest()


def compile_workflow(
    document: Mapping[str, Any], registry: Registry | None = None, file: str = "<workflow>"
) -> Workflow:
    """Parse a schema-valid document; raises :class:`InvalidWorkflow` listing every problem."""
    registry = registry or default_registry()
    problems: list[Problem] = []

    def guarded(pointer: str, build: Any) -> Any:
        try:
            return build()
        except ConditionError as exc:
            problems.append(Problem(file, pointer + exc.pointer, exc.message))
        except (ValueError, KeyError, TypeError) as exc:
            problems.append(Problem(file, pointer, str(exc).strip("'\"")))
        return None

    triggers = []
    for index, spec in enumerate(document.get("triggers", [])):
        kind = registry.triggers[spec["type"]]
        parsed = guarded(f"/triggers/{index}", lambda k=kind, s=spec: k.parse(s))
        if parsed is not None:
            triggers.append(parsed)
    nodes: dict[str, NodeKind] = {}
    for node_id, spec in document["nodes"].items():
        node_kind = registry.nodes[spec["type"]]
        pointer = pointer_of(("nodes", node_id))
        parsed = guarded(pointer, lambda k=node_kind, s=spec: k.parse(s))
        if parsed is not None:
            nodes[node_id] = parsed
    exit_when = None
    if "exit_when" in document:
        exit_when = guarded("/exit_when", lambda: compile_condition(document["exit_when"]))
    reentry = guarded("/reentry", lambda: Reentry.parse(document.get("reentry", "never")))
    if problems:
        raise InvalidWorkflow(problems)
    return Workflow(
        id=document["id"],
        version=document["version"],
        name=document.get("name", document["id"]),
        notes=document.get("notes", ""),
        triggers=tuple(triggers),
        reentry=reentry,
        exit_when=exit_when,
        start=document["start"],
        nodes=nodes,
        document=document,
        digest=digest(document),
    )
