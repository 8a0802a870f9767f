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
        return Plan(units, unit_bytes, estimate_memory_bytes(layout), layout.n_input)

    def train(self, exp: Experiment, corpus, device: str, progress):
        device = "cuda" if device == "cuda" else "cpu"  # no WGSL training kernel: the CPU engine trains for wgpu
        return train(exp, corpus.train, corpus.vocab_size, device=device, progress=progress)

    def search(self, exp: Experiment, corpus, device: str, resume, checkpoint, progress):
        from ramsweep.optimize.driver import run_search  # the search's kernels: only where one runs

        return run_search(exp, corpus.train, corpus.validation, corpus.vocab_size, device=device, resume=resume,
                          checkpoint=checkpoint, progress=progress)

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


def lsh_use(memory) -> dict | None:
    """An LSH tier's collisions on its sample of neurons (records.LshUse); None for a tier that
    is not hashed."""
    if memory.lsh_sample is None:
        return None
    neurons, addresses, cells = memory.lsh_sample
    return {"lsh_bits": memory.tier.lsh_bits, "neurons_counted": neurons, "addresses": addresses, "cells": cells,
            "collided": addresses - cells, "collided_share": (addresses - cells) / addresses if addresses else None}


ARCHITECTURE = Tiered()
