"""The report as one self-contained HTML page: CSS inline, charts as inline SVG (glyphs drawn
as paths), no script, no font, no address to fetch. It opens from a file with no network."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape

from engine.report.charts import chart_svgs
from engine.report.data import NO_BAND, TIMES, Report
from engine.report.terminal import percent

CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f5f7fa; color: #1f2933;
  font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2933; color: #fff; padding: 20px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #cbd2d9; }
main { padding: 20px 32px 40px; display: grid; gap: 20px;
  grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.kpis { grid-column: 1 / -1; display: grid; gap: 12px;
  grid-template-columns: repeat(auto-fit, minmax(180px, 1fr)); }
.kpi { background: #fff; border-radius: 8px; padding: 14px 16px;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.kpi b { display: block; font-size: 24px; }
.kpi span { color: #7b8794; }
section { background: #fff; border-radius: 8px; padding: 16px 18px;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); min-width: 0; }
section.wide { grid-column: 1 / -1; }
section h2 { margin: 0 0 8px; font-size: 16px; }
figure { margin: 0; }
figure svg { width: 100%; height: auto; display: block; }
table { border-collapse: collapse; width: 100%; margin-top: 10px; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #e4e7eb; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { color: #52606d; font-weight: 600; }
details summary { cursor: pointer; color: #52606d; margin-top: 8px; }
footer { padding: 0 32px 24px; color: #7b8794; font-size: 12px; }
"""

_DECLARATIONS = re.compile(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<metadata>.*?</metadata>", re.S)
_IDS = re.compile(r'\bid="([^"]+)"')
_REFERENCES = re.compile(r'(href="#|url\(#)')


def inline_svg(svg: str, prefix: str) -> str:
    """A standalone SVG ready to sit in the page: no XML declaration, doctype or metadata,
    and its ids prefixed, so the charts' clip paths and glyphs never clash."""
    svg = _DECLARATIONS.sub("", svg).strip()
    svg = _IDS.sub(lambda m: f'id="{prefix}-{m.group(1)}"', svg)
    return _REFERENCES.sub(lambda m: f"{m.group(1)}{prefix}-", svg)


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _section(name: str, title: str, svg: str, table: str, wide: bool = False) -> str:
    return (
        f'<section id="{name}"{" class=wide" if wide else ""}><h2>{escape(title)}</h2>'
        f'<figure class="chart" data-chart="{name}">{inline_svg(svg, name)}</figure>'
        f"<details><summary>figures</summary>{table}</details></section>"
    )


def render_html(report: Report) -> str:
    svgs = chart_svgs(report)
    share = report.share
    top = report.bands[-1] if report.bands else None
    kpis = [
        (f"{report.contacts:,}", "contacts"),
        (
            (f"{top.contacts:,} ({percent(share(top.contacts))})", f"on {top.list}")
            if top is not None
            else ("-", "no score model")
        ),
        (
            f"{report.cold:,} ({percent(share(report.cold))})",
            f"cold: no {report.score} increase in {report.cold_after.describe()}",
        ),
        (f"{len(report.lists):,}", "lists with members"),
        (
            f"{sum(sum(counts) for counts in report.messages.values()):,}",
            "messages in the outbox",
        ),
    ]
    kpi_html = "".join(
        f'<div class="kpi"><b>{escape(v)}</b><span>{escape(k)}</span></div>' for v, k in kpis
    )
    bands = _table(
        ["band", "range", "contacts", "share"],
        [
            *(
                (b.list, b.range, f"{b.contacts:,}", percent(share(b.contacts)))
                for b in report.bands
            ),
            (NO_BAND, "", f"{report.no_band:,}", percent(share(report.no_band))),
        ],
    )
    histogram = _table(
        [report.score, "contacts"],
        [
            *((b.label(), f"{b.contacts:,}") for b in report.histogram),
            ("no score", f"{report.contacts - report.scored:,}"),
        ],
    )
    funnel_rows = []
    previous: int | None = None
    for name, count in report.funnel:
        ratio = "" if previous is None else (percent(count / previous) if previous else "-")
        funnel_rows.append((name, f"{count:,}", ratio, percent(share(count))))
        previous = count
    funnel = _table(["stage", "reached it or higher", "of previous", "of all"], funnel_rows)
    matrix = _table(
        [report.grade_name, *report.columns],
        ([g, *(f"{report.matrix[g][c]:,}" for c in report.columns)] for g in report.grades),
    )
    since = report.cold_after.before(report.as_of)
    cold = _table(
        ["cold leads", "contacts", "share"],
        [
            (
                f"no increase since {since.strftime('%Y-%m-%d %H:%M')}",
                f"{report.cold:,}",
                percent(share(report.cold)),
            ),
            (
                "of them with no increase ever",
                f"{report.cold_never_scored:,}",
                percent(share(report.cold_never_scored)),
            ),
        ],
    )
    lists = _table(
        ["list", "contacts", "share"],
        ((name, f"{count:,}", percent(share(count))) for name, count in report.lists),
    )
    messages = _table(
        ["week of", *report.channels],
        (
            [week.isoformat(), *(f"{report.messages[c][i]:,}" for c in report.channels)]
            for i, week in enumerate(report.weeks)
        ),
    )
    sections = [
        _section("bands", "Contacts per band (buying stage)", svgs["bands"], bands),
        _section("histogram", f"{report.score} distribution", svgs["histogram"], histogram),
        _section(
            "funnel",
            "Funnel: contacts that reached each band or a higher one",
            svgs["funnel"],
            funnel,
        ),
        _section("matrix", f"{report.grade_name} {TIMES} band", svgs["matrix"], matrix),
        _section(
            "cold",
            f"Cold leads: {report.cold:,} ({percent(share(report.cold))}) without a "
            f"{report.score} increase in {report.cold_after.describe()}",
            svgs["cold"],
            cold,
        ),
        _section("lists", "List sizes", svgs["lists"], lists),
        _section("messages", "Messages per channel", svgs["messages"], messages, wide=True),
    ]
    model = report.model
    about = (
        f"{report.score} from score model {model.id} v{model.version}"
        + (f", sales-ready at {model.sales_ready:g}" if model.sales_ready is not None else "")
        if model is not None
        else f"{report.score}: no score model deployed"
    )
    stamp = report.as_of.strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Leadflow report, {escape(stamp)} UTC</title><style>{CSS}</style></head>"
        f"<body><header><h1>Leadflow report</h1><p>{report.contacts:,} contacts as of "
        f"{escape(stamp)} UTC; {escape(about)}</p></header>"
        f'<main><div class="kpis">{kpi_html}</div>{"".join(sections)}</main>'
        "<footer>Made by leadflow report. Bands are the score model's band lists, lowest "
        "first; the funnel counts contacts that were ever on a band list or a higher one "
        "(from the audit).</footer></body></html>\n"
    )
