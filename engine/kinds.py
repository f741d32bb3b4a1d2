"""What a node kind and a trigger kind are.

A kind is a small module in ``actions/`` or ``triggers/``: a frozen dataclass of its
parameters, its JSON Schema fragment, its outgoing edges and its behaviour. The engine
knows kinds only through these interfaces, so a new kind is one file plus one line in the
registry (or an entry point, for third parties).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, NamedTuple, Protocol, Self, runtime_checkable

from engine.conditions import Facts, Predicate
from engine.durations import Duration

Schema = dict[str, Any]


# --- what a node returns when it has done its work -------------------------------------


class Continue(NamedTuple):
    """Go on at once with ``next`` (None ends the run). A named tuple, not a frozen
    dataclass: nodes return one per step, and a frozen dataclass costs a setattr call per
    field to build."""

    next: str | None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Park the run until ``until``, then go on with ``next``."""

    until: datetime
    next: str | None


@dataclass(frozen=True, slots=True)
class AwaitEvent:
    """Park the run until the contact sends ``event`` (matching ``where``) or time runs out."""

    event: str
    where: Predicate | None
    timeout_at: datetime
    next: str | None
    on_timeout: str | None


Step = Continue | Sleep | AwaitEvent


class NodeContext(Protocol):
    """What a node may read and change. Every change is recorded, audited and may fire
    other workflows' triggers; the runner makes it atomic with the rest of the step."""

    @property
    def now(self) -> datetime: ...

    @property
    def facts(self) -> Facts: ...

    def score(self, name: str) -> float: ...

    def set_score(self, name: str, value: float) -> None: ...

    def attribute(self, name: str) -> Any: ...

    def set_attribute(self, name: str, value: Any) -> None: ...

    def add_to_list(self, name: str) -> None: ...

    def remove_from_list(self, name: str) -> None: ...

    def send(self, channel: str, payload: Mapping[str, Any]) -> None: ...

    def has_template(self, name: str) -> bool: ...

    def render_email(self, template: str, subject: str | None) -> dict[str, Any]:
        """The email for this contact: ``subject``, ``text``, optional ``html``,
        ``category``, ``unsubscribe_url``. Raises ActionFailed for a missing template or
        variable (engine/messaging/render.py says what a template sees)."""
        ...

    def render_text(self, text: str, what: str) -> str:
        """``text`` rendered as a template for this contact; ActionFailed names ``what``."""
        ...

    def start_workflow(self, workflow_id: str) -> None: ...

    def split_point(self) -> float:
        """A number in [0, 1) fixed for this contact, workflow and split node (seeded, not
        random)."""
        ...


@dataclass(frozen=True, slots=True)
class Edge:
    """An outgoing edge: ``key`` is the JSON pointer suffix inside the node."""

    key: str
    target: str


class NodeKind:
    """Base of node kinds. Subclasses are frozen dataclasses of their parameters."""

    type: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    schema: ClassVar[Schema]
    """JSON Schema fragment: ``{"properties": {...}, "required": [...]}``, without ``type``."""
    edge_keys: ClassVar[tuple[str, ...]] = ("next",)
    pauses: ClassVar[bool] = False
    """True for kinds that can park a run; only they may sit on a cycle."""

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        """Build from a schema-valid node; raise ValueError with a message for the rest."""
        raise NotImplementedError

    @classmethod
    def template_texts(cls, data: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """(JSON pointer inside the node, text) of every text the node renders as a
        template when it runs; `validate` checks that each one parses."""
        return iter(())

    @classmethod
    def pauses_in(cls, data: Mapping[str, Any]) -> bool:
        """Whether this node, as written, always parks a run for a while, so that it may
        sit on a loop (a wait of no time, or until a date that will be past, does not)."""
        return cls.pauses

    @classmethod
    def raw_edges(cls, data: Mapping[str, Any]) -> Iterator[Edge]:
        """Edges read straight from JSON, so graph checks run even when the schema fails."""
        for key in cls.edge_keys:
            target = data.get(key)
            if isinstance(target, str):
                yield Edge(key, target)

    def edges(self) -> tuple[Edge, ...]:
        return tuple(
            Edge(key, target)
            for key in self.edge_keys
            if isinstance(target := getattr(self, key, None), str)
        )

    def label(self) -> str:
        """What the node does, in a few words, for drawings."""
        return self.type

    def execute(self, ctx: NodeContext) -> Step:
        raise NotImplementedError


# --- what wakes a trigger ---------------------------------------------------------------

SignalKey = tuple[str, ...]


class Signal(NamedTuple):
    """A change or event about one contact that triggers may react to (immutable; a named
    tuple because every change makes one).

    ``kind`` is one of: event, contact_created, attribute_changed, list_added, list_removed,
    score_changed. ``name`` is the event, attribute, list or score name.
    """

    kind: str
    name: str = ""
    old: Any = None
    new: Any = None
    properties: Mapping[str, Any] | None = None

    @property
    def key(self) -> SignalKey:
        return self[:2]


class TriggerKind:
    """Base of trigger kinds. Subclasses are frozen dataclasses of their parameters."""

    type: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    schema: ClassVar[Schema]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def keys(self) -> tuple[SignalKey, ...]:
        """Signal keys that may fire this trigger (the runner indexes on them)."""
        return ()

    def matches(self, signal: Signal, facts: Facts) -> bool:
        return False

    def label(self) -> str:
        return self.type


@runtime_checkable
class CronDriven(Protocol):
    """A trigger fired by the clock for every contact of a segment."""

    segment: Predicate | None

    def next_fire_after(self, moment: datetime) -> datetime | None: ...


@runtime_checkable
class QuietDriven(Protocol):
    """A trigger fired once per quiet spell: none of ``events`` for ``quiet_for``."""

    events: tuple[str, ...]
    quiet_for: Duration
