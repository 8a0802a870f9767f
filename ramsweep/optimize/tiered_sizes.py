"""The fitness of a tiered size genome, a tier retrained only when its own sizes change
(docs/design.md §5b "Incremental", for tiered models).

A size phase asks, thousands of times, how good a tiered model is whose tier i has neurons[i]
neurons per cluster of bits[i] bits (the experiment's tiers, counts kept), trained on one token
array and scored on one split (the fitness slice, or validation). A tier's memory depends on its
own (neurons, bits) alone: the cluster order, the tiers' clusters, the negatives and the input
codes are the whole training split's, fixed (§3 "Clusters and tiers", "Cells"), and a neuron's
wiring comes from its own (seed, tier, neuron) stream (§3 "Connectivity"). (A tier's neuron n
serves cluster n // neurons, so a tier of other neurons is another tier: there is no prefix to
share, as a bitwise cluster has; a tier is trained once per (tier, neurons, bits).)

evaluate.score folds the tiers into each example one after the other: the clusters' count per
score level, the target's score, and the running argmax (a strict '>' in cluster order, so an
earlier tier keeps a tie). What a tier adds to that does not depend on the other tiers, so the
scorer keeps, per (tier, neurons, bits), per score example:
- Σ exp(score) over the tier's clusters: its part of the softmax's sum (its histogram over its
  own levels, each level's float one of score_levels' union, times exp(level));
- the tier's best score and its cluster position (the tier folded alone from −inf: ties to the
  earlier cluster within the tier);
- the target's score, on the examples whose target is in the tier.
A genome's CE is then ln(Σ_tiers Σ exp) − target score per example and its accuracy the argmax
over the tiers in order, strict '>' (the earlier tier keeps a tie), against the target: the same
argmax as evaluate.score's, and the same CE up to the order of a float sum (the tests hold it to
a retrain's to 1e-9; accuracy exactly). The per-tier state is 20 bytes an example (plus 8 an
example of the tier's targets), kept in one least-recently-used cache bounded in bytes; a state
evicted is trained and folded again when needed.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramsweep.config import MAX_NEURONS, Experiment, TierConfig, TierSpec
from ramsweep.engine import evaluate
from ramsweep.engine.backends.base import Batch, TrainingSet
from ramsweep.engine.connectivity import draw_connectivity
from ramsweep.engine.devices import trains_on
from ramsweep.engine.layout import Frequencies, Layout, layout_of
from ramsweep.engine.train import examples_of, group_by_target, pack, train_tier
from ramsweep.errors import DataError

CACHE_BYTES = 2 << 30  # the per-tier states kept: at 100 k examples, 2 MB a state
HIST_BYTES = 256 << 20  # a tier's scratch histogram (examples x its levels, int32) at most this; else in parts

Genome = tuple[tuple[int, ...], tuple[int, ...]]


def with_sizes(exp: Experiment, neurons: Sequence[int], bits: Sequence[int]) -> Experiment:
    """The experiment with each tier's neurons and bits replaced (its counts, and all else, kept)."""
    specs = exp.tiers.tiers
    if len(neurons) != len(specs) or len(bits) != len(specs):
        raise ValueError(f"a genome of {len(neurons)} neurons and {len(bits)} bits for {len(specs)} tiers")
    tiers = TierConfig(tiers=tuple(TierSpec(count=t.count, neurons=int(n), bits=int(b))
                                   for t, n, b in zip(specs, neurons, bits)))
    return exp.model_copy(update={"tiers": tiers})


def sizes_of(exp: Experiment) -> Genome:
    """(neurons per tier, bits per tier) of a tiered experiment: a size search's start."""
    return tuple(t.neurons for t in exp.tiers.tiers), tuple(t.bits for t in exp.tiers.tiers)


@dataclass(frozen=True)
class TierState:
    """What one tier at one (neurons, bits) adds to every score example (see the module's doc)."""

    sumexp: np.ndarray  # (n,) float64: Σ exp(score) over the tier's clusters
    best_score: np.ndarray  # (n,) float64: the tier's highest score
    best_pos: np.ndarray  # (n,) int32: its cluster position (ties: the earlier)
    target_score: np.ndarray  # (k,) float64: the target's score, on the examples whose target is in the tier

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.sumexp, self.best_score, self.best_pos, self.target_score))


class TieredSizeScorer:
    """Scores size genomes (neurons[i], bits[i] per tier) of one tiered experiment's model, trained
    on `train_tokens`, on the examples of `score_tokens`, as a retrain of the experiment with those
    sizes would (train.train, then evaluate.score).

    `order_tokens`: the tokens whose counts give the cluster order, the negatives and the input
    codes (the whole training split, when `train_tokens` is a search's part of it; default
    `train_tokens`). `device`: a resolved engine device; tiers train where the engine's would
    (cuda for cuda and hybrid, else the CPU engine) and are scored on `device` (the same results
    everywhere). `stats` counts the work: tiers trained and reused, and their seconds."""

    def __init__(self, exp: Experiment, train_tokens: np.ndarray, score_tokens: np.ndarray, vocab_size: int, *,
                 device: str = "cpu", order_tokens: np.ndarray | None = None, cache_bytes: int = CACHE_BYTES):
        if exp.tiers is None:
            raise ValueError(f"experiment '{exp.name}' is not tiered")
        if exp.gating is not None:
            raise ValueError(f"experiment '{exp.name}': a size search does not score gated tiers")
        self.exp, self.vocab_size, self.device = exp, vocab_size, device
        self.train_device = "cuda" if trains_on(device) == "cuda" else "cpu"  # as the tiered face trains
        self.freq = Frequencies.of(order_tokens if order_tokens is not None else train_tokens, vocab_size)
        self.layout = layout_of(exp, self.freq)  # the experiment's: its sizes change no position
        layout = self.layout

        tokens = np.ascontiguousarray(train_tokens, dtype=np.int32)
        examples = examples_of(tokens, exp.context)
        if examples.shape[0] == 0:
            raise DataError(f"experiment '{exp.name}': the training split has no example of context {exp.context}")
        target_pos = layout.position[tokens[examples]]
        by_target = functools.cache(lambda: group_by_target(target_pos, layout.vocab_size))
        if self.train_device == "cpu":
            by_target()
        self.data = TrainingSet(pack(tokens, examples, layout), target_pos, layout.n_negatives, by_target)

        split = np.ascontiguousarray(score_tokens, dtype=np.int32)
        positions = examples_of(split, exp.context)
        if positions.shape[0] == 0:
            raise DataError(f"experiment '{exp.name}': the split to score has no example of context {exp.context}")
        self.x = pack(split, positions, layout)
        self.target_pos = layout.position[split[positions]].astype(np.int32)
        self.n_examples = int(positions.shape[0])
        target_tier = layout.tier_of_position[self.target_pos]
        self.in_tier = [np.flatnonzero(target_tier == t.index) for t in layout.tiers]

        self.cache_bytes = int(cache_bytes)
        self._states: OrderedDict[tuple[int, int, int], TierState] = OrderedDict()  # (tier, neurons, bits)
        self._held = 0
        self.throughput: dict = {}  # hybrid scoring: tier -> device -> examples/s (evaluate.hybrid's)
        self.stats = {"evaluations": 0, "tiers_trained": 0, "tiers_reused": 0, "train_s": 0.0, "score_s": 0.0}

    # ---- a genome's figures --------------------------------------------------------------------------

    def fitness(self, neurons: Sequence[int], bits: Sequence[int]) -> tuple[float, float]:
        """(mean CE at T = 1, accuracy) on the score examples: evaluate.ce_at(score(model), 1.0).mean()
        and evaluate.metrics' accuracy of the experiment with these sizes trained on train_tokens."""
        ce, correct = self.per_example(neurons, bits)
        return float(ce.mean()), float(correct.mean())

    def per_example(self, neurons: Sequence[int], bits: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(−ln p(target), whether the argmax is the target) per score example."""
        states = self._states_of(neurons, bits)
        sumexp = states[0].sumexp.copy()
        best_score, best_pos = states[0].best_score.copy(), states[0].best_pos.copy()
        target_score = np.empty(self.n_examples)
        target_score[self.in_tier[0]] = states[0].target_score
        for t, state in enumerate(states[1:], start=1):
            sumexp += state.sumexp
            better = state.best_score > best_score  # strict: the earlier tier keeps a tie
            best_score[better], best_pos[better] = state.best_score[better], state.best_pos[better]
            target_score[self.in_tier[t]] = state.target_score
        return np.log(sumexp) - target_score, best_pos == self.target_pos

    # ---- per-tier states -----------------------------------------------------------------------------

    def _states_of(self, neurons: Sequence[int], bits: Sequence[int]) -> list[TierState]:
        keys = self._genome(neurons, bits)
        self.stats["evaluations"] += 1
        missing = [k for k in keys if k not in self._states]
        self.stats["tiers_reused"] += len(keys) - len(missing)
        for k in keys:
            if k in self._states:
                self._states.move_to_end(k)
        made = {}
        if missing:
            layout = layout_of(with_sizes(self.exp, neurons, bits), self.freq)  # each tier's memory kind, as a retrain's
            for k in missing:
                made[k] = self._tier_state(layout, layout.tiers[k[0]])
                self._remember(k, made[k], keep=set(keys))
        return [self._states[k] if k in self._states else made[k] for k in keys]

    def _genome(self, neurons: Sequence[int], bits: Sequence[int]) -> list[tuple[int, int, int]]:
        units = len(self.layout.tiers)
        if len(neurons) != units or len(bits) != units:
            raise ValueError(f"a genome of {len(neurons)} neurons and {len(bits)} bits for {units} tiers")
        width = self.layout.n_input
        if not all(1 <= int(n) <= MAX_NEURONS for n in neurons) or not all(1 <= int(b) <= width for b in bits):
            raise ValueError(f"neurons must be 1..{MAX_NEURONS} and bits 1..{width} (the input's width), got "
                             f"{list(neurons)}, {list(bits)}")
        return [(i, int(n), int(b)) for i, (n, b) in enumerate(zip(neurons, bits))]

    def _remember(self, key: tuple[int, int, int], state: TierState, keep: set) -> None:
        """Keep a state, dropping the least recently used ones the genome at hand does not use."""
        if state.nbytes > self.cache_bytes:
            return
        for old in [k for k in self._states if k not in keep]:
            if self._held + state.nbytes <= self.cache_bytes:
                break
            self._held -= self._states.pop(old).nbytes
        self._states[key] = state
        self._held += state.nbytes

    def _tier_state(self, layout: Layout, tier) -> TierState:
        """Train one tier on train_tokens and fold it, alone, into every score example, as
        evaluate.score folds it (its never-written clusters in closed form)."""
        exp = self.exp
        t0 = time.perf_counter()
        conn = draw_connectivity(exp.seed, tier.index, tier.n_neurons, tier.bits, layout.n_input)
        memory = train_tier(layout, tier, conn, self.data, self.train_device, exp.seed)
        t1 = time.perf_counter()
        table = evaluate.score_table(tier.neurons, exp.empty_value)
        reachable = table[np.add.outer(np.arange(len(table)), np.arange(len(table))) < len(table)]
        levels = np.unique(reachable)  # the tier's own levels: each one of score_levels' union
        level_table = np.searchsorted(levels, table).clip(0, len(levels) - 1).astype(np.int32)
        k = evaluate.looked_up(tier, layout) if evaluate.SKIP_NEVER_WRITTEN else tier.clusters
        arrays = evaluate.prefix(memory, k).arrays(score_table=table, level_table=level_table, gate=None, gate_need=0)
        n = self.n_examples
        sumexp, best_score = np.empty(n), np.full(n, -np.inf)
        best_pos, target_score = np.zeros(n, dtype=np.int32), np.zeros(n)
        step = max(1, HIST_BYTES // (4 * len(levels)))
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            batch = Batch(x=self.x[lo:hi], target_pos=self.target_pos[lo:hi], best_score=best_score[lo:hi],
                          best_pos=best_pos[lo:hi], target_score=target_score[lo:hi],
                          hist=np.zeros((hi - lo, len(levels)), dtype=np.int32),
                          empty_all=np.zeros(hi - lo, dtype=np.int64), empty_target=np.zeros(hi - lo, dtype=np.int64))
            if k > 0:
                evaluate.fold(arrays, batch, self.device, self.throughput.setdefault(tier.index, {}), tier)
            if k < tier.clusters:
                evaluate.never_written(tier, k, arrays, batch)
            sumexp[lo:hi] = batch.hist @ np.exp(levels)
        self.stats["tiers_trained"] += 1
        self.stats["train_s"] += t1 - t0
        self.stats["score_s"] += time.perf_counter() - t1
        return TierState(sumexp, best_score, best_pos, target_score[self.in_tier[tier.index]])
