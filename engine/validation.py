"""Everything that tells a user, before anything runs, whether a workflow is right.

Three passes per file (JSON, schema, graph), a fourth that compiles kinds and conditions
once the schema is clean, and a last one across all files validated together. Every
problem in every file is reported in one run, each with a JSON pointer.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from engine.errors import InvalidWorkflow
from engine.graph import check_graph
from engine.model import Workflow, compile_workflow
from engine.problems import Problem, describe_json, pointer_of, suggest
from engine.registry import Registry, default_registry
from engine.schema import build_schema, format_checker, validator
from engine.scoring.models import (
    GRADE_MODEL,
    GRADE_MODEL_SCHEMA,
    SCORE_MODEL,
    SCORE_MODEL_SCHEMA,
    GradeModel,
    ModelError,
    ScoreModel,
    compile_grade_model,
    compile_score_model,
)


@dataclass
class Validation:
    """The outcome of validating a set of documents together."""

    workflows: list[Workflow] = field(default_factory=list)
    models: list[ScoreModel | GradeModel] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lists(self) -> set[str]:
        """Lists these documents can put contacts on: add_to_list nodes and model bands."""
        from actions.add_to_list import AddToList

        names = {
            node.list
            for workflow in self.workflows
            for node in workflow.nodes.values()
            if isinstance(node, AddToList)
        }
        for model in self.models:
            if isinstance(model, ScoreModel):
                names.update(band.list for band in model.bands)
        return names


def workflow_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given; folders expanded to their own ``*.json`` files (not sub-folders),
    except JSON Schemas (``*schema.json``), so ``leadflow validate workflows/`` checks the
    playbooks only. A file named twice (directly and through its folder) counts once."""
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if not p.name.endswith("schema.json"))
        else:
            found = [path]
        for item in found:
            if item.resolve() not in seen:
                seen.add(item.resolve())
                yield item


def read_document(path: Path) -> tuple[Any, list[Problem]]:
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not JSON
    except FileNotFoundError:
        return None, [Problem(name, "", "file not found")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(name, "", f"cannot read the file: {exc}")]
    return parse_json(text, name)


def parse_json(text: str, name: str) -> tuple[Any, list[Problem]]:
    try:
        return json.loads(text), []
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        return None, [Problem(name, where, f"invalid JSON: {exc.msg}")]
    except RecursionError:
        return None, [
            Problem(name, "", f"nested too deeply: a document may nest {MAX_DEPTH} levels")
        ]


MAX_DEPTH = 64
"""Objects and arrays a document may nest: far more than any workflow needs, and few
enough that checking it never runs out of Python's stack."""

SAFE_INTEGER = 2**53 - 1
"""The largest integer every JSON reader keeps exactly (I-JSON, RFC 7493)."""


def portability_problem(value: Any, pointer: str = "", depth: int = 0) -> tuple[str, str] | None:
    """The pointer and reason of the first value no JSON reader can be trusted with: a
    number that is not finite (``NaN``, ``Infinity``, ``1e400``, which Python's reader
    lets through), an integer beyond 2^53, or nesting deeper than :data:`MAX_DEPTH`.
    Such a value would pass the schema and fail later, in a run or in the store."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        if abs(value) > SAFE_INTEGER:
            shown = (
                str(value)
                if value.bit_length() < 200
                else f"an integer of {len(str(value))} digits"
            )
            return pointer or "/", f"expected a number within ±(2^53 - 1), found {shown}"
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            shown = "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
            return pointer or "/", (
                f"expected a finite number, found {shown} (JSON has no NaN or infinity; "
                "a number past 1.8e308, such as 1e400, reads as one)"
            )
        return None
    if depth >= MAX_DEPTH:
        return pointer or "/", f"nested too deeply: a document may nest {MAX_DEPTH} levels"
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        where = pointer + pointer_of((key,))
        found = portability_problem(item, where, depth + 1)
        if found is not None:
            return found
    return None


def validate_paths(
    paths: Iterable[str | Path],
    registry: Registry | None = None,
    check_references: bool = True,
    known: Iterable[str] | None = None,
) -> Validation:
    documents: list[tuple[str, Any]] = []
    problems: list[Problem] = []
    for path in workflow_files(paths):
        document, found = read_document(path)
        problems.extend(found)
        if document is not None or not found:
            documents.append((str(path), document))
    result = validate_documents(documents, registry, check_references, known)
    result.problems[:0] = problems
    result.files += len([p for p in problems if p.pointer.startswith("line") or not p.pointer])
    return result


def validate_documents(
    documents: Iterable[tuple[str, Any]],
    registry: Registry | None = None,
    check_references: bool = True,
    known: Iterable[str] | None = None,
) -> Validation:
    """Validate documents that belong together (cross references, duplicate versions).
    ``check_references=False`` lets one file be checked or drawn on its own. ``known``:
    workflow ids a reference may name beside these documents' own (deployed already)."""
    registry = registry or default_registry()
    result = Validation()
    seen: dict[tuple[Any, Any], str] = {}
    ids: set[str] = set(known or ())
    docs = list(documents)
    for _, document in docs:
        if isinstance(document, dict) and isinstance(document.get("id"), str):
            ids.add(document["id"])
    for file, document in docs:
        result.files += 1
        unportable = portability_problem(document)
        if unportable is not None:
            result.problems.append(Problem(file, *unportable))
            continue
        kind = document.get("kind", "workflow") if isinstance(document, dict) else "workflow"
        if kind != "workflow":
            found, model = check_model(document, file, registry)
            result.problems.extend(found)
            if model is not None:
                result.models.append(model)
            continue
        problems = check_document(document, file, registry)
        if isinstance(document, dict):
            key = (_hashable(document.get("id")), _hashable(document.get("version")))
            if key in seen and isinstance(key[0], str) and type(key[1]) is int:
                problems.append(
                    Problem(
                        file,
                        "/version",
                        f"workflow {key[0]!r} version {key[1]} is also defined in {seen[key]}; "
                        "give one of them a new version",
                    )
                )
            seen.setdefault(key, file)
            if check_references:
                problems.extend(_check_references(document, file, ids, known is not None))
        if problems:
            result.problems.extend(sorted(problems))
        else:
            result.workflows.append(compile_workflow(document, registry, file))
    return result


def _hashable(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


def check_document(document: Any, file: str, registry: Registry) -> list[Problem]:
    if not isinstance(document, dict):
        return [Problem(file, "", f"expected a workflow object, found {describe_json(document)}")]
    errors = list(validator(registry).iter_errors(document))
    typos = _typos(errors)
    problems = [problem for error in errors for problem in _explain(error, file, registry, typos)]
    problems.extend(check_graph(document, registry, file, _unsure_nodes(errors, registry)))
    if not problems:
        try:
            compile_workflow(document, registry, file)
        except InvalidWorkflow as exc:
            problems.extend(p for p in exc.problems if isinstance(p, Problem))
    if not problems:
        problems.extend(_check_templates(document, file, registry))
    return _unique(problems)


def _check_templates(document: Mapping[str, Any], file: str, registry: Registry) -> list[Problem]:
    """Texts that nodes render as templates (an SMS, a webhook body, a subject) parse:
    one that does not would fail every run that reaches its node."""
    from jinja2 import TemplateSyntaxError

    from engine.messaging.render import check_syntax

    problems = []
    for node_id, spec in document["nodes"].items():
        for where, text in registry.nodes[spec["type"]].template_texts(spec):
            try:
                check_syntax(text)
            except TemplateSyntaxError as exc:
                problems.append(
                    Problem(
                        file,
                        pointer_of(("nodes", node_id)) + where,
                        f"template syntax error on line {exc.lineno}: {exc.message}",
                    )
                )
    return problems


MODEL_KINDS: dict[
    str, tuple[dict[str, Any], Callable[[Mapping[str, Any]], ScoreModel | GradeModel]]
] = {
    SCORE_MODEL: (SCORE_MODEL_SCHEMA, compile_score_model),
    GRADE_MODEL: (GRADE_MODEL_SCHEMA, compile_grade_model),
}
DOCUMENT_KINDS = ("workflow", *MODEL_KINDS)


def model_schema(kind: str) -> dict[str, Any]:
    """A model kind's whole JSON Schema, with the workflow schema's conditions and
    durations it uses (``leadflow schema --kind score_model``)."""
    schema = MODEL_KINDS[kind][0]
    defs = build_schema(default_registry())["$defs"]
    return {
        **schema,
        "$defs": {
            **schema.get("$defs", {}),
            "condition": defs["condition"],
            "duration": defs["duration"],
        },
    }


@cache
def _model_validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(model_schema(kind), format_checker=format_checker())


def check_model(
    document: dict[str, Any], file: str, registry: Registry
) -> tuple[list[Problem], ScoreModel | GradeModel | None]:
    """Score and grade models: the same schema-then-semantics passes as workflows."""
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in MODEL_KINDS:
        hint = suggest(str(kind), DOCUMENT_KINDS)
        return [
            Problem(
                file,
                "/kind",
                f"unknown document kind {kind!r}{hint}"
                + ("" if hint else f" (expected one of {', '.join(DOCUMENT_KINDS)})"),
            )
        ], None
    errors = list(_model_validator(str(kind)).iter_errors(document))
    typos = _typos(errors)
    problems = _unique([p for e in errors for p in _explain(e, file, registry, typos)])
    if problems:
        return sorted(problems), None
    try:
        return [], MODEL_KINDS[str(kind)][1](document)
    except ModelError as exc:
        return [Problem(file, exc.pointer, exc.message)], None


def _check_references(
    document: Mapping[str, Any], file: str, ids: set[str], deployed: bool = False
) -> list[Problem]:
    nodes = document.get("nodes")
    if not isinstance(nodes, dict):
        return []
    problems = []
    for node_id, spec in nodes.items():
        if not isinstance(spec, dict) or spec.get("type") != "start_workflow":
            continue
        target = spec.get("workflow")
        if isinstance(target, str) and target not in ids:
            problems.append(
                Problem(
                    file,
                    pointer_of(("nodes", node_id, "workflow")),
                    f"start_workflow names workflow {target!r}, which is not among the "
                    f"workflows validated together{' nor deployed' if deployed else ''}"
                    f"{suggest(target, ids)}",
                )
            )
    return problems


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def _typos(errors: list[ValidationError]) -> set[tuple[Any, ...]]:
    """Paths of missing keys that an unknown key next to them is probably a typo of; the
    unknown key's message already says "did you mean", so "missing" would be a cascade."""
    found: set[tuple[Any, ...]] = set()
    for error in errors:
        if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
            continue
        allowed = list(error.schema.get("properties", {}))
        for key in error.instance:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                if close and close[0] not in error.instance:
                    found.add((*error.absolute_path, close[0]))
    return found


def _edge_keys(registry: Registry) -> set[str]:
    """Keys under which a node names other nodes, at its top level (``branches`` too)."""
    keys: set[str] = set()
    for kind in registry.nodes.values():
        keys.update(kind.edge_keys)
        for key, prop in kind.schema.get("properties", {}).items():
            if "next" in prop.get("items", {}).get("properties", {}):
                keys.add(key)  # a list of objects that name nodes (split branches)
    return keys


def _unsure_nodes(errors: list[ValidationError], registry: Registry) -> set[str]:
    """Nodes whose edges the schema found fault with (a wrong or missing edge key, an
    unknown key that may be a misspelt one): the graph check cannot trust their edges."""
    edge_keys = _edge_keys(registry)
    unsure: set[str] = set()
    for error in errors:
        path = tuple(error.absolute_path)
        if len(path) < 2 or path[0] != "nodes":
            continue
        if len(path) == 2:
            if error.validator == "required":
                if any(key in edge_keys for key in error.validator_value):
                    unsure.add(str(path[1]))
            else:  # unknown keys, or a node that is not an object
                unsure.add(str(path[1]))
        elif path[2] in edge_keys:
            unsure.add(str(path[1]))
    return unsure


# --- turning jsonschema errors into sentences ----------------------------------------


def _a(what: str) -> str:
    return f"{'an' if what[:1] in 'aeiou' else 'a'} {what}"


def _what(path: tuple[Any, ...], instance: Any) -> str:
    """``update_score node`` / ``event trigger`` / ``condition`` / ``workflow``."""
    kind = instance.get("type") if isinstance(instance, dict) else None
    if len(path) == 2 and path[0] == "nodes":
        return f"{kind} node" if isinstance(kind, str) else "node"
    if len(path) == 2 and path[0] == "triggers":
        return f"{kind} trigger" if isinstance(kind, str) else "trigger"
    if not path:
        kind = instance.get("kind") if isinstance(instance, dict) else None
        return str(kind).replace("_", " ") if kind in MODEL_KINDS else "workflow"
    parts = [p for p in path if isinstance(p, str)]
    if parts and parts[0] in _MODEL_PARTS and (len(parts) == 1 or parts[0] == "decay"):
        return _MODEL_PARTS[parts[0]]
    if parts and parts[0] == "rules" and len(parts) == 1:
        return "rule"
    return "condition" if isinstance(instance, dict) else "value"


_MODEL_PARTS = {
    "decay": "decay policy",
    "bands": "band",
    "rollup": "roll-up",
    "letters": "letters",
    "rules": "rule",
}


_TYPE_WORDS = {
    "object": "an object",
    "array": "a list",
    "string": "text",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "true or false",
    "null": "null",
}

_FORMAT_WORDS = {
    "duration": "an ISO-8601 duration such as P30D, PT2H or P1M",
    "date-time": "an RFC 3339 date-time such as 2026-03-01T09:00:00Z",
    "reentry": "'never', 'always' or an ISO-8601 cooldown such as P30D",
    "uri": "an absolute URL such as https://example.com/hook",
    "cron": "a 5-field crontab (minute hour day-of-month month day-of-week) such as '0 3 * * 1'",
}


def _explain(
    error: ValidationError, file: str, registry: Registry, typos: set[tuple[Any, ...]]
) -> Iterator[Problem]:
    path = tuple(error.absolute_path)
    pointer = pointer_of(path)
    instance = error.instance
    validator_name = error.validator
    value = error.validator_value
    if validator_name == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        for key in instance:
            if key not in allowed:
                yield Problem(
                    file,
                    pointer_of((*path, key)),
                    f"unknown key {key!r} in {_what(path, instance)} (expected "
                    f"{', '.join(allowed)}){suggest(key, allowed)}",
                )
        return
    if validator_name == "required":
        for key in value:
            if isinstance(instance, dict) and key not in instance and (*path, key) not in typos:
                needs = ", ".join(value)
                yield Problem(
                    file,
                    pointer_of((*path, key)),
                    f"missing required key {key!r}: {_a(_what(path, instance))} needs {needs}",
                )
        return
    if validator_name == "enum" and path and path[-1] == "type" and len(path) == 3:
        what = "node" if path[0] == "nodes" else "trigger"
        names = ", ".join(value)
        if not isinstance(instance, str):
            message = f"expected a {what} type ({names}), found {describe_json(instance)}"
        else:
            hint = suggest(instance, value)
            message = f"unknown {what} type {instance!r}" + (hint or f" (expected one of {names})")
        yield Problem(file, pointer, message)
        return
    if validator_name in ("pattern", "maxLength") and path == ("nodes",):
        pointer = pointer_of((*path, instance))  # the node whose id is wrong
    yield Problem(file, pointer, _sentence(error))


def _sentence(error: ValidationError) -> str:
    instance = error.instance
    value = error.validator_value
    found = describe_json(instance)
    match error.validator:
        case "type":
            kinds = value if isinstance(value, list) else [value]
            expected = " or ".join(str(_TYPE_WORDS.get(k, k)) for k in kinds)
            return f"expected {expected}, found {found}"
        case "format":
            reason = f" ({error.cause})" if error.cause is not None else ""
            return f"expected {_FORMAT_WORDS.get(value, value)}, found {found}{reason}"
        case "enum":
            return f"expected one of {', '.join(map(repr, value))}, found {found}"
        case "minimum":
            return f"expected a number of at least {value}, found {found}"
        case "exclusiveMinimum":
            return f"expected a number greater than {value}, found {found}"
        case "maximum":
            return f"expected a number of at most {value}, found {found}"
        case "minItems":
            return f"expected at least {value} item(s), found {len(instance)}"
        case "minProperties":
            return f"expected at least {value} entr{'y' if value == 1 else 'ies'}, found none"
        case "minLength":
            return f"expected non-empty text, found {found}"
        case "maxLength":
            if tuple(error.absolute_path) == ("nodes",):
                return f"node id of {len(instance)} characters; at most {value}"
            return f"expected at most {value} characters, found {len(instance)}"
        case "uniqueItems":
            return f"expected distinct items, found repeats in {found}"
        case "pattern":
            if tuple(error.absolute_path) == ("nodes",):
                return (
                    f"node id {instance!r} must start with a letter or digit and hold only "
                    "letters, digits, '.', '_' or '-'"
                )
            if error.absolute_path and error.absolute_path[-1] == "id":
                return f"expected lower-case letters, digits, '-', '_' or '.', found {found}"
            return f"expected text matching {value}, found {found}"
    return str(error.message)
