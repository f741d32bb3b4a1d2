"""Validate 1,000 generated workflows of 50 nodes; compare with plain jsonschema.

Measured: ``engine.validation.validate_documents`` over all documents at once (schema with
the format checker, graph checks with networkx, compiling every kind and condition, cross
references). Baseline, in the same run: ``jsonschema.Draft202012Validator(schema).validate``
with the same assembled schema, no format checker and no graph checks, over the same
documents. The ratio says what our extra checks and readable errors cost on top of the
cheapest schema check.

    python bench/bench_validate.py            # 1,000 workflows x 50 nodes
    python bench/bench_validate.py --quick    # 100 workflows
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from machine import machine_line

from engine.registry import default_registry
from engine.schema import build_schema, validator
from engine.validation import validate_documents

SEED = 20260105
NODES = 50

# How often each kind appears, roughly as in the shipped playbooks.
KIND_WEIGHTS = {
    "update_score": 24,
    "condition": 22,
    "add_to_list": 14,
    "wait": 10,
    "send_email": 12,
    "split": 6,
    "set_attribute": 12,
}
TITLES = ["CEO", "CTO", "VP Marketing", "VP Sales", "Head of Growth", "Engineer", "Student"]
INDUSTRIES = ["Retail", "SaaS", "Finance", "Health", "Education"]
LISTS = ["Newsletter", "Customers", "Warm leads", "Qualified leads", "Webinar", "Trial"]
EVENTS = ["Page Viewed", "Email Clicked", "Form Submitted", "Demo Requested", "Video Played"]
SCORES = ["SCORE", "PRODUCT_A", "PRODUCT_B", "ENGAGEMENT"]
DURATIONS = ["P1D", "P3D", "P1W", "PT2H", "P30D", "P1M", "PT30M"]


def leaf(rng: random.Random) -> dict[str, Any]:
    """One condition leaf, over every subject and most operators."""
    pick = rng.randrange(10)
    if pick == 0:
        return {"attribute": "job_title", "in": rng.sample(TITLES, rng.randint(1, 4))}
    if pick == 1:
        return {"attribute": "company_size", rng.choice(["gte", "gt", "lt"]): rng.randint(5, 5000)}
    if pick == 2:
        return {"attribute": "industry", rng.choice(["eq", "ne"]): rng.choice(INDUSTRIES)}
    if pick == 3:
        return {"attribute": "phone", "exists": rng.random() < 0.5}
    if pick == 4:
        return {"score": rng.choice(SCORES), rng.choice(["gte", "lt", "lte"]): rng.randint(0, 100)}
    if pick == 5:
        return {"grade": "GRADE", "in": rng.sample(["A", "B", "C", "D", "F"], rng.randint(1, 3))}
    if pick == 6:
        return {"in_list": rng.choice(LISTS)}
    if pick == 7:
        spec: dict[str, Any] = {"event": rng.choice(EVENTS), "gte": rng.randint(1, 5)}
        if rng.random() < 0.7:
            spec["within"] = rng.choice(DURATIONS)
        return spec
    if pick == 8:
        return {"property": "url", "matches": rng.choice(["/pricing*", "/blog/*", "*/careers*"])}
    return {"attribute": "email", "contains": rng.choice(["@gmail.", "@acme.", ".edu"])}


def compound(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """all / any of 2-3 parts, sometimes nested once, sometimes negated."""
    parts: list[dict[str, Any]] = []
    for _ in range(rng.randint(2, 3)):
        if depth == 0 and rng.random() < 0.15:
            parts.append(compound(rng, depth + 1))
        elif rng.random() < 0.1:
            parts.append({"not": leaf(rng)})
        else:
            parts.append(leaf(rng))
    return {rng.choice(["all", "any"]): parts}


def node_id(i: int) -> str:
    return f"n{i:02d}"


def forward(rng: random.Random, i: int) -> str:
    """A target after node ``i`` (a forward edge cannot close an instant loop)."""
    return node_id(rng.randint(i + 1, min(NODES - 1, i + 6)))


def action(rng: random.Random, kind: str, nxt: str) -> dict[str, Any]:
    if kind == "update_score":
        op = rng.choice(["add", "add", "add", "subtract", "set", "percent"])
        amount = rng.randint(-50, -1) if op == "percent" else rng.randint(1, 50)
        spec: dict[str, Any] = {"type": kind, "score": rng.choice(SCORES), op: amount}
        if rng.random() < 0.3:
            spec["min"] = 0
        if rng.random() < 0.2:
            spec["max"] = 100
    elif kind == "add_to_list":
        spec = {"type": kind, "list": rng.choice(LISTS)}
    elif kind == "wait":
        spec = {"type": kind, "for": rng.choice(DURATIONS)}
    elif kind == "send_email":
        spec = {"type": kind, "template": rng.choice(["welcome", "nurture-1", "nurture-2", "demo"])}
        if rng.random() < 0.4:
            spec["subject"] = f"Hello {rng.randint(1, 999)}"
    else:  # set_attribute
        source = rng.choice(["value", "increment", "from_property"])
        argument = {
            "value": rng.choice(["hot", "cold", 3, True]),
            "increment": rng.randint(1, 5),
            "from_property": rng.choice(["nps", "plan", "percent"]),
        }[source]
        spec = {
            "type": kind,
            "attribute": rng.choice(["stage", "touches", "nps", "plan"]),
            source: argument,
        }
    spec["next"] = nxt
    return spec


def workflow(index: int, rng: random.Random) -> dict[str, Any]:
    """A valid 50-node workflow. Node ``i`` always has an edge to ``i + 1``, so every node
    is reachable; other edges go forward, except the back edge of a "wait, then check
    again" loop, whose cycle holds a wait (allowed)."""
    kinds = list(KIND_WEIGHTS)
    weights = list(KIND_WEIGHTS.values())
    nodes: dict[str, dict[str, Any]] = {}
    i = 0
    while i < NODES - 1:
        kind = rng.choices(kinds, weights)[0]
        here, nxt = node_id(i), node_id(i + 1)
        if kind == "condition" and i + 2 < NODES - 1 and rng.random() < 0.2:
            # Recheck loop: if not yet, wait a day and test again.
            nodes[here] = {
                "type": "condition",
                "if": compound(rng),
                "then": node_id(i + 2),
                "else": nxt,
            }
            nodes[nxt] = {"type": "wait", "for": "P1D", "next": here}
            i += 2
            continue
        if kind == "condition":
            then, other = nxt, forward(rng, i)
            if rng.random() < 0.5:
                then, other = other, then
            nodes[here] = {"type": "condition", "if": compound(rng), "then": then, "else": other}
        elif kind == "split":
            targets = [nxt, *(forward(rng, i) for _ in range(rng.randint(1, 2)))]
            nodes[here] = {
                "type": "split",
                "branches": [{"weight": rng.choice([10, 25, 50, 0.5]), "next": t} for t in targets],
            }
        else:
            nodes[here] = action(rng, kind, nxt)
        i += 1
    nodes[node_id(NODES - 1)] = {"type": "exit"}
    triggers: list[dict[str, Any]] = [{"type": "event", "event": rng.choice(EVENTS)}]
    if rng.random() < 0.5:
        triggers.append({"type": "event", "event": "Page Viewed", "where": leaf(rng)})
    if rng.random() < 0.3:
        triggers.append({"type": "score_crossed", "score": "SCORE", "above": rng.randint(10, 90)})
    document: dict[str, Any] = {
        "id": f"bench-{index:04d}",
        "version": 1,
        "name": f"Bench workflow {index}",
        "notes": "Generated by bench/bench_validate.py.",
        "triggers": triggers,
        "reentry": rng.choice(["never", "always", "P7D"]),
        "start": node_id(0),
        "nodes": nodes,
    }
    if rng.random() < 0.5:
        document["exit_when"] = {"in_list": "Customers"}
    return document


def leaves(condition: dict[str, Any]) -> int:
    for group in ("all", "any"):
        if group in condition:
            return sum(leaves(part) for part in condition[group])
    return leaves(condition["not"]) if "not" in condition else 1


def generate(count: int) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(SEED)
    return [(f"bench-{i:04d}.json", workflow(i, rng)) for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 workflows instead of 1,000")
    parser.add_argument("--count", type=int, help="number of workflows (overrides --quick)")
    args = parser.parse_args()
    print(machine_line(), flush=True)
    count = args.count or (100 if args.quick else 1000)

    documents = generate(count)
    if len({doc["id"] for _, doc in documents}) != count:
        print("FAIL: generated workflow ids are not distinct")
        return 1
    nodes = sum(len(doc["nodes"]) for _, doc in documents)
    mix = Counter(node["type"] for _, doc in documents for node in doc["nodes"].values())
    conditions = [
        node["if"]
        for _, doc in documents
        for node in doc["nodes"].values()
        if node["type"] == "condition"
    ]

    registry = default_registry()
    validator(registry)  # built once and cached, as in the CLI: not part of the timing
    baseline = Draft202012Validator(build_schema(registry))

    # Warm up on a few documents (imports, regex caches), then time.
    validate_documents(documents[:5], registry)
    start = time.perf_counter()
    result = validate_documents(documents, registry)
    ours = time.perf_counter() - start

    # Every document must be valid, or the figures would time error paths.
    if not result.ok or len(result.workflows) != count:
        print(f"FAIL: {len(result.problems)} problem(s); {len(result.workflows)} of {count} valid")
        for problem in result.problems[:10]:
            print(f"  {problem}")
        return 1

    try:
        for _, doc in documents[:5]:
            baseline.validate(doc)
        start = time.perf_counter()
        for _, doc in documents:
            baseline.validate(doc)
        plain = time.perf_counter() - start
    except ValidationError as error:
        print(f"FAIL: the baseline rejects a document: {error.message}")
        return 1

    print(f"workflows: {count} x {NODES} nodes ({nodes} nodes), all valid")
    print("node mix: " + ", ".join(f"{kind} {n}" for kind, n in mix.most_common()))
    print(
        f"conditions: {len(conditions)}, "
        f"{sum(map(leaves, conditions)) / len(conditions):.1f} leaves each on average"
    )
    print(
        f"validate_documents: {ours:.2f} s, {count / ours:.0f} documents/s, "
        f"{1000 * ours / count:.2f} ms per workflow"
    )
    print(
        f"baseline jsonschema validate (no formats, no graph): {plain:.2f} s, "
        f"{count / plain:.0f} documents/s, {1000 * plain / count:.2f} ms per workflow"
    )
    print(f"ratio: validate_documents takes {ours / plain:.2f}x the baseline time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
