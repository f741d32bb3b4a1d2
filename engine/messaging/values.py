"""Walking JSON values: every text inside rendered, the shape kept (no Jinja import here,
so the webhook kind stays cheap to import)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def render_json(value: Any, render: Callable[[str, str], str], where: str = "") -> Any:
    """``value`` with ``render(text, json_pointer)`` applied to every text inside it; keys,
    numbers, booleans and nulls stay as they are."""
    if isinstance(value, str):
        return render(value, where or "/") if "{" in value else value
    if isinstance(value, Mapping):
        return {k: render_json(v, render, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_json(v, render, f"{where}/{i}") for i, v in enumerate(value)]
    return value
