"""The bitwise-output architecture (docs/design.md §3c): one cluster per bit of a token's code.

This module is its face towards the sweep (engine/architecture.py); its engine is
engine/bitwise.py (numba, CPU), held to the oracle in engine/bitwise_reference.py. Its units are
its bit clusters. On cuda (and hybrid, which runs it on the GPU alone) it trains and looks up
with engine/bitwise_cuda.py's kernels, on wgpu and metal with engine/bitwise_wgpu.py's WGSL
kernels (the same cells and metrics; SPARSE clusters train on the CPU engine); cpu runs the CPU
engine, and the record's device says which trained it. Per-band figures use the tiered model's
bands: the 100 most frequent tokens, the next 400, the rest.
"""

from __future__ import annotations

import logging
import time
from functools import cache

import numpy as np

from ramsweep.config import Experiment, bits_per_token
from ramsweep.engine import bitwise
from ramsweep.engine.architecture import CALIBRATION, TEST, VALIDATION, Plan
from ramsweep.engine.devices import describe, physical_memory
from ramsweep.engine.layout import Frequencies, input_codes

log = logging.getLogger("ramsweep")
BANDS = (100, 400)  # then the rest: the tiered model's 100 / 400 / rest, so the two compare band by band


def bands(vocab_size: int) -> tuple:
    """BANDS within `vocab_size` tokens, then "rest" (a small vocabulary has fewer bands)."""
    counts, left = [], vocab_size
    for count in BANDS:
        if left <= count:
            break
        counts.append(count)
        left -= count
    return (*counts, "rest")


class BitwiseOutput:
    name = "bitwise"

    def plan(self, exp: Experiment, freq) -> Plan:
        exp.check_against_data(freq.vocab_size)
        neurons, bits = exp.bitwise.per_cluster(bits_per_token(freq.vocab_size))
        sizes = dict(neurons=neurons, bits=bits, sample_rate=exp.bitwise.sample_rate, cell_mode=exp.bitwise.cell_mode)
        examples = max(0, freq.tokens - exp.context)
        expected = bitwise.cluster_estimates(freq.vocab_size, exp.context, examples, bound=False, **sizes)
        bound = bitwise.estimate_memory_bytes(freq.vocab_size, exp.context, examples, **sizes)
        units = tuple(f"bit cluster {i} ({n} neurons of {b} bits)" for i, (n, b) in enumerate(zip(neurons, bits)))
        # on a GPU every cluster's cells stay there from training to the last lookup
        return Plan(units, tuple(expected), bound, exp.input_bits(freq.vocab_size), gpu_resident=True,
                    lookups=sum(neurons))

    def train(self, exp: Experiment, corpus, device: str, progress, sizes=None, connectivity=None):
        """The model, of the experiment's sizes or of `sizes` ((neurons, bits) per cluster: a search's),
        wired as drawn or as `connectivity` (per cluster its (neurons, bits) connections: a search's)."""
        b = exp.bitwise
        neurons, bits = (list(sizes[0]), list(sizes[1])) if sizes is not None else (b.neurons, b.bits)
        model = bitwise.train(corpus.train, corpus.vocab_size, codes=codes_of(exp, corpus), context=exp.context,
                              neurons=neurons, bits=bits, seed=exp.seed, sample_rate=b.sample_rate, cell_mode=b.cell_mode,
                              empty_value=exp.empty_value, gpu=kernels(device), device=device, connectivity=connectivity)
        progress(1.0)
        return model

    def search(self, exp: Experiment, corpus, device: str, resume, checkpoint, progress):
        """The search in phases (docs/design.md §5b): sizes scored on the training split's last
        part by a model of the rest, candidates on validation by a model of the whole split; a last
        `connections` phase runs §5's search on the chosen sizes (optimize/bitwise_connections.py),
        its checkpoint beside the phases' state, its summary in its phase's entry."""
        from ramsweep.optimize import phases  # the search: only where one runs
        from ramsweep.optimize.driver import split_for_fitness
        from ramsweep.optimize.sizes import CODE_CACHE_BYTES, SizeScorer

        b, opt = exp.bitwise, exp.optimize
        start = tuple(tuple(v) for v in b.per_cluster(bits_per_token(corpus.vocab_size)))
        widest = max([*start[0], *(max(p.neurons) if p.search == "grid" else p.bounds[1] if p.search == "neurons"
                                    else 0 for p in opt.phases)])
        common = dict(codes=codes_of(exp, corpus), context=exp.context, seed=exp.seed, sample_rate=b.sample_rate,
                      cell_mode=b.cell_mode, empty_value=exp.empty_value, gpu=kernels(device), max_neurons=widest,
                      # a grid of 4 widths x 16 clusters at 300 neurons holds 4.6 GB of codes: an eighth
                      # of a large machine's memory each keeps them all
                      code_cache_bytes=max(CODE_CACHE_BYTES, (physical_memory() or 0) // 8))
        part, fit_tokens = split_for_fitness(corpus.train, opt.fitness_fraction, exp.context)
        t0 = time.perf_counter()
        fit = SizeScorer(part, fit_tokens, corpus.vocab_size, **common)
        val = SizeScorer(corpus.train, corpus.validation, corpus.vocab_size, **common)
        state, inner = phases.search(exp, start, fit.fitness, val.fitness, resume, checkpoint, progress)
        val = None  # its caches go: the connections phase needs the fitness slice's scorer alone
        chosen = (tuple(state["start"][0]), tuple(state["start"][1]))
        kind = "accuracy" if opt.fitness == "accuracy" else "ce"  # HARMONIC's figure: CE
        examples = {"search": int(part.shape[0] - exp.context), "fitness": int(fit_tokens.shape[0] - exp.context)}
        before, after = figure(fit.fitness(*start), kind), figure(fit.fitness(*chosen), kind)

        found, index, quiet = None, state["phase"], lambda f: None
        if index < len(opt.phases):  # a connections phase, the last: §5's search on the chosen sizes
            minutes = None if opt.max_minutes is None else opt.max_minutes - state["elapsed_s"] / 60
            if minutes is not None and minutes <= 0:
                state["stopped"] = "time cap"
            else:
                found = self.connections(exp, corpus, device, index, minutes, chosen, (part, fit_tokens, fit),
                                         (state, inner, checkpoint, progress), examples)
        fit = None
        if found is not None:
            start_model = found.start if chosen == start else self.train(exp, corpus, device, quiet)
            chosen_model = found.chosen
        else:
            start_model = self.train(exp, corpus, device, quiet)
            chosen_model = start_model if chosen == start else self.train(exp, corpus, device, quiet, chosen)
        label = "start" if chosen_model is start_model else "phases"
        summary = {"strategy": "phases", "fitness": opt.fitness, "units": len(start[0]), "improved": label != "start",
                   "evaluations": state["evaluations"], "search_s": time.perf_counter() - t0,
                   "stopped": state["stopped"], "chosen": label, "examples": examples,
                   "fitness_before": before, "fitness_after": after,
                   "sizes": {"start": {"neurons": list(start[0]), "bits": list(start[1])},
                             "chosen": {"neurons": list(chosen[0]), "bits": list(chosen[1])}},
                   "phases": state["phases"]}
        if found is not None:  # the connections phase's entry, its §5 summary inside
            sizes, inner_summary = summary["sizes"]["chosen"], found.summary
            summary["phases"] = [*state["phases"], {
                "phase": index, "search": "connections", "strategy": opt.phases[index].strategy, "start": sizes,
                "chosen": sizes, "chosen_label": found.chosen_label, "evaluations": inner_summary["evaluations"],
                "seconds": inner_summary["search_s"], "connections": inner_summary}]
            summary["evaluations"] += inner_summary["evaluations"]
            summary["stopped"] = summary["stopped"] or inner_summary["stopped"]
            summary["fitness_after"] = {k: inner_summary["fitness_after"][k] for k in ("value", "ce", "accuracy")}
        return phases.Outcome(start_model, chosen_model, label, summary)

    def connections(self, exp: Experiment, corpus, device: str, index: int, minutes, chosen, fitness_split, phased,
                    examples: dict):
        """Phase `index`, a connections phase: §5's search on the `chosen` sizes' drawn wiring, one
        unit a bit cluster (optimize/bitwise_connections.py), scored on the fitness slice (the size
        scorer `fitness_split[2]` hands its drawn clusters' codes over), each candidate retrained on
        the whole training split and compared on validation. Checkpointed beside the phases' state."""
        from ramsweep.optimize import bitwise_connections, phases

        b, opt = exp.bitwise, exp.optimize
        part, fit_tokens, size_scorer = fitness_split
        state, resume, checkpoint, progress = phased
        sized = exp.model_copy(update={"bitwise": b.model_copy(update={"neurons": chosen[0], "bits": chosen[1]}),
                                       "optimize": opt.connections(index, minutes)})
        gpu, quiet = kernels(device), lambda f: None
        scorer = bitwise_connections.ConnectionScorer(  # rewired rows on CUDA's kernels; wgpu's have no train_rows
            part, fit_tokens, corpus.vocab_size, codes=codes_of(exp, corpus), context=exp.context, seed=exp.seed,
            sample_rate=b.sample_rate, cell_mode=b.cell_mode, empty_value=exp.empty_value, neurons=chosen[0],
            bits=chosen[1], fitness=opt.fitness, drawn_codes=bitwise_connections.drawn_codes_from(size_scorer),
            gpu=gpu if hasattr(gpu, "train_rows") else None)

        def validate(conn):
            model = self.train(exp, corpus, device, quiet, chosen, connectivity=conn)
            scores = bitwise.score(model, corpus.validation, gpu)
            return model, float(bitwise.ce(model, scores).mean()), float(bitwise.correct(model, scores).mean())

        return bitwise_connections.run(
            sized, scorer, validate, resume=resume, examples=examples,
            checkpoint=lambda inner: checkpoint(phases.encode(state, inner)),
            progress=lambda p: progress({**p, "unit": index + 1, "units": len(opt.phases)}))

    def figures(self, model, corpus, device: str, phase=lambda phase, fraction=0.0: None) -> tuple[dict, dict, float]:
        gpu = kernels(device)
        phase(VALIDATION)
        val_scores = bitwise.score(model, corpus.validation, gpu)
        phase(CALIBRATION)
        temperature = bitwise.fit_temperature(model, val_scores)
        split_bands = bands(model.vocab_size)
        validation = bitwise.metrics(model, val_scores, temperature=temperature, bands=split_bands,
                                     byte_lengths=corpus.byte_lengths("validation"))
        t = time.perf_counter()
        phase(TEST)
        test = bitwise.evaluate(model, corpus.test, temperature=temperature, bands=split_bands,
                                byte_lengths=corpus.byte_lengths("test"), gpu=gpu)
        return validation, test, t

    def resources(self, model) -> dict:
        return {"device": describe(model.device),  # cuda or wgpu where their kernels trained it, else cpu
                "memory_mb": model.nbytes / 2**20,
                "cells_stored": [bitwise.cells_stored(c, model.cell_mode) for c in model.clusters],
                "backends": [c.storage for c in model.clusters]}  # the record's name for the memory kinds

    def timing(self, model) -> dict:
        return {}

    def wiring(self, model) -> tuple[list, list]:
        """The model's connections and the drawn ones of its sizes (a connections phase's choice is kept
        as the neurons that differ)."""
        return [c.conn for c in model.clusters], bitwise.drawn_connectivity(model)


def codes_of(exp: Experiment, corpus) -> np.ndarray:
    """Each token id's code (input and output): the experiment's encoding over the sweep's counts."""
    codes = input_codes(exp, Frequencies.of(corpus.train, corpus.vocab_size))  # the sweep's counts, kept
    return np.arange(corpus.vocab_size) if codes is None else codes


def figure(value: tuple[float, float], kind: str) -> dict:
    """A genome's (CE, accuracy) as the record's fitness figure."""
    ce, accuracy = value
    return {"value": accuracy if kind == "accuracy" else ce, "ce": ce, "accuracy": accuracy}


def kernels(device: str):
    """The bitwise engine's GPU kernels for a resolved device (engine/bitwise_cuda.py for cuda and
    hybrid, the GPU alone; engine/bitwise_wgpu.py for wgpu and metal), or None: the CPU engine."""
    if device in ("cuda", "hybrid"):
        from ramsweep.engine import bitwise_cuda  # numba-cuda: only where it runs

        return bitwise_cuda
    if device in ("wgpu", "metal"):
        from ramsweep.engine import bitwise_wgpu  # wgpu-py: only where it runs

        return bitwise_wgpu
    on_cpu(device)
    return None


@cache
def on_cpu(device: str) -> None:
    """Say once a process that a device without bitwise kernels runs them on the CPU engine."""
    if device != "cpu":
        log.info(f"bitwise experiments run on the CPU engine: {device} has no bitwise kernels")


ARCHITECTURE = BitwiseOutput()
