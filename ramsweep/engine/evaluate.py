"""Evaluate a trained model on a split: overall and per-tier metrics (docs/design.md §3), bits per
byte, and CE/PPL at a softmax temperature fitted on validation only.

`score()` runs the kernels once and keeps, per example, how many clusters reached each distinct
score value; every metric, at any temperature, is computed from that without new lookups.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numba
import numpy as np

from ramsweep.engine import backends
from ramsweep.engine.backends import cpu
from ramsweep.engine.backends.base import Batch, TierArrays
from ramsweep.engine.layout import DENSE, Layout
from ramsweep.engine.train import Model, examples_of, neuron_share, pack

log = logging.getLogger("ramsweep")
PROGRESS_BLOCK = 32_768  # examples per kernel call when someone follows the progress (CPU)
HYBRID_PROBE = 1024  # examples each side runs alone, at most, to measure its throughput on a new tier
HYBRID_PROBE_LOOKUPS = 1 << 26  # ... and no more lookups than this
HYBRID_GPU_PROBE_LOOKUPS = 1 << 30  # the GPU's slices: about 10 ms on an H100, past launch overheads
HYBRID_MIN_SHARE = 0.03  # below this share of the work the CPU side costs more than it saves
SKIP_NEVER_WRITTEN = True  # clusters never written are scored in closed form, not looked up (tests turn it off)
HYBRID_CPU_BLOCK_S = 0.1  # seconds of CPU work per block: what a CPU slower than measured can cost at most
HYBRID_VERDICT_S = 0.25  # a tier the GPU alone takes this long decides hybrid for the whole process
BETA_RANGE = (1e-3, 1e3)  # inverse temperatures searched: T from 0.001 to 1000


def score_table(neurons: int, empty_value: float) -> np.ndarray:
    """score[t, e] = mean over neurons of TRUE→1, FALSE→0, EMPTY→empty_value, for t TRUE, e EMPTY."""
    t, e = np.meshgrid(np.arange(neurons + 1), np.arange(neurons + 1), indexing="ij")
    return (t + empty_value * e) / neurons


def score_levels(model: Model) -> tuple[np.ndarray, list[np.ndarray]]:
    """The distinct cluster scores any tier can produce, and per tier the level of each (t, e)."""
    tables = [score_table(m.tier.neurons, model.exp.empty_value) for m in model.memories]
    valid = [tab[np.add.outer(np.arange(len(tab)), np.arange(len(tab))) < len(tab)] for tab in tables]
    levels = np.unique(np.concatenate(valid))
    return levels, [np.searchsorted(levels, tab).clip(0, len(levels) - 1).astype(np.int32) for tab in tables]


def ppl_floor(vocab_size: int) -> float:
    """Lowest reachable PPL: scores lie in [0, 1], so p(target) <= e / (e + V - 1)."""
    return (math.e + vocab_size - 1) / math.e


@dataclass
class Scores:
    """What scoring one split leaves behind, per example."""

    layout: Layout
    tiers: list  # the model's Tier of each memory, in order
    positions: np.ndarray  # (n,) the split positions evaluated (t >= context)
    ce: np.ndarray  # (n,) -ln p(target) at temperature 1
    correct: np.ndarray  # (n,) bool: the highest score is the target (ties: earlier cluster)
    target_tier: np.ndarray  # (n,)
    target_score: np.ndarray  # (n,)
    levels: np.ndarray  # (L,) the distinct score values
    hist: np.ndarray  # (n, L) int32: clusters of each example at each level
    empties: list  # per tier (empty_all, empty_target) counts per example
    gates: list = field(default_factory=list)  # gated: per tier (open clusters, target's gate open) per example


def hybrid(run, n: int, throughput: dict, neurons: int, tier: int = 0) -> None:
    """run(device, lo, hi) over examples [0, n), split between the GPU and the CPU threads in
    proportion to their throughput (examples/s on this tier), both at once. The first time a
    tier is seen, slices on each measure it; every run refines it for the next split. The CPU
    keeps one thread free to feed the GPU. It takes its share in small blocks from the end, and
    stops when the GPU is done with its own, which then takes what the CPU left: a CPU slower
    than measured (contention) costs at most one block. Hybrid stays out, and says so, when the
    CPU's share is too small to pay for the coordination, or once a split tier took longer than
    the GPU alone would have. A tier with work enough to time (HYBRID_VERDICT_S) then leaves every
    tier to the GPU alone for the rest of the process: a sweep asks the same machine again and
    again, and measuring it anew would cost each time."""
    if throughput.get("gpu_alone") or GPU_ALONE:
        return run("cuda", 0, n)
    cpu_threads = max(1, numba.get_num_threads() - 1)
    probe = max(1, min(HYBRID_PROBE, HYBRID_PROBE_LOOKUPS // max(1, neurons)))  # ~0.1 s on the CPU

    def timed(on, lo, hi):
        threads = numba.get_num_threads()
        numba.set_num_threads(cpu_threads if on == "cpu" else threads)  # numba's setting is per thread
        t = time.perf_counter()
        try:
            run(on, lo, hi)
        finally:
            numba.set_num_threads(threads)
        if hi - lo >= probe:  # fewer examples time nothing but overheads
            throughput[on] = (hi - lo) / max(time.perf_counter() - t, 1e-9)

    lo = 0
    if "cpu" not in throughput or "cuda" not in throughput:
        # the GPU's slices large enough that launches and copies do not dominate its time
        gpu_probe = max(probe, min(n // 16, HYBRID_GPU_PROBE_LOOKUPS // max(1, neurons)))
        if n < 4 * (probe + gpu_probe):
            return run("cuda", 0, n)
        for on, size in (("cuda", gpu_probe), ("cpu", probe), ("cuda", gpu_probe), ("cpu", probe)):
            timed(on, lo, lo + size)  # the second of each counts: the first may compile
            lo += size
    share = throughput["cpu"] / (throughput["cuda"] + throughput["cpu"])
    gpu_alone_s = (n - lo) / throughput["cuda"]  # what the GPU alone would take, as measured so far
    if share < HYBRID_MIN_SHARE:
        stay_out(throughput, f"the CPU threads would take {100 * share:.1f}% of tier {tier}'s lookups, too little "
                             "to pay for sharing", gpu_alone_s)
        return timed("cuda", lo, n)
    split = n - round((n - lo) * share)
    t0 = time.perf_counter()
    both_at_once(run, timed, lo, split, n, max(probe, int(throughput["cpu"] * HYBRID_CPU_BLOCK_S)))
    took = time.perf_counter() - t0
    if took > gpu_alone_s * (1 + HYBRID_MIN_SHARE):
        stay_out(throughput, f"tier {tier} took {took:.2f} s split between the GPU and the CPU threads, where the "
                             f"GPU alone takes about {gpu_alone_s:.2f} s", gpu_alone_s)


def both_at_once(run, timed, lo: int, split: int, n: int, block: int) -> None:
    """The GPU takes examples [lo, split) while the CPU threads take [split, n) in blocks from the
    end, until the GPU is done; the GPU then takes what the CPU did not reach."""
    done = threading.Event()
    left = [n]  # the CPU's work goes down from n: [split, left[0]) is still untouched

    def cpu_side():
        while left[0] > split and not done.is_set():
            start = max(split, left[0] - block)
            timed("cpu", start, left[0])
            left[0] = start

    cpu = threading.Thread(target=cpu_side)  # its kernels release the GIL
    cpu.start()
    try:
        timed("cuda", lo, split)
    finally:
        done.set()
        cpu.join()
    if left[0] > split:  # what the CPU did not reach
        run("cuda", split, left[0])


GPU_ALONE: list[str] = []  # why hybrid left evaluation to the GPU alone in this process, once it has


def stay_out(throughput: dict, why: str, gpu_alone_s: float) -> None:
    """Hybrid leaves this tier to the GPU alone; and every tier after it in this process, where
    the verdict comes from a tier with work enough to time (small ones are noise)."""
    throughput["gpu_alone"] = True
    if gpu_alone_s < HYBRID_VERDICT_S:
        log.debug(f"hybrid: {why}: the GPU alone evaluates it")
    elif not GPU_ALONE:
        GPU_ALONE.append(why)
        log.info(f"hybrid: {why}: the GPU alone evaluates every tier from here on")


def score(model: Model, tokens: np.ndarray, device: str = "cpu", progress: Callable[[float], None] | None = None,
          gated: bool = True) -> Scores:
    """Run the kernels over one split on `device` ("cpu", "cuda", "wgpu", "metal" or "hybrid":
    each gives the same results). Never builds an examples × clusters matrix. `progress(fraction)`
    is told after each tier. A gated model is scored with its gates, unless `gated` is False (what
    the gates did is measured against that)."""
    exp, layout = model.exp, model.layout
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    examples = examples_of(tokens, exp.context)
    n = examples.shape[0]
    target_pos = layout.position[tokens[examples]].astype(np.int32)
    x = pack(tokens, examples, layout)
    levels, level_tables = score_levels(model)
    running = dict(x=x, target_pos=target_pos, best_score=np.full(n, -np.inf), best_pos=np.zeros(n, dtype=np.int32),
                   target_score=np.zeros(n), hist=np.zeros((n, len(levels)), dtype=np.int32))
    empties, opens = [], []
    for full, level_table in zip(model.memories, level_tables):
        tier = full.tier
        gate = model.gates[tier.index] if model.gates and gated else None
        batch = Batch(**running, empty_all=np.zeros(n, dtype=np.int64), empty_target=np.zeros(n, dtype=np.int64),
                      open_all=np.zeros(n, dtype=np.int64) if gate else None,
                      target_open=np.zeros(n, dtype=np.int64) if gate else None)
        # the clusters after the last one ever written read EMPTY everywhere: not looked up
        k = looked_up(tier, layout) if SKIP_NEVER_WRITTEN else tier.clusters
        arrays = prefix(full, k).arrays(score_table=score_table(tier.neurons, exp.empty_value), level_table=level_table,
                                        gate=prefix(gate, k).arrays() if gate else None,
                                        gate_need=-(-gate.tier.neurons // 2) if gate else 0)
        if k > 0:
            fold(arrays, batch, device, model.throughput.setdefault(tier.index, {}), tier,
                 within(progress, layout.tiers, tier))
        if k < tier.clusters:
            never_written(tier, k, arrays, batch)
        empties.append((batch.empty_all, batch.empty_target))
        opens.append((batch.open_all, batch.target_open) if gate else None)
        if progress is not None:
            progress(neuron_share(layout.tiers, tier.index))
    best_pos, target_score, hist = running["best_pos"], running["target_score"], running["hist"]
    sumexp = hist @ np.exp(levels)  # from the exact counts: the same on every backend
    return Scores(layout, [m.tier for m in model.memories], examples, np.log(sumexp) - target_score,
                  best_pos == target_pos, layout.tier_of_position[target_pos], target_score, levels, hist, empties,
                  opens if any(o is not None for o in opens) else [])


def within(progress: Callable[[float], None] | None, tiers, tier) -> Callable[[float], None] | None:
    """`progress` told the split's fraction done from the fraction of one tier done (None: no one follows)."""
    if progress is None:
        return None
    before, share = neuron_share(tiers, tier.index - 1), tier.n_neurons / sum(t.n_neurons for t in tiers)
    return lambda done: progress(before + share * done)


def fold(arrays: TierArrays, batch: Batch, device: str, throughput: dict, tier, progress=None) -> None:
    """Fold one tier's clusters into every example of `batch` on `device`: hybrid splits the
    examples between the GPU and the CPU threads; the CPU goes in blocks when someone follows
    its progress (told the fraction of the tier done). Each device runs the tier on the backend
    backends.choose() gives it, whose tables are uploaded once for every call on this split."""
    resident = {}  # device -> (its backend for this tier, the tier's tables where it reads them)

    def run(on: str, lo: int, hi: int) -> None:
        """The tier's clusters folded into examples [lo, hi) on one device."""
        if on not in resident:
            chosen = backends.choose(on, arrays)
            resident[on] = chosen, chosen.upload(arrays)
        chosen, tables = resident[on]
        chosen.evaluate(tables, batch.part(lo, hi))

    n = len(batch)
    if device == "hybrid":
        hybrid(run, n, throughput, tier.n_neurons, tier.index)
    elif device == "cpu" and progress is not None:  # in blocks, to tell how far it is
        for lo in range(0, n, PROGRESS_BLOCK):
            run(device, lo, min(n, lo + PROGRESS_BLOCK))
            progress(min(n, lo + PROGRESS_BLOCK) / n)
    else:
        run(device, 0, n)


def looked_up(tier, layout) -> int:
    """The tier's clusters up to its last one ever written in training (a target or a negative):
    every neuron of a cluster after it reads EMPTY for any input, so its score is a constant.
    Clusters are in training-frequency order, so these are the unseen tokens at the tier's end."""
    written = np.flatnonzero(layout.writes[tier.first : tier.first + tier.clusters])
    return int(written[-1]) + 1 if written.size else 0


def prefix(memory, k: int):
    """The memory of the tier's first k clusters: views, as the kernels read them."""
    tier = memory.tier
    if k == tier.clusters:
        return memory
    m = k * tier.neurons
    dense = memory.dense[:m] if tier.storage == DENSE else memory.dense
    offsets = memory.offsets if tier.storage == DENSE else memory.offsets[: m + 1]
    return dataclasses.replace(memory, masks=memory.masks[:m], order=memory.order[:m], dense=dense, offsets=offsets,
                               hashes=memory.hashes[:m] if memory.hashes.shape[0] else memory.hashes)


def never_written(tier, k: int, arrays: TierArrays, batch: Batch) -> None:
    """Fold in the tier's clusters k.. in closed form: each reads EMPTY in all its neurons, so it
    scores empty_value (0 behind a gate, which never opens), the same for every example."""
    skipped = tier.clusters - k
    t, e = (0, 0) if arrays.gate is not None else (0, tier.neurons)
    value, level = arrays.score_table[t, e], arrays.level_table[t, e]
    batch.hist[:, level] += skipped
    batch.empty_all[:] += skipped * tier.neurons
    first = tier.first + k  # the earliest of them: it wins a tie with nothing (the rest come later)
    better = value > batch.best_score
    batch.best_score[better] = value
    batch.best_pos[better] = first
    hit = (batch.target_pos >= first) & (batch.target_pos < tier.first + tier.clusters)
    batch.target_score[hit] = value
    batch.empty_target[hit] = tier.neurons


def ce_at(s: Scores, temperature: float) -> np.ndarray:
    """-ln p(target) per example with p = softmax(scores / temperature)."""
    z = s.levels / temperature
    top = np.where(s.hist > 0, z, -np.inf).max(axis=1)  # shift: no overflow at small temperatures
    # levels above a row's top have no clusters there: clip them, or 0 * exp(overflow) = nan
    shifted = np.exp(np.minimum(z[None, :] - top[:, None], 0.0))
    return top + np.log((s.hist * shifted).sum(axis=1)) - s.target_score / temperature


def fit_temperature(s: Scores) -> float:
    """The temperature that minimises mean CE on these scores (pass validation scores only).

    CE is convex in beta = 1/T (log-sum-exp minus a linear term), with derivative
    g(beta) = mean(E_beta[score]) - mean(target score) and second derivative mean(Var_beta[score]):
    Newton's method on g in u = ln beta, kept inside a bracket over BETA_RANGE that bisects
    whenever a step would leave it. About 8 passes over the examples, where bisection took 62."""
    if s.ce.shape[0] == 0:
        return 1.0
    hist, levels = np.ascontiguousarray(s.hist), np.ascontiguousarray(s.levels, dtype=np.float64)
    mean, var = np.empty(hist.shape[0]), np.empty(hist.shape[0])
    target = float(s.target_score.mean())

    def slope(u: float) -> tuple[float, float]:  # g and dg/du at beta = e^u
        cpu.level_moments(hist, levels, math.exp(u), mean, var)
        return float(mean.mean()) - target, math.exp(u) * float(var.mean())

    lo, hi = math.log(BETA_RANGE[0]), math.log(BETA_RANGE[1])
    if slope(lo)[0] >= 0:
        return 1 / BETA_RANGE[0]
    if slope(hi)[0] <= 0:
        return 1 / BETA_RANGE[1]
    u = 0.0 if lo < 0.0 < hi else (lo + hi) / 2
    for _ in range(200):
        g, dg = slope(u)
        if g == 0:
            break
        lo, hi = (u, hi) if g < 0 else (lo, u)
        step = u - g / dg if dg > 0 else math.nan
        nxt = step if lo < step < hi else (lo + hi) / 2
        if abs(nxt - u) < 1e-13 or hi - lo < 1e-13:
            u = nxt
            break
        u = nxt
    return 1 / math.exp(u)


def temperature_bound(temperature: float) -> str | None:
    """Which end of the search a fitted temperature sits at, if any: "highest" (T = 1000: CE
    still falls toward uniform guessing, so no temperature beats uniform) or "lowest" (T = 0.001:
    CE still falls as T shrinks); None for a temperature found inside the range."""
    if temperature >= 1 / BETA_RANGE[0]:
        return "highest"
    if temperature <= 1 / BETA_RANGE[1]:
        return "lowest"
    return None


def metrics(s: Scores, *, temperature: float | None = None, byte_lengths: np.ndarray | None = None,
            ungated: Scores | None = None) -> dict:
    """Overall and per-tier metrics; `bpb` when the split's byte lengths are given; a
    `calibrated` block at `temperature` when one is given. A gated model's tiers say how often
    their gates opened; with `ungated` (the same split scored without gates) the metrics also
    give the CE and accuracy the model had without them."""
    n = s.ce.shape[0]
    bytes_ = float(byte_lengths[s.positions].sum()) if byte_lengths is not None and n else None
    out = {**summary(s.ce, s.correct), "bpb": bits_per_byte(s.ce, bytes_),
           "ppl_floor": ppl_floor(s.layout.vocab_size)}
    if temperature is not None:
        ce_t = ce_at(s, temperature)
        mean = float(ce_t.mean()) if n else None
        out["calibrated"] = {"temperature": temperature, "ce": mean, "ppl": math.exp(mean) if n else None,
                             "bpb": bits_per_byte(ce_t, bytes_), "bound": temperature_bound(temperature)}
    out["tiers"] = [tier_metrics(tier, s.target_tier == tier.index, s.ce, s.correct, empty_all, empty_target, n)
                    for tier, (empty_all, empty_target) in zip(s.tiers, s.empties)]
    if ungated is not None:
        without = summary(ungated.ce, ungated.correct)
        out["ungated"] = {k: without[k] for k in ("ce", "ppl", "accuracy")}
    for tier, row, opened in zip(s.tiers, out["tiers"], s.gates):
        in_tier = s.target_tier == tier.index
        open_all, target_open = opened
        k = int(in_tier.sum())
        row["gate_open"] = float(open_all.sum()) / (n * tier.clusters) if n else None
        row["gate_target_open"] = float(target_open[in_tier].sum()) / k if k else None
        if ungated is not None:
            without = summary(ungated.ce[in_tier], ungated.correct[in_tier])
            row["ungated_ce"], row["ungated_accuracy"] = without["ce"], without["accuracy"]
    return out


def evaluate(model: Model, tokens: np.ndarray, *, temperature: float | None = None,
             byte_lengths: np.ndarray | None = None, device: str = "cpu",
             progress: Callable[[float], None] | None = None) -> dict:
    """Metrics of `model` on one split (see metrics()); a gated model's with what it had without its gates."""
    ungated = score(model, tokens, device, gated=False) if model.gates else None
    return metrics(score(model, tokens, device, progress), temperature=temperature, byte_lengths=byte_lengths,
                   ungated=ungated)


def bits_per_byte(ce: np.ndarray, n_bytes: float | None) -> float | None:
    """Total information in bits over the bytes of text the evaluated tokens stand for."""
    return float(ce.sum()) / math.log(2) / n_bytes if n_bytes else None


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
        "backend": tier.memory,  # the record's name for the memory kind (records.TierMetrics.memory)
        **summary(ce[in_tier], correct[in_tier]),
        "share": 100.0 * k / n_examples if n_examples else None,
        "empty_rate": float(empty_all.sum()) / lookups if lookups else None,
        "target_empty_rate": float(empty_target[in_tier].sum()) / (k * tier.neurons) if k else None,
    }
