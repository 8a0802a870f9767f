"""Evaluate a trained model on a split: overall and per-tier metrics (DESIGN.md §3)."""

from __future__ import annotations

import math

import numpy as np

from ramsweep.engine.backends import cpu
from ramsweep.engine.layout import DENSE
from ramsweep.engine.train import Model, examples_of, pack

import numba

CACHE_BLOCK_BYTES = 256 * 1024  # memory of one block of clusters, kept hot while examples pass
DENSE_CHUNK = 64  # examples per work item; sparse tiers give each thread one long slice instead,
# since their per-neuron tables are large and each should be fetched once per thread


def score_tables(neurons: int, empty_value: float) -> tuple[np.ndarray, np.ndarray]:
    """score[t, e] = mean over neurons of TRUE→1, FALSE→0, EMPTY→empty_value, for t TRUE, e EMPTY."""
    t, e = np.meshgrid(np.arange(neurons + 1), np.arange(neurons + 1), indexing="ij")
    score = (t + empty_value * e) / neurons
    return score, np.exp(score)


def ppl_floor(vocab_size: int) -> float:
    """Lowest reachable PPL: scores lie in [0, 1], so p(target) <= e / (e + V - 1)."""
    return (math.e + vocab_size - 1) / math.e


def evaluate(model: Model, tokens: np.ndarray) -> dict:
    """Metrics of `model` on one split. Never builds an examples × clusters matrix."""
    exp, layout = model.exp, model.layout
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    examples = examples_of(tokens, exp.context)
    n = examples.shape[0]
    target_pos = layout.position[tokens[examples]].astype(np.int32)
    x = pack(tokens, examples, layout)
    sumexp, target_score = np.zeros(n), np.zeros(n)
    best_score, best_pos = np.full(n, -np.inf), np.zeros(n, dtype=np.int32)
    per_tier_empty = []
    for mem in model.memories:
        tier = mem.tier
        empty_all, empty_target = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        score, expo = score_tables(tier.neurons, exp.empty_value)
        per_cluster = max(1, mem.nbytes // max(1, tier.clusters))
        chunk = DENSE_CHUNK if tier.backend == DENSE else max(DENSE_CHUNK, -(-n // numba.get_num_threads()))
        cpu.evaluate_tier(
            x, target_pos, mem.masks, mem.order, tier.neurons, tier.first, chunk,
            max(1, CACHE_BLOCK_BYTES // per_cluster), tier.backend != DENSE,
            mem.dense, mem.offsets, mem.keys, mem.vals, score, expo,
            sumexp, best_score, best_pos, target_score, empty_all, empty_target,
        )
        per_tier_empty.append((empty_all, empty_target))
    ce = np.log(sumexp) - target_score
    correct = best_pos == target_pos
    target_tier = layout.tier_of_position[target_pos]
    tiers = [
        tier_metrics(mem.tier, target_tier == mem.tier.index, ce, correct, empty_all, empty_target, n)
        for mem, (empty_all, empty_target) in zip(model.memories, per_tier_empty)
    ]
    return {**summary(ce, correct), "ppl_floor": ppl_floor(layout.vocab_size), "tiers": tiers}


def summary(ce: np.ndarray, correct: np.ndarray) -> dict:
    """examples, CE (nats), PPL, accuracy; None where there is no example to average."""
    if ce.shape[0] == 0:
        return {"examples": 0, "ce": None, "ppl": None, "accuracy": None}
    mean_ce = float(ce.mean())
    return {"examples": int(ce.shape[0]), "ce": mean_ce, "ppl": math.exp(mean_ce), "accuracy": float(correct.mean())}


def tier_metrics(tier, in_tier, ce, correct, empty_all, empty_target, n_examples) -> dict:
    k = int(in_tier.sum())
    lookups = n_examples * tier.n_neurons
    return {
        "tier": tier.index,
        "clusters": tier.clusters,
        "neurons": tier.neurons,
        "bits": tier.bits,
        "backend": tier.backend,
        **summary(ce[in_tier], correct[in_tier]),
        "share": 100.0 * k / n_examples if n_examples else None,
        "empty_rate": float(empty_all.sum()) / lookups if lookups else None,
        "target_empty_rate": float(empty_target[in_tier].sum()) / (k * tier.neurons) if k else None,
    }
