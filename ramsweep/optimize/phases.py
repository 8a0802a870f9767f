"""Architecture search in phases (docs/design.md §5b): a grid over sizes, then GA and TS on each
unit's neurons or bits, each phase starting from the one before's choice.

A genome is the sizes of every unit (a bitwise model's bit clusters, a tiered model's tiers):
(neurons, bits) lists. The fitness of a genome comes from a SizeScorer (optimize/sizes.py), which
trains a (cluster, bits) once and gets any neuron count from prefix sums, so a size change costs a
closed-form pass; a tiered model's from a TieredSizeScorer (optimize/tiered_sizes.py), which
trains a (tier, neurons, bits) once and combines cached tiers. The search's state is one JSON-able
dict, advanced one grid pair, generation or iteration at a time and handed to `checkpoint` after
each: a killed search resumes and ends as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ramsweep.config import MAX_BITS, MAX_NEURONS, Experiment, Phase

Genome = tuple[tuple[int, ...], tuple[int, ...]]  # (neurons per unit, bits per unit)
STATE_VERSION = 1


@dataclass
class Scored:
    """Every genome a phase has scored: (CE, accuracy) on the fitness slice, in order of first scoring."""

    values: dict[Genome, tuple[float, float]] = field(default_factory=dict)

    def losses(self, genomes: list[Genome], kind: str) -> list[float]:
        """Lower is better: CE, −accuracy, or the harmonic mean of the CE and accuracy ranks among
        `genomes` (ties in a rank share the lower rank; HARMONIC ties then go by CE)."""
        ce = np.array([self.values[g][0] for g in genomes])
        acc = np.array([self.values[g][1] for g in genomes])
        if kind == "ce":
            return ce.tolist()
        if kind == "accuracy":
            return (-acc).tolist()
        rank_ce = np.searchsorted(np.sort(ce), ce, side="left") + 1
        rank_acc = np.searchsorted(np.sort(-acc), -acc, side="left") + 1
        harmonic = 2.0 / (1.0 / rank_ce + 1.0 / rank_acc)
        return (harmonic + ce * 1e-9 / (1.0 + np.abs(ce).max())).tolist()  # by CE within a rank

    def best(self, kind: str, count: int) -> list[Genome]:
        """The `count` best distinct genomes scored so far."""
        genomes = list(self.values)
        losses = self.losses(genomes, kind)
        order = sorted(range(len(genomes)), key=lambda i: (losses[i], i))
        return [genomes[i] for i in order[:count]]


@dataclass(frozen=True)
class Outcome:
    """What run_experiment records of a search: the start and chosen models, and the summary."""

    start: object
    chosen: object
    chosen_label: str
    summary: dict


@dataclass
class Context:
    """What a search needs besides its state."""

    exp: Experiment
    fit: Callable[[Genome], tuple[float, float]]  # (CE, accuracy) on the fitness slice
    validate: Callable[[Genome], tuple[float, float]]  # the same, trained on the whole split, on validation
    checkpoint: Callable[[dict], None]
    progress: Callable[[dict], None]


def search(exp: Experiment, start: Genome, fit, validate, resume: dict | None, checkpoint, progress):
    """The size phases from `resume` (what `checkpoint` was handed last; set aside if it is not
    whole) or from the start: (the state, the connections phase's own checkpoint to resume, or
    None). `fit` and `validate` score a genome on the fitness slice and on validation."""
    saved, inner = split(resume)
    state = restore(saved, exp, start) if saved is not None else None
    inner = inner if state is not None else None  # a phases' state set aside takes its connections' along
    state = state or new_state(exp, start)
    ctx = Context(exp, lambda g: fit(*g), lambda g: validate(*g), lambda s: checkpoint(encode(s)), progress)
    return run(ctx, state), inner


def spec_digest(exp: Experiment) -> str:
    return hashlib.sha256(json.dumps(exp.spec(), sort_keys=True).encode()).hexdigest()


def new_state(exp: Experiment, start: Genome) -> dict:
    return {"version": STATE_VERSION, "spec": spec_digest(exp), "phase": 0, "start": [list(g) for g in start],
            "step": None, "phases": [], "evaluations": 0, "elapsed_s": 0.0, "stopped": None}


def phase_seed(exp: Experiment, index: int) -> int:
    phase = exp.optimize.phases[index]
    return phase.seed if phase.seed is not None else (exp.optimize.seed + index) % 2**64


# ---------------------------------------------------------------- moves


def mutate(genome: Genome, phase: Phase, rate: float, rng: np.random.Generator,
           at_least_one: bool = False) -> tuple[Genome, list[list[int]]]:
    """Each gene of the phase's size moves, with probability `rate`, by ±phase.step (the sign drawn
    evenly), clipped to the phase's range. Returns the mutant and its moves [unit, old, new]."""
    which = 0 if phase.search == "neurons" else 1
    genes = list(genome[which])
    hits = np.flatnonzero(rng.random(len(genes)) < rate)
    if at_least_one and hits.size == 0:
        hits = np.array([rng.integers(len(genes))])
    lo, hi = phase.bounds
    moves = []
    for unit in hits.tolist():
        sign = 1 if rng.random() < 0.5 else -1
        new = min(hi, max(lo, genes[unit] + sign * phase.step))
        if new != genes[unit]:
            moves.append([unit, genes[unit], new])
            genes[unit] = new
    out = (tuple(genes), genome[1]) if which == 0 else (genome[0], tuple(genes))
    return out, moves


def crossover(a: Genome, b: Genome, cut: int) -> Genome:
    """Units [0, cut) from a, the rest from b (both sizes of a unit go together)."""
    return (a[0][:cut] + b[0][cut:], a[1][:cut] + b[1][cut:])


def tournament(losses: list[float], size: int, rng: np.random.Generator) -> int:
    entrants = rng.choice(len(losses), size=size, replace=False)
    return int(min(entrants, key=lambda i: (losses[i], i)))


# ---------------------------------------------------------------- the phases


def run(ctx: Context, state: dict) -> dict:
    """Every phase from where `state` stands; the finished state (its `phases` the record's). A
    `connections` phase (the last, where one is allowed) is not run here: the state stops at it
    (state["phase"] its index) and the architecture runs §5's search on the chosen sizes."""
    phases, cap = ctx.exp.optimize.phases, ctx.exp.optimize.max_minutes
    while state["phase"] < len(phases) and phases[state["phase"]].search != "connections":
        index = state["phase"]
        phase = phases[index]
        start = (tuple(state["start"][0]), tuple(state["start"][1]))
        if state["step"] is None:
            state["step"] = begin(ctx, phase, index, start)
        t0 = time.perf_counter()
        scored = Scored({(tuple(k[0]), tuple(k[1])): tuple(v) for k, v in state["step"]["scored"]})
        while not state["step"]["finished"]:
            advance(ctx, phase, index, state, scored)
            state["step"]["scored"] = [[[list(g[0]), list(g[1])], list(v)] for g, v in scored.values.items()]
            state["elapsed_s"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            if cap is not None and state["elapsed_s"] > 60 * cap and not state["step"]["finished"]:
                state["step"]["finished"], state["stopped"] = True, "time cap"
            tell(ctx, state, index, state["step"], done=False)
            ctx.checkpoint(state)
        state["phases"].append(choose(ctx, phase, index, start, scored, state))
        finished = state["step"]
        chosen = state["phases"][-1]["chosen"]
        state["start"], state["step"] = [chosen["neurons"], chosen["bits"]], None
        state["phase"] = len(phases) if state["stopped"] else index + 1
        tell(ctx, state, index, finished, done=state["phase"] >= len(phases))
        ctx.checkpoint(state)
    return state


def begin(ctx: Context, phase: Phase, index: int, start: Genome) -> dict:
    """A phase's first state: the grid's pairs, or GA's first population / TS's start."""
    rng = np.random.default_rng(phase_seed(ctx.exp, index))
    step = {"finished": False, "stage": "grid" if phase.search == "grid" else None, "count": 0, "since_best": 0,
            "best": None, "history": [], "scored": [], "rng": None}
    if phase.search == "grid":
        step["pairs"] = [[n, b] for n in phase.neurons for b in phase.bits]
    else:
        step["stage"] = "ts" if phase.strategy == "ts" else "ga"
        if step["stage"] == "ga":
            rate = min(1.0, 10 * phase.mutation)
            population = [start] + [mutate(start, phase, rate, rng)[0] for _ in range(phase.population - 1)]
            step["population"] = [[list(g[0]), list(g[1])] for g in population]
        step["current"], step["tabu"] = [list(start[0]), list(start[1])], []
    step["rng"] = rng.bit_generator.state
    return step


def advance(ctx: Context, phase: Phase, index: int, state: dict, scored: Scored) -> None:
    """One grid pair, generation or iteration."""
    step = state["step"]
    rng = np.random.default_rng()
    rng.bit_generator.state = step["rng"]
    if step["stage"] == "grid":
        n, b = step["pairs"][step["count"]]
        units = len(state["start"][0])
        genome = ((n,) * units, (b,) * units)
        score(ctx, state, scored, [genome])
        ce, acc = scored.values[genome]
        step["history"].append({"step": step["count"], "neurons": n, "bits": b, "ce": ce, "accuracy": acc})
        step["count"] += 1
        step["finished"] = step["count"] >= len(step["pairs"])
    elif step["stage"] == "ga":
        ga_step(ctx, phase, state, scored, rng)
    else:
        ts_step(ctx, phase, state, scored, rng)
    step["rng"] = rng.bit_generator.state


def score(ctx: Context, state: dict, scored: Scored, genomes: list[Genome]) -> None:
    for genome in genomes:
        if genome not in scored.values:
            scored.values[genome] = tuple(float(v) for v in ctx.fit(genome))
            state["evaluations"] += 1


def note(step: dict, stage: str, scored: Scored, genomes: list[Genome], kind: str) -> None:
    """The step's history line (best and mean CE and accuracy of the genomes scored together, best
    by the fitness) and the patience count: steps since the phase's best changed."""
    losses = scored.losses(genomes, kind)
    best = genomes[int(np.argmin(losses))]
    ce = [scored.values[g][0] for g in genomes]
    acc = [scored.values[g][1] for g in genomes]
    step["history"].append({"stage": stage, "step": step["count"], "best_ce": scored.values[best][0],
                            "best_accuracy": scored.values[best][1], "mean_ce": float(np.mean(ce)),
                            "mean_accuracy": float(np.mean(acc))})
    overall = scored.best(kind, 1)[0]
    key = [list(overall[0]), list(overall[1])]
    step["since_best"] = 0 if key != step["best"] else step["since_best"] + 1
    step["best"] = key
    step["count"] += 1


def ga_step(ctx: Context, phase: Phase, state: dict, scored: Scored, rng: np.random.Generator) -> None:
    step, kind = state["step"], ctx.exp.optimize.fitness
    population = [(tuple(g[0]), tuple(g[1])) for g in step["population"]]
    score(ctx, state, scored, population)
    note(step, "ga", scored, population, kind)
    losses = scored.losses(population, kind)
    if step["count"] > phase.generations or (phase.patience is not None and step["since_best"] >= phase.patience):
        return next_stage(phase, step, scored, kind)
    order = sorted(range(len(population)), key=lambda i: (losses[i], i))
    children = [population[i] for i in order[: phase.elitism]]
    units = len(population[0][0])
    while len(children) < phase.population:
        a = population[tournament(losses, phase.tournament, rng)]
        b = population[tournament(losses, phase.tournament, rng)]
        child = crossover(a, b, int(rng.integers(1, units))) if units > 1 and rng.random() < phase.crossover else a
        children.append(mutate(child, phase, phase.mutation, rng)[0])
    step["population"] = [[list(g[0]), list(g[1])] for g in children]


def next_stage(phase: Phase, step: dict, scored: Scored, kind: str) -> None:
    """GA is over: TS from its best (GA+TS), or the phase is."""
    if phase.strategy == "ga+ts":
        best = scored.best(kind, 1)[0]
        step.update(stage="ts", count=0, since_best=0, current=[list(best[0]), list(best[1])], tabu=[])
    else:
        step["finished"] = True


def ts_step(ctx: Context, phase: Phase, state: dict, scored: Scored, rng: np.random.Generator) -> None:
    step, kind = state["step"], ctx.exp.optimize.fitness
    if step["count"] >= phase.iterations or (phase.patience is not None and step["since_best"] >= phase.patience):
        step["finished"] = True
        return
    current = (tuple(step["current"][0]), tuple(step["current"][1]))
    neighbours = [mutate(current, phase, phase.ts_mutation, rng, at_least_one=True) for _ in range(phase.neighbours)]
    neighbours = [(g, moves) for g, moves in neighbours if moves]  # a move clipped to nothing changes nothing
    best_seen = scored.best(kind, 1)[0] if scored.values else None
    score(ctx, state, scored, [current] + [g for g, _ in neighbours])
    together = [current] + [g for g, _ in neighbours]
    losses = dict(zip(together, scored.losses(together, kind)))
    tabu = {tuple(m) for m in step["tabu"]}
    allowed = []
    for g, moves in neighbours:
        undoes = any((unit, new, old) in tabu for unit, old, new in moves)
        beats = best_seen is None or scored.losses([g, best_seen], kind)[0] < scored.losses([g, best_seen], kind)[1]
        if not undoes or beats:
            allowed.append((g, moves))
    if allowed:
        g, moves = min(allowed, key=lambda gm: losses[gm[0]])
        step["current"] = [list(g[0]), list(g[1])]
        step["tabu"] = (step["tabu"] + moves)[-phase.tabu:] if phase.tabu else []
    note(step, "ts", scored, together, kind)


def choose(ctx: Context, phase: Phase, index: int, start: Genome, scored: Scored, state: dict) -> dict:
    """The phase's candidates (its start, then its best distinct genomes by fitness) compared on
    validation; the lowest wins, ties keeping the earlier (the start first)."""
    kind = ctx.exp.optimize.fitness
    labelled = [("start", start)]
    for i, genome in enumerate(scored.best(kind, ctx.exp.optimize.candidates) if scored.values else []):
        if genome not in dict((g, label) for label, g in labelled):
            labelled.append((f"candidate {i + 1}", genome))
    on_validation = Scored({g: tuple(float(v) for v in ctx.validate(g)) for _, g in labelled})
    losses = on_validation.losses([g for _, g in labelled], kind)
    win = min(range(len(labelled)), key=lambda i: (losses[i], i))
    selection = [{"label": label, "neurons": list(g[0]), "bits": list(g[1]),
                  "validation_ce": on_validation.values[g][0], "validation_accuracy": on_validation.values[g][1]}
                 for label, g in labelled]
    chosen = labelled[win][1]
    return {"phase": index, "search": phase.search, "strategy": None if phase.search == "grid" else phase.strategy,
            "start": {"neurons": list(start[0]), "bits": list(start[1])},
            "chosen": {"neurons": list(chosen[0]), "bits": list(chosen[1])}, "chosen_label": labelled[win][0],
            "history": state["step"]["history"], "selection": selection, "evaluations": len(scored.values),
            "seconds": state["elapsed_s"] - sum(p["seconds"] for p in state["phases"])}


def summary(exp: Experiment, state: dict, start: Genome, chosen: Genome, label: str,
            fit: Callable[[Genome], tuple[float, float]], examples: dict, search_s: float) -> dict:
    """The record's `search` of a finished search in phases (docs/design.md §5b): §5's summary
    fields (fitness_before/after: the start's and the chosen sizes' fitness on the fitness slice,
    its value CE, or accuracy under ACCURACY; HARMONIC's is CE), the start and chosen sizes, and
    the phases."""
    kind = "accuracy" if exp.optimize.fitness == "accuracy" else "ce"

    def figure(value: tuple[float, float]) -> dict:
        ce, accuracy = (float(v) for v in value)
        return {"value": accuracy if kind == "accuracy" else ce, "ce": ce, "accuracy": accuracy}

    return {"strategy": "phases", "fitness": exp.optimize.fitness, "units": len(start[0]), "improved": chosen != start,
            "evaluations": state["evaluations"], "search_s": search_s, "stopped": state["stopped"], "chosen": label,
            "examples": examples, "fitness_before": figure(fit(start)), "fitness_after": figure(fit(chosen)),
            "sizes": {"start": {"neurons": list(start[0]), "bits": list(start[1])},
                      "chosen": {"neurons": list(chosen[0]), "bits": list(chosen[1])}},
            "phases": state["phases"]}


def planned(phase: Phase, step: dict | None) -> int:
    """Evaluations a phase has left at most (from `step`, or all of them): a genome scored before
    costs nothing, so this is an upper bound."""
    if phase.search == "grid":
        return len(phase.neurons) * len(phase.bits) - (step["count"] if step else 0)
    stage, count = (step["stage"], step["count"]) if step else ("ts" if phase.strategy == "ts" else "ga", 0)
    ts = phase.iterations * phase.neighbours
    if stage == "ga":
        return (phase.generations + 1 - count) * phase.population + (ts if phase.strategy == "ga+ts" else 0)
    return (phase.iterations - count) * phase.neighbours


def tell(ctx: Context, state: dict, index: int, step: dict, done: bool) -> None:
    """Where the search is (phase `index`, `step` its state), its best CE, its speed and an ETA
    from the evaluations left at most at the speed so far (None: done, or no speed yet)."""
    phases = ctx.exp.optimize.phases
    best = min((h.get("best_ce", h.get("ce")) for h in step["history"]), default=None)  # the phase's so far
    rate = state["evaluations"] / state["elapsed_s"] if state["elapsed_s"] > 0 and state["evaluations"] else None
    left = (0 if step["finished"] else planned(phases[index], step)) + sum(
        planned(p, None) for p in phases[index + 1:] if not state["stopped"])
    ctx.progress({"unit": index + 1, "units": len(phases), "stage": step["stage"], "step": step["count"], "done": done,
                  "eta_s": None if done else (left / rate if rate else None),
                  "best": None if best is None or math.isnan(best) else best, "evaluations_per_s": rate})


# ---------------------------------------------------------------- checkpoints


class Invalid(ValueError):
    """A checkpoint that is not this search's, or not whole."""


def encode(state: dict, inner: dict | None = None) -> dict:
    """What Checkpoints.save writes: the state as JSON (it holds no array); in a connections phase
    with that search's checkpoint `inner` beside it: {"phases": the state, "connections": its
    meta}, and its arrays (split() parts them again)."""
    if inner is None:
        return {"meta": json.dumps(state), "arrays": {}}
    return {"meta": json.dumps({"phases": state, "connections": inner["meta"]}), "arrays": dict(inner["arrays"])}


def split(saved: dict | None) -> tuple[dict | None, dict | None]:
    """(the phases' checkpoint, the connections search's or None) of what encode wrote, each with
    the file's set_aside. One that does not read goes to restore whole, which sets it aside."""
    if saved is None:
        return None, None
    try:
        meta = json.loads(saved["meta"])
    except (KeyError, TypeError, ValueError):
        return saved, None
    if not (isinstance(meta, dict) and set(meta) == {"phases", "connections"}):
        return saved, None
    aside = {"set_aside": saved["set_aside"]} if "set_aside" in saved else {}
    return ({"meta": json.dumps(meta["phases"]), **aside},
            {"meta": meta["connections"], "arrays": saved.get("arrays", {}), **aside})


def restore(saved: dict, exp: Experiment, start: Genome) -> dict | None:
    """The state a checkpoint holds, if it is this experiment's search and whole; else None, with
    the checkpoint set aside (saved["set_aside"]) so the search starts over."""
    try:
        state = json.loads(saved["meta"])
        check(state, exp, start)
        return state
    except (Invalid, ValueError, TypeError, KeyError, IndexError) as err:
        if "set_aside" in saved:
            saved["set_aside"](f"is not whole ({type(err).__name__}: {err})" if not isinstance(err, Invalid)
                               else str(err))
        return None


def need(ok: bool, what: str) -> None:
    if not ok:
        raise Invalid(what)


def genome_ok(value, units: int, ranges: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(
        isinstance(genes, list) and len(genes) == units and all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in genes)
        for genes, (lo, hi) in zip(value, ranges)))


def check(state, exp: Experiment, start: Genome) -> None:
    """Every key the search reads, its type and its range (a checkpoint's state, docs/design.md §5b)."""
    need(isinstance(state, dict) and state.get("version") == STATE_VERSION, "is from another version")
    need(state.get("spec") == spec_digest(exp), "belongs to another experiment")
    phases, units = exp.optimize.phases, len(start[0])
    widest = (MAX_NEURONS, MAX_BITS)
    need(isinstance(state["phase"], int) and 0 <= state["phase"] <= len(phases), "has a phase out of range")
    need(genome_ok(state["start"], units, ((1, widest[0]), (1, widest[1]))), "has a start of another shape")
    need(isinstance(state["evaluations"], int) and state["evaluations"] >= 0, "has no evaluation count")
    need(isinstance(state["elapsed_s"], (int, float)) and state["elapsed_s"] >= 0, "has no elapsed time")
    need(state["stopped"] in (None, "time cap"), "has an unknown stop")
    need(isinstance(state["phases"], list) and len(state["phases"]) == min(state["phase"], len(phases))
         or state["stopped"] is not None, "has another number of finished phases")
    step = state["step"]
    if step is None:
        return
    need(state["phase"] < len(phases) and isinstance(step, dict), "has a step past its phases")
    phase = phases[state["phase"]]
    need(isinstance(step["finished"], bool) and isinstance(step["count"], int) and step["count"] >= 0,
         "has a step without its counts")
    need(isinstance(step["history"], list) and isinstance(step["scored"], list), "has a step without its history")
    for item in step["scored"]:
        need(isinstance(item, list) and len(item) == 2 and genome_ok(item[0], units, ((1, widest[0]), (1, widest[1])))
             and isinstance(item[1], list) and len(item[1]) == 2, "has a scored genome of another shape")
    np.random.default_rng().bit_generator.state = step["rng"]  # raises on a state that is not PCG64's
    if phase.search == "grid":
        need(step["stage"] == "grid" and step["pairs"] == [[n, b] for n in phase.neurons for b in phase.bits]
             and step["count"] <= len(step["pairs"]), "has another grid")
        return
    lo, hi = phase.bounds
    ranges = ((lo, hi), (1, widest[1])) if phase.search == "neurons" else ((1, widest[0]), (lo, hi))
    need(step["stage"] in ("ga", "ts"), "has an unknown stage")
    need(genome_ok(step["current"], units, ranges), "has a current genome out of the phase's range")
    if step["stage"] == "ga":
        need(isinstance(step["population"], list) and len(step["population"]) == phase.population
             and all(genome_ok(g, units, ranges) for g in step["population"]), "has another population")
    need(isinstance(step["tabu"], list) and all(isinstance(m, list) and len(m) == 3 and 0 <= m[0] < units
                                                for m in step["tabu"]), "has another tabu list")
