"""``leadflow import contacts FILE.csv``: a CRM export becomes contacts.

Every good row becomes one Segment ``identify`` call through the runner, so it creates or
updates the contact, fires ``contact_created`` and ``attribute_changed`` triggers and
recomputes grades, exactly as an identify from a CDP would. A bad row is reported with its
line number, kept in the store's ``rejected`` table with the reason, and left out; the rest
goes in.

Columns and values:

- The field separator is the one of ``,`` ``;`` tab ``|`` found most in the header line,
  unless ``--delimiter`` says otherwise.
- One column is the contact id (``--id-column``; by default the first column named id,
  userId, user_id, contact_id, email or email_address, in that order, case and spacing
  ignored). It names the contact and is not stored as an attribute unless ``--map`` maps it.
- ``--map "Job Title=job_title"`` names the attribute of a column. Other columns are kept
  under a normalised name (lower case, runs of other characters as ``_``: ``Total Time
  Spent on Website`` -> ``total_time_spent_on_website``), or left out with
  ``--only-mapped``.
- Empty cells are skipped (the attribute is left as it is), and so are cells holding a
  placeholder given with ``--missing`` (``--missing Select`` for a form's unselected
  default). Surrounding spaces are ignored.
- Values are typed: ``Yes``/``No``/``true``/``false`` (any case) are booleans, whole numbers
  without a leading zero are integers, decimals are floats, the rest is text (so ``007``
  and ``+33 6...`` stay text). ``--type COL=int|float|bool|text`` fixes a column's type; a
  cell that does not fit rejects its row.
- A row without a contact id, with a cell that does not fit its ``--type``, or with another
  number of fields than the header is rejected. Line numbers are the file's (the header is
  line 1; a quoted value spanning lines counts them all).
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine, select

from engine.cli_common import (
    EXIT_INPUT,
    db_option,
    echo_json,
    open_store,
    template_catalog,
    templates_option,
)
from engine.clock import Clock, SystemClock
from engine.problems import suggest
from engine.runner import Runner
from engine.segment import MAX_ID, Message, Rejection
from engine.store.sql import chunks
from engine.store.tables import contacts

ID_COLUMNS = ("id", "userid", "user_id", "contact_id", "email", "email_address")
TYPES = ("int", "float", "bool", "text")
DELIMITERS = (",", ";", "\t", "|")
TRUE = frozenset({"yes", "true"})
FALSE = frozenset({"no", "false"})
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
LARGEST_INT = 2**64 - 1
"""The largest whole number kept as a number (the smallest: -2**63): the JSON written for
the HTTP API (orjson) takes no integer past 64 bits."""
_DIGITS = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


class ImportProblem(ValueError):
    """Options that do not fit the file (an unknown column): nothing was imported."""


@dataclass(frozen=True)
class ImportOptions:
    id_column: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    """CSV column -> attribute name."""
    types: Mapping[str, str] = field(default_factory=dict)
    """CSV column (or its attribute name) -> int, float, bool or text."""
    missing: tuple[str, ...] = ()
    only_mapped: bool = False
    delimiter: str | None = None
    """None: the one of , ; tab | found most in the header line."""
    encoding: str = "utf-8-sig"


@dataclass
class ImportReport:
    source: str
    columns: dict[str, str]
    id_column: str
    rows: int = 0
    imported: int = 0
    created: int = 0
    updated: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.rejections)

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "id_column": self.id_column,
            "columns": self.columns,
            "rows": self.rows,
            "imported": self.imported,
            "created": self.created,
            "updated": self.updated,
            "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejections],
        }


def normalise(header: str) -> str:
    """``Total Time Spent on Website`` -> ``total_time_spent_on_website``."""
    return re.sub(r"[^0-9a-z]+", "_", header.strip().lower()).strip("_")


def auto_value(text: str) -> Any:
    """A cell as a boolean, an int, a float or text (see the module docstring)."""
    lower = text.lower()
    if lower in TRUE:
        return True
    if lower in FALSE:
        return False
    if _INT.fullmatch(text):
        number = int(text)
        # past 64 bits an id more than a number: JSON writers (orjson) refuse such an int
        return number if -(2**63) <= number <= LARGEST_INT else text
    if _FLOAT.fullmatch(text):
        value = float(text)
        if math.isfinite(value):
            return value
    return text


def typed_value(text: str, kind: str) -> Any:
    """A cell as ``kind``; ValueError with what was expected."""
    if kind == "text":
        return text
    if kind == "bool":
        lower = text.lower()
        if lower in TRUE or lower in ("y", "1"):
            return True
        if lower in FALSE or lower in ("n", "0"):
            return False
        raise ValueError(f"expected Yes/No or true/false, found {text!r}")
    if kind == "int" and _DIGITS.fullmatch(text):
        number = int(text)  # exactly: float() keeps only 53 bits
        if not -(2**63) <= number <= LARGEST_INT:
            raise ValueError(f"expected a whole number of at most 64 bits, found {text!r}")
        return number
    try:
        value = float(text.replace("_", "#"))  # float() would take 1_000
    except ValueError:
        what = "a whole number" if kind == "int" else "a number"
        raise ValueError(f"expected {what}, found {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, found {text!r}")
    if kind == "int":
        if not value.is_integer():
            raise ValueError(f"expected a whole number, found {text!r}")
        if not -(2**63) <= value <= LARGEST_INT:
            raise ValueError(f"expected a whole number of at most 64 bits, found {text!r}")
        return int(value)
    return value


@dataclass(frozen=True)
class Plan:
    """How each column of one file is read."""

    header: list[str]
    id_index: int
    targets: list[str | None]
    """Attribute per column (None: left out)."""
    kinds: list[str | None]
    """Fixed type per column (None: typed by its look)."""

    @property
    def columns(self) -> dict[str, str]:
        return {
            name: target
            for name, target in zip(self.header, self.targets, strict=True)
            if target is not None
        }


def plan(header: Sequence[str], options: ImportOptions) -> Plan:
    """Match the options to the header; ImportProblem for a column that is not there."""
    names = list(header)
    if not names or not any(name.strip() for name in names):
        raise ImportProblem("the file has no header row")

    def only(matches: list[int], what: str, column: str) -> int:
        if len(matches) > 1:
            where = " and ".join(str(i + 1) for i in matches)
            raise ImportProblem(
                f"{what}: columns {where} are all named {column!r}; rename all but one in the file"
            )
        return matches[0]

    def find(column: str, what: str) -> int:
        exact = [i for i, name in enumerate(names) if name == column]
        if exact:
            return only(exact, what, column)
        stripped = [i for i, name in enumerate(names) if name.strip() == column.strip()]
        if stripped:
            return only(stripped, what, column)
        raise ImportProblem(
            f"{what}: no column {column!r} in the file{suggest(column, names)} "
            f"(columns: {', '.join(names)})"
        )

    if options.id_column is not None:
        id_index = find(options.id_column, "--id-column")
    else:
        normalised = [normalise(n) for n in names]
        found = next((normalised.index(c) for c in ID_COLUMNS if c in normalised), None)
        if found is None:
            raise ImportProblem(
                "no id column: name the column holding the contact id with --id-column "
                f"(columns: {', '.join(names)})"
            )
        same = [i for i, name in enumerate(normalised) if name == normalised[found]]
        if len(same) > 1:
            # a second id column would become an attribute holding another contact's id
            shown = " and ".join(f"{i + 1} ({names[i]!r})" for i in same)
            raise ImportProblem(
                f"columns {shown} could each hold the contact id: name the one to use with "
                "--id-column, or rename the others"
            )
        id_index = found
    targets: list[str | None] = [None] * len(names)
    for column, target in options.mapping.items():
        if not target.strip():
            raise ImportProblem(f"--map {column!r}: the attribute name is empty")
        targets[find(column, "--map")] = target.strip()
    taken = {t for t in targets if t is not None}
    if not options.only_mapped:
        for index, name in enumerate(names):
            if targets[index] is not None or index == id_index:
                continue
            base = normalise(name) or f"column_{index + 1}"
            candidate, suffix = base, 2
            while candidate in taken:
                candidate, suffix = f"{base}_{suffix}", suffix + 1
            targets[index] = candidate
            taken.add(candidate)
    kinds: list[str | None] = [None] * len(names)
    for column, kind in options.types.items():
        if kind not in TYPES:
            raise ImportProblem(
                f"--type {column}: expected one of {', '.join(TYPES)}, found {kind!r}"
            )
        index = targets.index(column) if column in targets else find(column, "--type")
        kinds[index] = kind
    return Plan(names, id_index, targets, kinds)


def read_rows(
    text: str, options: ImportOptions, now: datetime
) -> tuple[Plan, Iterator[Message | Rejection], list[int]]:
    """The plan, then one identify or one rejection per row; ``counter[0]`` counts rows."""
    handle = io.StringIO(text, newline="")
    delimiter = options.delimiter or guess_delimiter(text)
    reader = csv.reader(handle, delimiter=delimiter, strict=True)  # bad quoting: an error
    try:
        header = next(reader)
    except StopIteration:
        raise ImportProblem("the file is empty") from None
    except csv.Error as exc:
        raise ImportProblem(f"line 1: cannot read the header: {exc}") from None
    layout = plan(header, options)
    missing = frozenset(options.missing)
    counter = [0]

    def rows() -> Iterator[Message | Rejection]:
        line = reader.line_num + 1
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                counter[0] += 1
                yield Rejection(line, "", f"cannot read the row: {exc}")
                if reader.line_num < line:
                    return
                line = reader.line_num + 1
                continue
            start, line = line, reader.line_num + 1
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            counter[0] += 1
            yield _row(cells, start, layout, missing, delimiter, now)

    return layout, rows(), counter


def guess_delimiter(text: str) -> str:
    """The one of , ; tab | found most in the first line (a comma when none is)."""
    first = text.split("\n", 1)[0]
    counts = {candidate: first.count(candidate) for candidate in DELIMITERS}
    best = max(DELIMITERS, key=lambda candidate: counts[candidate])
    return best if counts[best] else ","


def _raw(cells: Sequence[str], delimiter: str) -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(cells)
    return out.getvalue()


def _row(
    cells: list[str],
    line: int,
    layout: Plan,
    missing: frozenset[str],
    delimiter: str,
    now: datetime,
) -> Message | Rejection:
    if len(cells) != len(layout.header):
        return Rejection(
            line,
            _raw(cells, delimiter),
            f"expected {len(layout.header)} fields, found {len(cells)}",
        )
    contact = cells[layout.id_index].strip()
    if not contact or contact in missing:
        return Rejection(
            line,
            _raw(cells, delimiter),
            f"no contact id (column {layout.header[layout.id_index]!r} is empty)",
        )
    if len(contact) > MAX_ID:
        return Rejection(
            line,
            _raw(cells, delimiter),
            f"column {layout.header[layout.id_index]!r}: the contact id is {len(contact)} "
            f"characters long; at most {MAX_ID}",
        )
    for index, cell in enumerate(cells):
        if "\x00" in cell:
            return Rejection(
                line,
                _raw(cells, delimiter),
                f"column {layout.header[index]!r}: text cannot hold the NUL character",
            )
    traits: dict[str, Any] = {}
    for index, raw in enumerate(cells):
        target = layout.targets[index]
        if target is None:
            continue
        text = raw.strip()
        if not text or text in missing:
            continue
        kind = layout.kinds[index]
        if kind is None:
            traits[target] = auto_value(text)
            continue
        try:
            traits[target] = typed_value(text, kind)
        except ValueError as exc:
            return Rejection(
                line, _raw(cells, delimiter), f"column {layout.header[index]!r}: {exc}"
            )
    return Message("identify", contact, now, traits=traits, line=line)


def import_contacts(
    engine: Engine,
    path: Path,
    options: ImportOptions,
    clock: Clock,
    runner: Runner | None = None,
    dry_run: bool = False,
) -> ImportReport:
    """Import one CSV file; ImportProblem (nothing imported) for options that do not fit
    the file or a file that cannot be read."""
    try:
        data = path.read_bytes()
        text = data.decode(options.encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ImportProblem(
            f"line {line}: the file is not {options.encoding} (byte {exc.start}: "
            f"{data[exc.start : exc.start + 1]!r}); give --encoding"
        ) from None
    except LookupError:
        raise ImportProblem(f"unknown encoding {options.encoding!r}") from None
    except OSError as exc:
        raise ImportProblem(f"cannot read the file: {exc}") from None
    now = clock.now()
    layout, rows, counter = read_rows(text, options, now)
    items = list(rows)
    report = ImportReport(
        str(path), layout.columns, layout.header[layout.id_index], rows=counter[0]
    )
    good = [item for item in items if isinstance(item, Message)]
    report.rejections = [item for item in items if isinstance(item, Rejection)]
    ids = sorted({m.contact_id for m in good})
    with engine.connect() as connection:
        known: set[str] = set()
        for part in chunks(ids):
            known.update(connection.scalars(select(contacts.c.id).where(contacts.c.id.in_(part))))
    if dry_run:
        report.imported = len(good)
    else:
        runner = runner or Runner(engine, clock)
        result = runner.ingest(items, source=str(path))
        report.imported = result.taken
    report.created = len(ids) - len(known)
    report.updated = len(known)
    return report


# --- the command ----------------------------------------------------------------------------


def _pairs(values: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        column, sep, target = value.rpartition("=")
        if not sep or not column:
            raise click.BadParameter(f"expected COLUMN=NAME, found {value!r}", param_hint=option)
        pairs[column] = target
    return pairs


@click.group("import")
def import_group() -> None:
    """Bring in what users already have (a CRM export)."""


@import_group.command("contacts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar='"COLUMN=attribute"',
    help='Attribute name of a column, e.g. --map "Job Title=job_title" (repeatable).',
)
@click.option("--id-column", metavar="COLUMN", help="Column holding the contact id.")
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="COLUMN=int|float|bool|text",
    help="Fix a column's type; a cell that does not fit rejects its row (repeatable).",
)
@click.option(
    "--missing",
    multiple=True,
    metavar="VALUE",
    help="A placeholder that means empty, e.g. --missing Select (repeatable).",
)
@click.option("--only-mapped", is_flag=True, help="Import only the columns given with --map.")
@click.option(
    "--delimiter",
    default=None,
    help="Field separator [default: the one of , ; tab | most used in the header].",
)
@click.option("--encoding", default="utf-8-sig", show_default=True, help="File encoding.")
@click.option("--dry-run", is_flag=True, help="Check the file and report; import nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@db_option
@templates_option
def import_contacts_command(
    file: Path,
    maps: tuple[str, ...],
    id_column: str | None,
    types: tuple[str, ...],
    missing: tuple[str, ...],
    only_mapped: bool,
    delimiter: str | None,
    encoding: str,
    dry_run: bool,
    as_json: bool,
    db_url: str | None,
    template_dirs: tuple[Path, ...],
) -> None:
    """Create or update contacts from a CSV file, one identify per row (triggers fire,
    grades are computed). Bad rows are reported with their line and kept out; exit 1 if
    any row was rejected."""
    if delimiter is not None and len(delimiter) != 1:
        raise click.BadParameter("must be one character", param_hint="'--delimiter'")
    options = ImportOptions(
        id_column=id_column,
        mapping=_pairs(maps, "'--map'"),
        types={k: v.strip().lower() for k, v in _pairs(types, "'--type'").items()},
        missing=tuple(missing),
        only_mapped=only_mapped,
        delimiter=delimiter,
        encoding=encoding,
    )
    engine = open_store(db_url)
    clock = SystemClock()
    runner = Runner(engine, clock, template_catalog(template_dirs))
    try:
        report = import_contacts(engine, file, options, clock, dry_run=dry_run, runner=runner)
    except ImportProblem as exc:
        click.echo(f"error: {file}: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    for rejection in report.rejections:
        click.echo(f"{file}: line {rejection.line}: {rejection.reason}", err=True)
    if as_json:
        echo_json(report.as_json())
    else:
        verb = "would be imported" if dry_run else "imported"
        click.echo(
            f"{report.rows} row(s): {report.imported} {verb} ({report.created} new, "
            f"{report.updated} updated contact(s)), {report.rejected} rejected"
        )
    sys.exit(EXIT_INPUT if report.rejected else 0)
