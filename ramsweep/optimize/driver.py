"""One connectivity search, start to finish, on the training and validation splits only.

    training split ──► [search part | fitness slice]      (the slice is never trained on)
    search (search.py) on the fitness slice ──► candidates: the start, the best found
    each candidate retrained on the whole training split ──► the best on validation

The test split is not an argument: nothing here can read it (docs/design.md §3 "Splits").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ramsweep.config import Experiment
from ramsweep.engine.devices import trains_on
from ramsweep.engine.layout import build_layout
from ramsweep.engine.train import Model, train
from ramsweep.errors import DataError
from ramsweep.optimize import search
from ramsweep.optimize.checkpoint import encode, restore
from ramsweep.optimize.fitness import Examples, Fitness

HISTORY_LINES = 1000  # a longer history (a per-cluster search) is kept as one line per unit


@dataclass
class SearchOutcome:
    start: Model  # the drawn connectivity, trained on the whole training split
    chosen: Model  # the candidate best on validation (may be `start`)
    chosen_label: str
    summary: dict  # what the record keeps: fitness before and after, selection, history
    state: dict = field(repr=False)


def split_for_fitness(tokens: np.ndarray, fraction: float, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(search part, fitness slice): the slice's targets are the last `fraction` of the
    training tokens; its first `context` tokens are context only (they end the search part)."""
    cut = tokens.shape[0] - int(round(fraction * tokens.shape[0]))
    if cut <= context or tokens.shape[0] - cut < 1:
        raise DataError(f"optimize: fitness_fraction {fraction} of a training split of {tokens.shape[0]:,} tokens "
                        f"leaves no example on one side; use more data or another fitness_fraction")
    return tokens[:cut], tokens[cut - context:]


def run_search(exp: Experiment, train_tokens: np.ndarray, validation: np.ndarray, vocab_size: int, *,
               device: str = "cpu", resume: dict | None = None, checkpoint: Callable[[dict], None] = lambda s: None,
               progress: Callable[[dict], None] = lambda p: None) -> SearchOutcome:
    """Search `exp.optimize`, choose on validation, and return the start and chosen models.
    `resume` is what `checkpoint` was handed last, resumed only if valid (checkpoint.py; then
    its "set_aside", if it has one, is called with why, and the search starts over).
    `device` is a resolved engine device: training runs where the engine's does; candidates
    are evaluated on the GPU for cuda and hybrid, their rows through WGSL for metal and wgpu,
    else on the CPU (same results everywhere)."""
    opt = exp.optimize
    searches_on = {"cuda": "cuda", "hybrid": "cuda", "metal": "wgpu", "wgpu": "wgpu"}.get(device, "cpu")
    device = trains_on(device)
    layout = build_layout(exp, train_tokens, vocab_size)  # the whole split's clusters, as the final model's
    part, fit_tokens = split_for_fitness(train_tokens, opt.fitness_fraction, exp.context)
    t0 = time.perf_counter()
    model = train(exp, part, vocab_size, layout=layout, device=device)
    fitness = Fitness(model, Examples.of(part, layout), Examples.of(fit_tokens, layout), opt.fitness,
                      device=searches_on)
    units = search.units(opt, layout)
    scope = np.unique(np.concatenate([u.clusters(layout) for u in units]))
    fitness.set_scope(scope)
    before = fitness_summary(fitness)
    state = search.new_state(opt) if resume is None else restore(fitness, resume, exp, units)
    deadline = opt.max_minutes * 60 if opt.max_minutes is not None else None
    ctx = search.Context(fitness, opt, units, lambda s: checkpoint(encode(s, fitness, exp)), progress, deadline)
    state = search.run(ctx, state)
    fitness.set_scope(scope)
    after = fitness_summary(fitness)
    search_s = time.perf_counter() - t0

    start_conn = model.connectivity
    found = [("final", [c.copy() for c in fitness.conn])]
    for i, (_, cand) in enumerate(state["top"]):
        conn = [c.copy() for c in start_conn]
        for (t, lo, hi), rows in zip(units[0].segments, cand):
            conn[t][lo:hi] = rows
        found.append((f"candidate {i + 1}", conn))
    chosen, label, selection = choose_on_validation(exp, train_tokens, validation, vocab_size, layout, start_conn,
                                                    found, scope, device)
    summary = {"strategy": opt.strategy, "fitness": opt.fitness, "units": len(units), "improved": state["improved"],
               "evaluations": state["evaluations"], "search_s": search_s, "stopped": state["stopped"],
               "examples": {"search": int(part.shape[0] - exp.context), "fitness": int(fit_tokens.shape[0] - exp.context)},
               "fitness_before": before, "fitness_after": after, "selection": selection, "chosen": label,
               "history": state["history"] if len(state["history"]) <= HISTORY_LINES else
               per_tier(state["history"], units, layout)}
    return SearchOutcome(chosen[0], chosen[1], label, summary, state)


def fitness_summary(fitness: Fitness) -> dict:
    value = fitness.current()
    return {"value": value.of(fitness.kind), "ce": value.ce, "accuracy": value.accuracy, "tiers": fitness.per_tier()}


def choose_on_validation(exp, train_tokens, validation, vocab_size, layout, start_conn, found, scope, device):
    """Retrain the start and each distinct candidate on the whole training split and keep the
    best by the fitness measured on validation (ties keep the earlier: the start first)."""
    labelled, seen = [("start", start_conn)], {b"".join(c.tobytes() for c in start_conn)}
    for label, conn in found:
        key = b"".join(c.tobytes() for c in conn)
        if key not in seen:
            seen.add(key)
            labelled.append((label, conn))
    val = Examples.of(validation, layout)
    best, selection, start_model = None, [], None
    for label, conn in labelled:
        model = train(exp, train_tokens, vocab_size, connectivity=conn, layout=layout, device=device)
        f = Fitness(model, None, val, exp.optimize.fitness)
        f.set_scope(scope)
        value = f.current()
        selection.append({"label": label, "validation_fitness": value.of(exp.optimize.fitness)})
        if start_model is None:
            start_model = model
        if best is None or value.loss < best[0]:
            best = (value.loss, model, label)
        del f
    return (start_model, best[1]), best[2], selection


def per_tier(history: list[dict], units: list, layout) -> list[dict]:
    """A long history (a per-cluster search) in one line per tier: units searched, how many
    beat their start, the mean of their first and last best fitness, and the time."""
    first, last, elapsed = {}, {}, {}
    for h in history:
        first.setdefault(h["unit"], h["best"])
        last[h["unit"]], elapsed[h["unit"]] = h["best"], h["elapsed_s"]
    out = {}
    for u, start in first.items():
        tier = units[u].segments[0][0]
        row = out.setdefault(tier, {"tier": tier, "units": 0, "first": [], "last": []})
        row["units"] += 1
        row["first"].append(start)
        row["last"].append(last[u])
        row["elapsed_s"] = elapsed[u]
    return [{**row, "first": float(np.mean(row["first"])), "last": float(np.mean(row["last"]))} for row in out.values()]
