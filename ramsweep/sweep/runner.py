"""Run an experiment set: load, plan, then per experiment train → evaluate → record.

`run_set` is the library function behind `ramsweep run`; it returns a RunSummary and
reports progress through a plain `log(str)` callback, so it knows nothing of the terminal.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numba

from ramsweep import ENGINE_SEMANTICS_VERSION, __version__
from ramsweep.config import Experiment, load_set
from ramsweep.data import Corpus, load_corpus
from ramsweep.engine.evaluate import evaluate
from ramsweep.engine.layout import check_supported
from ramsweep.engine.train import train
from ramsweep.sweep.plan import plan
from ramsweep.sweep.store import FAILED, OK, ResultsStore

DEFAULT_RESULTS = Path("experiments") / "results.json"


@dataclass
class RunSummary:
    set_name: str
    results: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def run_set(
    set_name: str,
    *,
    experiments: list[str] | None = None,
    results: str | os.PathLike = DEFAULT_RESULTS,
    full_data: bool = False,
    log: Callable[[str], None] = lambda line: None,
) -> RunSummary:
    """Run every experiment of the set not already completed in `results`."""
    exp_set = load_set(set_name)
    chosen = list((exp_set.select(experiments) if experiments else exp_set).experiments)
    corpus = load_corpus("kjv", full_data=full_data)
    for exp in chosen:  # fail before any work, not hours into the night
        check_supported(exp, corpus.vocab_size)
    store = ResultsStore(results)
    planned = plan(chosen, corpus.fingerprint, store.completed_keys())
    summary = RunSummary(exp_set.name, store.path)
    todo = [p for p in planned if not p.done]
    log(f"set {exp_set.name}: {len(planned)} experiments, {len(planned) - len(todo)} already done, "
        f"{len(todo)} to run; data {corpus.describe()['corpus']} ({'full' if full_data else 'fast'} mode), "
        f"results {store.path}")
    done_now: set[str] = set()
    for p in planned:
        if p.done or p.key in done_now:  # same spec twice in one set: run it once
            summary.skipped.append(p.experiment.name)
            continue
        log(f"start {p.experiment.name} [{p.experiment.tiers}] context {p.experiment.context}")
        record = run_experiment(p.experiment, corpus, set_name=exp_set.name, key=p.key)
        store.append(record)
        (summary.ran if record["status"] == OK else summary.failed).append(p.experiment.name)
        done_now.add(p.key)
        log(describe_record(record))
    if not todo:
        log(f"nothing to run: all {len(planned)} experiments of set {exp_set.name} are done in {store.path}")
    return summary


def run_experiment(exp: Experiment, corpus: Corpus, *, set_name: str, key: str) -> dict:
    """Train and evaluate one experiment; always returns a record (status ok or failed)."""
    record = {
        "name": exp.name,
        "set": set_name,
        "key": key,
        "spec": exp.model_dump(mode="json"),
        "data": corpus.describe(),
        "environment": environment(),
        "started": now(),
    }
    try:
        t0 = time.perf_counter()
        model = train(exp, corpus.train, corpus.vocab_size)
        t1 = time.perf_counter()
        validation = evaluate(model, corpus.validation)
        t2 = time.perf_counter()
        test = evaluate(model, corpus.test)  # final figures only: nothing is chosen on test
        t3 = time.perf_counter()
        resources = {
            "device": "cpu",
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
    return (f"done {r['name']}: val PPL {v['ppl']:,.0f}, test PPL {t['ppl']:,.0f}, test acc "
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
