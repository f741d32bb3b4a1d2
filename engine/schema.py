"""The workflow JSON Schema (draft 2020-12), assembled from the kinds' fragments.

Kinds are dispatched with ``if``/``then`` on ``type`` rather than ``oneOf``: a wrong field
then gets an error about that field, not "is not valid under any of the given schemas".
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from engine.conditions import GROUPS, OPERATORS, SUBJECTS
from engine.durations import check_duration
from engine.fragments import (
    CONDITION_REF,
    EVENT_NAME,
    LIST_NAME,
    NAME,
    NODE_ID,
    SCORE_NAME,
    WORKFLOW_ID,
    condition,
    duration,
    target,
    text,
)
from engine.registry import Registry, default_registry

SCHEMA_ID = "https://leadflow.dev/schema/workflow.json"


def build_schema(registry: Registry) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "Leadflow workflow",
        "description": "A workflow: triggers, entry rules and a graph of nodes run per contact.",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "version", "triggers", "start", "nodes"],
        "properties": {
            "$schema": {
                "title": "Schema",
                "description": "Address of this schema, for editors.",
                "type": "string",
            },
            "kind": {
                "title": "Document kind",
                "description": "Optional; 'workflow' (score and grade models have their own).",
                "const": "workflow",
            },
            "id": text(
                "Id",
                "Stable id of the workflow: lower case, digits, '-', '_' or '.'.",
                pattern="^[a-z0-9][a-z0-9._-]*$",
                maxLength=WORKFLOW_ID,
            ),
            "version": {
                "title": "Version",
                "description": "Revision number; deploy a changed document under a new version.",
                "type": "integer",
                "minimum": 1,
            },
            "name": text("Name", "Human name of the workflow.", maxLength=NAME),
            "notes": {
                "title": "Notes",
                "description": "What this workflow is for and why this revision exists.",
                "type": "string",
            },
            "triggers": {
                "title": "Triggers",
                "description": "Entry points: any one of them firing enters the contact.",
                "type": "array",
                "items": {"$ref": "#/$defs/trigger"},
            },
            "reentry": {
                "title": "Re-entry",
                "description": (
                    "May a contact enter again? 'never' (default), 'always', or an ISO-8601 "
                    "cooldown since its last entry such as P7D."
                ),
                "type": "string",
                "format": "reentry",
                "default": "never",
                "examples": ["never", "always", "P30D"],
            },
            "exit_when": condition(
                "Exit when", "Goal: the run ends as soon as this holds (checked on every event)."
            ),
            "start": target("First node to run."),
            "nodes": {
                "title": "Nodes",
                "description": "The nodes, by id.",
                "type": "object",
                "minProperties": 1,
                "propertyNames": {
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$",
                    "maxLength": NODE_ID,
                },
                "additionalProperties": {"$ref": "#/$defs/node"},
            },
        },
        "$defs": {
            "node": _dispatch("node", registry.nodes),
            "trigger": _dispatch("trigger", registry.triggers),
            "condition": _condition_schema(),
            "duration": duration("A span of time."),
        },
    }


def _dispatch(what: str, kinds: Any) -> dict[str, Any]:
    names = sorted(kinds)
    branches = []
    for name in names:
        kind = kinds[name]
        fragment = kind.schema
        properties = {
            "type": {"title": kind.title, "description": kind.description, "const": name},
            **fragment["properties"],
        }
        then: dict[str, Any] = {"properties": properties, "additionalProperties": False}
        if fragment.get("required"):
            then["required"] = list(fragment["required"])
        branches.append(
            {
                "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                "then": then,
            }
        )
    return {
        "title": what.capitalize(),
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {
                "title": f"{what.capitalize()} type",
                "description": f"Kind of {what}: " + ", ".join(names) + ".",
                "enum": names,
            }
        },
        "allOf": branches,
    }


def _condition_schema() -> dict[str, Any]:
    ref = {"$ref": CONDITION_REF}
    operators = {op: {"title": op, "description": f"Test: {doc}."} for op, doc in OPERATORS.items()}
    operators["in"]["type"] = "array"
    operators["exists"]["type"] = "boolean"
    operators["matches"]["type"] = "string"
    groups: dict[str, dict[str, Any]] = {
        "all": {
            "title": "All",
            "description": "Every condition holds.",
            "type": "array",
            "minItems": 1,
            "items": ref,
        },
        "any": {
            "title": "Any",
            "description": "At least one condition holds.",
            "type": "array",
            "minItems": 1,
            "items": ref,
        },
        "not": {"title": "Not", "description": "The condition does not hold.", **ref},
    }
    longest = {"in_list": LIST_NAME, "score": SCORE_NAME, "event": EVENT_NAME}
    subjects = {
        key: {
            "title": key,
            "description": doc,
            "type": "string",
            "minLength": 1,
            **({"maxLength": longest[key]} if key in longest else {}),
        }
        for key, doc in SUBJECTS.items()
    }
    within = duration("Window for an event count, before now.")
    branches: list[dict[str, Any]] = []
    for key in GROUPS:
        # the group's own schema is in "properties" below, validated once there; naming
        # it again here validated every nested condition twice a level (a condition 12
        # groups deep took 10 s to validate, and each level three times the one inside)
        branches.append(
            {
                "if": {"required": [key]},
                "then": {
                    "properties": {key: {n: groups[key][n] for n in ("title", "description")}},
                    "additionalProperties": False,
                },
            }
        )
    for key in SUBJECTS:
        props: dict[str, Any] = {key: subjects[key]}
        if key != "in_list":
            props.update(operators)
        if key == "event":
            props["within"] = within
        branches.append(
            {
                "if": {"required": [key]},
                "then": {"properties": props, "additionalProperties": False},
            }
        )
    return {
        "title": "Condition",
        "description": (
            "all / any / not, or a leaf: a subject key (attribute, property, score, grade, "
            "in_list, event) and one operator (" + ", ".join(OPERATORS) + ")."
        ),
        "type": "object",
        "minProperties": 1,
        "properties": {**groups, **subjects, **operators, "within": within},
        "allOf": branches,
    }


def format_checker(registry: Registry | None = None) -> FormatChecker:
    """Draft 2020-12 formats (RFC 3339 date-time) plus our ISO-8601 ``duration`` and the
    formats that kinds declare in an optional ``formats`` class attribute (name -> check;
    a check may raise ValueError to say why a value fails)."""
    checker = FormatChecker()
    checker.checks("duration", raises=ValueError)(check_duration)
    checker.checks("reentry", raises=ValueError)(
        lambda text: text in ("never", "always") or check_duration(text)
    )
    if registry is not None:
        for kind in [*registry.nodes.values(), *registry.triggers.values()]:
            for name, check in getattr(kind, "formats", {}).items():
                checker.checks(name, raises=ValueError)(check)
    return checker


@cache
def validator(registry: Registry | None = None) -> Draft202012Validator:
    """Built once per registry and reused: building a validator is the slow part."""
    registry = registry or default_registry()
    schema = build_schema(registry)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=format_checker(registry))


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def shipped_schema_text() -> str:
    """The committed ``workflows/schema.json``, read from the installed package."""
    return files("workflows").joinpath("schema.json").read_text(encoding="utf-8")
