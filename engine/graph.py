"""A workflow as a networkx graph: the structural checks and the drawings."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

import networkx as nx

from engine.kinds import Edge
from engine.model import Workflow
from engine.problems import Problem, pointer_of, suggest
from engine.registry import Registry


def raw_graph(document: Mapping[str, Any], registry: Registry) -> nx.DiGraph[str]:
    """Nodes and edges read straight from JSON (targets may be missing: that is checked)."""
    graph: nx.DiGraph[str] = nx.DiGraph()
    nodes = document.get("nodes")
    if not isinstance(nodes, dict):
        return graph
    for node_id, spec in nodes.items():
        name = spec.get("type") if isinstance(spec, dict) else None
        kind = registry.nodes.get(name) if isinstance(name, str) else None
        graph.add_node(node_id, kind=kind, known=True)
    for node_id, spec in nodes.items():
        if not isinstance(spec, dict):
            continue
        kind = graph.nodes[node_id]["kind"]
        for edge in kind.raw_edges(spec) if kind is not None else _guess_edges(spec, registry):
            if edge.target not in graph:
                graph.add_node(edge.target, kind=None, known=False)
            graph.add_edge(node_id, edge.target, key=edge.key)
    return graph


def _guess_edges(spec: Mapping[str, Any], registry: Registry) -> Iterator[Edge]:
    """Edges of a node of unknown type: every edge key any kind uses, so one typo in a
    type does not also make the rest of the workflow look unreachable."""
    seen: set[str] = set()
    for kind in registry.nodes.values():
        for edge in kind.raw_edges(spec):
            if edge.key not in seen:
                seen.add(edge.key)
                yield edge


def check_graph(
    document: Mapping[str, Any],
    registry: Registry,
    file: str,
    unsure: Collection[str] = (),
) -> list[Problem]:
    """Start and edges name real nodes; all reachable; no loop that can run without a wait.

    ``unsure`` names nodes whose edges cannot be trusted (the schema found fault with them).
    A node reached from start through one of them, or through an edge to a missing node,
    could be meant to lead anywhere, so "not reachable" is then not said: it would most
    likely be a cascade of the problem already reported.
    """
    graph = raw_graph(document, registry)
    if not graph:
        return []
    problems: list[Problem] = []
    known = [n for n, known in graph.nodes(data="known") if known]
    unsure = set(unsure)
    for source, target, data in graph.edges(data=True):
        key = str(data["key"])
        if not graph.nodes[target]["known"]:
            unsure.add(source)
            problems.append(
                Problem(
                    file,
                    pointer_of(("nodes", source, *key.split("/"))),
                    f"{key.split('/')[-1]} names node {target!r}, which does not exist"
                    + suggest(target, known),
                )
            )
    start = document.get("start")
    if isinstance(start, str):
        if start not in known:
            problems.append(
                Problem(
                    file,
                    "/start",
                    f"start names node {start!r}, which does not exist" + suggest(start, known),
                )
            )
        elif not (unsure & (reachable := nx.descendants(graph, start) | {start})):
            for node_id in known:
                if node_id not in reachable:
                    problems.append(
                        Problem(
                            file,
                            pointer_of(("nodes", node_id)),
                            f"node {node_id!r} is not reachable from start {start!r}: "
                            "no edge leads to it",
                        )
                    )
    specs = document.get("nodes") or {}
    instant = graph.subgraph(
        n
        for n in graph
        if (kind := graph.nodes[n]["kind"]) is not None
        and not (kind.pauses_in(spec) if isinstance(spec := specs.get(n), dict) else kind.pauses)
    )
    for component in nx.strongly_connected_components(instant):
        first = min(component)
        if len(component) == 1 and not instant.has_edge(first, first):
            continue
        cycle = [u for u, _ in nx.find_cycle(instant.subgraph(component), source=first)]
        path = " → ".join([*cycle, cycle[0]])
        problems.append(
            Problem(
                file,
                pointer_of(("nodes", first)),
                f"loop without a wait: {path}; it would run forever in one instant "
                "(put a wait or wait_for_event of some time on it; a wait until a date "
                "goes on at once once the date is past)",
            )
        )
    return problems


_EDGE_WORDS = {"then": "yes", "else": "no", "on_timeout": "timeout", "next": ""}


def _edge_label(workflow: Workflow, source: str, key: str) -> str:
    if key.startswith("branches/"):
        node = workflow.nodes[source]
        weights = [w for w, _ in getattr(node, "branches", ())]
        index = int(key.split("/")[1])
        return f"{100 * weights[index] / sum(weights):.0f}%"
    return _EDGE_WORDS.get(key, key)


def to_mermaid(workflow: Workflow) -> str:
    ids = {node_id: f"n{i}" for i, node_id in enumerate(workflow.nodes)}
    lines = ["flowchart TD"]
    for i, trigger in enumerate(workflow.triggers):
        lines.append(f'    t{i}(["{_mermaid_text(trigger.label())}"]) --> {ids[workflow.start]}')
    for node_id, node in workflow.nodes.items():
        label = _mermaid_text(node.label())
        shape = {
            "condition": f'{{"{label}"}}',
            "split": f'{{"{label}"}}',
            "wait": f'("{label}")',
            "wait_for_event": f'("{label}")',
            "exit": f'(("{label}"))',
        }.get(node.type, f'["{label}"]')
        lines.append(f"    {ids[node_id]}{shape}")
    for node_id, node in workflow.nodes.items():
        for edge in node.edges():
            word = _edge_label(workflow, node_id, edge.key)
            arrow = f" -->|{_mermaid_text(word)}| " if word else " --> "
            lines.append(f"    {ids[node_id]}{arrow}{ids[edge.target]}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("|", "#124;")


def to_dot(workflow: Workflow) -> str:
    lines = [
        f"digraph {_dot(workflow.id)} {{",
        "    rankdir=TB;",
        '    node [fontname="Helvetica"];',
    ]
    shapes = {
        "condition": "diamond",
        "split": "diamond",
        "wait": "ellipse",
        "wait_for_event": "ellipse",
        "exit": "doublecircle",
    }
    for i, trigger in enumerate(workflow.triggers):
        lines.append(f"    {_dot(f'trigger {i}')} [label={_dot(trigger.label())}, shape=cds];")
        lines.append(f"    {_dot(f'trigger {i}')} -> {_dot(workflow.start)};")
    for node_id, node in workflow.nodes.items():
        shape = shapes.get(node.type, "box")
        lines.append(f"    {_dot(node_id)} [label={_dot(node.label())}, shape={shape}];")
    for node_id, node in workflow.nodes.items():
        for edge in node.edges():
            word = _edge_label(workflow, node_id, edge.key)
            attrs = f" [label={_dot(word)}]" if word else ""
            lines.append(f"    {_dot(node_id)} -> {_dot(edge.target)}{attrs};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
