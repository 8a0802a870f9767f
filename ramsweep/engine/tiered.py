"""The tiered architecture (docs/design.md §3): one cluster per token, the vocabulary split by
frequency into tiers, each with its own neurons per cluster and bits per neuron.

This module is its face towards the sweep (engine/architecture.py); its engine is the modules
beside it: layout (clusters, tiers and memory estimates), train, evaluate (scores, metrics,
the temperature fit), reference (the numpy oracle) and backends (the kernels); its search is
optimize/. Its units are its tiers, each trained and scored with its gates (if any).
"""

from __future__ import annotations

import time

from ramsweep.config import Experiment
from ramsweep.engine.architecture import CALIBRATION, TEST, VALIDATION, Plan
from ramsweep.engine.devices import trains_on
from ramsweep.engine.evaluate import evaluate, fit_temperature, looked_up, metrics, score
from ramsweep.engine.layout import Frequencies, estimate_memory_bytes, expected_tier_bytes, layout_of
from ramsweep.engine.train import drawn_connectivity, train


class Tiered:
    name = "tiered"

    def plan(self, exp: Experiment, freq: Frequencies) -> Plan:
        layout = layout_of(exp, freq)  # checks the config against the data first
        gates = {g.index: g for g in layout.gates}
        units = tuple(f'tier {t.index + 1} "{exp.tiers.tiers[t.index]}"' for t in layout.tiers)
        unit_bytes = tuple(expected_tier_bytes(layout, t) + (expected_tier_bytes(layout, gates[t.index])
                                                               if t.index in gates else 0) for t in layout.tiers)
        return Plan(units, unit_bytes, estimate_memory_bytes(layout), layout.n_input,
                    lookups=sum(t.n_neurons for t in layout.tiers + layout.gates))

    def train(self, exp: Experiment, corpus, device: str, progress):
        device = "cuda" if device == "cuda" else "cpu"  # no WGSL training kernel: the CPU engine trains for wgpu
        return train(exp, corpus.train, corpus.vocab_size, device=device, progress=progress)

    def search(self, exp: Experiment, corpus, device: str, resume, checkpoint, progress):
        """The connectivity search (docs/design.md §5), or with `phases` the search in phases (§5b)."""
        if exp.optimize.phases is not None:
            return self.search_in_phases(exp, corpus, device, resume, checkpoint, progress)
        from ramsweep.optimize.driver import run_search  # the search's kernels: only where one runs

        return run_search(exp, corpus.train, corpus.validation, corpus.vocab_size, device=device, resume=resume,
                          checkpoint=checkpoint, progress=progress)

    def search_in_phases(self, exp: Experiment, corpus, device: str, resume, checkpoint, progress):
        """The search in phases (docs/design.md §5b), its units the tiers: sizes scored on the
        training split's last part by a model of the rest, candidates on validation by a model of
        the whole split (optimize/tiered_sizes.py: a tier retrained only when its sizes change);
        a last `connections` phase runs §5's search on the chosen sizes, its checkpoint beside the
        phases' state, its summary in its phase's entry."""
        from ramsweep.optimize import phases  # the search: only where one runs
        from ramsweep.optimize.driver import run_search
        from ramsweep.optimize.tiered_sizes import sizes_of, with_sizes

        opt, start, t0 = exp.optimize, sizes_of(exp), time.perf_counter()
        state, fitness, examples, inner = size_phases(exp, corpus, device, start, resume, checkpoint, progress)
        chosen = (tuple(state["start"][0]), tuple(state["start"][1]))

        found, index = None, state["phase"]
        if index < len(opt.phases):  # a connections phase, the last: §5's search on the chosen sizes
            minutes = None if opt.max_minutes is None else opt.max_minutes - state["elapsed_s"] / 60
            if minutes is not None and minutes <= 0:
                state["stopped"] = "time cap"
            else:
                sized = with_sizes(exp, *chosen).model_copy(update={"optimize": opt.connections(index, minutes)})

                def keep(inner_saved: dict) -> None:  # the phases' state, then the connections search's
                    checkpoint(phases.encode(state, inner_saved))

                found = run_search(sized, corpus.train, corpus.validation, corpus.vocab_size, device=device,
                                   resume=inner, checkpoint=keep, progress=progress)

        train_on, quiet = trains_on(device), lambda f: None
        if found is not None:
            start_model = found.start if chosen == start else self.train(exp, corpus, train_on, quiet)
            chosen_model = found.chosen
        else:
            start_model = self.train(exp, corpus, train_on, quiet)
            chosen_model = start_model if chosen == start else self.train(with_sizes(exp, *chosen), corpus, train_on,
                                                                          quiet)
        label = "start" if chosen_model is start_model else "phases"
        summary = phases.summary(exp, state, start, chosen, label, fitness.__getitem__, examples,
                                 time.perf_counter() - t0)
        summary["improved"] = label != "start"  # the sizes, or a connections phase's wiring
        if found is not None:
            sizes = {"neurons": list(chosen[0]), "bits": list(chosen[1])}
            phase = opt.phases[index]
            summary["phases"] = [*state["phases"], {
                "phase": index, "search": "connections", "strategy": phase.strategy, "start": sizes, "chosen": sizes,
                "chosen_label": found.chosen_label, "evaluations": found.summary["evaluations"],
                "seconds": found.summary["search_s"], "connections": found.summary}]
            summary["evaluations"] += found.summary["evaluations"]
            summary["stopped"] = summary["stopped"] or found.summary["stopped"]
            summary["fitness_after"] = {k: found.summary["fitness_after"][k] for k in ("value", "ce", "accuracy")}
        return phases.Outcome(start_model, chosen_model, label, summary)

    def figures(self, model, corpus, device: str, phase=lambda phase, fraction=0.0: None) -> tuple[dict, dict, float]:
        phase(VALIDATION)
        val_scores = score(model, corpus.validation, device, lambda f: phase(VALIDATION, f))
        phase(CALIBRATION)
        temperature = fit_temperature(val_scores)
        ungated = score(model, corpus.validation, device, gated=False) if model.gates else None
        validation = metrics(val_scores, temperature=temperature, byte_lengths=corpus.byte_lengths("validation"),
                             ungated=ungated)
        t = time.perf_counter()
        phase(TEST)
        test = evaluate(model, corpus.test, temperature=temperature, byte_lengths=corpus.byte_lengths("test"),
                        device=device, progress=lambda f: phase(TEST, f))
        return validation, test, t

    def resources(self, model) -> dict:
        return {
            "memory_mb": sum(m.nbytes for m in model.memories) / 2**20,
            "cells_stored": [m.cells_stored for m in model.memories],
            "backends": [m.tier.memory for m in model.memories],  # the record's name for the memory kinds
            "lsh": [lsh_use(m) for m in model.memories],
            # clusters never written in training: scored in closed form, never looked up
            "never_written": [m.tier.clusters - looked_up(m.tier, model.layout) for m in model.memories],
        }

    def timing(self, model) -> dict:
        return {"encode_s": model.encode_s}  # packing the training contexts into input bits

    def wiring(self, model) -> tuple[list, list]:
        return model.connectivity, drawn_connectivity(model.exp, model.layout)


def size_phases(exp: Experiment, corpus, device: str, start, resume, checkpoint, progress):
    """The size phases of a search in phases (optimize/phases.py), from its checkpoint if one is
    whole: (the state, with the fitness-slice figures of its start and chosen sizes (the summary's),
    the examples counted, the connections search's checkpoint or None). The scorers and their
    caches go when it returns."""
    from ramsweep.optimize import phases
    from ramsweep.optimize.driver import split_for_fitness
    from ramsweep.optimize.tiered_sizes import TieredSizeScorer

    part, fit_tokens = split_for_fitness(corpus.train, exp.optimize.fitness_fraction, exp.context)
    fit = TieredSizeScorer(exp, part, fit_tokens, corpus.vocab_size, device=device, order_tokens=corpus.train)
    val = TieredSizeScorer(exp, corpus.train, corpus.validation, corpus.vocab_size, device=device)
    state, inner = phases.search(exp, start, fit.fitness, val.fitness, resume, checkpoint, progress)
    chosen = (tuple(state["start"][0]), tuple(state["start"][1]))
    examples = {"search": int(part.shape[0] - exp.context), "fitness": int(fit_tokens.shape[0] - exp.context)}
    return state, {start: fit.fitness(*start), chosen: fit.fitness(*chosen)}, examples, inner


def lsh_use(memory) -> dict | None:
    """An LSH tier's collisions on its sample of neurons (records.LshUse); None for a tier that
    is not hashed."""
    if memory.lsh_sample is None:
        return None
    neurons, addresses, cells = memory.lsh_sample
    return {"lsh_bits": memory.tier.lsh_bits, "neurons_counted": neurons, "addresses": addresses, "cells": cells,
            "collided": addresses - cells, "collided_share": (addresses - cells) / addresses if addresses else None}


ARCHITECTURE = Tiered()
