"""The `ramsweep` command: a thin typer shell over the library; no logic lives here.

This is the one place where library errors become a printed line and an exit code.
"""

from __future__ import annotations

import functools
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from ramsweep.errors import RamsweepError

app = typer.Typer(
    help="Overnight sweeps of tiered RAM-neuron language-model experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
if not out.is_terminal:  # piped or in a cron log: full-width tables, never truncated
    out = Console(width=200)
err = Console(stderr=True)


def user_errors(command):
    """Turn a RamsweepError into one line on stderr and its exit code: no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RamsweepError as e:
            err.print(f"ramsweep: error: {e}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("ramsweep: interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def log_line(message: str) -> None:
    """Progress: rich log lines on a terminal, plain timestamped lines otherwise (cron mail)."""
    if err.is_terminal:
        err.log(message, markup=False, highlight=False)
    else:
        print(f"{datetime.now().isoformat(timespec='seconds')} {message}", file=sys.stderr, flush=True)


@app.command()
@user_errors
def run(
    set_: Annotated[str, typer.Option("--set", help="Set name (see `ramsweep sets`) or path to a YAML file.")],
    experiments: Annotated[Optional[str], typer.Option(help="Comma-separated experiment names to run.")] = None,
    results: Annotated[Path, typer.Option(help="Results JSON file (created if missing).")] = Path(
        "experiments/results.json"
    ),
    full_data: Annotated[bool, typer.Option("--full-data", help="Use whole splits, not the fast-mode prefixes.")] = False,
):
    """Run an experiment set, skipping experiments already completed in the results file."""
    from ramsweep.sweep.runner import run_set

    names = [n.strip() for n in experiments.split(",") if n.strip()] if experiments else None
    summary = run_set(set_, experiments=names, results=results, full_data=full_data, log=log_line)
    log_line(f"end: {len(summary.ran)} ran, {len(summary.skipped)} skipped (already done), "
             f"{len(summary.failed)} failed; results in {summary.results}")
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def report(
    results: Annotated[Path, typer.Argument(help="Results JSON file written by `ramsweep run`.")] = Path(
        "experiments/results.json"
    ),
    format: Annotated[str, typer.Option("--format", "-f", help="table, md, csv or json.")] = "table",
    top: Annotated[int, typer.Option(help="Experiments shown with a per-tier breakdown.")] = 3,
    rank_by: Annotated[str, typer.Option(help="Split whose PPL orders the ranking: test or validation.")] = "test",
):
    """Show completed experiments ranked by PPL, with a per-tier breakdown of the best."""
    from ramsweep.report import tables

    if format == "table":
        out.print(tables.renderable(tables.ranked(results, rank_by), top, rank_by))
    else:
        sys.stdout.write(tables.report(results, format, top, rank_by))


@app.command()
@user_errors
def sets():
    """List the experiment sets and how many experiments each holds."""
    from ramsweep.config import available_sets

    table = Table("set", "experiments", "description")
    for name, count, description in available_sets():
        table.add_row(name, str(count), description)
    out.print(table)


def main() -> None:
    app()
