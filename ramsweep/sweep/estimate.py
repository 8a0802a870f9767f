"""How long a sweep's experiments still take, from comparable finished work (docs/design.md §4
"Time left"): experiments of one plan share their data, so an experiment's time is its work (the
neurons one example reads, Plan.lookups) times a rate measured on the finished experiments of its
kind (its architecture, and whether it searches: a search's time is its budget's, not its
model's). A kind with nothing finished yet is not guessed: the estimate says how many it leaves
out. Every figure says how it was made."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

SAMPLE = 2_000  # left experiments whose work is summed one by one; more are sampled evenly and scaled


@dataclass(frozen=True)
class Work:
    kind: str  # "tiered", "bitwise search", ...
    lookups: int  # neurons one example reads


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing comparable has finished, or nothing is left
    how: str  # how it was made, for a person


def kind_of(exp) -> str:
    return exp.architecture + (" search" if exp.optimize is not None else "")


def work_of(exp, plan) -> Work:
    return Work(kind_of(exp), max(1, plan.lookups))


def finished(work: Mapping[str, Work], latest: Mapping) -> dict[str, float]:
    """The seconds of the plan's finished experiments (`latest`: the store's summaries by key)."""
    return {k: h.seconds for k, h in latest.items() if k in work and h.ok and h.seconds is not None}


def estimate(work: Mapping[str, Work], done: Mapping[str, float], left: list[str],
             running: Mapping[str, tuple[float, float | None]], slots: int) -> Estimate:
    """Seconds left for the `left` keys (running ones included) of a plan whose keys' work is
    `work`: `done` holds the seconds of its finished ones; `running` per key in flight (its elapsed
    seconds, its runner's own estimate of its time left or None); `slots` run at once."""
    if not left:
        return Estimate(None, "nothing left to run")
    rates: dict[str, list[float]] = {}
    for key, seconds in done.items():
        if key in work:
            rates.setdefault(work[key].kind, []).append(seconds / work[key].lookups)
    rate = {kind: statistics.median(r) for kind, r in rates.items()}
    waiting = [k for k in left if k not in running]
    step = max(1, len(waiting) // SAMPLE)
    counted: dict[str, int] = {}
    uncounted: dict[str, int] = {}
    total = 0.0
    for key in waiting[::step]:
        w = work[key]
        if w.kind in rate:
            total += step * w.lookups * rate[w.kind]
            counted[w.kind] = counted.get(w.kind, 0) + step
        else:
            uncounted[w.kind] = uncounted.get(w.kind, 0) + step
    for key, (elapsed, own) in running.items():
        w = work.get(key)
        if own is not None:
            total += own
        elif w is not None and w.kind in rate:
            total += max(0.0, w.lookups * rate[w.kind] - elapsed)
        elif w is not None:
            uncounted[w.kind] = uncounted.get(w.kind, 0) + 1
    parts = [f"{counted[k]:,} {k} at {per_k(rate[k])}, the median of {len(rates[k]):,} finished"
             for k in sorted(counted)]
    if running:
        parts.append(f"{len(running):,} running by their own estimate or that rate")
    missing = [f"{n:,} {k}" for k, n in sorted(uncounted.items())]
    how = "; ".join(parts)
    if missing:
        how += ("; " if how else "") + f"not counted (nothing of their kind finished yet): {', '.join(missing)}"
    if not counted and not (running and any(own is not None for _, own in running.values())) and missing:
        return Estimate(None, how)
    how = f"by comparable finished work (this set, this data): {how}"
    return Estimate(total / max(1, slots), how)


def per_k(rate: float) -> str:
    """A rate per neuron an example reads, as seconds per 1,000 such neurons."""
    return f"{1000 * rate:.3g} s per 1,000 neurons an example reads"
