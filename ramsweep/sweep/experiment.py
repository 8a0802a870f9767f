"""One experiment, start to finish: train → calibrate on validation → evaluate → record.

`run_experiment` is what every executor runs (in this process, in a worker process, on a
Dask worker); it never raises for a failing experiment: it returns a failed record, and the
sweep goes on.
"""

from __future__ import annotations

import functools
import logging
import platform
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from importlib import metadata
from pathlib import Path

import numba

from ramsweep.config import Experiment
from ramsweep.data import Corpus
from ramsweep.engine import architecture
from ramsweep.engine.devices import describe, resolve, trains_on
from ramsweep.semantics import ENGINE_SEMANTICS_VERSION
from ramsweep.sweep.artifacts import Checkpoints, save_connectivity
from ramsweep.sweep.progress import SEARCH, TRAINING, Report, Reporter, ignore
from ramsweep.sweep.records import FAILED, INTERRUPTED, OK, ExperimentRecord
from ramsweep.text import calibrated as calibrated_text
from ramsweep.text import ppl

log = logging.getLogger("ramsweep")
PROGRESS_EVERY_S = 10.0  # a search's progress line, at most this often


@dataclass(frozen=True)
class Task:
    """An experiment handed to an executor: what to run and how its record is labelled."""

    experiment: Experiment
    key: str
    set_name: str
    artifacts: str | None = None  # folder for a search's checkpoint and connectivity (artifacts.py)


def run_experiment(task: Task, corpus: Corpus, report: Reporter = ignore) -> ExperimentRecord:
    """Train and evaluate one experiment; always returns a record (status ok or failed).
    `report` is told what it is doing (progress.py)."""
    exp, started, t0 = task.experiment, now(), time.perf_counter()
    try:
        arch, device = architecture.of(exp), resolve(exp.device)
        found = None
        if exp.optimize is not None:
            found = search(task, corpus, device, report)
            model = found.chosen
        else:
            report(Report(task.key, TRAINING))
            model = arch.train(exp, corpus, trains_on(device), lambda f: report(Report(task.key, TRAINING, f)))
        t1 = time.perf_counter()
        validation, test, t2 = arch.figures(model, corpus, device, lambda phase, f=0.0: report(Report(task.key, phase, f)))
        t3 = time.perf_counter()
        extra = {}
        if found is not None:  # the start's figures beside the chosen one's (test decided nothing)
            before = (validation, test) if found.start is found.chosen else arch.figures(found.start, corpus, device)[:2]
            extra["search"] = {**found.summary, "before": {"validation": before[0], "test": before[1]},
                               "connectivity": save_found(task, found)}
        resources = {"device": describe(device), "threads": numba.get_num_threads(), "peak_rss_mb": peak_rss_mb(),
                     **arch.resources(model)}
    except Exception as e:  # recorded, and the sweep goes on
        return stopped_record(task, corpus, started, time.perf_counter() - t0, FAILED,
                              f"{type(e).__name__}: {e}", traceback.format_exc())
    return ExperimentRecord(
        **_base(task, corpus, started), status=OK,
        metrics={"validation": validation, "test": test},
        timing={**arch.timing(model), "train_s": t1 - t0, "validation_s": t2 - t1, "test_s": t3 - t2,
                "total_s": t3 - t0},
        resources=resources, **extra,
    )


def search(task: Task, corpus: Corpus, device: str, report: Reporter = ignore):
    """The experiment's search (its architecture's), resumed from its checkpoint when an earlier
    run stopped mid-way; the checkpoint is removed when the search ends."""
    exp = task.experiment
    checkpoints = Checkpoints(Path(task.artifacts), task.key) if task.artifacts else None
    resume = checkpoints.load() if checkpoints else None
    last, t0 = [0.0], time.monotonic()
    report(Report(task.key, SEARCH))

    def progress(p: dict) -> None:
        elapsed = time.monotonic() - t0
        fraction = 1.0 if p["eta_s"] is None else elapsed / max(1e-9, elapsed + p["eta_s"])
        report(Report(task.key, SEARCH, fraction, describe_step(p), p["eta_s"]))
        if p["done"] or time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            log.info(describe_progress(exp, p))

    found = architecture.of(exp).search(exp, corpus, device, resume,
                                        checkpoints.save if checkpoints else (lambda s: None), progress)
    if checkpoints:
        checkpoints.remove()
    return found


def describe_step(p: dict) -> str:
    """Where a search is, e.g. 'unit 3/500, TS iteration 4'."""
    unit = f"unit {p['unit']}/{p['units']}, " if p["units"] > 1 else ""
    return f"{unit}{p['stage'].upper()} {'generation' if p['stage'] == 'ga' else 'iteration'} {p['step']}"


def describe_progress(exp: Experiment, p: dict) -> str:
    rate = f", {p['evaluations_per_s']:.1f} evaluations/s" if p["evaluations_per_s"] else ""
    eta = f", ETA {p['eta_s'] / 60:.1f} min" if p["eta_s"] is not None else ", done" if p["done"] else ""
    where = " in this unit" if p["units"] > 1 else ""  # each unit's search has its own best: it jumps between units
    best = f", best {exp.optimize.fitness.upper()} {p['best']:.6g}{where}" if p["best"] is not None else ""
    return f"search {exp.name}: {describe_step(p)}{best}{rate}{eta}"


def save_found(task: Task, found) -> dict | None:
    """Where the chosen connectivity is kept (relative to the results' folder), and its digest."""
    if not task.artifacts:
        return None
    chosen, drawn = architecture.of(task.experiment).wiring(found.chosen)
    path = save_connectivity(Path(task.artifacts), task.key, chosen, drawn,
                             {"experiment": task.experiment.name, "key": task.key, "chosen": found.chosen_label})
    return {"file": str(Path(Path(task.artifacts).name) / path.name), "sha256": sha256(path.read_bytes()).hexdigest()}


def stopped_record(task: Task, corpus: Corpus, started: str, elapsed_s: float, status: str, error: str,
                   trace: str | None = None) -> ExperimentRecord:
    """The record of an experiment that did not finish: failed (with its error) or interrupted."""
    return ExperimentRecord(**_base(task, corpus, started), status=status, error=error, traceback=trace,
                            timing={"elapsed_s": elapsed_s})


def interrupted_record(task: Task, corpus: Corpus, started: str, elapsed_s: float, signal_name: str):
    return stopped_record(task, corpus, started, elapsed_s, INTERRUPTED, f"interrupted by {signal_name}")


def _base(task: Task, corpus: Corpus, started: str) -> dict:
    return {"kind": "experiment", "name": task.experiment.name, "set": task.set_name, "key": task.key,
            "spec": task.experiment.model_dump(mode="json"), "data": corpus.describe(),
            "environment": environment(), "started": started, "finished": now()}


def describe_record(r: ExperimentRecord) -> str:
    """One log line for a finished experiment."""
    if not r.ok:
        return f"FAILED {r.name}: {r.error}"
    v, t = r.metrics.validation, r.metrics.test
    bpb = f", bpb {t.bpb:.3f}" if t.bpb is not None else ""
    calibrated = f" (calibrated: {calibrated_text(t.calibrated)})" if t.calibrated and t.calibrated.ppl is not None else ""
    return (f"done {r.name}: val PPL {ppl(v.ppl)}, test PPL {ppl(t.ppl)}{calibrated}{bpb}, test acc "
            f"{100 * (t.accuracy or 0):.2f}% in {r.timing.total_s:.1f}s")



def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / (2**20 if sys.platform == "darwin" else 2**10)


@functools.cache
def _environment() -> dict:
    versions = {}
    for pkg in ("ramsweep", "numpy", "numba", "pydantic"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"engine_semantics": ENGINE_SEMANTICS_VERSION, "python": platform.python_version(),
            "platform": platform.platform(), **versions}


def environment() -> dict:
    """Package versions and platform, as stored with every record (looked up once a process)."""
    return dict(_environment())
