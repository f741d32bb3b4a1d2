"""Validation: the corpus of invalid workflows (one file per check, each with exactly the
problems expected), the shipped playbooks, the committed schema, and mutation tests."""

from __future__ import annotations

import copy
import json
from importlib.resources import as_file, files
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.cli import main
from engine.problems import Problem
from engine.registry import default_registry
from engine.schema import build_schema, validator
from engine.validation import check_document, model_schema, validate_documents, validate_paths

INVALID = Path(__file__).parent / "invalid"
REGISTRY = default_registry()

# file -> [(pointer, message substring)], exactly the problems `validate` must report
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "bad-json.json": [
        ("line 7, column 50", "invalid JSON: Expecting property name enclosed in double quotes")
    ],
    "unknown-node-type.json": [
        ("/nodes/points/type", "unknown node type 'update_scor'; did you mean 'update_score'?")
    ],
    "unknown-trigger-type.json": [
        ("/triggers/0/type", "unknown trigger type 'evnt'; did you mean 'event'?")
    ],
    "unknown-key.json": [
        ("/exit_wehn", "unknown key 'exit_wehn' in workflow (expected $schema, "),
        ("/exit_wehn", "exit_when, start, nodes); did you mean 'exit_when'?"),
    ],
    "missing-required-key.json": [
        ("/nodes/done/list", "missing required key 'list': an add_to_list node needs list")
    ],
    "wrong-type.json": [("/nodes/points/add", 'expected a number, found text "30"')],
    "bad-duration.json": [
        (
            "/nodes/pause/for",
            'expected an ISO-8601 duration such as P30D, PT2H or P1M, found text "3 days"',
        )
    ],
    "bad-date-time.json": [
        ("/nodes/pause/until", "expected an RFC 3339 date-time such as 2026-03-01T09:00:00Z, found")
    ],
    "bad-reentry.json": [
        ("/reentry", "expected 'never', 'always' or an ISO-8601 cooldown such as P30D, found text")
    ],
    "bad-id.json": [
        ("/id", "expected lower-case letters, digits, '-', '_' or '.', found text \"Bad Id\"")
    ],
    "bad-node-id.json": [("/nodes/-done", "node id '-done' must start with a letter or digit")],
    "start-missing-node.json": [
        ("/start", "start names node 'ponits', which does not exist; did you mean 'points'?")
    ],
    "edge-to-missing-node.json": [
        ("/nodes/points/next", "next names node 'dne', which does not exist; did you mean 'done'?")
    ],
    "unreachable-node.json": [
        ("/nodes/orphan", "node 'orphan' is not reachable from start 'points': no edge leads to it")
    ],
    "instant-loop.json": [
        ("/nodes/check", "loop without a wait: check → points → check; it would run forever")
    ],
    "condition-without-else.json": [
        ("/nodes/check/else", "missing required key 'else': a condition node needs if, then, else")
    ],
    "split-weight-zero.json": [
        ("/nodes/points/branches/0/weight", "expected a number greater than 0, found a number 0")
    ],
    "wait-for-event-without-on-timeout.json": [
        ("/nodes/await/on_timeout", "missing required key 'on_timeout': a wait_for_event node")
    ],
    "update-score-two-operations.json": [
        ("/nodes/points", "expected exactly one of add, subtract, set, percent; found add, set")
    ],
    "condition-without-subject.json": [
        ("/nodes/check/if", "expected exactly one of all, any, not, attribute, property, score")
    ],
    "condition-two-operators.json": [
        ("/nodes/check/if", "expected exactly one operator (eq, ne, gt, gte, lt, lte, in, ")
    ],
    "bad-cron.json": [
        ("/triggers/0/cron", "expected a 5-field crontab"),
        ("/triggers/0/cron", "hour field '25': the last value (25) is higher than the maximum"),
    ],
    "unknown-workflow.json": [
        ("/nodes/more/workflow", "start_workflow names workflow 'welcome-serie', which is not")
    ],
    "duplicate-version-a.json": [],  # valid alone; its twin is the one reported
    "duplicate-version-b.json": [
        ("/version", "workflow 'duplicate-version' version 1 is also defined in ")
    ],
}
DUPLICATES = ("duplicate-version-a.json", "duplicate-version-b.json")


def problems_by_file(problems: list[Problem]) -> dict[str, list[Problem]]:
    found: dict[str, list[Problem]] = {}
    for problem in problems:
        found.setdefault(Path(problem.file).name, []).append(problem)
    return found


def assert_exactly(problems: list[Problem], expected: list[tuple[str, str]]) -> None:
    """The same pointers, one problem per distinct pointer, each message as expected."""
    pointers = sorted({pointer for pointer, _ in expected})
    assert sorted(p.pointer for p in problems) == pointers, [str(p) for p in problems]
    for problem in problems:
        for pointer, text in expected:
            if pointer == problem.pointer:
                assert text in problem.message, str(problem)


def test_the_corpus_has_one_file_per_check() -> None:
    assert sorted(p.name for p in INVALID.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - set(DUPLICATES)))
def test_invalid_file_alone(name: str) -> None:
    path = INVALID / name
    result = validate_paths([path])
    assert not result.ok
    assert result.workflows == []
    assert {p.file for p in result.problems} == {str(path)}
    assert_exactly(result.problems, EXPECTED[name])


def test_same_id_and_version_in_two_files() -> None:
    first, second = (INVALID / name for name in DUPLICATES)
    alone = validate_paths([first])
    assert alone.ok and [w.key for w in alone.workflows] == [("duplicate-version", 1)]
    result = validate_paths([first, second])
    assert result.problems == [
        Problem(
            str(second),
            "/version",
            f"workflow 'duplicate-version' version 1 is also defined in {first}; "
            "give one of them a new version",
        )
    ]
    assert [w.key for w in result.workflows] == [("duplicate-version", 1)]


def test_every_problem_of_every_file_in_one_run() -> None:
    result = validate_paths([INVALID])
    assert result.files == len(EXPECTED)
    found = problems_by_file(result.problems)
    for name, expected in EXPECTED.items():
        assert_exactly(found.get(name, []), expected)
    assert [w.id for w in result.workflows] == ["duplicate-version"]


def test_problem_lines() -> None:
    problem = Problem("w.json", "/nodes/a/add", "expected a number")
    assert str(problem) == "w.json: /nodes/a/add: expected a number"
    assert str(Problem("w.json", "", "file not found")) == "w.json: /: file not found"
    assert problem.as_json() == {
        "file": "w.json",
        "pointer": "/nodes/a/add",
        "message": "expected a number",
    }


def test_a_missing_file_is_a_problem_not_an_error(tmp_path: Path) -> None:
    result = validate_paths([tmp_path / "nope.json"])
    assert result.problems == [Problem(str(tmp_path / "nope.json"), "", "file not found")]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a workflow object, found a list"),
        ("workflow", 'expected a workflow object, found text "workflow"'),
        (None, "expected a workflow object, found null"),
        (3, "expected a workflow object, found a number 3"),
    ],
)
def test_a_document_that_is_not_an_object(document: Any, message: str) -> None:
    result = validate_documents([("w.json", document)])
    assert result.problems == [Problem("w.json", "", message)]


# --- no cascades: one mistake, one line -------------------------------------------------


def shipped(name: str) -> dict[str, Any]:
    text = files("workflows").joinpath(name).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def base() -> dict[str, Any]:
    return {
        "id": "cascade",
        "version": 1,
        "triggers": [{"type": "event", "event": "Quote Requested"}],
        "start": "points",
        "nodes": {
            "points": {"type": "update_score", "add": 30, "next": "is-sql"},
            "is-sql": {
                "type": "condition",
                "if": {"score": "SCORE", "gt": 80},
                "then": "to-sql",
                "else": "done",
            },
            "to-sql": {"type": "add_to_list", "list": "Sales-qualified leads", "next": "done"},
            "done": {"type": "exit"},
        },
    }


def rename(mapping: dict[str, Any], old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: rename(d["nodes"]["points"], "next", "nxet"),
            [("/nodes/points/nxet", "unknown key 'nxet' in update_score node")],
        ),
        (
            lambda d: rename(d["nodes"]["is-sql"], "else", "els"),
            [("/nodes/is-sql/els", "unknown key 'els' in condition node (expected type, if, ")],
        ),
        (
            lambda d: d["nodes"]["points"].__setitem__("next", 5),
            [("/nodes/points/next", "expected text, found a number 5")],
        ),
        (
            lambda d: d["nodes"]["points"].__setitem__("next", "is-sq"),
            [("/nodes/points/next", "next names node 'is-sq', which does not exist")],
        ),
        (
            lambda d: d["nodes"].__setitem__("points", "update_score"),
            [("/nodes/points", 'expected an object, found text "update_score"')],
        ),
        (
            lambda d: d["nodes"]["points"].pop("type"),
            [("/nodes/points/type", "missing required key 'type'")],
        ),
        (
            lambda d: d["nodes"]["points"].__setitem__("type", ["update_score"]),
            [("/nodes/points/type", "expected a node type (add_to_list, condition, ")],
        ),
        (
            lambda d: d["nodes"]["to-sql"].__setitem__("type", "add_to_lst"),
            [("/nodes/to-sql/type", "did you mean 'add_to_list'?")],
        ),
        (
            lambda d: d.__setitem__("start", "pionts"),
            [("/start", "did you mean 'points'?")],
        ),
        (
            lambda d: d["nodes"]["is-sql"].__setitem__("if", {"score": "SCORE", "gtt": 80}),
            [("/nodes/is-sql/if/gtt", "unknown key 'gtt' in condition")],
        ),
        (
            lambda d: d["nodes"]["is-sql"].__setitem__("if", {"scor": "SCORE", "gt": 80}),
            [("/nodes/is-sql/if", "did you mean 'score'?")],
        ),
        (
            lambda d: d["nodes"]["is-sql"]["if"].__setitem__("within", "P1D"),
            [("/nodes/is-sql/if/within", "unknown key 'within' in condition")],
        ),
        (
            lambda d: d.__setitem__("exit_when", {"event": "E", "within": "P2000Y", "gte": 1}),
            [("/exit_when/within", "a duration longer than 1000 years is not supported")],
        ),
        (
            lambda d: d.__setitem__("exit_when", {"any": [{"in_list": "C"}, {"in_list": 3}]}),
            [("/exit_when/any/1/in_list", "expected text, found a number 3")],
        ),
        (
            lambda d: d["triggers"].append({"type": "schedule", "cron": "0 9 1 * 1"}),
            [("/triggers/1/cron", "give a day-of-month or a day-of-week, not both")],
        ),
        (
            lambda d: d["triggers"].append(
                {"type": "schedule", "cron": "0 9 * * *", "segment": {"property": "x"}}
            ),
            [("/triggers/1/segment", "found none")],
        ),
        (
            lambda d: d["triggers"][0].__setitem__("where", {"property": "u", "eq": 1, "ne": 2}),
            [("/triggers/0/where", "found ['eq', 'ne']")],
        ),
        (
            lambda d: d.__setitem__("version", [1]),
            [("/version", "expected a whole number, found a list")],
        ),
        (
            lambda d: d.__setitem__("nodes", {}),
            [("/nodes", "expected at least 1 entry, found none")],
        ),
        (
            lambda d: d["nodes"]["points"].__setitem__("set", 5),
            [("/nodes/points", "expected exactly one of add, subtract, set, percent")],
        ),
        (
            lambda d: d["nodes"]["points"].update(min=10, max=5),
            [("/nodes/points", "min (10) is greater than max (5)")],
        ),
        (
            lambda d: d["nodes"]["done"].update(type="wait", until="2026-12-31T23:59:60Z"),
            [("/nodes/done/until", 'date-time such as 2026-03-01T09:00:00Z, found text "2026-')],
        ),
        (
            lambda d: d["triggers"][0].__setitem__("type", 7),
            [("/triggers/0/type", "expected a trigger type (attribute_changed, contact_created")],
        ),
    ],
)
def test_one_mistake_one_problem(mutate: Any, expected: list[tuple[str, str]]) -> None:
    document = base()
    assert check_document(document, "w.json", REGISTRY) == []
    mutate(document)
    problems = check_document(document, "w.json", REGISTRY)
    assert_exactly(problems, expected)


def test_unreachable_is_still_reported_when_the_broken_node_is_unreachable_too() -> None:
    document = base()
    document["nodes"]["orphan"] = {"type": "add_to_list", "lisst": "X", "nxt": "done"}
    problems = check_document(document, "w.json", REGISTRY)
    assert sorted((p.pointer, p.message) for p in problems) == [
        (
            "/nodes/orphan",
            "node 'orphan' is not reachable from start 'points': no edge leads to it",
        ),
        (
            "/nodes/orphan/lisst",
            "unknown key 'lisst' in add_to_list node (expected type, list, next); "
            "did you mean 'list'?",
        ),
        (
            "/nodes/orphan/nxt",
            "unknown key 'nxt' in add_to_list node (expected type, list, next); "
            "did you mean 'next'?",
        ),
    ]  # and no "missing required key 'list'": the typo is that


def test_a_missing_key_without_a_look_alike_is_reported() -> None:
    document = base()
    document["nodes"]["to-sql"] = {"type": "add_to_list", "name": "X", "next": "done"}
    problems = check_document(document, "w.json", REGISTRY)
    assert sorted((p.pointer, p.message) for p in problems) == [
        ("/nodes/to-sql/list", "missing required key 'list': an add_to_list node needs list"),
        (
            "/nodes/to-sql/name",
            "unknown key 'name' in add_to_list node (expected type, list, next)",
        ),
    ]


def test_a_node_without_type_gets_one_problem() -> None:
    document = base()
    del document["nodes"]["points"]["type"]
    problems = check_document(document, "w.json", REGISTRY)
    assert [(p.pointer, p.message) for p in problems] == [
        ("/nodes/points/type", "missing required key 'type': a node needs type")
    ]


def test_control_characters_stay_on_one_line() -> None:
    document = base()
    document["nodes"]["a\nb"] = {"type": "exit"}
    problems = check_document(document, "w.json", REGISTRY)
    assert [p.pointer for p in problems] == ["/nodes/a\nb", "/nodes/a\nb"]
    assert [str(p).split(": ")[1] for p in problems] == ["/nodes/a\\nb", "/nodes/a\\nb"]


def test_two_unreachable_nodes_and_a_loop_in_one_document() -> None:
    document = base()
    document["nodes"].update(
        {
            "a": {"type": "add_to_list", "list": "A", "next": "b"},
            "b": {"type": "remove_from_list", "list": "A", "next": "a"},
        }
    )
    problems = check_document(document, "w.json", REGISTRY)
    assert [(p.pointer, p.message.split(":")[0]) for p in problems] == [
        ("/nodes/a", "node 'a' is not reachable from start 'points'"),
        ("/nodes/b", "node 'b' is not reachable from start 'points'"),
        ("/nodes/a", "loop without a wait"),
    ]


def test_a_loop_through_a_wait_is_fine() -> None:
    document = base()
    document["nodes"]["done"] = {"type": "wait", "for": "P1D", "next": "points"}
    assert check_document(document, "w.json", REGISTRY) == []


def test_a_self_loop_is_an_instant_loop() -> None:
    document = base()
    document["nodes"]["to-sql"]["next"] = "to-sql"
    problems = check_document(document, "w.json", REGISTRY)
    assert [(p.pointer, p.message) for p in problems] == [
        (
            "/nodes/to-sql",
            "loop without a wait: to-sql → to-sql; it would run forever in one instant "
            "(put a wait or wait_for_event of some time on it; a wait until a date "
            "goes on at once once the date is past)",
        )
    ]


@pytest.mark.parametrize(
    "pause",
    [
        {"type": "wait", "for": "PT0S"},
        {"type": "wait", "until": "2026-02-01T00:00:00Z"},
        {"type": "wait_for_event", "event": "E", "timeout": "P0D", "next": "done"},
    ],
)
def test_a_loop_through_a_wait_of_no_time_is_an_instant_loop(pause: dict[str, Any]) -> None:
    document = base()
    document["nodes"]["to-sql"]["next"] = "hold"
    edge = "on_timeout" if pause["type"] == "wait_for_event" else "next"
    document["nodes"]["hold"] = {**pause, edge: "to-sql"}
    problems = check_document(document, "w.json", REGISTRY)
    assert [p.pointer for p in problems] == ["/nodes/hold"]
    assert problems[0].message.startswith("loop without a wait: hold → to-sql → hold")


def test_a_loop_through_a_wait_of_some_time_is_fine() -> None:
    document = base()
    document["nodes"]["to-sql"]["next"] = "hold"
    document["nodes"]["hold"] = {"type": "wait", "for": "PT1M", "next": "to-sql"}
    assert check_document(document, "w.json", REGISTRY) == []


def test_start_workflow_names_a_workflow_validated_together() -> None:
    caller = base()
    caller["nodes"]["to-sql"] = {"type": "start_workflow", "workflow": "callee", "next": "done"}
    callee = {**base(), "id": "callee"}
    alone = validate_documents([("caller.json", caller)])
    assert [(p.pointer, p.message) for p in alone.problems] == [
        (
            "/nodes/to-sql/workflow",
            "start_workflow names workflow 'callee', which is not among the workflows "
            "validated together",
        )
    ]
    together = validate_documents([("caller.json", caller), ("callee.json", callee)])
    assert together.ok
    assert sorted(w.id for w in together.workflows) == ["callee", "cascade"]


def test_a_near_miss_workflow_name_gets_a_suggestion() -> None:
    caller = base()
    caller["nodes"]["to-sql"] = {"type": "start_workflow", "workflow": "calee", "next": "done"}
    result = validate_documents(
        [("caller.json", caller), ("callee.json", {**base(), "id": "callee"})]
    )
    assert [p.message[-24:] for p in result.problems] == ["; did you mean 'callee'?"]


# --- shipped playbooks and the schema -----------------------------------------------------


def shipped_names() -> list[str]:
    return sorted(
        entry.name
        for entry in files("workflows").iterdir()
        if entry.name.endswith(".json") and entry.name != "schema.json"
    )


def test_shipped_playbooks_are_valid_together() -> None:
    names = shipped_names()
    assert len(names) >= 12
    result = validate_documents([(name, shipped(name)) for name in names])
    assert [str(p) for p in result.problems] == []
    assert len(result.workflows) == len(names)
    assert len({w.id for w in result.workflows}) == len(names)
    for workflow in result.workflows:
        assert workflow.notes.strip(), f"{workflow.id} has no notes"
        assert f"{workflow.id}.json" in names


def test_shipped_folder_validates_from_the_installed_package() -> None:
    with as_file(files("workflows")) as folder:
        result = validate_paths([folder])
    assert result.ok, [str(p) for p in result.problems]
    assert result.files == len(shipped_names())


def committed_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(
        files("workflows").joinpath("schema.json").read_text(encoding="utf-8")
    )
    return schema


def test_committed_schema_matches_the_kinds() -> None:
    assert committed_schema() == build_schema(default_registry()), (
        "workflows/schema.json is stale: run `leadflow schema > workflows/schema.json`"
    )


@pytest.mark.parametrize("kind", ["score_model", "grade_model"])
def test_committed_model_schemas_are_fresh_and_hold_the_shipped_models(kind: str) -> None:
    """``leadflow schema`` covered workflows only: every shipped model failed against it
    (found by a reviewing helper). Each model kind has its own, committed beside them."""
    name = f"{kind}.schema.json"
    committed = json.loads(files("workflows").joinpath("models", name).read_text("utf-8"))
    assert committed == model_schema(kind), (
        f"workflows/models/{name} is stale: run `leadflow schema --kind {kind} > "
        f"workflows/models/{name}`"
    )
    Draft202012Validator.check_schema(committed)
    checker = Draft202012Validator(committed)
    shipped = [
        json.loads(entry.read_text("utf-8"))
        for entry in files("workflows").joinpath("models").iterdir()
        if entry.name.endswith(".json") and not entry.name.endswith("schema.json")
    ]
    ours = [d for d in shipped if d.get("kind") == kind]
    assert ours
    for document in ours:
        checker.validate(document)


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = committed_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_schema_dispatches_with_if_then_not_one_of() -> None:
    text = json.dumps(committed_schema())
    assert '"oneOf"' not in text and '"anyOf"' not in text
    node = committed_schema()["$defs"]["node"]
    assert sorted(node["properties"]["type"]["enum"]) == sorted(REGISTRY.nodes)
    assert [b["if"]["properties"]["type"]["const"] for b in node["allOf"]] == sorted(REGISTRY.nodes)


def walk_properties(schema: Any, path: str = "#") -> list[tuple[str, Any]]:
    """Every (path, subschema) under a ``properties`` keyword, except inside ``if``
    (dispatch tests, not documentation)."""
    found: list[tuple[str, Any]] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "if":
                continue
            if key == "properties" and isinstance(value, dict):
                found.extend((f"{path}/properties/{name}", sub) for name, sub in value.items())
            found.extend(walk_properties(value, f"{path}/{key}"))
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found.extend(walk_properties(value, f"{path}/{index}"))
    return found


def test_every_property_in_the_schema_has_a_title_and_a_description() -> None:
    properties = walk_properties(committed_schema())
    assert len(properties) > 100
    for path, sub in properties:
        assert isinstance(sub, dict), path
        assert isinstance(sub.get("title"), str) and sub["title"], path
        assert isinstance(sub.get("description"), str) and sub["description"], path


def test_the_validator_is_built_once() -> None:
    assert validator(REGISTRY) is validator(REGISTRY)


# --- mutations: validate never raises, the CLI exits 0 or 1 --------------------------------

PLAYBOOKS = [shipped(name) for name in shipped_names()]
KIND_NAMES = sorted({*REGISTRY.nodes, *REGISTRY.triggers, "nope", ""})
OTHER_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["P1D", "PT0S", "2026-03-01T09:00:00Z", "0 3 * * 1", "done", "SCORE"]),
    st.just([]),
    st.just({}),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.sampled_from(["score", "gt", "in_list", "all"]), st.text(max_size=3)),
)


def locations(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) pair inside a JSON value, in a stable order."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key in list(value):
            found.append((value, key))
            found.extend(locations(value[key]))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.append((value, index))
            found.extend(locations(item))
    return found


def containers(value: Any) -> list[dict[str, Any]]:
    found = [value] if isinstance(value, dict) else []
    for container, key in locations(value):
        if isinstance(container[key], dict):
            found.append(container[key])
    return found


MUTATIONS = ["delete", "retype", "rename_node", "drop_node", "junk_key", "swap_kind"]


@st.composite
def mutated_playbooks(draw: st.DrawFn) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(PLAYBOOKS)))
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(MUTATIONS))
        nodes = document.get("nodes")
        if mutation in ("delete", "retype"):
            places = locations(document)
            if not places:
                continue
            container, key = draw(st.sampled_from(places))
            if mutation == "delete":
                del container[key]
            else:
                container[key] = draw(OTHER_VALUES)
        elif mutation in ("rename_node", "drop_node") and isinstance(nodes, dict) and nodes:
            node_id = draw(st.sampled_from(sorted(nodes)))
            spec = nodes.pop(node_id)
            if mutation == "rename_node":
                nodes[draw(st.text(max_size=8) | st.sampled_from(sorted(nodes) or ["x"]))] = spec
        elif mutation == "junk_key":
            target = draw(st.sampled_from(containers(document) or [{}]))
            target[draw(st.text(max_size=8))] = draw(OTHER_VALUES)
        elif mutation == "swap_kind":
            kinds = [c for c in containers(document) if "type" in c]
            if kinds:
                draw(st.sampled_from(kinds))["type"] = draw(st.sampled_from(KIND_NAMES))
    return document


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=mutated_playbooks())
def test_mutated_playbooks_never_crash_validate(document: dict[str, Any], tmp_path: Path) -> None:
    result = validate_documents([("mutated.json", document)])
    for problem in result.problems:
        assert isinstance(problem, Problem)
        assert problem.file == "mutated.json"
        assert problem.pointer == "" or problem.pointer.startswith("/"), problem
        assert problem.message
    assert len(result.workflows) == (0 if result.problems else 1)

    path = tmp_path / "mutated.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    run = CliRunner().invoke(main, ["validate", str(path)])
    assert run.exit_code == (0 if result.ok else 1), run.output
    assert run.exception is None or isinstance(run.exception, SystemExit), run.exception
    assert "Traceback" not in run.output
    lines = run.stdout.splitlines()
    assert lines == [
        str(problem).replace("mutated.json", str(path), 1) for problem in result.problems
    ]
    for line in lines:
        assert line.startswith(f"{path}: /"), line
