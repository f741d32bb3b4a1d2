"""``leadflow backtest``: replay a history through model variants and judge each one.

Each variant (a folder or file of workflows and models, or several joined with commas) is
run over the same event history on the virtual clock, on a throwaway store of its own, the
way ``leadflow simulate`` runs it. Then the store's audit says, per contact, when the score
first reached the sales-ready threshold, and the outcome says when the contact converted:

- the first outcome event of the contact in the history (``--outcome "Lead Converted"``),
  or the first time a list took the contact in (``--outcome "list:Sales-qualified leads"``).

From the two moments (domain.md 001: the model's quality is the ratio of sales-ready leads
that become opportunities):

- *sales-ready*: contacts whose score ever reached the threshold (peak >= threshold);
- *flagged*: those that reached it before converting (at the same moment counts, unless the
  outcome event itself brought the score there);
- *quality* = flagged / sales-ready; *recall* = flagged / converters; *base rate* =
  converters / contacts; *lift* = quality / base rate;
- *lead time*: the median time from reaching sales-ready to converting, over the flagged;
- *converters per band*: the band (score model band list) each converter's score was in
  just before converting.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy import Engine, func, select

from engine.cli_common import EXIT_INPUT, FiniteFloat, echo_json
from engine.clock import VirtualClock, format_timestamp
from engine.errors import InvalidWorkflow, LeadflowError
from engine.problems import suggest
from engine.scoring.models import ScoreModel
from engine.segment import Message
from engine.validation import Validation, validate_paths

DEFAULT_THRESHOLD = 100.0
LIST_PREFIX = "list:"
NO_SCORE = "no score"
OUTSIDE = "outside the bands"

Progress = Callable[[str, int, int], None]
"""``progress(variant name, messages done, messages in all)``."""


class BacktestError(LeadflowError):
    """Input that cannot be backtested; ``details`` are extra lines to show."""

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


# --- input ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One version of the models to judge: a name and the files that make it up."""

    name: str
    paths: tuple[Path, ...]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``[NAME=]PATH[,PATH...]``: paths joined with commas make one variant (a base
        folder and a revised model, say); without a name, the first path's name is used."""
        name = ""
        head, sep, rest = text.partition("=")
        if sep and head and "/" not in head and not Path(text).exists():
            name, text = head.strip(), rest
        paths = tuple(Path(part) for part in text.split(",") if part.strip())
        if not paths:
            raise BacktestError(f"--workflows {text!r}: no path given")
        for path in paths:
            if not path.exists():
                raise BacktestError(f"--workflows: {path}: no such file or folder")
        if not name:
            first = paths[0]
            name = first.stem if first.is_file() else first.name or str(first)
            if len(paths) > 1:
                name += f"+{len(paths) - 1}"
        return cls(name, paths)


def name_variants(variants: Sequence[Variant]) -> list[Variant]:
    """Unique names: a clash falls back to the paths as given, then to a number."""
    counts: dict[str, int] = {}
    for variant in variants:
        counts[variant.name] = counts.get(variant.name, 0) + 1
    named = []
    used: set[str] = set()
    for number, variant in enumerate(variants, 1):
        name = variant.name
        if counts[name] > 1:
            name = ",".join(str(p) for p in variant.paths)
        if name in used:
            name = f"{name} #{number}"
        used.add(name)
        named.append(Variant(name, variant.paths))
    return named


# --- results --------------------------------------------------------------------------------


@dataclass
class BandShare:
    list: str
    range: str
    converters: int
    share: float

    def as_json(self) -> dict[str, Any]:
        return {
            "list": self.list,
            "range": self.range,
            "converters": self.converters,
            "share": _ratio(self.share),
        }


@dataclass
class VariantResult:
    name: str
    paths: list[str]
    score: str
    threshold: float
    threshold_source: str
    contacts: int
    converters: int
    sales_ready: int
    flagged: int
    """Sales-ready contacts that converted after reaching sales-ready."""
    late: int
    """Sales-ready contacts that reached it only after converting."""
    lead_times: list[float] = field(default_factory=list)
    """Seconds from reaching sales-ready to converting, per flagged contact."""
    bands: list[BandShare] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def base_rate(self) -> float | None:
        return self.converters / self.contacts if self.contacts else None

    @property
    def ready_rate(self) -> float | None:
        return self.sales_ready / self.contacts if self.contacts else None

    @property
    def quality(self) -> float | None:
        return self.flagged / self.sales_ready if self.sales_ready else None

    @property
    def recall(self) -> float | None:
        return self.flagged / self.converters if self.converters else None

    @property
    def lift(self) -> float | None:
        base, quality = self.base_rate, self.quality
        if not base or quality is None:
            return None
        return quality / base

    @property
    def median_lead_time(self) -> float | None:
        return statistics.median(self.lead_times) if self.lead_times else None

    def as_json(self) -> dict[str, Any]:
        median = self.median_lead_time
        return {
            "name": self.name,
            "workflows": self.paths,
            "score": self.score,
            "threshold": _number(self.threshold),
            "threshold_source": self.threshold_source,
            "contacts": self.contacts,
            "converters": self.converters,
            "base_rate": _ratio(self.base_rate),
            "sales_ready": self.sales_ready,
            "converted_after_sales_ready": self.flagged,
            "sales_ready_after_converting": self.late,
            "quality": _ratio(self.quality),
            "recall": _ratio(self.recall),
            "lift": _ratio(self.lift),
            "median_lead_time_seconds": None if median is None else _number(median),
            "median_lead_time_days": None if median is None else round(median / 86400, 2),
            "converters_per_band": [band.as_json() for band in self.bands],
            "seconds": round(self.seconds, 2),
        }


@dataclass
class Backtest:
    outcome: str
    events: int
    rejected: int
    first_event: datetime | None
    last_event: datetime | None
    variants: list[VariantResult]

    def as_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "events": self.events,
            "rejected_lines": self.rejected,
            "first_event": _stamp(self.first_event),
            "last_event": _stamp(self.last_event),
            "variants": [variant.as_json() for variant in self.variants],
        }


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _stamp(moment: datetime | None) -> str | None:
    return format_timestamp(moment) if moment is not None else None


# --- the run --------------------------------------------------------------------------------


def backtest(
    variants: Sequence[Variant],
    events_path: Path,
    outcome: str,
    score: str = "SCORE",
    threshold: float | None = None,
    progress: Progress | None = None,
    keep: Path | None = None,
    jobs: int = 1,
) -> Backtest:
    """Replay ``events_path`` through every variant and measure each against ``outcome``.

    ``keep``: a folder where each variant's store is kept (``1.db``, ``2.db``, ...) for
    ``leadflow report``; by default the stores are thrown away. ``jobs``: variants replayed
    at once, each in a process of its own (no progress is reported then)."""
    from engine.simulate import read_event_file

    if not variants:
        raise BacktestError("give at least one --workflows variant")
    outcome = outcome.strip()
    list_name = outcome[len(LIST_PREFIX) :].strip() if outcome.startswith(LIST_PREFIX) else None
    if not outcome or list_name == "":
        raise BacktestError("--outcome needs an event name or list:NAME")
    checked = [(variant, _validate(variant)) for variant in name_variants(variants)]
    if list_name is not None:
        for variant, validation in checked:
            known = validation.lists()
            if list_name not in known:
                hint = suggest(list_name, known) or (
                    f" (lists: {', '.join(sorted(known))})" if known else ""
                )
                raise BacktestError(
                    f"unknown outcome: no workflow or model of {variant.name} puts contacts "
                    f"on list {list_name!r}{hint}"
                )
    try:
        messages, rejections = read_event_file(events_path)
    except OSError as exc:
        raise BacktestError(f"{events_path}: cannot read the events: {exc}") from None
    converted: dict[str, tuple[datetime, str]] = {}
    if list_name is None:
        converted = _first_outcomes(messages, outcome)
        if not converted:
            names = sorted({m.event for m in messages if m.type == "track" and m.event})
            hint = suggest(outcome, names)
            details = [f"{events_path}: line {r.line}: {r.reason}" for r in rejections[:10]]
            if len(rejections) > 10:
                details.append(f"... and {len(rejections) - 10:,} more")
            raise BacktestError(
                f"unknown outcome: no {outcome!r} event in {events_path}{hint}"
                + ("" if hint or not names else f" (events seen: {', '.join(names[:15])})")
                + (f"; {len(rejections):,} line(s) rejected:" if rejections else ""),
                details,
            )
    summary = Backtest(
        outcome=outcome,
        events=len(messages),
        rejected=len(rejections),
        first_event=messages[0].timestamp if messages else None,
        last_event=messages[-1].timestamp if messages else None,
        variants=[],
    )
    jobs_list = [
        _Job(number, variant, events_path, outcome, list_name, score, threshold, keep)
        for number, (variant, _) in enumerate(checked, 1)
    ]
    if jobs > 1 and len(jobs_list) > 1:
        del messages, rejections, converted  # each process reads the history itself
        context = multiprocessing.get_context("spawn")
        workers = min(jobs, len(jobs_list))
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            summary.variants = list(pool.map(_run_job, jobs_list))
        return summary
    for job, (_, validation) in zip(jobs_list, checked, strict=True):
        summary.variants.append(
            _run_variant(
                job,
                validation,
                messages,
                rejections,
                converted,
                _for_variant(progress, job.variant.name),
                consume=job is jobs_list[-1],
            )
        )
    return summary


@dataclass(frozen=True)
class _Job:
    """One variant's replay, as a process of its own can run it."""

    number: int
    variant: Variant
    events_path: Path
    outcome: str
    list_name: str | None
    score: str
    threshold: float | None
    keep: Path | None


def _run_job(job: _Job) -> VariantResult:
    from engine.simulate import read_event_file

    messages, rejections = read_event_file(job.events_path)
    converted = _first_outcomes(messages, job.outcome) if job.list_name is None else {}
    return _run_variant(
        job, _validate(job.variant), messages, rejections, converted, None, consume=True
    )


def _run_variant(
    job: _Job,
    validation: Validation,
    messages: list[Message],
    rejections: Sequence[Any],
    converted: Mapping[str, tuple[datetime, str]],
    progress: Callable[[int, int], None] | None,
    consume: bool = False,
) -> VariantResult:
    """``consume``: ``messages`` is not needed afterwards (the last variant), so the replay
    lets each message go once applied."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="leadflow-backtest-") as folder:
        store = Path(folder) / "store.db"
        if job.keep is not None:
            job.keep.mkdir(parents=True, exist_ok=True)
            store = job.keep / f"{job.number}.db"
            store.unlink(missing_ok=True)
        engine = replay(
            validation,
            job.variant.paths,
            messages,
            rejections,
            f"sqlite:///{store}",
            source=str(job.events_path),
            progress=progress,
            durable=False,
            consume=consume,
            complete=job.keep is not None,
        )
        try:
            with engine.connect() as connection:
                result = measure(
                    connection,
                    job.variant,
                    validation,
                    job.outcome,
                    job.list_name,
                    converted,
                    job.score,
                    job.threshold,
                )
        finally:
            engine.dispose()
        if job.keep is not None:
            _sync(store)  # replayed without fsync (durable=False): on disk before it is kept
    result.seconds = time.perf_counter() - started
    return result


def _sync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _for_variant(progress: Progress | None, name: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    report = progress

    def step(done: int, total: int) -> None:
        report(name, done, total)

    return step


def _validate(variant: Variant) -> Validation:
    validation = validate_paths(variant.paths)
    if not validation.ok:
        raise InvalidWorkflow(list(validation.problems))
    return validation


def replay(
    validation: Validation,
    paths: Sequence[Path],
    messages: list[Message],
    rejections: Sequence[Any],
    url: str,
    source: str = "-",
    progress: Callable[[int, int], None] | None = None,
    durable: bool = True,
    consume: bool = False,
    complete: bool = True,
) -> Engine:
    """What ``engine.simulate.simulate`` does, on a store the caller keeps and disposes of:
    deploy the variant, ingest the history on a virtual clock, run every wait due.

    ``durable=False``: the store is written without fsync (``engine.store.db.make_engine``);
    ``consume``: ``messages`` is emptied as it is applied (``engine.simulate.run_clock``);
    ``complete=False``: the store will be thrown away once measured, so the audit's index
    by contact, left out while a fresh store replays, is not built
    (``engine.simulate.complete_history``)."""
    from engine.catalog import deploy
    from engine.runner import Runner
    from engine.simulate import replay_history
    from engine.store.db import open_engine, writer
    from engine.templates import TemplateCatalog

    engine = open_engine(url, durable=durable)
    try:
        start = messages[0].timestamp if messages else datetime(1970, 1, 1, tzinfo=UTC)
        clock = VirtualClock(start)
        with writer(engine).begin() as connection:
            deploy(connection, [*validation.workflows, *validation.models], clock.now())
        runner = Runner(engine, clock, TemplateCatalog.near(list(paths)))
        if rejections:
            runner.ingest(list(rejections), source=source)
        replay_history(
            runner,
            clock,
            messages,
            None,
            progress,
            source=source,
            consume=consume,
            complete=complete,
        )
    except BaseException:
        engine.dispose()
        raise
    return engine


def _first_outcomes(messages: Iterable[Message], outcome: str) -> dict[str, tuple[datetime, str]]:
    """Contact id as sent -> (moment, message id) of its first outcome event."""
    first: dict[str, tuple[datetime, str]] = {}
    for message in messages:
        if message.type == "track" and message.event == outcome:
            first.setdefault(message.contact_id, (message.timestamp, message.message_id or ""))
    return first


def score_model(validation: Validation, score: str) -> ScoreModel | None:
    """The newest version of the first (by id) score model of ``score``."""
    newest: dict[str, ScoreModel] = {}
    for model in validation.models:
        if (
            isinstance(model, ScoreModel)
            and model.score == score
            and (model.id not in newest or model.version > newest[model.id].version)
        ):
            newest[model.id] = model
    return newest[min(newest)] if newest else None


# --- measuring one replayed store ---------------------------------------------------------


def measure(
    connection: Any,
    variant: Variant,
    validation: Validation,
    outcome: str,
    list_name: str | None,
    converted: Mapping[str, tuple[datetime, str]],
    score: str,
    threshold: float | None,
) -> VariantResult:
    """The figures of one variant, from its replayed store."""
    from engine.store.tables import audit, contacts, scores

    model = score_model(validation, score)
    if threshold is not None:
        bar, source = float(threshold), "--threshold"
    elif model is not None and model.sales_ready is not None:
        bar, source = float(model.sales_ready), f"score model {model.id}"
    else:
        bar, source = DEFAULT_THRESHOLD, "default"

    people = connection.scalar(
        select(func.count()).select_from(contacts).where(contacts.c.merged_into.is_(None))
    )
    merged = dict(
        connection.execute(
            select(contacts.c.id, contacts.c.merged_into).where(contacts.c.merged_into.is_not(None))
        ).all()
    )

    def canon(contact: str) -> str:
        seen = 0
        while contact in merged and seen < 100:
            contact, seen = merged[contact], seen + 1
        return contact

    # when each converter converted: (moment, audit order, cause of the outcome)
    outcomes: dict[str, tuple[datetime, int, str]] = {}
    if list_name is None:
        prefix = f"track {outcome}"
        for contact, (moment, _) in converted.items():
            key = canon(contact)
            if key not in outcomes or moment < outcomes[key][0]:
                outcomes[key] = (moment, -1, prefix)
    else:
        rows = connection.execute(
            select(audit.c.contact_id, audit.c.at, audit.c.id, audit.c.new)
            .where(audit.c.subject == "list", audit.c.name == list_name)
            .order_by(audit.c.at, audit.c.id)
        )
        for contact, moment, row_id, new in rows:
            if new is True:
                outcomes.setdefault(canon(contact), (moment, row_id, ""))

    def before(
        moment: datetime, row_id: int, cause: str | None, when: tuple[datetime, int, str]
    ) -> bool:
        """Did an audit row come before converting (``when`` from ``outcomes``)?"""
        at, order, prefix = when
        if moment != at:
            return moment < at
        if order >= 0:  # a list outcome: the audit order decides
            return row_id < order
        # at the same moment: before, unless the outcome event itself did it
        return not (cause == prefix or (cause or "").startswith(prefix + " ("))

    sales_ready = connection.scalar(
        select(func.count()).select_from(scores).where(scores.c.name == score, scores.c.peak >= bar)
    )
    # one pass over the score's audit, in the order it was written: when each contact first
    # reached the bar, and what each converter's score was just before converting
    first_ready: dict[str, tuple[datetime, int, str | None]] = {}
    value_then: dict[str, float] = {}
    rows = connection.execute(
        select(audit.c.contact_id, audit.c.at, audit.c.id, audit.c.cause, audit.c.new)
        .where(audit.c.subject == "score", audit.c.name == score)
        .order_by(audit.c.at, audit.c.id)
    )
    for contact, moment, row_id, cause, new in rows:
        value = float(new or 0)
        if value >= bar and contact not in first_ready:
            first_ready[contact] = (moment, row_id, cause)
        when = outcomes.get(contact)
        if when is not None and before(moment, row_id, cause, when):
            value_then[contact] = value

    flagged = late = 0
    lead_times: list[float] = []
    for contact, ready in first_ready.items():
        when = outcomes.get(contact)
        if when is None:
            continue
        if before(*ready, when):
            flagged += 1
            lead_times.append((when[0] - ready[0]).total_seconds())
        else:
            late += 1

    counts: dict[str, int] = {}
    for contact in outcomes:
        then = value_then.get(contact)
        if then is None:
            key = NO_SCORE
        else:
            band = model.band_of(then) if model is not None else None
            key = band.list if band is not None else OUTSIDE
        counts[key] = counts.get(key, 0) + 1
    total = len(outcomes)
    shares = [
        BandShare(band.list, band.describe(), counts.get(band.list, 0), 0.0)
        for band in (model.bands if model is not None else ())
    ]
    shares += [BandShare(key, "", counts[key], 0.0) for key in (OUTSIDE, NO_SCORE) if key in counts]
    for share in shares:
        share.share = share.converters / total if total else 0.0
    return VariantResult(
        name=variant.name,
        paths=[str(p) for p in variant.paths],
        score=score,
        threshold=bar,
        threshold_source=source,
        contacts=int(people or 0),
        converters=total,
        sales_ready=int(sales_ready or 0),
        flagged=flagged,
        late=late,
        lead_times=lead_times,
        bands=shares,
    )


# --- the command ----------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _count(value: int) -> str:
    return f"{value:,}"


def duration_words(seconds: float | None) -> str:
    """``3.2 days``, ``5.0 hours``, ``12 minutes``."""
    if seconds is None:
        return "-"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def render_table(result: Backtest) -> Any:
    """The side-by-side rich table."""
    from rich.markup import escape
    from rich.table import Table

    variants = result.variants
    table = Table(
        title=f"Backtest: {escape(result.outcome)}",
        title_justify="left",
        show_lines=False,
    )
    table.add_column("", no_wrap=True)
    for variant in variants:
        table.add_column(escape(variant.name), justify="right")

    def row(label: str, cells: Iterable[str], end_section: bool = False) -> None:
        table.add_row(label, *(escape(cell) for cell in cells), end_section=end_section)

    row("sales-ready at", (f"{v.score} ≥ {_number(v.threshold):g}" for v in variants))
    row("  set by", (v.threshold_source for v in variants))
    row("contacts", (_count(v.contacts) for v in variants))
    row(
        "converted (base rate)",
        (f"{_count(v.converters)} ({_percent(v.base_rate)})" for v in variants),
        end_section=True,
    )
    row(
        "reached sales-ready",
        (f"{_count(v.sales_ready)} ({_percent(v.ready_rate)})" for v in variants),
    )
    row("  converted after", (_count(v.flagged) for v in variants))
    row("  ready only after converting", (_count(v.late) for v in variants))
    row("quality (converted / sales-ready)", (_percent(v.quality) for v in variants))
    row("recall (flagged / converted)", (_percent(v.recall) for v in variants))
    row(
        "lift over base rate",
        ("-" if v.lift is None else f"{v.lift:.2f}x" for v in variants),
    )
    row(
        "median lead time",
        (duration_words(v.median_lead_time) for v in variants),
        end_section=True,
    )
    names: list[tuple[str, str]] = []
    for variant in variants:
        for band in variant.bands:
            if band.list not in {n for n, _ in names}:
                names.append((band.list, band.range))
    table.add_row("[bold]converters per band[/bold]", *("" for _ in variants))
    for name, bounds in names:
        cells = []
        for variant in variants:
            found = next((b for b in variant.bands if b.list == name), None)
            cells.append(
                "-" if found is None else f"{_percent(found.share)} ({found.converters:,})"
            )
        label = f"  {name}" + (f" ({bounds})" if bounds else "")
        row(label, cells)
    return table


def print_backtest(result: Backtest) -> None:
    from engine.console import terminal

    console = terminal()
    span = ""
    if result.first_event and result.last_event:
        span = (
            f" from {format_timestamp(result.first_event)[:10]}"
            f" to {format_timestamp(result.last_event)[:10]}"
        )
    console.print(
        f"{result.events:,} events{span}, {len(result.variants)} variant(s) replayed",
        markup=False,
        highlight=False,
    )
    if result.rejected:
        console.print(f"{result.rejected:,} line(s) of the history rejected", highlight=False)
    console.print(render_table(result))
    console.print(
        "quality: share of sales-ready leads that converted after reaching sales-ready; "
        "recall: share of converters that were sales-ready first; lift: quality / base "
        "rate; lead time: from sales-ready to converting; band: the score just before "
        "converting.",
        highlight=False,
    )


@click.command("backtest")
@click.option(
    "--workflows",
    "variant_texts",
    multiple=True,
    required=True,
    metavar="[NAME=]PATH[,PATH...]",
    help="One variant: a workflow folder or file, or several joined with commas (a base "
    "folder and a revised model). Repeat for each variant to compare.",
)
@click.option(
    "--events",
    "events_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Segment-spec JSON Lines history.",
)
@click.option(
    "--outcome",
    required=True,
    metavar="EVENT|list:NAME",
    help="What converting means: an event of the history (its first one per contact), or "
    "list:NAME, a list the variant puts the contact on (the first time).",
)
@click.option("--score", default="SCORE", show_default=True, help="The score to judge.")
@click.option(
    "--threshold",
    type=FiniteFloat(least=0, open_least=True),
    default=None,
    help="Sales-ready score [default: each variant's score model's sales_ready, else 100].",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep each variant's replayed store in this folder (1.db, 2.db, ...) for "
    "leadflow report --db sqlite:///FOLDER/1.db.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Variants replayed at once, each in a process of its own (no progress bar then).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def backtest_command(
    variant_texts: tuple[str, ...],
    events_path: Path,
    outcome: str,
    score: str,
    threshold: float | None,
    keep: Path | None,
    jobs: int,
    as_json: bool,
) -> None:
    """Replay a history through model variants and compare them side by side.

    Per variant: leads that reached sales-ready, how many of them then converted (the
    model's quality), recall, lift over the base conversion rate, the median lead time
    from sales-ready to converting and the share of converters per band.
    """
    try:
        variants = [Variant.parse(text) for text in variant_texts]
        with _progress() as report:
            result = backtest(variants, events_path, outcome, score, threshold, report, keep, jobs)
    except InvalidWorkflow as exc:
        for problem in exc.problems:
            click.echo(str(problem))
        sys.exit(EXIT_INPUT)
    except BacktestError as exc:
        click.echo(f"error: {exc.message}", err=True)
        for line in exc.details:
            click.echo(line, err=True)
        sys.exit(EXIT_INPUT)
    if as_json:
        echo_json(result.as_json())
        return
    print_backtest(result)


@contextmanager
def _progress() -> Iterator[Progress | None]:
    """A bar per variant on stderr, shown only when stderr is a terminal."""
    from rich.progress import BarColumn, TaskProgressColumn, TextColumn
    from rich.progress import Progress as Bar

    from engine.console import terminal

    console = terminal(stderr=True)
    if not console.is_terminal:
        yield None
        return
    with Bar(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def report(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(f"replaying {name}", total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield report
