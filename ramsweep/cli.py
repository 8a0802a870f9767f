"""The `ramsweep` command: a thin typer shell over the library; no logic lives here.

This is the one place where library errors become a printed line and an exit code.
"""

from __future__ import annotations

import functools
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ramsweep.errors import ConfigError as RamsweepConfigError
from ramsweep.errors import RamsweepError
from ramsweep.sweep.interrupts import Interrupted

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
        except Interrupted as e:  # the runner has recorded what was in flight
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("ramsweep: interrupted", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


def log_line(message: str) -> None:
    """Plain timestamped lines on stderr: what cron mails and log files get."""
    print(f"{datetime.now().isoformat(timespec='seconds')} {message}", file=sys.stderr, flush=True)


@contextmanager
def progress_reporting():
    """(log, progress) callbacks: a rich bar with log lines above it when stderr is a
    terminal, plain timestamped lines otherwise."""
    if not err.is_terminal:
        yield log_line, lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("experiments", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield (lambda message: bar.console.log(message, markup=False, highlight=False)), progress


def names(option: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated values: --force a,b --force c."""
    return [n.strip() for value in option or [] if value for n in value.split(",") if n.strip()]


RESULTS = typer.Option(help="Results JSON file (created if missing).")
FULL_DATA = typer.Option("--full-data", help="Use whole splits, not the fast-mode prefixes.")
JOBS = typer.Option("--jobs", "-j", min=1, help="Experiments run at once, in worker processes (the numba threads "
                    "are shared out between them).")
RETRY = typer.Option(help="Run experiments whose last attempt failed again (interrupted ones always are).")
DATA = typer.Option("--data", help="Corpus: kjv (embedded; the default unless the set file has data:), wikitext2 (a local copy, see "
                    "--data-path) or text (any UTF-8 file or folder).")
DATA_PATH = typer.Option("--data-path", help="Folder of WikiText-2 (its wiki.*.tokens/.raw files or the Hugging "
                         "Face parquet download), or the file/folder of a text corpus.")
TOKENIZER = typer.Option("--tokenizer", help="word or gpt2 (default: word for kjv and text, gpt2 for wikitext2).")
TOKENIZER_FILES = typer.Option("--tokenizer-files", help="Folder with GPT-2's encoder.json and vocab.bpe "
                               "(default: those of the gpt2 extra).")
DEVICE = typer.Option("--device", help="auto, cpu, cuda, metal, wgpu or hybrid (CPU and GPU at once): where every "
                      "experiment runs, over the set file's device: (default auto: the fastest here). Results are "
                      "the same on every device.")
FORCE = typer.Option(help="Run this experiment again even if done (repeat, or comma-separate names).")


def data_spec(set_data, data: str | None, data_path: Path | None, tokenizer: str | None,
              tokenizer_files: Path | None, full_data: bool):
    """The set file's `data:` (if any) with the options given here on top."""
    from ramsweep.data.spec import with_options
    from ramsweep.errors import DataError

    try:
        return with_options(set_data, corpus=data, path=str(data_path) if data_path else None, tokenizer=tokenizer,
                            tokenizer_files=str(tokenizer_files) if tokenizer_files else None, full_data=full_data)
    except ValueError as e:  # pydantic's ValidationError: name the option, one line
        raise DataError(one_line_validation(e)) from None


def one_line_validation(e) -> str:
    options = {"corpus": "--data", "path": "--data-path", "tokenizer": "--tokenizer",
               "tokenizer_files": "--tokenizer-files"}
    first = e.errors()[0] if hasattr(e, "errors") else {"loc": (), "msg": str(e)}
    where = options.get(first["loc"][0], "--data") if first["loc"] else "--data"
    return f"{where}: {first['msg']}"


def run_and_summarize(set_, **options) -> None:
    from ramsweep.sweep.runner import run_set

    with progress_reporting() as (log, progress):
        summary = run_set(set_, log=log, progress=progress, **options)
        log(f"end: {len(summary.ran)} ran, {len(summary.skipped)} skipped (done, or run by another runner), "
            f"{len(summary.failed)} failed; results in {summary.results}")
    if summary.failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def run(
    set_: Annotated[str, typer.Option("--set", help="Set name (see `ramsweep sets`) or path to a YAML file.")],
    experiments: Annotated[Optional[str], typer.Option(help="Comma-separated experiment names to run.")] = None,
    results: Annotated[Path, RESULTS] = Path("experiments/results.json"),
    full_data: Annotated[bool, FULL_DATA] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
    jobs: Annotated[int, JOBS] = 1,
    retry_failed: Annotated[bool, RETRY] = True,
    force: Annotated[Optional[list[str]], FORCE] = None,
    device: Annotated[Optional[str], DEVICE] = None,
):
    """Run an experiment set, skipping experiments already completed in the results file.

    Several runners may share one results file (overlapping cron jobs): each claims an
    experiment before running it, so none runs twice. Exit code: 0 all done, 1 something
    failed, 2 bad config, 3 results file unusable, 130/143 interrupted (SIGINT/SIGTERM).
    """
    from ramsweep.config import load_set

    exp_set = load_set(set_)
    run_and_summarize(exp_set, experiments=names([experiments]) or None, results=results,
                      data=data_spec(exp_set.data, data, data_path, tokenizer, tokenizer_files, full_data),
                      jobs=jobs, retry_failed=retry_failed, force=names(force), device=device)


@app.command()
@user_errors
def grid(
    tiers: Annotated[Optional[int], typer.Option(help="Number of tiers (default and shapes: sets/grid.yaml).")] = None,
    bits: Annotated[Optional[str], typer.Option(help="Inclusive bit range of every tier, e.g. 8-16.")] = None,
    counts: Annotated[Optional[str], typer.Option(help="Clusters per tier, e.g. 100,400,rest.")] = None,
    neurons: Annotated[Optional[str], typer.Option(help="Neurons per cluster per tier, e.g. 15,10,5.")] = None,
    context: Annotated[Optional[int], typer.Option(help="Context tokens (default 4).")] = None,
    negatives: Annotated[Optional[int], typer.Option(help="Negative clusters per example (default 1000).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N configs of the grid order.")] = None,
    sample: Annotated[Optional[int], typer.Option(help="K configs drawn at random (see --seed).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the configs and their memory; run nothing.")] = False,
    results: Annotated[Path, RESULTS] = Path("experiments/results.json"),
    full_data: Annotated[bool, FULL_DATA] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
    jobs: Annotated[int, JOBS] = 1,
    retry_failed: Annotated[bool, RETRY] = True,
    device: Annotated[Optional[str], DEVICE] = None,
):
    """Sweep the bits of every tier over a range (week 9: 3 tiers x bits 8-16 = 729 configs).

    Configs come in an order that covers the space evenly early, so a night that ends before
    the grid does has still seen every bit value of every tier. Grid experiments are ordinary
    experiments: resumable, skipped when done, shared between runners.
    """
    from ramsweep.sweep.grid import grid_set, parse_range

    exp_set = grid_set(tiers, bits=parse_range(bits, "--bits") if bits else None,
                       counts=names([counts]) or None, neurons=numbers(neurons, "--neurons"),
                       context=context, negatives=negatives, limit=limit, sample=sample, seed=seed)
    spec = data_spec(exp_set.data, data, data_path, tokenizer, tokenizer_files, full_data)
    if dry_run:
        from ramsweep.sweep.grid import dry_run as describe

        sys.stdout.write(describe(exp_set, spec))
        return
    run_and_summarize(exp_set, results=results, data=spec, jobs=jobs, retry_failed=retry_failed, device=device)


def numbers(option: str | None, flag: str) -> list[int] | None:
    try:
        return [int(n) for n in names([option])] or None
    except ValueError:
        raise RamsweepConfigError(f"{flag}: '{option}' is not a comma-separated list of whole numbers, e.g. 15,10,5")


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
def status(
    results: Annotated[Path, typer.Argument(help="Results JSON file written by `ramsweep run`.")] = Path(
        "experiments/results.json"
    ),
    set_: Annotated[Optional[str], typer.Option("--set", help="Also list the set's experiments not started yet.")] = None,
    full_data: Annotated[bool, typer.Option("--full-data", help="The set runs with --full-data.")] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
):
    """Per experiment: done, failed, interrupted, running (by which runner) or pending, and
    an estimate of the time left. Reads only; safe while runners work."""
    from ramsweep.sweep.status import status as sweep_status
    from ramsweep.sweep.status import summary_line

    from ramsweep.config import load_set

    exp_set = load_set(set_) if set_ else None
    spec = data_spec(exp_set.data if exp_set else None, data, data_path, tokenizer, tokenizer_files, full_data)
    s = sweep_status(results, exp_set, data=spec)
    table = Table("experiment", "state", "detail", box=box.SIMPLE_HEAD)
    for r in s.rows:
        table.add_row(r.name, r.state, r.detail, style=STATE_STYLE.get(r.state, ""))
    out.print(table)
    out.print(summary_line(s), highlight=False)


STATE_STYLE = {"failed": "red", "interrupted": "yellow", "running": "cyan", "pending": "dim"}


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
