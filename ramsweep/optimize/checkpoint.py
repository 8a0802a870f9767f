"""A search's checkpoint: its state as JSON and arrays (`encode`, `decode`), and `restore`,
which resumes only a checkpoint this search could have written (docs/design.md §5).

A checkpoint is read back from a file that a user, a full disk or another version may have
changed. One resumed with a connection outside the input, a neuron wired twice to one input,
an array of another shape or a counter past its budget would not fail: it would search another
model and record it as ok. So everything restored is checked first (`check`), and a checkpoint
that fails is set aside (its `set_aside`, when it came from a file) and the search starts over.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from ramsweep.config import Experiment
from ramsweep.optimize import search
from ramsweep.optimize.fitness import Fitness

log = logging.getLogger("ramsweep")

GA_KEYS = {"generation", "population", "losses", "best", "best_loss", "stale"}  # search.ga_step's state
TS_KEYS = {"iteration", "best", "best_loss", "tabu", "stale"}  # search.ts_step's
HISTORY_KEYS = {"unit", "stage", "step", "best", "mean", "evaluations", "elapsed_s"}  # search.note's


class Invalid(ValueError):
    """A checkpoint this search could not have written."""


def encode(state: dict, fitness: Fitness, exp: Experiment) -> dict:
    """The search state as {"meta": JSON text, "arrays": {name: array}}: candidates become array
    references, and the fitness state's connectivity is kept as its difference from the start."""
    arrays: dict[str, np.ndarray] = {}

    def walk(value):
        if isinstance(value, np.ndarray):
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {"@array": name}
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [walk(v) for v in value]
        return value.item() if isinstance(value, np.generic) else value

    moved = []
    for t, (now, drawn) in enumerate(zip(fitness.conn, fitness.model.connectivity)):
        neurons = np.flatnonzero((now != drawn).any(axis=1))
        if neurons.shape[0]:
            moved.append([t, walk(neurons), walk(now[neurons])])
    meta = {"experiment": exp.spec(), "state": walk(state), "moved": moved}
    return {"meta": json.dumps(meta), "arrays": arrays}  # json: the generator's state has 128-bit ints


def decode(saved: dict) -> tuple[dict, list, dict]:
    """(state, moved, the experiment's spec) of a checkpoint; Invalid if it does not decode."""

    def walk(value):
        if isinstance(value, dict):
            return arrays[value["@array"]] if set(value) == {"@array"} else {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    try:
        arrays, meta = saved["arrays"], json.loads(saved["meta"])
        return walk(meta["state"]), walk(meta["moved"]), meta["experiment"]
    except (KeyError, TypeError, ValueError, RecursionError) as e:  # not JSON, a key or an array missing, a list for a dict
        raise Invalid(f"does not decode ({type(e).__name__}: {e})") from None


def restore(fitness: Fitness, saved: dict, exp: Experiment, units: list[search.Genome]) -> dict:
    """The state of a checkpoint, with the fitness moved to the connectivity it had then; a new
    state (the search starts over) when `check` finds the checkpoint invalid."""
    try:
        state, moved, spec = decode(saved)
        check(state, moved, spec, fitness, exp, units)
    except Invalid as e:
        saved.get("set_aside", lambda why: log.warning(f"search checkpoint {why}; the search starts over"))(str(e))
        return search.new_state(exp.optimize)
    log.info(f"search {exp.name}: resuming from its checkpoint ({state['evaluations']:,} evaluations done)")
    if moved:
        fitness.commit([(t, neurons, rows) for t, neurons, rows in moved])
    fitness.evaluations = state["evaluations"]
    return state


# ---------------------------------------------------------------- checks


def need(ok: bool, what: str) -> None:
    if not ok:
        raise Invalid(f"is invalid: {what}")


def count(value, top: int | None = None) -> bool:
    """A non-negative int (JSON's true is not one), at most `top`."""
    return type(value) is int and value >= 0 and (top is None or value <= top)


def number(value) -> bool:
    return type(value) is int or (type(value) is float and math.isfinite(value))


def check(state, moved, spec, fitness: Fitness, exp: Experiment, units: list[search.Genome]) -> None:
    """Raise Invalid unless the checkpoint is one this search could have written: its experiment,
    every key and counter of its state, and every array's dtype, shape and connections."""
    opt, names = exp.optimize, search.stages(exp.optimize)
    need(spec == json.loads(json.dumps(exp.spec())), "another experiment's config")
    need(isinstance(state, dict) and set(state) == set(search.new_state(opt)), "the state's keys")
    need(type(state["done"]) is bool, "done")
    need(count(state["unit"], len(units)) and (state["unit"] < len(units) or state["done"]), "unit")
    need(count(state["stage"], len(names) - 1), "stage")
    need(count(state["evaluations"]) and count(state["improved"], len(units)), "evaluations or improved")
    need(number(state["elapsed_s"]) and state["elapsed_s"] >= 0, "elapsed_s")
    need(state["stopped"] in (None, "time cap") and (state["unit_start"] is None or number(state["unit_start"])),
         "stopped or unit_start")
    need(generator(state["rng"]), "the random generator's state")
    need(isinstance(state["history"], list) and all(history(h, names, len(units)) for h in state["history"]),
         "history")
    top = state["top"]
    need(isinstance(top, list) and len(top) <= (opt.candidates if len(units) == 1 else 0)
         and all(isinstance(c, list) and len(c) == 2 and number(c[0]) and candidate(c[1], units[0], fitness)
                 for c in top), "the best candidates")
    genome = units[min(state["unit"], len(units) - 1)]
    ga, ts = state["ga"], state["ts"]
    need(ga is None or ("ga" in names and ts is None and not state["done"]), "GA state where there is none")
    need(ts is None or (names[state["stage"]] == "ts" and not state["done"]), "TS state where there is none")
    if ga is not None:
        check_ga(ga, genome, fitness)
    if ts is not None:
        check_ts(ts, genome, fitness)
    check_moved(moved, fitness)


def check_ga(ga, genome: search.Genome, fitness: Fitness) -> None:
    b = genome.budget
    need(isinstance(ga, dict) and set(ga) == GA_KEYS, "the GA state's keys")
    need(count(ga["generation"], b.generations) and count(ga["stale"], ga["generation"]), "GA counters")
    pop, losses = ga["population"], ga["losses"]
    need(isinstance(pop, list) and len(pop) == b.population and all(candidate(c, genome, fitness) for c in pop),
         "GA population")
    need(isinstance(losses, list) and len(losses) == b.population and all(number(x) for x in losses), "GA losses")
    need(candidate(ga["best"], genome, fitness) and number(ga["best_loss"]), "GA best")


def check_ts(ts, genome: search.Genome, fitness: Fitness) -> None:
    b = genome.budget
    need(isinstance(ts, dict) and set(ts) == TS_KEYS, "the TS state's keys")
    need(count(ts["iteration"], b.iterations) and count(ts["stale"], ts["iteration"]), "TS counters")
    need(candidate(ts["best"], genome, fitness) and number(ts["best_loss"]), "TS best")
    need(isinstance(ts["tabu"], list) and len(ts["tabu"]) <= b.tabu
         and all(isinstance(m, list) and all(change(c, genome, fitness) for c in m) for m in ts["tabu"]),
         "tabu list")


def check_moved(moved, fitness: Fitness) -> None:
    """The fitness state's rewired neurons: per tier (each once), distinct neurons and their connections."""
    need(isinstance(moved, list) and all(isinstance(m, list) and len(m) == 3 for m in moved), "moved neurons")
    tiers = [m[0] for m in moved]
    need(all(count(t, len(fitness.conn) - 1) for t in tiers) and len(set(tiers)) == len(tiers), "moved tiers")
    for t, neurons, rows in moved:
        n_neurons, bits = fitness.conn[t].shape
        need(isinstance(neurons, np.ndarray) and neurons.dtype == np.intp and neurons.ndim == 1
             and bool(((neurons >= 0) & (neurons < n_neurons)).all()) and np.unique(neurons).size == neurons.size,
             f"moved neurons of tier {t}")
        need(wiring(rows, (neurons.size, bits), fitness, t), f"moved connections of tier {t}")


def wiring(rows, shape: tuple[int, int], fitness: Fitness, t: int) -> bool:
    """Connections as the search writes them: `shape`, tier t's dtype, and each neuron's
    distinct and inside the input."""
    return (isinstance(rows, np.ndarray) and rows.dtype == fitness.conn[t].dtype and rows.shape == shape
            and bool(((rows >= 0) & (rows < fitness.layout.n_input)).all())
            and bool((np.diff(np.sort(rows, axis=1), axis=1) != 0).all()))


def candidate(cand, genome: search.Genome, fitness: Fitness) -> bool:
    """One connection array per segment of the genome, each its neurons' (neurons, bits)."""
    return isinstance(cand, list) and len(cand) == len(genome.segments) and all(
        wiring(rows, (hi - lo, fitness.conn[t].shape[1]), fitness, t) for rows, (t, lo, hi) in zip(cand, genome.segments))


def change(move, genome: search.Genome, fitness: Fitness) -> bool:
    """A TS move's change: (segment, neuron, slot, old input, new input), each in range."""
    if not (isinstance(move, list) and len(move) == 5 and all(count(v) for v in move) and move[0] < len(genome.segments)):
        return False
    t, lo, hi = genome.segments[move[0]]
    n_input = fitness.layout.n_input
    return move[1] < hi - lo and move[2] < fitness.conn[t].shape[1] and move[3] < n_input and move[4] < n_input


def history(line, names: list[str], n_units: int) -> bool:
    return (isinstance(line, dict) and set(line) == HISTORY_KEYS and count(line["unit"], n_units - 1)
            and line["stage"] in names and count(line["step"]) and count(line["evaluations"])
            and all(number(line[k]) for k in ("best", "mean", "elapsed_s")))


def generator(value) -> bool:
    """A PCG64 state (the search's generator), as numpy sets it and reads it back."""
    bits = np.random.PCG64()
    try:
        bits.state = value
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return bits.state == value and value["state"]["inc"] % 2 == 1  # PCG's increment is odd
