"""One self-contained, offline HTML file: the markdown report of each group (leaderboard,
seeds, per-tier breakdowns, lineage, grids, cards, failures) with its plots as inline SVG.
No script, no font, no CDN, no request of any kind: it opens from a mail attachment or on a
phone. The markdown is rendered by markdown-it-py (which rich already brings).

Names, notes, descriptions and errors come from set and results files, which anyone may have
written: they are text, never HTML (raw HTML off, links only to the web or within the page,
images shown as links), and the page's Content-Security-Policy refuses script and every load
but its own inline styles and data: images, should anything slip through."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from markdown_it import MarkdownIt

from ramsweep.errors import ConfigError
from ramsweep.report import plots
from ramsweep.report.grid_view import grids
from ramsweep.report.rows import Filters, Metric, Record, groups, leaderboard
from ramsweep.report.tables import group_markdown

# default-src covers script, frames, objects, fonts, fetches and media; base-uri and form-action
# do not fall back to it. The heatmaps are data: PNGs inside the inline SVG.
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
CARDS = 20  # per group: a 729-config grid's cards would bury the rest
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#1d1d1f}
h1{font-size:1.4em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:2em}h3{font-size:1em;margin-top:1.5em}
table{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}th{background:#f4f4f4}
td:nth-child(2),th:nth-child(2){text-align:left}code{font-size:.95em}blockquote{color:#555;margin:.3em 1em}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots svg{max-width:100%;height:auto}
.meta{color:#666;font-size:.85em}
"""


def render(records: list[Record], by: Metric, filters: Filters = Filters(), top: int = 3,
           reference: str | None = None, title: str = "ramsweep report") -> str:
    """The whole HTML document."""
    md = _markdown()
    sections = []
    for name, members in groups(records).items():
        body = md.render(group_markdown(name, members, by, filters, top, reference, cards=CARDS))
        sections.append(f"<section>{body}{_plots(leaderboard(members, by, filters), by)}</section>")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{POLICY}\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><p class=\"meta\">{len(records):,} results, ranked by {by.name}; "
            f"made {when}. Numbers are comparable only within a section.</p>"
            f"{''.join(sections) or '<p>no records yet</p>'}</body></html>\n")


def _markdown() -> MarkdownIt:
    """commonmark with tables, where `<` is always text, a remote image is a link rather than a
    request, and a link is clickable only to http(s) or an anchor in the page (a relative link
    has nothing beside a mailed file to point at); any other link stays as its source text."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")
    md.validateLink = lambda url: url.lower().startswith(("http://", "https://", "#"))
    return md


def _plots(ranked: list[Record], by: Metric) -> str:
    if not any(r.kind == "experiment" for r in ranked):
        return ""
    try:
        figures = [plots.metric_vs_bits(ranked, by), plots.empty_vs_bits(ranked), plots.accuracy_vs_ppl(ranked)]
        figures += [plots.grid_heatmap(grid, by) for grid in grids(ranked, by)]
    except ConfigError as err:  # no matplotlib: the report without its plots, saying why
        return f"<p class=\"meta\">({html.escape(str(err))})</p>"
    return "<h3>Plots</h3><div class=\"plots\">" + "".join(plots.svg(f) for f in figures) + "</div>"
