"""The kinds known to one engine: the built-in modules plus entry-point plugins."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points

from engine.kinds import NodeKind, TriggerKind

NODE_GROUP = "leadflow.actions"
TRIGGER_GROUP = "leadflow.triggers"


@dataclass(frozen=True, eq=False)
class Registry:
    """Kinds by their ``type`` name. Immutable (and hashed by identity, so caches keyed on
    it stay valid): build a new one to add kinds in tests."""

    nodes: Mapping[str, type[NodeKind]]
    triggers: Mapping[str, type[TriggerKind]]

    @classmethod
    def of(cls, nodes: Iterable[type[NodeKind]], triggers: Iterable[type[TriggerKind]]) -> Registry:
        node_map: dict[str, type[NodeKind]] = {}
        for kind in nodes:
            _add(node_map, kind.type, kind, "node")
        trigger_map: dict[str, type[TriggerKind]] = {}
        for trigger_kind in triggers:
            _add(trigger_map, trigger_kind.type, trigger_kind, "trigger")
        return cls(node_map, trigger_map)


def _add(into: dict[str, type], name: str, kind: type, what: str) -> None:
    if name in into and into[name] is not kind:
        raise ValueError(f"two {what} kinds are named {name!r}: {into[name]!r} and {kind!r}")
    into[name] = kind


def _plugins(group: str) -> list[type]:
    return [point.load() for point in entry_points(group=group)]


@cache
def default_registry() -> Registry:
    """Built-in kinds plus those installed under the ``leadflow.actions`` and
    ``leadflow.triggers`` entry point groups. Loaded once; the result never changes."""
    from actions import NODE_KINDS
    from triggers import TRIGGER_KINDS

    return Registry.of(
        [*NODE_KINDS, *_plugins(NODE_GROUP)], [*TRIGGER_KINDS, *_plugins(TRIGGER_GROUP)]
    )
