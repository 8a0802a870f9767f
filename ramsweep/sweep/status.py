"""`ramsweep status`: where a sweep stands, read from its results and claims files only
(never written), so it is safe to run while runners work."""

from __future__ import annotations

import statistics
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path

from ramsweep.errors import StoreError
from ramsweep.sweep.claims import is_live, owner_label
from ramsweep.sweep.store import FAILED, INTERRUPTED, OK, ResultsStore

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
    median_s: float | None  # per completed experiment, None before the first
    eta_s: float | None  # None when unknown (nothing finished yet) or nothing left
    left: int = field(default=0)


def status(results: str | Path, set_=None, *, data=None) -> SweepStatus:
    """Per experiment: done / failed / interrupted / running (by whom) / pending. Pending
    experiments are known only with a set (`set_`: name, path or ExperimentSet)."""
    store = ResultsStore(results)
    if not store.path.exists() and set_ is None:
        raise StoreError(f"{store.path}: no such results file; name the one `ramsweep run` writes, "
                         f"or add --set to see what is pending")
    records = store.records()
    latest = {}
    for r in (r for r in records if r.get("kind", "experiment") == "experiment"):
        # an ok record wins over later attempts (--force re-runs are still done)
        if latest.get(r["key"], {}).get("status") != OK or r.get("status") == OK:
            latest[r["key"]] = r
    claims = store.claims()
    now = time.time()
    live = {k: c for k, c in claims.items() if is_live(c, now)}

    if set_ is not None:
        names = planned_names(set_, data, store.path)
    else:
        names = {k: r["name"] for k, r in latest.items()} | {k: c["name"] for k, c in live.items()}
    rows = [row(key, name, latest.get(key), live.get(key), now) for key, name in names.items()]

    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    timings = [r["timing"]["total_s"] for r in latest.values() if r.get("status") == OK]
    median_s = statistics.median(timings) if timings else None
    left = counts[PENDING] + counts[FAILED] + counts[INTERRUPTED] + counts[RUNNING]
    eta_s = None
    if median_s is not None and left:
        elapsed = [now - datetime.fromisoformat(c["since"]).timestamp() for c in live.values()]
        running_left = sum(max(0.0, median_s - e) for e in elapsed)
        # as many at a time as are running now: the runners' --jobs is not recorded anywhere else
        eta_s = ((left - counts[RUNNING]) * median_s + running_left) / max(1, len(live))
    runners = sorted({owner_label(c) for c in live.values()})
    return SweepStatus(store.path, rows, counts, runners, median_s, eta_s, left)


def planned_names(set_, data, results: Path) -> dict[str, str]:
    from ramsweep.config import ExperimentSet, load_set
    from ramsweep.data import load_corpus
    from ramsweep.sweep.plan import plan
    from ramsweep.sweep.runner import cache_dir

    exp_set = set_ if isinstance(set_, ExperimentSet) else load_set(set_)
    # the token cache is derived data, not results: filling it keeps status fast next time
    fingerprint = load_corpus(data or exp_set.data or "kjv", cache_dir=cache_dir(results)).fingerprint
    names: dict[str, str] = {}
    for p in plan(exp_set.experiments, fingerprint, set()):
        names.setdefault(p.key, p.experiment.name)
    return names


def row(key: str, name: str, record: dict | None, claim: dict | None, now: float) -> Row:
    if claim is not None and (record is None or record.get("status") != OK):
        return Row(name, key, RUNNING, f"by {owner_label(claim)} since {claim['since']}, "
                                       f"heartbeat {now - claim['heartbeat']:.0f}s ago")
    if record is None:
        return Row(name, key, PENDING)
    if record["status"] == OK:
        v, t = record["metrics"]["validation"], record["metrics"]["test"]
        return Row(name, key, DONE, f"val PPL {v['ppl']:,.0f}, test PPL {t['ppl']:,.0f}, "
                                    f"{record['timing']['total_s']:.0f}s")
    if record["status"] == INTERRUPTED:
        return Row(name, key, INTERRUPTED, f"after {record['timing']['elapsed_s']:.0f}s, {record['finished']}")
    return Row(name, key, FAILED, record.get("error", ""))


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summary_line(s: SweepStatus) -> str:
    parts = ", ".join(f"{n} {state}" for state, n in s.counts.items())
    if s.left == 0:
        return f"{parts}: nothing left to run"
    if s.eta_s is None:
        return f"{parts}: no experiment finished yet, so no estimate of the time left"
    who = f"{len(s.runners)} runner(s): {', '.join(s.runners)}" if s.runners else "no runner running now"
    return (f"{parts}; about {duration(s.eta_s)} left at the median {duration(s.median_s)} per experiment "
            f"({who})")
