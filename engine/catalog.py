"""Deployed workflows as the runner needs them: the newest version of each for new
entries, any pinned version for runs already in flight, and an index from signal keys
to the triggers they can fire."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, func, select

from engine.errors import DeployConflict
from engine.kinds import CronDriven, QuietDriven, SignalKey, TriggerKind
from engine.model import Workflow, compile_workflow
from engine.quiet_spells import start_spells
from engine.registry import Registry, default_registry
from engine.scoring.models import (
    GRADE_MODEL,
    SCORE_MODEL,
    GradeModel,
    ScoreModel,
    compile_grade_model,
    compile_score_model,
)
from engine.store.sql import insert_for, insert_ignore
from engine.store.tables import workflow_status, workflow_versions


@dataclass
class Catalog:
    registry: Registry = field(default_factory=default_registry)
    latest: dict[str, Workflow] = field(default_factory=dict)
    versions: dict[tuple[str, int], Workflow] = field(default_factory=dict)
    paused: set[str] = field(default_factory=set)
    index: dict[SignalKey, list[tuple[Workflow, TriggerKind]]] = field(default_factory=dict)
    cron: list[tuple[Workflow, int, CronDriven]] = field(default_factory=list)
    quiet: list[tuple[Workflow, int, QuietDriven]] = field(default_factory=list)
    score_models: dict[str, list[ScoreModel]] = field(default_factory=dict)
    grade_models: list[GradeModel] = field(default_factory=list)

    def rollup(self, score: str) -> ScoreModel | None:
        """The model that says how accounts roll this score up (None: plain sum)."""
        models = self.score_models.get(score)
        return models[0] if models else None

    def decaying(self) -> list[ScoreModel]:
        return [m for ms in self.score_models.values() for m in ms if m.decay is not None]

    @classmethod
    def load(cls, connection: Connection, registry: Registry | None = None) -> Catalog:
        catalog = cls(registry or default_registry())
        catalog.paused = set(
            connection.scalars(
                select(workflow_status.c.workflow_id).where(workflow_status.c.paused.is_(True))
            )
        )
        newest = select(
            workflow_versions.c.workflow_id, func.max(workflow_versions.c.version)
        ).group_by(workflow_versions.c.workflow_id)
        # in id order, by code point, on every backend: it is the order in which the
        # workflows one signal triggers are entered. SQLite's GROUP BY gave that order;
        # PostgreSQL's came in hash order, and its ORDER BY follows the collation
        for workflow_id, version in sorted((w, v) for w, v in connection.execute(newest)):
            document: dict[str, Any] = (
                connection.scalar(
                    select(workflow_versions.c.document).where(
                        workflow_versions.c.workflow_id == workflow_id,
                        workflow_versions.c.version == version,
                    )
                )
                or {}
            )
            kind = document.get("kind", "workflow")
            if kind in (SCORE_MODEL, GRADE_MODEL) and workflow_id in catalog.paused:
                continue  # a paused model acts as if it were not deployed, until resumed
            if kind == SCORE_MODEL:
                model = compile_score_model(document)
                catalog.score_models.setdefault(model.score, []).append(model)
            elif kind == GRADE_MODEL:
                catalog.grade_models.append(compile_grade_model(document))
            else:
                catalog.latest[workflow_id] = catalog.version(connection, workflow_id, version)
        catalog._reindex()
        return catalog

    def version(self, connection: Connection, workflow_id: str, version: int) -> Workflow:
        """A pinned version, compiled once and cached."""
        key = (workflow_id, version)
        found = self.versions.get(key)
        if found is not None:
            return found
        if key not in self.versions:
            document = connection.scalar(
                select(workflow_versions.c.document).where(
                    workflow_versions.c.workflow_id == workflow_id,
                    workflow_versions.c.version == version,
                )
            )
            if document is None:
                raise LookupError(f"workflow {workflow_id!r} version {version} is not deployed")
            self.versions[key] = compile_workflow(document, self.registry, workflow_id)
        return self.versions[key]

    def _reindex(self) -> None:
        index: dict[SignalKey, list[tuple[Workflow, TriggerKind]]] = defaultdict(list)
        self.cron, self.quiet = [], []
        for workflow in self.latest.values():
            for position, trigger in enumerate(workflow.triggers):
                for key in trigger.keys():  # noqa: SIM118 (a trigger, not a dict)
                    index[key].append((workflow, trigger))
                if isinstance(trigger, CronDriven):
                    self.cron.append((workflow, position, trigger))
                if isinstance(trigger, QuietDriven):
                    self.quiet.append((workflow, position, trigger))
        self.index = dict(index)

    def quiet_events(self) -> dict[str, list[tuple[Workflow, int]]]:
        """Event name -> quiet triggers it resets."""
        by_event: dict[str, list[tuple[Workflow, int]]] = defaultdict(list)
        for workflow, position, trigger in self.quiet:
            for name in trigger.events:
                by_event[name].append((workflow, position))
        return dict(by_event)


@dataclass(frozen=True)
class DeployResult:
    workflow_id: str
    version: int
    status: str  # deployed | unchanged


class Deployable(Protocol):
    """A workflow or a model: anything stored as a versioned document."""

    @property
    def id(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def notes(self) -> str: ...
    @property
    def document(self) -> Mapping[str, Any]: ...
    @property
    def digest(self) -> str: ...


def deployed_workflow_ids(connection: Connection) -> set[str]:
    """Ids of the deployed workflows (not models): what a ``start_workflow`` of a
    workflow deployed later may name."""
    return set(Catalog.load(connection).latest)


def catalog_stamp(connection: Connection) -> tuple[int, tuple[str, ...]]:
    """What a loaded catalog depends on, read in two small queries: how many versions are
    deployed (a version is never replaced) and which workflows are paused. A long-lived
    caller compares it to see deploys, pauses and resumes made by other processes."""
    versions = connection.scalar(select(func.count()).select_from(workflow_versions))
    paused = connection.scalars(
        select(workflow_status.c.workflow_id)
        .where(workflow_status.c.paused.is_(True))
        .order_by(workflow_status.c.workflow_id)
    )
    return int(versions or 0), tuple(paused)


def deploy(
    connection: Connection, workflows: Iterable[Deployable], now: datetime
) -> list[DeployResult]:
    """Store new versions. The same id and version with a different document is refused:
    a run pinned to a version must always find the document it started on."""
    workflows = list(workflows)
    results = []
    for workflow in workflows:
        before = _newest_workflow(connection, workflow) if isinstance(workflow, Workflow) else None
        row: dict[str, Any] = {
            "workflow_id": workflow.id,
            "version": workflow.version,
            "name": workflow.name,
            "notes": workflow.notes,
            "document": dict(workflow.document),
            "digest": workflow.digest,
            "deployed_at": now,
        }
        # insert first, then look: two processes deploying the same document at once
        # (replicas starting together) both succeed, where a look first raced
        stored = connection.execute(
            insert_for(connection, workflow_versions)
            .on_conflict_do_nothing()
            .returning(workflow_versions.c.version),
            row,
        ).first()
        if stored is None:
            existing = connection.execute(
                select(workflow_versions.c.digest).where(
                    workflow_versions.c.workflow_id == workflow.id,
                    workflow_versions.c.version == workflow.version,
                )
            ).scalar()
            if existing != workflow.digest:
                raise DeployConflict(
                    f"workflow {workflow.id!r} version {workflow.version} is already deployed "
                    "with a different document; bump 'version' to deploy a change"
                )
            results.append(DeployResult(workflow.id, workflow.version, "unchanged"))
            continue
        insert_ignore(
            connection,
            workflow_status,
            [{"workflow_id": workflow.id, "paused": False, "updated_at": now}],
        )
        if isinstance(workflow, Workflow) and (before is None or before.version < workflow.version):
            start_spells(connection, workflow, before, now)  # the new newest version
        results.append(DeployResult(workflow.id, workflow.version, "deployed"))
    rescored = {
        str(w.document["score"])
        for w, r in zip(workflows, results, strict=True)
        if r.status == "deployed" and w.document.get("kind") == SCORE_MODEL
    }
    if rescored:  # the roll-up in force may have changed: account scores follow it
        from engine.scoring.accounts import refresh_rollups

        refresh_rollups(connection, rescored, now)
    return results


def _newest_workflow(connection: Connection, workflow: Workflow) -> Workflow | None:
    """The newest version deployed before ``workflow`` (another version of its id)."""
    row = connection.execute(
        select(workflow_versions.c.version, workflow_versions.c.document)
        .where(
            workflow_versions.c.workflow_id == workflow.id,
            workflow_versions.c.version != workflow.version,
        )
        .order_by(workflow_versions.c.version.desc())
        .limit(1)
    ).first()
    if row is None or row.document.get("kind", "workflow") != "workflow":
        return None
    return compile_workflow(row.document, file=workflow.id)
