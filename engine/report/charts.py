"""The report's charts, drawn with matplotlib on figures of their own (no pyplot, no global
state): one figure per chart for the HTML page (SVG), all of them on one figure for PNG."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from engine.report.data import NO_BAND, TIMES, Report

INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
ACCENT = "#2f6fde"
NEUTRAL = "#bcccdc"
COLD = "#7cc4e8"


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(
        {
            "font.family": "DejaVu Sans",
            "font.size": 10,
            "axes.edgecolor": GRID,
            "axes.labelcolor": INK,
            "axes.titlesize": 12,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
            "axes.spines.top": False,
            "axes.spines.right": False,
            "xtick.color": MUTED,
            "ytick.color": MUTED,
            "text.color": INK,
            "svg.fonttype": "path",  # glyphs as paths: the SVG needs no font to show
            "svg.hashsalt": "leadflow-report",  # the same report gives the same SVG
            "text.parse_math": False,  # list names are text: "$1k-$5k" is not math
        }
    ):
        yield


def band_colors(count: int) -> list[Any]:
    """Cool to warm, lowest band first."""
    colormap = matplotlib.colormaps["YlOrRd"]
    if count <= 1:
        return [colormap(0.6)] * count
    return [colormap(0.25 + 0.7 * i / (count - 1)) for i in range(count)]


def _empty(ax: Axes, title: str, why: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", color=MUTED, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def draw_bands(ax: Axes, report: Report) -> None:
    title = "Contacts per band (buying stage)"
    if not report.contacts:
        _empty(ax, title, "no contacts")
        return
    names = [b.list for b in report.bands] + [NO_BAND]
    counts = [b.contacts for b in report.bands] + [report.no_band]
    colors = [*band_colors(len(report.bands)), NEUTRAL]
    positions = list(range(len(names)))[::-1]
    ax.barh(positions, counts, color=colors)
    ax.set_yticks(positions, names)
    top = max(counts) or 1
    for y, count in zip(positions, counts, strict=True):
        ax.text(
            count + top * 0.01,
            y,
            f"{count:,} ({_percent(report.share(count))})",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, top * 1.35)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("contacts")
    ax.set_title(title)


def draw_histogram(ax: Axes, report: Report) -> None:
    title = f"{report.score} distribution"
    if not report.histogram:
        _empty(ax, title, f"no contact has a {report.score}")
        return
    colors = band_colors(len(report.bands))
    model = report.model
    width = report.histogram[0].high - report.histogram[0].low
    lows = [b.low for b in report.histogram]
    widths = [width] * len(lows)
    fill = []
    for item in report.histogram:
        band = model.band_of(item.low) if model is not None else None
        index = next((i for i, b in enumerate(report.bands) if band and b.list == band.list), None)
        fill.append(colors[index] if index is not None else ACCENT)
    ax.bar(lows, [b.contacts for b in report.histogram], widths, align="edge", color=fill)
    ready = report.sales_ready
    if ready is not None:
        ax.axvline(ready, color=INK, linestyle="--", linewidth=1)
        ax.text(ready, 1.0, f" sales-ready {ready:g}", transform=ax.get_xaxis_transform(), va="top")
    last = report.histogram[-1]
    edges = [*lows, *([] if last.open else [last.high])]
    step = max(1, len(edges) // 12)
    ax.set_xticks(edges[::step], [f"{edge:g}" for edge in edges[::step]])
    if last.open:
        ax.text(last.low + width / 2, last.contacts, "and\nmore", ha="center", va="bottom")
    ax.set_xlabel(f"{report.score} (bins of {width:g})")
    ax.set_ylabel("contacts")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", color=GRID)
    ax.set_axisbelow(True)
    ax.set_title(title)


def draw_matrix(ax: Axes, report: Report) -> None:
    title = f"{report.grade_name} {TIMES} band"
    if not report.contacts:
        _empty(ax, title, "no contacts")
        return
    columns = report.columns
    grid = [[report.matrix[g][c] for c in columns] for g in report.grades]
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    top = max(max(row) for row in grid) or 1
    for r, row in enumerate(grid):
        for c, count in enumerate(row):
            ax.text(
                c,
                r,
                f"{count:,}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if count > top * 0.55 else INK,
            )
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right")
    ax.set_yticks(range(len(report.grades)), report.grades)
    ax.spines[:].set_visible(False)
    ax.tick_params(length=0)
    image.set_clim(0, top)
    ax.set_title(title)


def draw_funnel(ax: Axes, report: Report) -> None:
    title = "Funnel: contacts that reached each band or a higher one"
    funnel = report.funnel
    if not report.bands:
        _empty(ax, title, "no score model with bands is deployed")
        return
    names = [name for name, _ in funnel]
    counts = [count for _, count in funnel]
    colors = [NEUTRAL, *band_colors(len(report.bands))]
    positions = list(range(len(names)))[::-1]
    top = max(counts) or 1
    ax.barh(positions, counts, left=[(top - c) / 2 for c in counts], color=colors)
    for index, (y, count) in enumerate(zip(positions, counts, strict=True)):
        note = f"{count:,}"
        if index:
            previous = counts[index - 1]
            note += f"  ({_percent(count / previous) if previous else '-'} of previous)"
        ax.text((top + count) / 2 + top * 0.02, y, note, va="center", fontsize=9)
    ax.set_yticks(positions, names)
    ax.set_xlim(0, top * 1.45)
    ax.set_xticks([])
    ax.spines[:].set_visible(False)
    ax.set_title(title)


def draw_cold(ax: Axes, report: Report) -> None:
    days = report.cold_after.approximate().total_seconds() / 86400
    title = (
        f"Cold leads: {report.cold:,} ({_percent(report.share(report.cold))}) "
        f"without a {report.score} increase in {report.cold_after.describe()}"
    )
    if not report.quiet_days:
        _empty(ax, title, "no contacts")
        return
    top = max(report.quiet_days)
    width = 7.0 if top > 70 else 1.0
    count = int(top // width) + 1
    bins = [0] * count
    for value in report.quiet_days:
        bins[min(count - 1, int(value // width))] += 1
    lows = [i * width for i in range(count)]
    colors = [COLD if low >= days else ACCENT for low in lows]
    ax.bar(lows, bins, width, align="edge", color=colors)
    ax.axvline(days, color=INK, linestyle="--", linewidth=1)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(
        handles=[Patch(color=ACCENT, label="increased lately"), Patch(color=COLD, label="cold")],
        frameon=False,
        fontsize=9,
    )
    ax.set_xlabel(
        f"days since the last {report.score} increase (or since created), bins of {width:g}"
    )
    ax.set_ylabel("contacts")
    ax.grid(axis="y", color=GRID)
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=11)


def draw_lists(ax: Axes, report: Report, most: int = 15) -> None:
    title = "List sizes"
    if not report.lists:
        _empty(ax, title, "no list has members")
        return
    shown = report.lists[:most]
    names = [name for name, _ in shown]
    counts = [count for _, count in shown]
    positions = list(range(len(shown)))[::-1]
    ax.barh(positions, counts, color=ACCENT)
    ax.set_yticks(positions, names)
    top = max(counts) or 1
    for y, count in zip(positions, counts, strict=True):
        ax.text(count + top * 0.01, y, f"{count:,}", va="center", fontsize=9)
    ax.set_xlim(0, top * 1.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("contacts")
    more = len(report.lists) - len(shown)
    ax.set_title(title + (f" (largest {most}, {more} more)" if more > 0 else ""))


def draw_messages(ax: Axes, report: Report) -> None:
    title = "Messages per channel per week"
    if not report.weeks:
        _empty(ax, title, "no messages in the outbox")
        return
    colormap = matplotlib.colormaps["tab10"]
    positions = list(range(len(report.weeks)))
    bottom = [0] * len(report.weeks)
    for index, channel in enumerate(report.channels):
        counts = report.messages[channel]
        ax.bar(positions, counts, 0.8, bottom=bottom, label=channel, color=colormap(index % 10))
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    step = max(1, len(positions) // 12)
    ax.set_xticks(
        positions[::step],
        [week.strftime("%d %b %y") for week in report.weeks[::step]],
        rotation=30,
        ha="right",
    )
    ax.set_ylabel("messages")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(axis="y", color=GRID)
    ax.set_axisbelow(True)
    ax.legend(frameon=False, fontsize=9)
    ax.set_title(title)


Drawer = Callable[[Axes, Report], None]
CHARTS: list[tuple[str, Drawer, tuple[float, float]]] = [
    ("bands", draw_bands, (7.0, 3.6)),
    ("histogram", draw_histogram, (7.0, 3.6)),
    ("funnel", draw_funnel, (7.0, 3.6)),
    ("matrix", draw_matrix, (7.0, 3.6)),
    ("cold", draw_cold, (7.0, 3.6)),
    ("lists", draw_lists, (7.0, 3.6)),
    ("messages", draw_messages, (14.4, 3.6)),
]


def chart_svgs(report: Report) -> dict[str, str]:
    """Each chart as a standalone SVG document, untitled (the page titles it)."""
    found = {}
    with style():
        for name, draw, size in CHARTS:
            if name == "messages" and not report.weeks:
                size = (size[0], 1.0)  # only says there are none
            figure = Figure(figsize=size, layout="constrained")
            ax = figure.add_subplot()
            draw(ax, report)
            ax.set_title("")
            found[name] = _save(figure, "svg").decode("utf-8")
    return found


def report_png(report: Report, dpi: int = 80) -> bytes:
    """All the charts on one figure."""
    with style():
        last = 1.0 if report.weeks else 0.3  # "no messages" needs little room
        figure = Figure(figsize=(15, 12 + 4 * last), layout="constrained")
        grid = figure.add_gridspec(4, 2, height_ratios=[1, 1, 1, last])
        for index, (_, draw, _size) in enumerate(CHARTS):
            row, column = divmod(index, 2)
            spot = grid[row, :] if index == len(CHARTS) - 1 else grid[row, column]
            draw(figure.add_subplot(spot), report)
        figure.suptitle(
            f"Leadflow report: {report.contacts:,} contacts, as of "
            f"{report.as_of.strftime('%Y-%m-%d %H:%M')} UTC",
            fontsize=14,
            fontweight="bold",
            x=0.01,
            ha="left",
        )
        return _save(figure, "png", dpi=dpi)


def _save(figure: Figure, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {"Software": None}
    figure.savefig(buffer, format=fmt, metadata=metadata, **options)
    return buffer.getvalue()
