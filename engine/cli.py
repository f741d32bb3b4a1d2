"""The ``leadflow`` command line.

Exit codes: 0 success, 1 a problem with the input or data, 2 wrong usage (click's own).
No command lets a traceback reach the user for bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from engine.graph import to_dot, to_mermaid
from engine.registry import default_registry
from engine.schema import build_schema, render
from engine.validation import validate_paths

EXIT_INPUT = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leadflow")
def main() -> None:
    """Leadflow: workflow automation and lead scoring you can own, test and run at scale."""


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the problems as a JSON list.")
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Validate workflow files and folders; one line per problem: FILE: /pointer: message."""
    result = validate_paths(paths)
    if as_json:
        click.echo(json.dumps([p.as_json() for p in result.problems], indent=2))
    else:
        for problem in result.problems:
            click.echo(str(problem))
        if result.ok:
            click.echo(f"{len(result.workflows)} workflow(s) valid", err=True)
    sys.exit(0 if result.ok else EXIT_INPUT)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
def graph(file: Path, fmt: str) -> None:
    """Print the workflow graph, with node labels that say what each node does."""
    result = validate_paths([file])
    if not result.ok:
        for problem in result.problems:
            click.echo(str(problem), err=True)
        sys.exit(EXIT_INPUT)
    (workflow,) = result.workflows
    click.echo(to_mermaid(workflow) if fmt == "mermaid" else to_dot(workflow), nl=False)


@main.command()
def schema() -> None:
    """Print the workflow JSON Schema (draft 2020-12) for editors and other tools."""
    click.echo(render(build_schema(default_registry())), nl=False)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
