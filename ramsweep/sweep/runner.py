"""Run an experiment set: load, check, plan, then claim → execute → record until none is left.

`run_set` is the library function behind `ramsweep run`. It logs through the standard
`logging` module (logger "ramsweep"; the CLI decides how lines look) and reports progress
through an optional `progress(done, total)` callback, so it knows nothing of the terminal.
Executors (executors.py) run the experiments; this process alone claims and writes.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numba
import numpy as np

from ramsweep.config import ExperimentSet, seed_list
from ramsweep.data import Corpus, DataSpec, load_corpus
from ramsweep.engine import architecture
from ramsweep.engine.backends import cpu as cpu_backend
from ramsweep.engine.baselines import BASELINES, baselines
from ramsweep.engine.devices import resolve
from ramsweep.engine.layout import Frequencies
from ramsweep.errors import ConfigError, ExecutorLost
from ramsweep.sets import load_set
from ramsweep.sweep.artifacts import folder_of
from ramsweep.sweep.claims import STALE_S, Claims, looks_live
from ramsweep.sweep.estimate import Work, estimate, finished, work_of
from ramsweep.sweep.executors import Executor, InProcess, ProcessPool, cores
from ramsweep.sweep.experiment import Task, describe_record, environment, interrupted_record, now, stopped_record
from ramsweep.sweep.interrupts import Interrupted, deferred, raise_if_swallowed, raising_on_signals
from ramsweep.sweep.plan import Options, Planned, baseline_key, needs_running, pending, plan
from ramsweep.sweep.progress import Tracker
from ramsweep.sweep.records import FAILED, OK, BaselineRecord, Claim, ExperimentRecord
from ramsweep.sweep.resources import check_fits
from ramsweep.sweep.store import Store, cache_dir, open_store
from ramsweep.text import count, duration

log = logging.getLogger("ramsweep")
DEFAULT_RESULTS = Path("experiments") / "results.json"
BIG_DOCUMENT = 2_000  # results past which a JSON document's rewrites cost more than the journal's appends matter
POLL_S = 2.0  # how often a runner with nothing to claim looks again at others' claims


@dataclass
class RunSummary:
    set_name: str
    results: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # done already, or done by another runner
    failed: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)


@dataclass
class Flight:
    """An experiment this runner has claimed and handed to its executor."""

    task: Task
    started: str = field(default_factory=now)
    t0: float = field(default_factory=time.monotonic)


@dataclass
class Sweep:
    """What one run works from: the set, its data, its plan, the store and the user's options."""

    exp_set: ExperimentSet
    data: DataSpec
    corpus: Corpus
    planned: dict[str, Planned]
    store: Store
    options: Options
    work: dict[str, Work] = field(default_factory=dict)  # each experiment's work (estimate.py), once checked


def run_set(
    set_: str | ExperimentSet,
    *,
    experiments: list[str] | None = None,
    results: str | os.PathLike = DEFAULT_RESULTS,
    data: DataSpec | None = None,
    full_data: bool = False,
    jobs: int = 1,
    retry_failed: bool = True,
    force: list[str] = (),
    device: str | None = None,
    seeds: list[int] | None = None,
    executor: str = "local",
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    stage: Callable[[str], None] = lambda text: None,
    tracker: Tracker | None = None,
) -> RunSummary:
    """Run every experiment of the set that still needs running in `results`, claiming each
    so that runners sharing the file split the work. SIGTERM / SIGINT / SIGHUP record the
    experiments in flight as interrupted and raise Interrupted (exit code 143 / 130 / 129).
    `progress(done, total)` follows the experiments; `stage(text)` says what a long wait is for
    (loading the data, compiling the kernels), for a progress display; `tracker` (a progress.Tracker)
    follows the experiments in flight, phase by phase (a display reads its describe()). `executor` "dask" runs
    the experiments on a Dask cluster: `scheduler`'s (tcp://HOST:PORT) or a local one of `workers`
    processes (dask_executor.py); this process still claims and writes alone."""
    check_jobs(jobs)
    check_executor(executor, jobs, scheduler, workers)
    with raising_on_signals():  # from the start: a stop while waiting for the lock or the data is a stop too
        sweep = prepare(set_, experiments=experiments, results=results, data=data, full_data=full_data,
                        retry_failed=retry_failed, force=force, device=device, seeds=seeds, stage=stage)
        sizes = check_before_any_work(sweep)
        record_baselines(sweep.store, sweep.corpus)
        todo = pending(sweep.planned, sweep.store.summaries(), sweep.options)
        announce(sweep, todo, jobs)
        progress(0, len(todo))  # the bar shows the whole night's size from the start
        stage("experiments" if kernels_cached() else "experiments (the first also compiles the kernels, once)")
        tracker = tracker or Tracker()
        if not todo:
            pool: Executor = InProcess(sweep.corpus)  # nothing to run: no cluster to start
        elif executor == "dask":
            from ramsweep.sweep.dask_executor import DaskExecutor

            stage("starting the Dask workers (each loads the data and compiles the kernels once)")
            pool = DaskExecutor(sweep.data, cache_dir(sweep.store.path), tracker.update, scheduler=scheduler,
                                 workers=workers)
        elif jobs > 1:
            pool = ProcessPool(jobs, sweep.data, cache_dir(sweep.store.path), tracker.update)
        else:
            pool = InProcess(sweep.corpus, tracker.update)
        summary = RunSummary(sweep.exp_set.name, sweep.store.path)
        execute(sweep, pool, summary, lambda: progress(len(summary.ran) + len(summary.failed), len(todo)), tracker,
                sizes)
    done_here = set(summary.ran) | set(summary.failed)
    summary.skipped = [p.experiment.name for p in sweep.planned.values() if p.experiment.name not in done_here]
    return summary


def check_jobs(jobs: int) -> None:
    """--jobs between 1 and this machine's cores: each worker runs numba threads and holds a
    model, so more workers than cores only share the cores and multiply the memory."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"--jobs: {jobs!r} is not a number of processes; use 1 or more")
    if jobs > cores():
        raise ConfigError(f"--jobs: {jobs} is more than this machine's {cores()} cores; use at most {cores()} "
                          "(each worker already runs its share of the numba threads)")


def check_executor(executor: str, jobs: int, scheduler: str | None, workers: int | None) -> None:
    """The executor options, before anything is read or written (an empty --scheduler included)."""
    from ramsweep.sweep.dask_executor import check_scheduler, check_workers, dask_modules

    if executor not in ("local", "dask"):
        raise ConfigError(f"--executor: '{executor}' is not one of local, dask")
    if scheduler is not None:
        check_scheduler(scheduler)
    if executor == "local" and (scheduler is not None or workers is not None):
        raise ConfigError(f"{'--scheduler' if scheduler is not None else '--workers'}: goes with --executor dask; "
                          "add it")
    if executor == "dask":
        dask_modules()
        if jobs > 1:
            raise ConfigError("--jobs: with --executor dask the workers run the experiments; use --workers N "
                              "(a local cluster) or --scheduler tcp://HOST:PORT instead")
        if scheduler is not None and workers is not None:
            raise ConfigError("--workers: a --scheduler has its own workers; give one or the other")
        if workers is not None:
            check_workers(workers)


def kernels_cached() -> bool:
    """Whether numba has the CPU engine's compiled kernels on disk (its cache beside the module,
    or under NUMBA_CACHE_DIR)."""
    folder = Path(numba.config.CACHE_DIR) if numba.config.CACHE_DIR else Path(cpu_backend.__file__).parent / "__pycache__"
    return any(folder.rglob("cpu.*.nbi"))


def announce(sweep: Sweep, todo: list[Planned], jobs: int) -> None:
    """The run's first log lines: what it will do, and whether the results file suits it."""
    planned, path = len(sweep.planned), sweep.store.path
    log.info(f"set {sweep.exp_set.name}: {count(planned, 'experiment')}, {planned - len(todo):,} done or skipped, "
             f"{len(todo)} to run{f' with {jobs} jobs' if jobs > 1 else ''}; data {sweep.corpus.name}/"
             f"{sweep.corpus.tokenizer} ({'full' if sweep.data.full_data else 'fast'} mode), results {path}")
    if not todo:
        log.info(f"nothing to run: {'the' if planned == 1 else 'all'} {count(planned, 'experiment')} of set "
                 f"{sweep.exp_set.name} {'is' if planned == 1 else 'are'} done in {path}")
    elif sweep.store.kind == "document" and len(sweep.store.summaries()) + len(todo) > BIG_DOCUMENT:
        journal = path.with_suffix(".jsonl")
        how = (f"ramsweep convert {path} {journal}, then run with --results {journal}" if path.exists()
               else f"run with --results {journal}")
        log.info(f"{path} will hold over {BIG_DOCUMENT:,} results and every result rewrites a JSON document "
                 f"whole; a journal appends in constant time: {how}")


def prepare(set_: str | ExperimentSet, *, experiments=None, results=DEFAULT_RESULTS, data=None,
            full_data=False, retry_failed=True, force=(), device=None, seeds=None,
            stage: Callable[[str], None] = lambda text: None) -> Sweep:
    """Load the set and its data and plan it: everything a run or a dry run needs, no writes
    but the token cache (derived data, not results)."""
    exp_set = set_ if isinstance(set_, ExperimentSet) else load_set(set_)
    if seeds:  # --seeds: every experiment once per seed (before selecting: names are NAME.sSEED)
        exp_set = exp_set.with_seeds(seed_list(seeds, 0))
    if experiments:
        exp_set = exp_set.select(experiments)
    # unknown --force names are an error before any work; a name without its seed forces every seed
    force_names = set(exp_set.select(force).names()) if force else set()
    if device is not None:  # --device: every experiment runs there (its key does not change)
        exp_set = exp_set.model_copy(update={"experiments": [e.model_copy(update={"device": device})
                                                             for e in exp_set.experiments]})
    data = data or exp_set.data or DataSpec()  # given, else the set file's, else kjv
    if full_data:
        data = data.model_copy(update={"full_data": True})
    store = open_store(results)  # a results path that is no file is refused before anything is written
    store.summaries()  # and so is a record that does not validate,
    store.claims()  # or a claim
    stage(f"loading {data.corpus}/{data.tokenizer_name} ({'full' if data.full_data else 'fast'} mode)")
    corpus = load_corpus(data, cache_dir=cache_dir(store.path))
    planned = plan(exp_set.experiments, corpus.fingerprint)
    forced = frozenset(p.key for p in planned.values() if p.experiment.name in force_names)
    # to the microsecond: records start in whole seconds ("...:01+00:00" sorts before "...:01.5+00:00"),
    # so a result from earlier in this very second still counts as before the forced run
    options = Options(retry_failed=retry_failed, forced=forced, since=datetime.now(UTC).isoformat(timespec="microseconds"))
    return Sweep(exp_set, data, corpus, planned, store, options)


def dry_run(set_: str | ExperimentSet, **options) -> str:
    """What `run` would do, as text: each experiment with its memory (an upper bound estimated
    from the config and the training split's frequencies) and what would happen to it (run,
    done, claimed by another runner, failed and kept), then the counts. Runs and writes nothing."""
    sweep = prepare(set_, **options)
    estimates = check_before_any_work(sweep)
    latest = sweep.store.summaries()
    claims = {k: c for k, c in sweep.store.claims().items() if looks_live(c)}
    counts: Counter[str] = Counter()
    lines, sizes = [], []
    for i, p in enumerate(sweep.planned.values(), 1):
        outcome, detail = dry_outcome(sweep, p.key, latest.get(p.key), claims.get(p.key))
        counts[outcome] += 1
        sizes.append(estimates[p.key])
        lines.append(f"{i:>6}  {p.experiment.name:<22} {p.experiment.shape:<34} {mib(sizes[-1]):>12}  "
                     f"{outcome}{detail}")
    told = ", ".join(f"{n:,} {state}" for state, n in counts.most_common())
    todo = [k for k in sweep.planned if needs_running(k, latest.get(k), sweep.options)]
    guess = estimate(sweep.work, finished(sweep.work, latest), todo, {}, 1)
    if guess.seconds is not None:
        lines.append(f"time: about {duration(guess.seconds)} one at a time, {guess.how}")
    elif todo:
        lines.append(f"time: no estimate yet, {guess.how}; once one of a kind has run here, `ramsweep status "
                     f"{sweep.store.path} --set {sweep.exp_set.name}` gives one (the README's 'How long' gives "
                     f"figures measured on 2 CPU cores and on an H200)")
    lines.append(f"{count(len(sizes), 'experiment')} in set {sweep.exp_set.name} ({told}); memory per experiment at "
                 f"most {mib(min(sizes))} to {mib(max(sizes))} (median {mib(float(np.median(sizes)))}), estimated "
                 f"on {sweep.corpus.name}/{sweep.corpus.tokenizer} ({'full' if sweep.data.full_data else 'fast'} "
                 f"mode); results {sweep.store.path}; nothing was run")
    return "\n".join(lines) + "\n"


def dry_outcome(sweep: Sweep, key: str, record, claim: Claim | None) -> tuple[str, str]:
    """What a run would do with one experiment: (outcome, detail)."""
    if not needs_running(key, record, sweep.options):
        return ("done", "") if record.ok else (f"{record.status}, kept", " (--retry-failed runs it again)")
    if claim is not None:
        return "claimed", f" by {claim.label}"
    return "would run", f" again ({record.status} last time)" if record else ""


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def check_before_any_work(sweep: Sweep) -> dict[str, int]:
    """Fail now, not hours into the night: every experiment fits the data, has its memory
    backends and fits this machine (and its GPU). Returns each experiment's memory estimate
    by key (layouts are not kept: a 59,049-config grid's would take gigabytes)."""
    freq = Frequencies.of(sweep.corpus.train, sweep.corpus.vocab_size)
    devices: dict[str, str] = {}
    sizes = {}
    for key, p in sweep.planned.items():
        exp = p.experiment
        plan = architecture.of(exp).plan(exp, freq)  # checks the config against the data first
        check_fits(exp, plan, freq.tokens, devices.setdefault(exp.device, resolve(exp.device)))
        sizes[key] = plan.bound_bytes
        sweep.work[key] = work_of(exp, plan)
        if exp.optimize is not None:  # the search's model, a retrained candidate beside the start, its rows
            from ramsweep.optimize.cpu import POOL_BYTES  # the search's kernels: imported only for a search

            sizes[key] = 3 * sizes[key] + POOL_BYTES
    return sizes


def execute(sweep: Sweep, executor: Executor, summary: RunSummary, progressed: Callable[[], None],
            tracker: Tracker | None = None, sizes: dict[str, int] | None = None) -> None:
    """Claim, submit and record until nothing this runner can do is left; wait for other
    runners' claims (taking them over if those runners die). The runner publishes itself and
    its experiments' progress (`tracker`) with its heartbeat. With several slots and the
    experiments' memory estimates (`sizes`), the biggest are claimed first: the longest then
    start early and no slot is left running one alone at the end (longest first)."""
    tracker = tracker or Tracker()
    in_flight: dict[str, Flight] = {}

    def about() -> dict:  # called under the lock, every heartbeat
        latest = sweep.store.summaries()
        todo = [key for key in sweep.planned if needs_running(key, latest.get(key), sweep.options)]
        told = {"set": sweep.exp_set.name, "planned": len(sweep.planned), "left": len(todo), "jobs": executor.capacity}
        if sweep.work:  # this runner's estimate of its plan's time left, for status and serve without --set
            running = {k: (time.monotonic() - f.t0, tracker.published(k).get("eta_s")) for k, f in in_flight.items()}
            guess = estimate(sweep.work, finished(sweep.work, latest), todo, running, executor.capacity)
            told |= {"eta_s": guess.seconds, "estimate": guess.how}
        return told

    claims = Claims(sweep.store, about=about, progress=tracker.published)
    attempted: set[str] = set()
    keys = [(k, p.experiment.name) for k, p in sweep.planned.items()]
    if sizes and executor.capacity > 1:
        keys.sort(key=lambda kn: -sizes.get(kn[0], 0))
    waiting_on: set[str] = set()

    def needed(key: str, latest) -> bool:
        return needs_running(key, latest, sweep.options)

    def wanted(key: str, latest) -> bool:
        return key not in attempted and needed(key, latest)

    def complete(task: Task, record: ExperimentRecord | str | None) -> None:
        flight = in_flight.get(task.key)
        if flight is None:  # an executor ran it again after its result was in (Dask may): recorded once
            log.info(f"{task.experiment.name} ended again on another worker; its result is recorded already")
            return
        if not isinstance(record, ExperimentRecord):  # the executor's word on why there is none, if any
            record = stopped_record(task, sweep.corpus, flight.started, time.monotonic() - flight.t0, FAILED,
                                    record or "its worker process died (out of memory, or killed?)")
        with deferred():  # a signal now is raised once the record is safe and off in_flight
            recorded = claims.finish(record, needed)
            del in_flight[task.key]
        tracker.finish(task.key, record.timing if record.ok else None)
        if not recorded:
            log.warning(f"{record.name} finished here, but another runner took it over and recorded it first; "
                        "this result is not recorded (one result per experiment)")
            return
        (summary.ran if record.ok else summary.failed).append(record.name)
        log.info(describe_record(record))
        progressed()

    with claims:
        try:
            while True:
                raise_if_swallowed()
                held = fill(sweep, executor, claims, keys, wanted, attempted, in_flight, tracker)
                if in_flight:
                    for task, record in executor.wait(POLL_S):
                        complete(task, record)
                    continue
                if not held:
                    break
                if {c.key for c in held} != waiting_on:
                    waiting_on = {c.key for c in held}
                    log.info(f"waiting: {count(len(held), 'experiment')} of this set {'is' if len(held) == 1 else 'are'} "
                             f"running in other runners "
                             f"({', '.join(sorted({c.label for c in held}))}); their claims are taken over if "
                             f"their heartbeats stop for {STALE_S:.0f} s")
                time.sleep(POLL_S)
        except (Interrupted, ExecutorLost) as e:
            record_interrupted(sweep, claims, in_flight, summary, str(e) if isinstance(e, Interrupted) else
                               "the loss of its Dask scheduler")
            raise
        finally:
            executor.close()


def fill(sweep: Sweep, executor: Executor, claims: Claims, keys, wanted, attempted: set[str],
         in_flight: dict[str, Flight], tracker: Tracker) -> list[dict]:
    """Claim and submit until the executor is full; returns the live claims of other runners
    on experiments still wanted (empty when this runner found work or nothing is left)."""
    while len(in_flight) < executor.capacity:
        with deferred():
            got = claims.claim_next(keys, wanted, sweep.exp_set.name)
        for c in got.taken_over:
            log.info(f"taking over {c.name} from runner {c.label}: it is gone, or its heartbeat has stood "
                     f"still for {STALE_S:.0f} s")
        if got.key is None:
            return got.held_by_others
        attempted.add(got.key)
        exp = sweep.planned[got.key].experiment
        task = Task(exp, got.key, sweep.exp_set.name, str(folder_of(sweep.store.path)))
        tracker.start(got.key, exp.name)
        with deferred():  # a signal mid-submit would leave a half-started worker
            in_flight[got.key] = Flight(task)
            executor.submit(task)
        log.info(f"start {exp.name} [{exp.shape}] context {exp.context}")  # in flight: a stop now records it
    return []


def record_interrupted(sweep: Sweep, claims: Claims, in_flight: dict[str, Flight], summary: RunSummary,
                       signal_name: str) -> None:
    with deferred():
        for flight in list(in_flight.values()):
            claims.finish(interrupted_record(flight.task, sweep.corpus, flight.started,
                                             time.monotonic() - flight.t0, signal_name),
                          lambda key, latest: needs_running(key, latest, sweep.options))
            summary.interrupted.append(flight.task.experiment.name)
    log.info(f"{signal_name}: recorded {', '.join(summary.interrupted) or 'nothing'} as interrupted; "
             f"the next run retries {'them' if len(summary.interrupted) > 1 else 'it'}")


def record_baselines(store: Store, corpus: Corpus) -> None:
    """Uniform, unigram and Kneser-Ney bigram on exactly the experiments' splits and tokens,
    once per data fingerprint per results file: the report shows them beside the experiments."""
    keys = {name: baseline_key(name, corpus.fingerprint) for name in BASELINES}
    with deferred(), store.locked():  # checked and added under the lock: two runners never both add them
        latest = store.summaries()
        missing = [name for name, key in keys.items() if needs_running(key, latest.get(key))]
        if not missing:
            return
        started, t0 = now(), time.perf_counter()
        splits = ("validation", "test")
        found = baselines(corpus.train, {s: corpus.split(s) for s in splits}, corpus.vocab_size,
                          {s: corpus.byte_lengths(s) for s in splits})
        elapsed = time.perf_counter() - t0
        store.extend_locked([
            BaselineRecord(kind="baseline", name=name, key=keys[name], status=OK, data=corpus.describe(),
                           metrics=found[name], timing={"total_s": elapsed}, environment=environment(),
                           started=started, finished=now())
            for name in missing])
    log.info("baselines on the same splits: " + ", ".join(
        f"{name} test PPL {m['test']['ppl']:,.0f}" for name, m in found.items()))

