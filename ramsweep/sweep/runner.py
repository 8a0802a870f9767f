"""Run an experiment set: load, plan, then per experiment claim → train → evaluate → record.

`run_set` is the library function behind `ramsweep run`; it returns a RunSummary and
reports progress through plain `log(str)` and `progress(done, total)` callbacks, so it knows
nothing of the terminal. With jobs > 1 the experiments run in worker processes (pool.py) and
this process alone claims and writes.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numba

from ramsweep import ENGINE_SEMANTICS_VERSION, __version__
from ramsweep.config import Experiment, ExperimentSet, load_set
from ramsweep.data import Corpus, DataSpec, load_corpus
from ramsweep.engine.evaluate import evaluate, fit_temperature, metrics, score
from ramsweep.engine.devices import check_fits, describe, resolve, trains_on
from ramsweep.engine.layout import check_supported
from ramsweep.engine.train import train
from ramsweep.errors import ConfigError
from ramsweep.sweep.claims import Claims, owner_label
from ramsweep.sweep.interrupts import Interrupted, deferred, raising_on_signals
from ramsweep.engine.baselines import BASELINES, baselines
from ramsweep.sweep.plan import Planned, baseline_key, plan
from ramsweep.sweep.pool import WorkerPool
from ramsweep.sweep.store import FAILED, INTERRUPTED, OK, ResultsStore

DEFAULT_RESULTS = Path("experiments") / "results.json"
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
    """An experiment this runner has claimed and is running."""

    planned: Planned
    started: str = field(default_factory=lambda: now())
    t0: float = field(default_factory=time.monotonic)
    future: Future | None = None


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
    log: Callable[[str], None] = lambda line: None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> RunSummary:
    """Run every experiment of the set that is not completed in `results`, claiming each so
    that runners sharing the file split the work. SIGTERM / SIGINT record the experiments in
    flight as interrupted and raise Interrupted (exit code 143 / 130)."""
    exp_set = set_ if isinstance(set_, ExperimentSet) else load_set(set_)
    if experiments:
        exp_set = exp_set.select(experiments)
    exp_set.select(force)  # unknown --force names are an error before any work
    if device is not None:  # --device: every experiment runs there (its key does not change)
        exp_set = exp_set.model_copy(update={"experiments": [e.model_copy(update={"device": device})
                                                             for e in exp_set.experiments]})
    if jobs < 1:
        raise ConfigError(f"--jobs: {jobs} is not a number of processes; use 1 or more")
    data = data or exp_set.data or DataSpec()  # given, else the set file's, else kjv
    if full_data:
        data = data.model_copy(update={"full_data": True})
    corpus = load_corpus(data, cache_dir=cache_dir(results))
    for exp in exp_set.experiments:  # fail before any work, not hours into the night
        check_supported(exp, corpus.vocab_size)
        check_fits(exp, corpus.train, corpus.vocab_size, resolve(exp.device))
    store = ResultsStore(results)
    record_baselines(store, corpus, log)
    planned = {}  # key -> Planned; the same spec twice in one set runs once
    for p in plan(exp_set.experiments, corpus.fingerprint, set()):
        planned.setdefault(p.key, p)
    forced = {p.key for p in planned.values() if p.experiment.name in force}
    started = now()
    attempted: set[str] = set()

    def wanted(key: str, records: list[dict]) -> bool:
        """Not tried by this runner yet, not done (a forced key: not done since this run
        started), and not failed last time when failures are not retried."""
        if key in attempted:
            return False
        if any(r.get("status") == OK and (key not in forced or r["started"] >= started) for r in records):
            return False
        return retry_failed or not records or records[-1].get("status") != FAILED

    by_key = {}
    for r in store.records():
        by_key.setdefault(r.get("key"), []).append(r)
    todo = [k for k in planned if wanted(k, by_key.get(k, []))]
    summary = RunSummary(exp_set.name, store.path)
    log(f"set {exp_set.name}: {len(planned)} experiments, {len(planned) - len(todo)} done or skipped, "
        f"{len(todo)} to run{f' with {jobs} jobs' if jobs > 1 else ''}; data {corpus.name}/{corpus.tokenizer} "
        f"({'full' if data.full_data else 'fast'} mode), results {store.path}")

    claims = Claims(store)
    keys = [(k, p.experiment.name) for k, p in planned.items()]
    pool = WorkerPool(jobs, data, cache_dir(results)) if jobs > 1 else None
    in_flight: dict[str, Flight] = {}
    waiting_on: set[str] = set()

    def complete(flight: Flight, record: dict) -> None:
        with deferred():  # a signal now is raised once the record is safe and off in_flight
            claims.finish(record)
            del in_flight[record["key"]]
        {OK: summary.ran, FAILED: summary.failed}[record["status"]].append(record["name"])
        log(describe_record(record))
        progress(len(summary.ran) + len(summary.failed), len(todo))

    with raising_on_signals(), claims:
        try:
            while True:
                held: list[dict] = []
                while len(in_flight) < jobs:
                    with deferred():
                        got = claims.claim_next(keys, wanted, exp_set.name)
                    for c in got.taken_over:
                        log(f"taking over {c['name']} from runner {owner_label(c)}: it is gone")
                    if got.key is None:
                        held = got.held_by_others
                        break
                    attempted.add(got.key)
                    flight = in_flight[got.key] = Flight(planned[got.key])
                    exp = flight.planned.experiment
                    log(f"start {exp.name} [{exp.tiers}] context {exp.context}")
                    if pool:
                        with deferred():  # a signal mid-spawn would leave a half-started worker
                            flight.future = pool.submit(exp, exp_set.name, got.key)
                    else:
                        complete(flight, run_experiment(exp, corpus, set_name=exp_set.name, key=got.key))
                if pool and in_flight:
                    for flight, record in pool.wait_any(list(in_flight.values()), POLL_S):
                        complete(flight, record or died_record(flight, corpus, exp_set.name))
                    continue
                if not in_flight and not held:
                    break
                if {c["key"] for c in held} != waiting_on:
                    waiting_on = {c["key"] for c in held}
                    log(f"waiting: {len(held)} experiments of this set are running in other runners "
                        f"({', '.join(sorted({owner_label(c) for c in held}))}); their claims are taken "
                        f"over if those runners die")
                time.sleep(POLL_S)
        except Interrupted as e:
            with deferred():
                for flight in list(in_flight.values()):
                    claims.finish(interrupted_record(flight, corpus, exp_set.name, str(e)))
                    summary.interrupted.append(flight.planned.experiment.name)
            log(f"{e}: recorded {', '.join(summary.interrupted) or 'nothing'} as interrupted; "
                f"the next run retries {'them' if len(summary.interrupted) > 1 else 'it'}")
            raise
        finally:
            if pool:
                pool.stop()
    done_here = set(summary.ran) | set(summary.failed)
    summary.skipped = [p.experiment.name for p in planned.values() if p.experiment.name not in done_here]
    if not todo:
        log(f"nothing to run: all {len(planned)} experiments of set {exp_set.name} are done in {store.path}")
    return summary


def cache_dir(results: str | os.PathLike) -> Path:
    """Tokenized corpora are cached beside the results, so a night tokenizes once."""
    return Path(results).parent / ".ramsweep-cache"


def record_baselines(store: ResultsStore, corpus: Corpus, log: Callable[[str], None]) -> None:
    """Uniform, unigram and Kneser-Ney bigram on exactly the experiments' splits and tokens,
    once per data fingerprint per results file: the report shows them beside the experiments."""
    keys = {name: baseline_key(name, corpus.fingerprint) for name in BASELINES}
    with deferred(), store.locked():  # checked and added under the lock: two runners never both add them
        done = {r["key"] for r in store.records() if r.get("status") == OK}
        if all(k in done for k in keys.values()):
            return
        started, t0 = now(), time.perf_counter()
        splits = ("validation", "test")
        found = baselines(corpus.train, {s: corpus.split(s) for s in splits}, corpus.vocab_size,
                          {s: corpus.byte_lengths(s) for s in splits})
        elapsed = time.perf_counter() - t0
        for name, metrics_ in found.items():
            if keys[name] not in done:
                store.append_locked({"kind": "baseline", "name": name, "key": keys[name], "status": OK,
                                     "data": corpus.describe(), "metrics": metrics_, "timing": {"total_s": elapsed},
                                     "environment": environment(), "started": started, "finished": now()})
    log("baselines on the same splits: " + ", ".join(
        f"{name} test PPL {m['test']['ppl']:,.0f}" for name, m in found.items()))


def base_record(exp: Experiment, corpus: Corpus, set_name: str, key: str, started: str) -> dict:
    return {"name": exp.name, "set": set_name, "key": key, "spec": exp.model_dump(mode="json"),
            "data": corpus.describe(), "environment": environment(), "started": started}


def died_record(flight: Flight, corpus: Corpus, set_name: str) -> dict:
    record = base_record(flight.planned.experiment, corpus, set_name, flight.planned.key, flight.started)
    record.update(status=FAILED, error="its worker process died (out of memory, or killed?)",
                  timing={"elapsed_s": time.monotonic() - flight.t0}, finished=now())
    return record


def interrupted_record(flight: Flight, corpus: Corpus, set_name: str, signal_name: str) -> dict:
    record = base_record(flight.planned.experiment, corpus, set_name, flight.planned.key, flight.started)
    record.update(status=INTERRUPTED, error=f"interrupted by {signal_name}",
                  timing={"elapsed_s": time.monotonic() - flight.t0}, finished=now())
    return record


def run_experiment(exp: Experiment, corpus: Corpus, *, set_name: str, key: str) -> dict:
    """Train and evaluate one experiment; always returns a record (status ok or failed)."""
    record = base_record(exp, corpus, set_name, key, now())
    try:
        device = resolve(exp.device)
        t0 = time.perf_counter()
        model = train(exp, corpus.train, corpus.vocab_size, device=trains_on(device))
        t1 = time.perf_counter()
        val_scores = score(model, corpus.validation, device)
        temperature = fit_temperature(val_scores)  # fitted on validation only, then applied to test
        validation = metrics(val_scores, temperature=temperature, byte_lengths=corpus.byte_lengths("validation"))
        t2 = time.perf_counter()
        # final figures only: nothing is chosen on test
        test = evaluate(model, corpus.test, temperature=temperature, byte_lengths=corpus.byte_lengths("test"),
                        device=device)
        t3 = time.perf_counter()
        resources = {
            "device": describe(device),
            "threads": numba.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
            "memory_mb": sum(m.nbytes for m in model.memories) / 2**20,
            "cells_stored": [m.cells_stored for m in model.memories],
            "backends": [m.tier.backend for m in model.memories],
        }
    except Exception as e:  # recorded, and the sweep goes on
        record.update(status=FAILED, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                      finished=now())
        return record
    record.update(
        status=OK,
        metrics={"validation": validation, "test": test},
        timing={"encode_s": model.encode_s, "train_s": t1 - t0, "validation_s": t2 - t1, "test_s": t3 - t2,
                "total_s": t3 - t0},
        resources=resources,
        finished=now(),
    )
    return record


def describe_record(r: dict) -> str:
    if r["status"] != OK:
        return f"FAILED {r['name']}: {r['error']}"
    v, t = r["metrics"]["validation"], r["metrics"]["test"]
    bpb = f", bpb {t['bpb']:.3f}" if t.get("bpb") is not None else ""
    return (f"done {r['name']}: val PPL {v['ppl']:,.0f}, test PPL {t['ppl']:,.0f} (calibrated "
            f"{t['calibrated']['ppl']:,.0f} at T={t['calibrated']['temperature']:.3g}){bpb}, test acc "
            f"{100 * t['accuracy']:.2f}% in {r['timing']['total_s']:.1f}s")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (2**20 if sys.platform == "darwin" else 2**10)


def environment() -> dict:
    versions = {}
    for pkg in ("numpy", "numba", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"ramsweep": __version__, "engine_semantics": ENGINE_SEMANTICS_VERSION,
            "python": platform.python_version(), "platform": platform.platform(), **versions}
