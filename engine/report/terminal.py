"""The report as rich tables in the terminal."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.console import terminal
from engine.report.data import NO_BAND, TIMES, Report


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def _bar(count: int, top: int, width: int = 24) -> str:
    return "█" * round(width * count / top) if top else ""


def tables(report: Report) -> list[Table]:
    found = []
    bands = Table("band", "range", "contacts", "share", title="Contacts per band (buying stage)")
    for band in report.bands:
        bands.add_row(
            escape(band.list),
            band.range,
            f"{band.contacts:,}",
            percent(report.share(band.contacts)),
        )
    bands.add_row(NO_BAND, "", f"{report.no_band:,}", percent(report.share(report.no_band)))
    found.append(bands)

    histogram = Table(report.score, "contacts", "", title=f"{report.score} distribution")
    top = max((b.contacts for b in report.histogram), default=0)
    for item in report.histogram:
        histogram.add_row(item.label(), f"{item.contacts:,}", _bar(item.contacts, top))
    histogram.add_row("no score", f"{report.contacts - report.scored:,}", "")
    if report.score_stats:
        stats = report.score_stats
        histogram.caption = (
            f"median {stats['median']:g}, mean {stats['mean']:g}, max {stats['max']:g}"
        )
    found.append(histogram)

    matrix = Table(title=f"{report.grade_name} {TIMES} band")
    for header in [report.grade_name, *report.columns, "all"]:
        matrix.add_column(escape(header), overflow="fold")
    for grade in report.grades:
        row = report.matrix[grade]
        matrix.add_row(grade, *(f"{row[c]:,}" for c in report.columns), f"{sum(row.values()):,}")
    found.append(matrix)

    cold = Table("cold leads", "contacts", "share", title="Cold leads")
    since = report.cold_after.before(report.as_of)
    cold.add_row(
        f"no {report.score} increase in {report.cold_after.describe()} "
        f"(since {since.strftime('%Y-%m-%d %H:%M')})",
        f"{report.cold:,}",
        percent(report.share(report.cold)),
    )
    cold.add_row(
        "  of them with no increase ever",
        f"{report.cold_never_scored:,}",
        percent(report.share(report.cold_never_scored)),
    )
    found.append(cold)

    lists = Table("list", "contacts", "share", title="List sizes")
    for name, count in report.lists:
        lists.add_row(escape(name), f"{count:,}", percent(report.share(count)))
    found.append(lists)

    funnel = Table(
        "stage",
        "reached it or a higher one",
        "of previous",
        "of all",
        title="Funnel between stages",
    )
    previous = None
    for name, count in report.funnel:
        ratio = "" if previous is None else (percent(count / previous) if previous else "-")
        funnel.add_row(escape(name), f"{count:,}", ratio, percent(report.share(count)))
        previous = count
    found.append(funnel)

    if report.weeks:
        messages = Table("week of", *report.channels, "all", title="Messages per channel per week")
        for index, week in enumerate(report.weeks):
            counts = [report.messages[channel][index] for channel in report.channels]
            messages.add_row(week.isoformat(), *(f"{c:,}" for c in counts), f"{sum(counts):,}")
        found.append(messages)
    return found


def print_report(report: Report, console: Console | None = None) -> None:
    console = console or terminal()
    model = report.model
    about = (
        f"score model {model.id} v{model.version}, sales-ready at {model.sales_ready:g}"
        if model is not None and model.sales_ready is not None
        else (f"score model {model.id} v{model.version}" if model else "no score model")
    )
    console.print(
        f"{report.contacts:,} contacts as of {report.as_of.strftime('%Y-%m-%d %H:%M')} UTC; "
        f"{report.score}: {about}",
        markup=False,
        highlight=False,
    )
    for table in tables(report):
        console.print(table)
    if not report.weeks:
        console.print("Messages per channel per week: no messages in the outbox")
