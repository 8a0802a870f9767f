"""`report()`: the library function behind `ramsweep report`. It returns the text of the
chosen format (the table format rendered as plain text), so it can be tested, piped or mailed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import orjson
from rich.console import Console

from ramsweep.errors import ConfigError
from ramsweep.report import html
from ramsweep.report.findings import findings_markdown
from ramsweep.report.rows import Filters, columns, wide_rows
from ramsweep.report.tables import DEFAULT_SORT, markdown, read, renderable

FORMATS = ("table", "md", "csv", "json", "html", "findings")


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise ConfigError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")


def report(results: str | Path | Sequence[str | Path], format: str = "table", top: int = 3,
           sort_by: str = DEFAULT_SORT, filters: Filters = Filters(), width: int = 140,
           reference: str | None = None, cards: int = 0, loaded: tuple | None = None) -> str:
    """The report of one or more results files in `format` (see the module docstring); `top`
    experiments per group get a per-tier breakdown. `loaded`: what read() gave for them already.
    Filters that keep no experiment raise NothingMatches (rows.Filters.check)."""
    check_format(format)
    records, by = loaded or read(results, sort_by)
    filters.check(records, [results] if isinstance(results, (str, Path)) else results)
    if format in ("csv", "json"):
        rows = wide_rows([r for r in records if filters.keep(r)], by)
        if format == "json":
            return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n"
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buf.getvalue()
    if format == "md":
        return markdown(records, by, filters, top, reference, cards)
    if format == "findings":  # the research's findings by input encoding (sets/findings.yaml)
        return findings_markdown([r for r in records if filters.keep(r)])
    if format == "html":
        return html.render(records, by, filters, top, reference)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable(records, by, filters, top, reference, width))
    return console.file.getvalue()
