"""Connectivity search: GA, tabu search, GA then TS, and per-cluster (docs/design.md §5).

A search is a sequence of *units*, each a genome (contiguous neuron ranges of tiers) searched
with one budget: GA, TS and GA+TS have one unit per searched tier (the research optimised its
tiered models tier by tier), or one over all of them (`scope: all`); per-cluster has one per
cluster, in cluster order, tier by tier. Each unit starts from where the previous ones left
the connectivity, and its fitness is global (all other clusters as they are). Everything the search
knows lives in one plain `state` dict (population, tabu list, random generator, history),
advanced one generation or iteration at a time and handed to `checkpoint` after each, so a
killed search resumes where it stopped and ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ramsweep.config import Optimize, SearchBudget
from ramsweep.engine.layout import Layout
from ramsweep.optimize.fitness import Change, Fitness

Candidate = tuple[np.ndarray, ...]  # one (neurons, bits) int32 array per segment of the genome


@dataclass(frozen=True)
class Genome:
    """The neurons a unit rewires: (tier, first neuron, stop) ranges, and the unit's budget."""

    segments: tuple[tuple[int, int, int], ...]
    budget: SearchBudget
    label: str

    def of(self, conn: list[np.ndarray]) -> Candidate:
        return tuple(conn[t][lo:hi].copy() for t, lo, hi in self.segments)

    def changes(self, cand: Candidate) -> list[Change]:
        return [(t, np.arange(lo, hi), rows) for (t, lo, hi), rows in zip(self.segments, cand)]

    def clusters(self, layout: Layout) -> np.ndarray:
        out = []
        for t, lo, hi in self.segments:
            tier = layout.tiers[t]
            out.append(tier.first + np.arange(lo // tier.neurons, (hi - 1) // tier.neurons + 1))
        return np.concatenate(out)


def units(opt: Optimize, layout: Layout) -> list[Genome]:
    """The search's units, in the order they run."""
    tiers = [t for t in (opt.tiers if opt.tiers is not None else range(len(layout.tiers)))]
    if opt.strategy != "per-cluster" and opt.scope == "all":
        return [Genome(tuple((t, 0, layout.tiers[t].n_neurons) for t in sorted(tiers)), opt, "all")]
    if opt.strategy != "per-cluster":
        return [Genome(((t, 0, layout.tiers[t].n_neurons),), opt.budget(t), f"tier {t}") for t in sorted(tiers)]
    out = []
    for t in sorted(tiers):
        tier = layout.tiers[t]
        for c in range(min(tier.clusters, opt.clusters or tier.clusters)):
            out.append(Genome(((t, c * tier.neurons, (c + 1) * tier.neurons),), opt.budget(t), f"tier {t} cluster {c}"))
    return out


def stages(opt: Optimize) -> list[str]:
    what = opt.per_cluster if opt.strategy == "per-cluster" else opt.strategy
    return {"ga": ["ga"], "ts": ["ts"], "ga+ts": ["ga", "ts"]}[what]


# ---------------------------------------------------------------- moves


def mutate(cand: Candidate, rate: float, rng: np.random.Generator, n_input: int,
           at_least_one: bool = False) -> tuple[Candidate, list[tuple]]:
    """Each connection replaced, with probability `rate`, by an input position its neuron does
    not use yet (drawn uniformly among those): connections stay distinct. Returns the mutant
    and its move: (segment, neuron, slot, old, new) per change."""
    out = tuple(rows.copy() for rows in cand)
    hits = [np.argwhere(rng.random(rows.shape) < rate) for rows in out]
    if at_least_one and sum(len(h) for h in hits) == 0:
        sizes = [rows.size for rows in out]
        i = int(rng.integers(sum(sizes)))
        seg = int(np.searchsorted(np.cumsum(sizes), i, side="right"))
        i -= sum(sizes[:seg])
        hits[seg] = np.array([divmod(i, out[seg].shape[1])])
    move = []
    for seg, (rows, where) in enumerate(zip(out, hits)):
        for n, j in where:
            free = np.ones(n_input, dtype=np.bool_)
            free[rows[n]] = False
            unused = np.flatnonzero(free)  # setdiff1d(arange(n_input), rows[n]): the same sorted values
            new = unused[int(rng.integers(unused.shape[0]))]
            move.append((seg, int(n), int(j), int(rows[n, j]), int(new)))
            rows[n, j] = new
    return out, move


def crossover(a: Candidate, b: Candidate, cut: int) -> Candidate:
    """Single point at a neuron boundary: the first `cut` neurons (over all segments) from a."""
    out, start = [], 0
    for ra, rb in zip(a, b):
        k = min(max(cut - start, 0), ra.shape[0])
        out.append(np.concatenate([ra[:k], rb[k:]]))
        start += ra.shape[0]
    return tuple(out)


# ---------------------------------------------------------------- the search


@dataclass
class Context:
    fitness: Fitness
    opt: Optimize
    units: list[Genome]
    checkpoint: Callable[[dict], None]
    progress: Callable[[dict], None]
    deadline: float | None  # state["elapsed_s"] at which to stop (the wall-time cap)


def new_state(opt: Optimize) -> dict:
    rng = np.random.Generator(np.random.PCG64(opt.seed))
    return {"unit": 0, "stage": 0, "ga": None, "ts": None, "history": [], "evaluations": 0, "top": [],
            "rng": rng.bit_generator.state, "elapsed_s": 0.0, "stopped": None, "done": False,
            "unit_start": None, "improved": 0}


def run(ctx: Context, state: dict) -> dict:
    """Advance `state` to the end of the search (or the time cap), checkpointing each step."""
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = state["rng"]
    names = stages(ctx.opt)
    while not state["done"]:
        t0 = time.perf_counter()
        genome = ctx.units[state["unit"]]
        ctx.fitness.set_scope(genome.clusters(ctx.fitness.layout))
        finished = (ga_step if names[state["stage"]] == "ga" else ts_step)(ctx, state, genome, rng)
        if finished:
            advance(ctx, state, genome, names)
        state["elapsed_s"] += time.perf_counter() - t0
        state["evaluations"] = ctx.fitness.evaluations
        if ctx.deadline is not None and state["elapsed_s"] >= ctx.deadline and not state["done"]:
            finish_unit(ctx, state, genome)
            state["stopped"], state["done"] = "time cap", True
        state["rng"] = rng.bit_generator.state
        ctx.checkpoint(state)
        tell_progress(ctx, state, names)
    return state


def advance(ctx: Context, state: dict, genome: Genome, names: list[str]) -> None:
    """A stage ended: TS starts from GA's best; after the last stage, the next unit."""
    if state["stage"] + 1 < len(names):
        state["stage"] += 1
        return
    finish_unit(ctx, state, genome)
    state["unit"], state["stage"] = state["unit"] + 1, 0
    state["done"] = state["unit"] >= len(ctx.units)


def finish_unit(ctx: Context, state: dict, genome: Genome) -> None:
    """Keep the unit's best as the current connectivity (TS keeps its current one otherwise)."""
    found = state["ts"] or state["ga"] or {}
    if found.get("best") is not None:
        ctx.fitness.commit(genome.changes(found["best"]))
        state["improved"] += found["best_loss"] < state["unit_start"]  # units whose search beat their start
    state["ga"] = state["ts"] = None


def note(ctx: Context, state: dict, stage: str, step: int, losses: list[float]) -> None:
    """One history line, in the fitness as a user reads it (losses negate accuracy and SIMPLE)."""
    sign = 1.0 if ctx.opt.fitness == "ce" else -1.0
    best = min(losses)
    state["history"].append({"unit": state["unit"], "stage": stage, "step": step, "best": sign * float(best),
                             "mean": sign * float(np.mean(losses)), "evaluations": ctx.fitness.evaluations,
                             "elapsed_s": state["elapsed_s"]})


def remember(ctx: Context, state: dict, genome: Genome, cands: list[Candidate], losses: list[float]) -> None:
    """Keep the opt.candidates best distinct candidates of a single-unit search, for validation."""
    if len(ctx.units) != 1:
        return
    top = state["top"] + [(float(loss), cand) for loss, cand in zip(losses, cands)]
    top.sort(key=lambda item: item[0])
    kept, seen = [], set()
    for loss, cand in top:
        key = b"".join(rows.tobytes() for rows in cand)
        if key not in seen:
            seen.add(key)
            kept.append((loss, cand))
    state["top"] = kept[: ctx.opt.candidates]


def ga_step(ctx: Context, state: dict, genome: Genome, rng: np.random.Generator) -> bool:
    """One GA generation (the first call builds the initial population). True when done."""
    b, f, n_input = genome.budget, ctx.fitness, ctx.fitness.layout.n_input
    ga = state["ga"]
    if ga is None:
        start = genome.of(f.conn)
        pop = [start] + [mutate(start, min(1.0, 10 * b.mutation), rng, n_input)[0] for _ in range(b.population - 1)]
        losses = [v.loss for v in f.evaluate([genome.changes(c) for c in pop])]
        best = int(np.argmin(losses))
        state["unit_start"] = losses[0]  # the population's first member is the start itself
        state["ga"] = {"generation": 0, "population": pop, "losses": losses, "best": pop[best],
                       "best_loss": losses[best], "stale": 0}
        remember(ctx, state, genome, pop, losses)
        note(ctx, state, "ga", 0, losses)
        return b.generations == 0
    pop, losses = ga["population"], ga["losses"]
    ranked = np.argsort(losses, kind="stable")
    elites = [pop[i] for i in ranked[: b.elitism]]
    children = []
    n_neurons = sum(rows.shape[0] for rows in pop[0])
    while len(elites) + len(children) < b.population:
        p1, p2 = (pop[tournament(losses, b.tournament, rng)] for _ in range(2))
        child = crossover(p1, p2, int(rng.integers(1, n_neurons))) if n_neurons > 1 and rng.random() < b.crossover \
            else p1
        children.append(mutate(child, b.mutation, rng, n_input)[0])
    child_losses = [v.loss for v in f.evaluate([genome.changes(c) for c in children])]
    ga["population"] = elites + children
    ga["losses"] = [losses[i] for i in ranked[: b.elitism]] + child_losses
    ga["generation"] += 1
    best = int(np.argmin(ga["losses"]))
    improved = ga["losses"][best] < ga["best_loss"]
    if improved:
        ga["best"], ga["best_loss"] = ga["population"][best], ga["losses"][best]
    ga["stale"] = 0 if improved else ga["stale"] + 1
    remember(ctx, state, genome, children, child_losses)
    note(ctx, state, "ga", ga["generation"], ga["losses"])
    return ga["generation"] >= b.generations or (b.patience is not None and ga["stale"] >= b.patience)


def tournament(losses: list[float], size: int, rng: np.random.Generator) -> int:
    entrants = rng.integers(0, len(losses), size=size)
    return int(min(entrants, key=lambda i: (losses[i], i)))


def ts_step(ctx: Context, state: dict, genome: Genome, rng: np.random.Generator) -> bool:
    """One tabu-search iteration from the current connectivity (the first call starts from the
    GA's best, or the current one). True when done."""
    b, f, n_input = genome.budget, ctx.fitness, ctx.fitness.layout.n_input
    ts = state["ts"]
    if ts is None:
        start = state["ga"]["best"] if state["ga"] else genome.of(f.conn)
        value = f.commit(genome.changes(start))
        if state["ga"] is None:  # TS alone: its start is the unit's
            state["unit_start"] = value.loss
            note(ctx, state, "ts", 0, [value.loss])
        state["ga"] = None
        state["ts"] = ts = {"iteration": 0, "best": start, "best_loss": value.loss, "tabu": [], "stale": 0}
        if b.iterations == 0:
            return True
    current = genome.of(f.conn)
    mutants = [mutate(current, b.ts_mutation, rng, n_input, at_least_one=True) for _ in range(b.neighbours)]
    values = f.evaluate([genome.changes(m) for m, _ in mutants])
    losses = [v.loss for v in values]
    remember(ctx, state, genome, [m for m, _ in mutants], losses)
    undone = {(seg, n, j, old) for move in ts["tabu"] for seg, n, j, old, _ in move}
    allowed = [i for i, (_, move) in enumerate(mutants)
               if losses[i] < ts["best_loss"] or not any((seg, n, j, new) in undone for seg, n, j, _, new in move)]
    ts["iteration"] += 1
    if allowed:
        i = min(allowed, key=lambda i: (losses[i], i))
        f.commit(genome.changes(mutants[i][0]))
        ts["tabu"] = (ts["tabu"] + [mutants[i][1]])[-b.tabu:] if b.tabu else []
        improved = losses[i] < ts["best_loss"]
        if improved:
            ts["best"], ts["best_loss"] = mutants[i][0], losses[i]
        ts["stale"] = 0 if improved else ts["stale"] + 1
    else:
        ts["stale"] += 1
    note(ctx, state, "ts", ts["iteration"], losses)
    return ts["iteration"] >= b.iterations or (b.patience is not None and ts["stale"] >= b.patience)


def tell_progress(ctx: Context, state: dict, names: list[str]) -> None:
    """Progress: where the search is, its best fitness, evaluations per second and an ETA."""
    last = state["history"][-1] if state["history"] else None
    rate = state["evaluations"] / state["elapsed_s"] if state["elapsed_s"] > 0 else None
    planned = planned_evaluations(ctx)
    eta = (planned - state["evaluations"]) / rate if rate else None
    ctx.progress({"unit": min(state["unit"] + 1, len(ctx.units)), "units": len(ctx.units),
                  "stage": last["stage"] if last else names[0], "step": last["step"] if last else 0,
                  "best": last["best"] if last else None, "evaluations": state["evaluations"],
                  "evaluations_per_s": rate, "eta_s": None if state["done"] else max(0.0, eta or 0.0),
                  "done": state["done"]})


def planned_evaluations(ctx: Context) -> int:
    """Candidate evaluations of the whole budget (early stops make the real number smaller)."""
    total = 0
    for g in ctx.units:
        b = g.budget
        for name in stages(ctx.opt):
            total += b.population + b.generations * (b.population - b.elitism) if name == "ga" \
                else b.iterations * b.neighbours
    return total
