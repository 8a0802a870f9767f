"""`ramsweep status`: where a sweep stands, read from its results and claims files only
(never written), so it is safe to run while runners work. It imports no writer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ramsweep.config import ExperimentSet
from ramsweep.data import load_corpus
from ramsweep.engine import architecture
from ramsweep.engine.layout import Frequencies
from ramsweep.errors import ConfigError, StoreError
from ramsweep.sets import load_set
from ramsweep.sweep.claims import STALE_S, looks_live
from ramsweep.sweep.estimate import Estimate, Work, estimate, finished, kind_of, work_of
from ramsweep.sweep.plan import needs_running, plan
from ramsweep.sweep.records import FAILED, INTERRUPTED, Claim, Runner, Summary
from ramsweep.sweep.store import Store, cache_dir, open_store
from ramsweep.sweep.store.lock import SLOW_S, holder
from ramsweep.text import duration, ppl

DONE, RUNNING, PENDING = "done", "running", "pending"
STATES = (DONE, FAILED, INTERRUPTED, RUNNING, PENDING)


@dataclass
class Row:
    name: str
    key: str
    state: str
    detail: str = ""


@dataclass
class SweepStatus:
    results: Path
    rows: list[Row]
    counts: dict[str, int]
    runners: list[str]  # host:pid of the live runners
    eta_s: float | None  # None when unknown (nothing finished yet) or nothing left
    left: int = field(default=0)
    lock: str | None = None  # a warning when a runner has held the results lock for long
    live_runners: list[Runner] = field(default_factory=list)  # as they announce themselves (claims.py)
    claims: dict[str, Claim] = field(default_factory=dict)  # the live claims, with their progress
    how: str = ""  # how eta_s was made (sweep/estimate.py), or why there is none


def status(results: str | Path | Store, set_: str | ExperimentSet | None = None, *, data=None) -> SweepStatus:
    """Per experiment: done / failed / interrupted / running (by whom) / pending. Pending
    experiments are listed only with a set (`set_`: name, path or ExperimentSet); without one,
    the live runners' announcements give how many are left (not which). A Store given for
    `results` is read from where it last stopped (serve follows a file so)."""
    store = results if isinstance(results, Store) else open_store(results)
    if not store.path.exists() and set_ is None:
        raise StoreError(f"{store.path}: no such results file; name the one `ramsweep run` writes, "
                         f"or add --set to see what is pending")
    latest = {k: h for k, h in store.summaries().items() if h.kind == "experiment"}
    now = time.time()
    live = {k: c for k, c in store.claims().items() if looks_live(c)}
    announced = [r for r in store.runners().values() if looks_live(r)]

    work = None
    if set_ is not None:
        names, work = planned_work(set_, data, store.path)
    else:
        names = {k: r.name for k, r in latest.items()} | {k: c.name for k, c in live.items()}
    rows = [row(key, name, latest.get(key), live.get(key), now) for key, name in names.items()]

    counts = {s: 0 for s in STATES}
    for r in rows:
        counts[r.state] += 1
    left = sum(needs_running(key, latest.get(key)) for key in names)
    if set_ is None and announced:  # one announcement per set: runners of one set share its plan
        per_set = {r.set: r.left for r in sorted(announced, key=lambda r: r.heartbeat)}
        left = sum(per_set.values())
        counts[PENDING] = max(0, left - counts[RUNNING])
    # as many at a time as the runners run (their --jobs, where they announce it)
    slots = sum(r.jobs for r in announced) or len(live) or 1
    if work is not None:
        running = {k: (now - datetime.fromisoformat(c.since).timestamp(), c.eta_s) for k, c in live.items()
                   if k in work}
        todo = [k for k in names if needs_running(k, latest.get(k)) or k in running]
        guess = estimate(work, finished(work, latest), todo, running, slots)
    else:  # the runners' own estimates (each has its plan's work), one per set, the latest
        told = {r.set: r for r in sorted(announced, key=lambda r: r.heartbeat)}
        made = [r for r in told.values() if r.eta_s is not None]
        guess = (Estimate(sum(r.eta_s for r in made), "; ".join(f"set {r.set}: {r.estimate}" for r in made))
                 if made else Estimate(None, "add --set NAME (the set the runners run) for an estimate from "
                                             "comparable finished work"))
    runners = sorted({c.label for c in live.values()} | {r.label for r in announced})
    return SweepStatus(store.path, rows, counts, runners, guess.seconds, left, lock_warning(store.path),
                       announced, live, guess.how)


def lock_warning(results: Path) -> str | None:
    """Say so when a runner has held the results lock past lock.SLOW_S (paused or hung): every
    other runner of the folder waits on it."""
    found = holder(results.parent)
    if found is None:
        return None
    try:
        held_s = time.time() - float(found["since"])
        who, pid = f"{found['host']}:{found['pid']}", found["pid"]
    except (KeyError, TypeError, ValueError):
        return f"a runner holds the results lock of {results.parent} and did not leave its name"
    if held_s < SLOW_S:
        return None
    return (f"runner {who} has held the results lock for {held_s:.0f} s (writing {found.get('results')}), and "
            f"the other runners wait for it: if it is stopped, `kill -CONT {pid}`; if it hangs, `kill {pid}`")


def planned_work(set_: str | ExperimentSet, data, results: Path) -> tuple[dict[str, str], dict[str, Work]]:
    """The plan's names and each experiment's work, by key."""
    exp_set = set_ if isinstance(set_, ExperimentSet) else load_set(set_)
    # the token cache is derived data, not results: filling it keeps status fast next time
    corpus = load_corpus(data or exp_set.data or "kjv", cache_dir=cache_dir(results))
    planned = plan(exp_set.experiments, corpus.fingerprint)
    freq = Frequencies.of(corpus.train, corpus.vocab_size)
    works = {}
    for key, p in planned.items():
        try:
            works[key] = work_of(p.experiment, architecture.of(p.experiment).plan(p.experiment, freq))
        except ConfigError:  # an experiment the data refuses: run says so; here it costs nothing
            works[key] = Work(kind_of(p.experiment), 1)
    return {key: p.experiment.name for key, p in planned.items()}, works


def row(key: str, name: str, head: Summary | None, claim: Claim | None, now: float) -> Row:
    if claim is not None and (head is None or not head.ok):
        age = now - claim.heartbeat  # by two clocks: a hint, never a verdict (claims.py)
        quiet = f" (no heartbeat for {age:.0f} s: paused?)" if age > STALE_S else ""
        return Row(name, key, RUNNING, f"by {claim.label} since {claim.since}, last heartbeat {age:.0f}s ago{quiet}"
                                       f"{doing(claim)}")
    if head is None:
        return Row(name, key, PENDING)
    if head.ok:
        return Row(name, key, DONE, f"val PPL {ppl(head.val_ppl)}, test PPL {ppl(head.test_ppl)}, "
                                    f"{head.seconds or 0:.0f}s")
    if head.status == INTERRUPTED:
        return Row(name, key, INTERRUPTED, f"after {head.seconds or 0:.0f}s, {head.finished}")
    return Row(name, key, FAILED, head.error or "")


def doing(claim: Claim) -> str:
    """What a claimed experiment is doing, as its runner last published it: ', training 42%, about 3 min left'."""
    if claim.phase is None:
        return ""
    fraction = f" {100 * claim.fraction:.0f}%" if claim.fraction is not None else ""
    detail = f" ({claim.detail})" if claim.detail else ""
    eta = f", about {duration(claim.eta_s)} left" if claim.eta_s is not None else ""
    return f"; {claim.phase}{fraction}{detail}{eta}"


SHOWN_WHEN_SUMMARISED = (RUNNING, FAILED, INTERRUPTED)


def shown_rows(s: SweepStatus, list_all: bool, limit: int = 40) -> tuple[list[Row], int]:
    """The rows a person wants to see: all of a small sweep; of a big one (more than `limit`
    rows) only what needs attention, running, failed and interrupted, up to `limit`, unless
    `list_all`. Returns them and how many rows were left out."""
    if list_all or len(s.rows) <= limit:
        return s.rows, 0
    attention = [r for r in s.rows if r.state in SHOWN_WHEN_SUMMARISED]
    return attention[:limit], len(s.rows) - min(len(attention), limit)



def summary_line(s: SweepStatus) -> str:
    parts = ", ".join(f"{n:,} {state}" for state, n in s.counts.items())
    if s.left == 0:
        return f"{parts}: nothing left to run"
    who = f"{len(s.runners)} runner(s): {', '.join(s.runners)}" if s.runners else "no runner running now"
    if s.eta_s is None:
        return f"{parts}; no estimate of the time left: {s.how} ({who})"
    return f"{parts}; about {duration(s.eta_s)} left, {s.how} ({who})"
