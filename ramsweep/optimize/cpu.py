"""CPU kernels (numba) of the incremental fitness (see fitness.py for what they compute).

A *row* is what one neuron reads on every fitness example: its 2-bit cell code there
(EMPTY 0, FALSE 1, TRUE 3), one byte each. Rows live in a pool (slots × examples), so the
kernels take slot numbers, never lists of arrays, and a GPU backend can keep the same pool
on the device. Shapes and the packed-input conventions are those of engine/backends/cpu.py.
"""

import numpy as np
from numba import njit, prange

from ramsweep.engine.backends.cpu import (
    NO_HASHES,
    SCRATCH_MAX_BITS,
    address,
    cluster_reads,
    collect_sorted,
    dense_read,
    sparse_read,
    writes,
)


@njit(cache=True, parallel=True, nogil=True)
def train_rows(x_train, by_target_offsets, by_target_examples, n_negatives, clusters, masks, order, bits,
               x_fit, pool, slots):
    """Train neuron i (wired by masks[i], order[i], of cluster position clusters[i]) on the
    training examples exactly as engine training would, and write what it reads on each
    fitness example into pool[slots[i]]. The memory itself is scratch: only the row is kept."""
    n_train = x_train.shape[0]
    for i in prange(clusters.shape[0]):
        c = clusters[i]
        t0, t1 = by_target_offsets[c], by_target_offsets[c + 1]
        n_all = n_train if c < n_negatives else 0  # a negative cluster is written FALSE by every example
        row = pool[slots[i]]
        if bits <= SCRATCH_MAX_BITS:
            scratch = np.zeros(np.int64(1) << bits, dtype=np.uint8)
            for e in range(n_all):
                scratch[address(x_train, e, masks, order, i)] |= 1
            for j in range(t0, t1):
                scratch[address(x_train, by_target_examples[j], masks, order, i)] |= 3
            for f in range(x_fit.shape[0]):
                row[f] = scratch[address(x_fit, f, masks, order, i)]
        else:  # too wide for a table: sorted written cells, binary-searched (as SPARSE memory)
            addrs, codes = writes(x_train, masks, order, i, n_all > 0, by_target_examples, t0, t1)
            keys = np.empty(addrs.shape[0], dtype=np.uint64)
            vals = np.empty(addrs.shape[0], dtype=np.uint8)
            offsets = np.zeros(2, dtype=np.int64)
            offsets[1] = collect_sorted(addrs, codes, keys, vals, 0)
            for f in range(x_fit.shape[0]):
                row[f] = sparse_read(offsets, keys, vals, 0, address(x_fit, f, masks, order, i))


@njit(cache=True, parallel=True, nogil=True)
def memory_rows(x_fit, masks, order, neurons, is_sparse, dense, offsets, keys, vals, pool, slots):
    """What trained neurons (indices `neurons` of one tier's memory) read on each fitness example."""
    for i in prange(neurons.shape[0]):
        n = neurons[i]
        row = pool[slots[i]]
        for f in range(x_fit.shape[0]):
            a = address(x_fit, f, masks, order, n)
            row[f] = sparse_read(offsets, keys, vals, n, a) if is_sparse else dense_read(dense, n, a)


@njit(cache=True, parallel=True, nogil=True)
def tier_state(x_fit, target_pos, masks, order, neurons, first, is_sparse, dense, offsets, keys, vals,
               level_table, hist, before, target_level):
    """Fold one trained tier into each fitness example's counts: clusters per score level
    (hist), those earlier than the target in cluster order (before), the target's level."""
    n_clusters = masks.shape[0] // neurons
    for e in prange(x_fit.shape[0]):
        for c in range(n_clusters):
            n_true, n_empty = cluster_reads(x_fit, e, masks, order, NO_HASHES, c, neurons, is_sparse, dense, offsets, keys, vals)
            level = level_table[n_true, n_empty]
            hist[e, level] += 1
            if first + c < target_pos[e]:
                before[e, level] += 1
            elif first + c == target_pos[e]:
                target_level[e] = level


@njit(cache=True, inline="always")
def cluster_level(pool, slots, lo, hi, e, level_table):
    n_true, n_empty = 0, 0
    for s in range(lo, hi):
        v = pool[slots[s], e]
        n_true += v == 3
        n_empty += v == 0
    return level_table[n_true, n_empty]


POOL_BYTES = 1 << 30  # rows kept for reuse (a row is one byte per fitness example)
EXAMPLE_BLOCK = 256  # examples a thread moves together: their rows' bytes are read in runs


@njit(cache=True, parallel=True, nogil=True)
def apply_changes(hist, before, target_level, target_pos, pool, cluster_offsets, old_slots, new_slots,
                  cluster_pos, cluster_tier, level_tables, exp_levels, write,
                  sumexp, new_target_level, correct, new_levels):
    """Move changed clusters from their old rows (old_slots) to their new rows (new_slots) in
    each example's counts, and read off Σ exp(score), the target's level and whether the
    target is the argmax (ties to the earlier cluster). Cluster k's neurons are slots
    cluster_offsets[k] .. cluster_offsets[k+1]. With `write` the counts keep the move (a
    commit); without, they are put back as they were (an evaluation). `new_levels` (k, n)
    receives each cluster's new level when it has rows (SIMPLE needs them), else (0, n).
    O(examples × changed clusters × neurons); the sum runs over levels in order, so it is the
    same on any backend that adds in that order. A thread takes a block of examples and goes
    through the clusters for all of them at once (rows are contiguous along the examples)."""
    n, n_levels = hist.shape
    keep_levels = new_levels.shape[0] > 0
    for b in prange((n + EXAMPLE_BLOCK - 1) // EXAMPLE_BLOCK):
        e0, e1 = b * EXAMPLE_BLOCK, min((b + 1) * EXAMPLE_BLOCK, n)
        if not write:  # put back by copy: O(block × levels) however many clusters move
            saved_hist, saved_before = hist[e0:e1].copy(), before[e0:e1].copy()
        for e in range(e0, e1):
            new_target_level[e] = target_level[e]
        for k in range(cluster_pos.shape[0]):
            table = level_tables[cluster_tier[k]]
            lo, hi = cluster_offsets[k], cluster_offsets[k + 1]
            c = cluster_pos[k]
            for e in range(e0, e1):
                old = cluster_level(pool, old_slots, lo, hi, e, table)
                new = cluster_level(pool, new_slots, lo, hi, e, table)
                if keep_levels:
                    new_levels[k, e] = new
                hist[e, old] -= 1
                hist[e, new] += 1
                if c < target_pos[e]:
                    before[e, old] -= 1
                    before[e, new] += 1
                elif c == target_pos[e]:
                    new_target_level[e] = new
        for e in range(e0, e1):
            total = 0.0
            top = 0
            for level in range(n_levels):
                total += hist[e, level] * exp_levels[level]
                if hist[e, level] > 0:
                    top = level
            sumexp[e] = total
            tl = new_target_level[e]
            correct[e] = tl == top and before[e, top] == 0
            if write:
                target_level[e] = tl
        if not write:
            hist[e0:e1] = saved_hist
            before[e0:e1] = saved_before


@njit(cache=True, parallel=True, nogil=True)
def cluster_counts(x_fit, target_pos, masks, order, neurons, first, clusters, is_sparse, dense, offsets, keys,
                   vals, level_table, counts):
    """counts[c, level, hit] for each c of `clusters` (indices in the tier): fitness examples on
    which cluster first + c scores `level`, split by whether it is their target (hit = 1): what
    SIMPLE fitness is made of."""
    for i in prange(clusters.shape[0]):
        c = clusters[i]
        for e in range(x_fit.shape[0]):
            n_true, n_empty = cluster_reads(x_fit, e, masks, order, NO_HASHES, c, neurons, is_sparse, dense, offsets, keys, vals)
            counts[c, level_table[n_true, n_empty], np.int64(first + c == target_pos[e])] += 1


class Kernels:
    """The fitness state's arrays and the kernels over them, on the CPU (cuda.Kernels is the
    same on a GPU). `rows` is the pool's storage: one row per slot."""

    def __init__(self, train_x, by_target, n_negatives, fit, n_levels, level_tables, exp_levels, memories):
        self.train_x, self.by_target, self.n_negatives = train_x, by_target, n_negatives
        self.fit_x, self.target_pos = fit.x, fit.target_pos
        self.level_tables, self.exp_levels, self.memories = level_tables, exp_levels, memories
        n = fit.x.shape[0]
        self.hist = np.zeros((n, n_levels), dtype=np.int32)
        self.before = np.zeros((n, n_levels), dtype=np.int32)
        self.target_level = np.zeros(n, dtype=np.int32)
        for mem, table in zip(memories, level_tables):
            tier = mem.tier
            tier_state(fit.x, fit.target_pos, mem.masks, mem.order, tier.neurons, tier.first, tier.storage != "dense",
                       mem.dense, mem.offsets, mem.keys, mem.vals, table, self.hist, self.before, self.target_level)
        self.rows = np.zeros((0, n), dtype=np.uint8)

    @staticmethod
    def pool_bytes() -> int:
        return POOL_BYTES

    def grow(self, n_slots: int) -> None:
        extra = np.zeros((n_slots - self.rows.shape[0], self.rows.shape[1]), dtype=np.uint8)
        self.rows = np.concatenate([self.rows, extra])

    def train_rows(self, clusters, masks, order, bits, slots) -> None:
        train_rows(self.train_x, *self.by_target, self.n_negatives, clusters, masks, order, bits, self.fit_x,
                   self.rows, slots)

    def memory_rows(self, tier_index: int, neurons, slots) -> None:
        mem = self.memories[tier_index]
        memory_rows(self.fit_x, mem.masks, mem.order, neurons, mem.tier.storage != "dense", mem.dense, mem.offsets,
                    mem.keys, mem.vals, self.rows, slots)

    def apply(self, offsets, old_slots, new_slots, positions, tiers, write: bool, want_levels: bool):
        n, k = self.fit_x.shape[0], positions.shape[0]
        sumexp, target_level = np.empty(n), np.empty(n, dtype=np.int32)
        correct = np.empty(n, dtype=np.bool_)
        new_levels = np.empty((k if want_levels else 0, n), dtype=np.int32)
        apply_changes(self.hist, self.before, self.target_level, self.target_pos, self.rows, offsets, old_slots,
                      new_slots, positions, tiers, self.level_tables, self.exp_levels, write, sumexp, target_level,
                      correct, new_levels)
        return sumexp, target_level, correct, new_levels if want_levels else None

    def snapshot(self):
        return self.hist.copy(), self.before.copy(), self.target_level.copy()

    def restore(self, saved) -> None:
        self.hist[:], self.before[:], self.target_level[:] = saved

    def read_rows(self, slots) -> np.ndarray:
        return self.rows[np.asarray(slots, dtype=np.int64)]
