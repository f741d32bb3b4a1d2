"""Schema pieces shared by many kinds, so each kind's fragment stays a few lines."""

from __future__ import annotations

from typing import Any

CONDITION_REF = "#/$defs/condition"

# The longest names the store's columns keep (engine/store/tables.py); PostgreSQL's bulk
# writes cast to VARCHAR(n), which cuts a longer text short without a word, so a longer
# name is refused when the workflow is validated instead.
LIST_NAME = 200
SCORE_NAME = 100
EVENT_NAME = 200
NODE_ID = 200
WORKFLOW_ID = 200
MODEL_ID = WORKFLOW_ID - len("decay:")  # its decay ticks are kept as 'decay:' + id
NAME = 300


def target(description: str) -> dict[str, Any]:
    """A property naming another node of the same workflow."""
    return {"title": "Node id", "description": description, "type": "string", "minLength": 1}


def duration(description: str) -> dict[str, Any]:
    return {
        "title": "ISO-8601 duration",
        "description": f"{description} ISO-8601, e.g. P30D, PT2H, P1M.",
        "type": "string",
        "format": "duration",
        "examples": ["P30D", "PT2H", "P1W"],
    }


def condition(title: str, description: str) -> dict[str, Any]:
    return {"title": title, "description": description, "$ref": CONDITION_REF}


def text(title: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "description": description, "type": "string", "minLength": 1, **extra}


NEXT = target("Node to run next; leave out to end the run here.")
