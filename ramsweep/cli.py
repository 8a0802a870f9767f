"""The `ramsweep` command: a thin typer shell over the library; no logic lives here.

This is the one place where library errors become a printed line and an exit code. Commands
import the library inside their bodies, so that `ramsweep -h`, `--version` and `sets` answer
at once instead of loading numba first (the import graph has no cycle to dodge: see
tests/test_imports.py).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import ramsweep
from ramsweep.data.spec import with_options
from ramsweep.errors import ConfigError as RamsweepConfigError
from ramsweep.errors import RamsweepError
from ramsweep.sweep.interrupts import Interrupted

app = typer.Typer(
    help="Overnight sweeps of tiered RAM-neuron language-model experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help: flags read as flags, and it fits any terminal
    context_settings={"help_option_names": ["-h", "--help"]},
)
if hasattr(typer.core.TyperArgument, "display_type_rich"):  # typer shows "RESULTS... <list[Path]>": the metavar says it
    _shown_type = typer.core.TyperArgument.display_type_rich
    typer.core.TyperArgument.display_type_rich = lambda self, ctx: None if self.metavar else _shown_type(self, ctx)
out = Console()
if not out.is_terminal:  # piped or in a cron log: full-width tables, never truncated, unless COLUMNS says
    out = Console(width=int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 200)
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


class InFlight(ProgressColumn):
    """The progress bar's column of what the experiments in flight are doing (a Tracker's)."""

    def __init__(self, tracker):
        super().__init__()
        self.tracker = tracker

    def render(self, task) -> Text:
        return Text(self.tracker.describe() if self.tracker is not None else "", style="cyan")


@contextmanager
def logging_to_stderr(tracker=None):
    """The library logs to logger "ramsweep": on a terminal through rich (with a progress bar
    below the lines, see progress()), otherwise as plain timestamped lines, which is what cron
    mails and log files get. Yields the progress(done, total) and stage(text) callbacks, which
    only a terminal shows."""
    logger = logging.getLogger("ramsweep")
    bar = None
    if err.is_terminal:
        handler: logging.Handler = RichHandler(console=err, show_path=False, markup=False, highlighter=None)
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       InFlight(tracker), console=err, transient=True)
    else:
        handler = logging.StreamHandler(sys.stderr)
        # host:pid on every line: overlapping cron runners write to one log and must be told apart
        runner = f"{socket.gethostname()}:{os.getpid()}"
        handler.setFormatter(logging.Formatter(f"%(asctime)s {runner} %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        if bar is None:
            yield (lambda done, total: None), (lambda text: None)
        else:
            with bar:
                task = bar.add_task("starting", total=None)
                yield (lambda done, total: bar.update(task, completed=done, total=total),
                       lambda text: bar.update(task, description=text))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def names(option: list[str] | None) -> list[str]:
    """Repeatable options that also take comma-separated values: --force a,b --force c."""
    return [n.strip() for value in option or [] if value for n in value.split(",") if n.strip()]


RESULTS = typer.Option(metavar="PATH", help="Results file, created if missing: a .jsonl name makes a journal "
                       "(constant-time appends, for big grids), any other a JSON document.")
FULL_DATA = typer.Option("--full-data", help="Use whole splits, not the fast-mode prefixes.")
JOBS = typer.Option("--jobs", "-j", min=1, metavar="N", help="Experiments run at once, in worker processes (the numba "
                    "threads are shared out between them).")
EXECUTOR = typer.Option(metavar="KIND", help="local (this process, or --jobs worker processes) or dask (a Dask "
                        "cluster: --workers N on this machine, or --scheduler's; needs the dist extra).")
SCHEDULER = typer.Option(metavar="ADDRESS", help="With --executor dask: the scheduler to run on, e.g. "
                         "tcp://head:8786 (start workers with `ramsweep worker`).")
WORKERS = typer.Option(metavar="N", help="With --executor dask: a local cluster of N worker processes (one per GPU "
                       "where there are GPUs).")
RETRY = typer.Option(help="Run experiments whose last attempt failed again (interrupted ones always are).")
DATA = typer.Option("--data", metavar="CORPUS", help="kjv (embedded; the default unless the set file has data:), "
                    "wikitext2 (a local copy, see --data-path) or text (any UTF-8 file or folder).")
DATA_PATH = typer.Option("--data-path", metavar="PATH", help="Folder of WikiText-2 (its wiki.*.tokens/.raw files or "
                         "the Hugging Face parquet download), or the file/folder of a text corpus.")
TOKENIZER = typer.Option("--tokenizer", metavar="NAME", help="word or gpt2 (default: word for kjv and text, gpt2 "
                         "for wikitext2).")
TOKENIZER_FILES = typer.Option("--tokenizer-files", metavar="DIR", help="Folder with GPT-2's encoder.json and "
                               "vocab.bpe (default: those of the gpt2 extra).")
DEVICE = typer.Option("--device", metavar="DEVICE", help="auto, cpu, cuda, metal, wgpu or hybrid (CPU and GPU at "
                      "once): where every experiment runs, over the set file's device: (default auto: the fastest "
                      "here). Results are the same on every device.")
SEEDS = typer.Option("--seeds", metavar="SEEDS", help="Run every experiment once per seed, e.g. 0,1,2 (named "
                     "NAME.s0, NAME.s1, ...; each seed is its own result).")
FORCE = typer.Option(metavar="NAME", help="Run this experiment again even if done (repeat, or comma-separate names).")
DRY_RUN = typer.Option("--dry-run", "-n", help="Say what would run, what is done and what other runners hold, with "
                       "each experiment's memory; run and write nothing.")
RESULTS_ARGUMENT = typer.Argument(metavar="RESULTS", help="Results file written by `ramsweep run` (.json or .jsonl).")


def data_spec(set_data, data: str | None, data_path: Path | None, tokenizer: str | None,
              tokenizer_files: Path | None, full_data: bool):
    """The set file's `data:` (if any) with the options given here on top."""
    return with_options(set_data, corpus=data, path=str(data_path) if data_path else None, tokenizer=tokenizer,
                        tokenizer_files=str(tokenizer_files) if tokenizer_files else None, full_data=full_data)


def run_or_preview(exp_set, dry_run: bool, **options) -> None:
    """`run` and `grid`: print the dry run, or run the set with logging and a summary line."""
    from ramsweep.sweep import runner

    if dry_run:
        for option in ("jobs", "executor", "scheduler", "workers"):
            options.pop(option)
        sys.stdout.write(runner.dry_run(exp_set, **options))
        return
    from ramsweep.sweep.progress import Tracker

    tracker = Tracker()  # the bar shows what each experiment in flight is doing
    with logging_to_stderr(tracker) as (progress, stage):
        summary = runner.run_set(exp_set, progress=progress, stage=stage, tracker=tracker, **options)
        logging.getLogger("ramsweep").info(
            f"end: {len(summary.ran)} ran, {len(summary.skipped)} skipped (done, or run by another runner), "
            f"{len(summary.failed)} failed; results in {summary.results}")
    if summary.failed:
        raise typer.Exit(1)


def version_option(value: bool) -> None:
    if value:
        print(f"ramsweep {ramsweep.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_option, is_eager=True,
                                          help="Print the version and exit.")] = False,
):
    """Overnight sweeps of tiered RAM-neuron language-model experiments."""


@app.command()
@user_errors
def run(
    set_: Annotated[str, typer.Option("--set", metavar="SET", help="Set name (see `ramsweep sets`) or path to a "
                                      "YAML file.")],
    experiments: Annotated[Optional[str], typer.Option(metavar="NAMES", help="Comma-separated experiment names "
                                                       "to run (NAME alone: every seed NAME.sK of it).")] = None,
    results: Annotated[Path, RESULTS] = Path("experiments/results.json"),
    full_data: Annotated[bool, FULL_DATA] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
    jobs: Annotated[int, JOBS] = 1,
    executor: Annotated[str, EXECUTOR] = "local",
    scheduler: Annotated[Optional[str], SCHEDULER] = None,
    workers: Annotated[Optional[int], WORKERS] = None,
    retry_failed: Annotated[bool, RETRY] = True,
    force: Annotated[Optional[list[str]], FORCE] = None,
    device: Annotated[Optional[str], DEVICE] = None,
    seeds: Annotated[Optional[str], SEEDS] = None,
    dry_run: Annotated[bool, DRY_RUN] = False,
):
    """Run an experiment set, skipping experiments already completed in the results file.

    Several runners may share one results file (overlapping cron jobs): each claims an
    experiment before running it, so none runs twice. Exit code: 0 all done, 1 something
    failed, 2 bad config, 3 results file unusable, 4 Dask scheduler lost, 129/130/143 stopped
    (SIGHUP/SIGINT/SIGTERM).
    """
    from ramsweep.sets import load_set

    exp_set = load_set(set_)
    if experiments is not None and not names([experiments]):
        raise RamsweepConfigError(f"--experiments: '{experiments}' names no experiment; give names such as "
                                  "tier0_18bit,neurons_25_gradient, or leave it out to run the whole set")
    run_or_preview(exp_set, dry_run, experiments=names([experiments]) or None, results=results,
                   data=data_spec(exp_set.data, data, data_path, tokenizer, tokenizer_files, full_data),
                   jobs=jobs, retry_failed=retry_failed, force=names(force), device=device,
                   seeds=numbers(seeds, "--seeds"), executor=executor, scheduler=scheduler, workers=workers)


@app.command()
@user_errors
def grid(
    tiers: Annotated[Optional[int], typer.Option(metavar="N", help="Number of tiers (default and shapes: "
                                                 "sets/grid.yaml).")] = None,
    bits: Annotated[Optional[str], typer.Option(metavar="LOW-HIGH", help="Inclusive bit range of every tier, "
                                                "e.g. 8-16.")] = None,
    counts: Annotated[Optional[str], typer.Option(metavar="COUNTS", help="Clusters per tier, e.g. "
                                                  "100,400,rest.")] = None,
    neurons: Annotated[Optional[str], typer.Option(metavar="NEURONS", help="Neurons per cluster per tier, e.g. "
                                                   "15,10,5.")] = None,
    context: Annotated[Optional[int], typer.Option(metavar="N", help="Context tokens (default 4).")] = None,
    negatives: Annotated[Optional[int], typer.Option(metavar="N", help="Negative clusters per example (default "
                                                     "1000).")] = None,
    limit: Annotated[Optional[int], typer.Option(metavar="N", help="Only the first N configs of the grid "
                                                 "order.")] = None,
    sample: Annotated[Optional[int], typer.Option(metavar="K", help="K configs drawn at random (see "
                                                  "--seed).")] = None,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of --sample.")] = 0,
    dry_run: Annotated[bool, DRY_RUN] = False,
    results: Annotated[Path, RESULTS] = Path("experiments/results.json"),
    full_data: Annotated[bool, FULL_DATA] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
    jobs: Annotated[int, JOBS] = 1,
    executor: Annotated[str, EXECUTOR] = "local",
    scheduler: Annotated[Optional[str], SCHEDULER] = None,
    workers: Annotated[Optional[int], WORKERS] = None,
    retry_failed: Annotated[bool, RETRY] = True,
    device: Annotated[Optional[str], DEVICE] = None,
    seeds: Annotated[Optional[str], SEEDS] = None,
):
    """Sweep the bits of every tier over a range (week 9: 3 tiers x bits 8-16 = 729 configs).

    Configs come in an order that covers the space evenly early, so a night that ends before
    the grid does has still seen every bit value of every tier. Grid experiments are ordinary
    experiments: resumable, skipped when done, shared between runners.
    """
    from ramsweep.grid import grid_set, parse_range
    from ramsweep.sets import load_grid

    exp_set = grid_set(load_grid(), tiers, bits=parse_range(bits, "--bits") if bits else None,
                       counts=names([counts]) or None, neurons=numbers(neurons, "--neurons", "15,10,5"),
                       context=context, negatives=negatives, limit=limit, sample=sample, seed=seed)
    run_or_preview(exp_set, dry_run, results=results, jobs=jobs, retry_failed=retry_failed, device=device,
                   data=data_spec(exp_set.data, data, data_path, tokenizer, tokenizer_files, full_data),
                   seeds=numbers(seeds, "--seeds"), executor=executor, scheduler=scheduler, workers=workers)


def numbers(option: str | None, flag: str, example: str = "0,1,2") -> list[int] | None:
    """A comma-separated option of whole numbers; None when not given (given empty is an error:
    `--seeds ""` from an unset shell variable must not quietly run seed 0 alone)."""
    try:
        found = [int(n) for n in names([option])]
    except ValueError:
        found = []
    if option is not None and not found:
        raise RamsweepConfigError(f"{flag}: '{option}' is not a comma-separated list of whole numbers, e.g. {example}")
    return found or None


@app.command()
@user_errors
def report(
    results: Annotated[Optional[list[Path]], typer.Argument(metavar="RESULTS...", help="Results files written by "
                                                            "`ramsweep run` (.json or .jsonl); several are read "
                                                            "as one.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table, md, csv (one wide row per "
                                        "record), json, html (one self-contained file with the plots; "
                                        "`> report.html`), or findings (the research's findings by input "
                                        "encoding, from a run of the findings set).")] = "table",
    sort_by: Annotated[str, typer.Option("--sort-by", metavar="METRIC", help="val_ppl (default), test_ppl, "
                                         "val_cal_ppl, test_bpb, val_acc, ... or a tier's, e.g. tier0.val_ppl; "
                                         "each in its own direction.")] = "val_ppl",
    top: Annotated[int, typer.Option(metavar="N", min=0, help="Experiments per group with a per-tier "
                                     "breakdown.")] = 3,
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", min=1, help="Only the best N experiments "
                                                 "of each group in the leaderboard.")] = None,
    set_: Annotated[Optional[str], typer.Option("--set", metavar="SET", help="Only this set's experiments.")] = None,
    name: Annotated[Optional[str], typer.Option("--name", metavar="PATTERN", help="Only experiments whose name "
                                                "matches, e.g. 'tier0_*'.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", metavar="STATUS", help="Only experiments whose latest "
                                                  "result is ok, failed or interrupted.")] = None,
    reference: Annotated[Optional[str], typer.Option(metavar="NAME", help="Compare every configuration run at "
                                                     "several seeds with this one (an experiment's name without "
                                                     ".sSEED, or a baseline); default: the best.")] = None,
    cards: Annotated[bool, typer.Option("--cards", help="With --format md: a card per experiment (rationale, "
                                        "notes, parent, figures per split and tier, memory, time, device).")] = False,
    plots: Annotated[Optional[Path], typer.Option("--plots", metavar="DIR", help="Also write the plots of each "
                                                  "group there as SVG and PNG (the plot extra).")] = None,
    rank_by: Annotated[Optional[str], typer.Option(hidden=True, help="Older name: test or validation.")] = None,
):
    """Leaderboards of completed experiments, one per group of comparable data (corpus,
    tokenizer, vocabulary, fast/full mode), each with its baselines and PPL floor, a per-tier
    breakdown of the best, and the failed and interrupted experiments with their errors."""
    from ramsweep.report import report as report_text
    from ramsweep.report import tables
    from ramsweep.report.formats import check_format
    from ramsweep.report.rows import Filters

    check_format(format)  # before any file is read
    if rank_by is not None and rank_by not in tables.RANK_BY:
        raise RamsweepConfigError(f"--rank-by: '{rank_by}' is not one of {', '.join(tables.RANK_BY)}; see --sort-by")
    sort = tables.RANK_BY[rank_by] if rank_by else sort_by
    if status not in (None, "ok", "failed", "interrupted"):
        raise RamsweepConfigError(f"--status: '{status}' is not one of ok, failed, interrupted")
    files, filters = results or [Path("experiments/results.json")], Filters(set=set_, name=name, top=limit, status=status)
    if plots is not None:
        from ramsweep.report.plots import plots_folder

        plots_folder(plots)  # before the report, which is not printed twice
    records, by = tables.read(files, sort)  # once, for the report and its plots
    if format == "table":  # straight to the console: colours and the terminal's width
        filters.check(records, files)
        out.print(tables.renderable(records, by, filters, top, reference, out.width))
    else:
        sys.stdout.write(report_text(files, format, top, sort, filters, reference=reference,
                                     cards=10**9 if cards else 0, loaded=(records, by)))
    if plots is not None:
        from ramsweep.report.plots import save_all

        for path in save_all(records, by, filters, plots):
            err.print(f"wrote {path}", highlight=False)


@app.command()
@user_errors
def compare(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="Two or more experiments, by name.")],
    results: Annotated[Optional[list[Path]], typer.Option("--results", metavar="PATH", help="Results file (repeat "
                                                          "for several; default experiments/results.json).")] = None,
    format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="table or md.")] = "table",
    group: Annotated[Optional[str], typer.Option("--group", metavar="TEXT", help="The data group to compare in: "
                                                 "any part of its label, e.g. full, fast, kjv/gpt2 (default: the "
                                                 "newest that holds them all).")] = None,
):
    """Experiments side by side, all on one data: what differs in their configs, then every
    figure, per split and per tier."""
    from ramsweep.report import compare as comparison

    if format not in ("table", "md"):
        raise RamsweepConfigError(f"--format: '{format}' is not one of table, md")
    records, note = comparison.chosen(results or [Path("experiments/results.json")], names, group)
    if format == "md":
        sys.stdout.write(f"{note}\n\n{comparison.markdown(records)}")
    else:
        out.print(note, highlight=False)
        out.print(comparison.renderable(records))


@app.command()
@user_errors
def status(
    results: Annotated[Path, RESULTS_ARGUMENT] = Path("experiments/results.json"),
    set_: Annotated[Optional[str], typer.Option("--set", metavar="SET", help="Also count the set's experiments not "
                                                "started yet.")] = None,
    list_all: Annotated[bool, typer.Option("--list", help="List every experiment; by default a sweep of more than "
                                           "40 lists only those running, failed or interrupted.")] = False,
    full_data: Annotated[bool, typer.Option("--full-data", help="The set runs with --full-data.")] = False,
    data: Annotated[Optional[str], DATA] = None,
    data_path: Annotated[Optional[Path], DATA_PATH] = None,
    tokenizer: Annotated[Optional[str], TOKENIZER] = None,
    tokenizer_files: Annotated[Optional[Path], TOKENIZER_FILES] = None,
):
    """Per experiment: done, failed, interrupted, running (by which runner) or pending, and
    an estimate of the time left. Reads only; safe while runners work."""
    from ramsweep.sets import load_set
    from ramsweep.sweep.status import shown_rows, summary_line
    from ramsweep.sweep.status import status as sweep_status

    exp_set = load_set(set_) if set_ else None
    spec = data_spec(exp_set.data if exp_set else None, data, data_path, tokenizer, tokenizer_files, full_data)
    s = sweep_status(results, exp_set, data=spec)
    rows, left_out = shown_rows(s, list_all)
    if rows:
        table = Table("experiment", "state", "detail", box=box.SIMPLE_HEAD)
        for r in rows:
            table.add_row(r.name, r.state, r.detail, style=STATE_STYLE.get(r.state, ""))
        out.print(table)
    if left_out:
        shown = {id(r) for r in rows}
        hidden = Counter(r.state for r in s.rows if id(r) not in shown)
        which = " and ".join(f"{n:,} {state}" for state, n in hidden.items())
        out.print(f"(not listed: {which}; add --list to see every experiment)", highlight=False)
    out.print(summary_line(s), highlight=False)
    if s.lock:
        out.print(f"warning: {s.lock}", style="bold red", highlight=False)


STATE_STYLE = {"failed": "red", "interrupted": "yellow", "running": "cyan", "pending": "dim"}


@app.command()
@user_errors
def serve(
    results: Annotated[Optional[list[Path]], typer.Argument(metavar="RESULTS...", help="Results files to show "
                                                            "(default experiments/results.json).")] = None,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to listen on. Beyond this machine (e.g. 0.0.0.0) it needs "
                                      "--token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port (0: any free one).")] = 8765,
    token: Annotated[Optional[str], typer.Option(envvar="RAMSWEEP_TOKEN", metavar="TOKEN", help="Required of every visitor: 'auto' "
                                                 "generates one and prints the URL with it; or your own (at least "
                                                 "16 characters, 8 of them different; RAMSWEEP_TOKEN keeps it out of `ps`).")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(metavar="NAME", help="Another name the browser may "
                                                            "reach this server by (checked against the Host "
                                                            "header), e.g. a DNS name.")] = None,
):
    """A live, read-only web dashboard of a sweep, for a browser or a phone: runners and what
    each experiment is doing, counts and time left, the latest results, leaderboards, grid
    heatmaps and experiment cards, updated as results land. Writes nothing; safe beside runners."""
    from ramsweep.serve import serve as run_server

    run_server(results or [Path("experiments/results.json")], host=host, port=port, token=token,
               allow_hosts=allow_host or [], say=lambda line: print(line, flush=True))


@app.command()
@user_errors
def worker(
    scheduler: Annotated[str, typer.Argument(metavar="SCHEDULER", help="The Dask scheduler, e.g. tcp://head:8786.")],
    gpus: Annotated[Optional[str], typer.Option(metavar="IDS", help="GPUs to start workers on, e.g. 0,1 (default: "
                                                "every GPU this machine shows; none: one CPU worker).")] = None,
):
    """Start this machine's Dask workers for `ramsweep run --executor dask --scheduler ...`: one
    per GPU, each pinned to its GPU (CUDA_VISIBLE_DEVICES) and offering one GPU resource, so each
    runs one experiment at a time; without GPUs, one worker. Runs until interrupted."""
    from ramsweep.sweep.dask_executor import run_workers

    run_workers(scheduler, gpus, say=lambda line: err.print(line, highlight=False))


@app.command()
@user_errors
def sets():
    """List the experiment sets and how many experiments each holds."""
    from ramsweep.sets import available_sets

    table = Table("set", "experiments", "description")
    for name, count, description in available_sets():
        table.add_row(name, str(count), description)
    out.print(table)


@app.command()
@user_errors
def convert(
    source: Annotated[Path, typer.Argument(metavar="SOURCE", help="The results file to read.")],
    target: Annotated[Path, typer.Argument(metavar="TARGET", help="The new file: .jsonl for a journal, .json for a "
                                           "JSON document.")],
):
    """Copy a results file into a new one of the other kind (journal or JSON document).

    Every record is copied unchanged, in order; the source is locked meanwhile, so no
    runner appends to it, and is left as it was. Point --results at the new file afterwards.
    """
    from ramsweep.sweep.store import convert as convert_store
    from ramsweep.sweep.store import kind_of

    with logging_to_stderr():  # e.g. that a torn last line of the source was not copied
        count = convert_store(source, target)
    out.print(f"copied {count:,} records from {source} ({kind_of(source)}) to {target} ({kind_of(target)})",
              highlight=False)


def main() -> None:
    app()
