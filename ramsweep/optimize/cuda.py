"""CUDA kernels (numba-cuda) of the incremental fitness: the same rows and counts as cpu.py.

Everything a candidate touches stays on the GPU: the packed training and fitness examples,
the pool of rows, the per-example counts, and each tier's trained memory (copied once).
Training a neuron writes its cells into a scratch table with atomic ORs of 2-bit codes (order-
free, as the engine's training), over a grid of (example slices × neurons), then reads them
at the fitness examples into its row. Moving changed clusters runs one thread per fitness
example; the counts are stored level-major there so that neighbouring threads touch
neighbouring words. Σ exp(score) is added in level order with IEEE round-to-nearest adds and
multiplies (no fused multiply-add), as the CPU kernel does, so both give the same bits.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float64, uint8, uint32, uint64
from numba.cuda import libdevice

from ramsweep.engine.backends.cuda import MAX_WORDS, SIMULATOR, _address, _load_x, _read
from ramsweep.engine.layout import DENSE
from ramsweep.optimize import cpu

THREADS = 256
SPLITS = 64  # blocks per neuron along the examples (training and reading)
SHARED_MAX_BITS = 17  # up to here a neuron's cells fit one block's shared memory (32 KiB)
SCRATCH_MAX_BITS = 26  # wider neurons are trained on the CPU and their rows copied up
SCRATCH_BYTES = 1 << 30  # scratch of one training launch
POOL_BYTES = 16 << 30  # rows kept on the GPU at most (the CPU keeps 1 GiB): a big tier's moves in one group


@cuda.jit
def _zero(a):
    for j in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        a[j] = 0


@cuda.jit
def _write_cells(x_train, by_target_offsets, by_target_examples, n_negatives, clusters, order, words, scratch):
    i = cuda.blockIdx.y  # the neuron; blocks along x split its examples
    c = clusters[i]
    t0, t1 = by_target_offsets[c], by_target_offsets[c + 1]
    n_all = x_train.shape[0] if c < n_negatives else 0  # a negative cluster: FALSE at every example
    xw = cuda.local.array(MAX_WORDS, uint64)
    base = i * words
    for j in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, n_all + t1 - t0,
                   cuda.gridDim.x * cuda.blockDim.x):
        e, code = (j, uint32(1)) if j < n_all else (by_target_examples[t0 + j - n_all], uint32(3))
        _load_x(x_train, e, xw)
        a = _address(xw, order, i)
        cuda.atomic.or_(scratch, base + (a >> uint64(4)), code << uint32((a & uint64(15)) << uint64(1)))


@cuda.jit
def _read_cells(x_fit, order, words, scratch, pool, slots):
    i = cuda.blockIdx.y
    xw = cuda.local.array(MAX_WORDS, uint64)
    base = i * words
    row = slots[i]
    for f in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, x_fit.shape[0],
                   cuda.gridDim.x * cuda.blockDim.x):
        _load_x(x_fit, f, xw)
        a = _address(xw, order, i)
        pool[row, f] = uint8((scratch[base + (a >> uint64(4))] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3))


@cuda.jit
def _train_shared(x_train, by_target_offsets, by_target_examples, n_negatives, clusters, order, words, x_fit, pool,
                  slots):
    """_write_cells and _read_cells for a neuron whose cells fit shared memory: one block per
    neuron, atomics in shared memory, no scratch in device memory."""
    cells = cuda.shared.array(0, uint32)
    i = cuda.blockIdx.x
    tid, threads = cuda.threadIdx.x, cuda.blockDim.x
    for w in range(tid, words, threads):
        cells[w] = 0
    cuda.syncthreads()
    c = clusters[i]
    t0, t1 = by_target_offsets[c], by_target_offsets[c + 1]
    n_all = x_train.shape[0] if c < n_negatives else 0
    xw = cuda.local.array(MAX_WORDS, uint64)
    for j in range(tid, n_all + t1 - t0, threads):
        e, code = (j, uint32(1)) if j < n_all else (by_target_examples[t0 + j - n_all], uint32(3))
        _load_x(x_train, e, xw)
        a = _address(xw, order, i)
        cuda.atomic.or_(cells, a >> uint64(4), code << uint32((a & uint64(15)) << uint64(1)))
    cuda.syncthreads()
    row = slots[i]
    for f in range(tid, x_fit.shape[0], threads):
        _load_x(x_fit, f, xw)
        a = _address(xw, order, i)
        pool[row, f] = uint8((cells[a >> uint64(4)] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3))


@cuda.jit
def _tier_state(x_fit, target_pos, order, neurons, first, is_sparse, dense, offsets, keys, vals, level_table,
                hist, before, target_level):
    """cpu.tier_state, one thread per example (hist and before level-major)."""
    e = cuda.grid(1)
    if e >= x_fit.shape[0]:
        return
    xw = cuda.local.array(MAX_WORDS, uint64)
    _load_x(x_fit, e, xw)
    target = target_pos[e]
    for c in range(order.shape[0] // neurons):
        n_true, n_empty = 0, 0
        for n in range(c * neurons, (c + 1) * neurons):
            a = _address(xw, order, n)
            v = _read(is_sparse, dense, offsets, keys, vals, n, a)
            n_true += v == 3
            n_empty += v == 0
        level = level_table[n_true, n_empty]
        hist[level, e] += 1
        if first + c < target:
            before[level, e] += 1
        elif first + c == target:
            target_level[e] = level


@cuda.jit
def _memory_rows(x_fit, order, neurons, is_sparse, dense, offsets, keys, vals, pool, slots):
    i = cuda.blockIdx.y
    n = neurons[i]
    row = slots[i]
    xw = cuda.local.array(MAX_WORDS, uint64)
    for f in range(cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x, x_fit.shape[0],
                   cuda.gridDim.x * cuda.blockDim.x):
        _load_x(x_fit, f, xw)
        a = _address(xw, order, n)
        pool[row, f] = uint8(_read(is_sparse, dense, offsets, keys, vals, n, a))


if SIMULATOR:  # the simulator's libdevice is stubs; Python's floats add and multiply as IEEE doubles

    @cuda.jit(device=True, inline=True)
    def _add_product(total, count, value):
        return total + float64(count) * value

else:

    @cuda.jit(device=True, inline=True)
    def _add_product(total, count, value):
        """total + count * value, each rounded to nearest: never contracted into an FMA."""
        return libdevice.dadd_rn(total, libdevice.dmul_rn(float64(count), value))


@cuda.jit(device=True, inline=True)
def _level(pool, slots, lo, hi, e, tables, tier):
    n_true, n_empty = 0, 0
    for s in range(lo, hi):
        v = pool[slots[s], e]
        n_true += v == 3
        n_empty += v == 0
    return tables[tier, n_true, n_empty]


@cuda.jit(device=True, inline=True)
def _move(hist, before, pool, cluster_offsets, from_slots, to_slots, cluster_pos, cluster_tier, level_tables, k, e,
          target):
    """Move cluster k of example e from its level under from_slots to its level under to_slots."""
    lo, hi = cluster_offsets[k], cluster_offsets[k + 1]
    old = _level(pool, from_slots, lo, hi, e, level_tables, cluster_tier[k])
    new = _level(pool, to_slots, lo, hi, e, level_tables, cluster_tier[k])
    hist[old, e] -= 1
    hist[new, e] += 1
    if cluster_pos[k] < target:
        before[old, e] -= 1
        before[new, e] += 1
    return new


@cuda.jit
def _apply(hist, before, target_level, target_pos, pool, cluster_offsets, old_slots, new_slots, cluster_pos,
           cluster_tier, level_tables, exp_levels, write, sumexp, new_target_level, correct, new_levels):
    """cpu.apply_changes, one thread per example; hist and before are (levels, examples) here.
    An evaluation is put back by moving the clusters back (their rows read again)."""
    e = cuda.grid(1)
    if e >= target_pos.shape[0]:
        return
    tl = target_level[e]
    target = target_pos[e]
    keep_levels = new_levels.shape[0] > 0
    for k in range(cluster_pos.shape[0]):
        new = _move(hist, before, pool, cluster_offsets, old_slots, new_slots, cluster_pos, cluster_tier,
                    level_tables, k, e, target)
        if keep_levels:
            new_levels[k, e] = new
        if cluster_pos[k] == target:
            tl = new
    total = float64(0.0)
    top = 0
    for level in range(hist.shape[0]):
        h = hist[level, e]
        total = _add_product(total, h, exp_levels[level])
        if h > 0:
            top = level
    sumexp[e] = total
    new_target_level[e] = tl
    correct[e] = tl == top and before[top, e] == 0
    if write:
        target_level[e] = tl
    else:
        for k in range(cluster_pos.shape[0]):
            _move(hist, before, pool, cluster_offsets, new_slots, old_slots, cluster_pos, cluster_tier,
                  level_tables, k, e, target)


def _grid(n: int) -> int:
    return max(1, min(SPLITS, -(-n // THREADS)))


class Kernels:
    """cpu.Kernels on the GPU: the same methods, state and results."""

    def __init__(self, train_x, by_target, n_negatives, fit, n_levels, level_tables, exp_levels, memories):
        self.n_negatives = n_negatives
        self.host = (train_x, by_target, fit.x)  # for neurons too wide for a scratch table
        self.train_x = cuda.to_device(train_x) if train_x is not None else None
        self.by_target = tuple(cuda.to_device(a) for a in by_target) if by_target is not None else None
        self.fit_x, self.target_pos = cuda.to_device(fit.x), cuda.to_device(fit.target_pos)
        self.n = n = fit.x.shape[0]
        self.hist = cuda.to_device(np.zeros((n_levels, n), dtype=np.int32))
        self.before = cuda.to_device(np.zeros((n_levels, n), dtype=np.int32))
        self.target_level = cuda.to_device(np.zeros(n, dtype=np.int32))
        self.level_tables, self.exp_levels = cuda.to_device(level_tables), cuda.to_device(exp_levels)
        self.memories, self.device_memories = memories, {}
        for t, mem in enumerate(memories):
            order, dense, offsets, keys, vals = self.memory(t)
            _tier_state[-(-n // THREADS), THREADS](self.fit_x, self.target_pos, order, mem.tier.neurons,
                                                   mem.tier.first, mem.tier.storage != DENSE, dense, offsets, keys,
                                                   vals, self.level_tables[t], self.hist, self.before,
                                                   self.target_level)
        self.rows = cuda.device_array((0, n), dtype=np.uint8)

    def memory(self, t: int):
        """One tier's trained memory on the GPU (copied the first time)."""
        if t not in self.device_memories:
            mem = self.memories[t]
            self.device_memories[t] = tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (
                mem.order, mem.dense, mem.offsets, mem.keys, mem.vals))
        return self.device_memories[t]

    @staticmethod
    def pool_bytes() -> int:
        """Up to POOL_BYTES, and no more than a third of the GPU's free memory."""
        from ramsweep.engine.backends.cuda import free_memory

        return min(POOL_BYTES, free_memory() // 3)

    def grow(self, n_slots: int) -> None:
        rows = cuda.device_array((n_slots, self.n), dtype=np.uint8)
        if self.rows.shape[0]:
            rows[: self.rows.shape[0]].copy_to_device(self.rows)
        self.rows = rows

    def train_rows(self, clusters, masks, order, bits, slots) -> None:
        if bits > SCRATCH_MAX_BITS:  # too wide for a scratch table: the CPU trains, the rows go up
            train_x, by_target, fit_x = self.host
            rows = np.zeros((len(slots), self.n), dtype=np.uint8)
            cpu.train_rows(train_x, *by_target, self.n_negatives, clusters, masks, order, bits, fit_x, rows,
                           np.arange(len(slots), dtype=np.int64))
            for row, slot in zip(rows, slots):
                self.rows[int(slot)].copy_to_device(row)
            return
        words = max(1, (1 << bits) // 16)
        if bits <= SHARED_MAX_BITS:
            _train_shared[len(slots), THREADS * 2, 0, words * 4](
                self.train_x, *self.by_target, self.n_negatives, cuda.to_device(clusters),
                cuda.to_device(np.ascontiguousarray(order)), words, self.fit_x, self.rows, cuda.to_device(slots))
            return
        batch = max(1, SCRATCH_BYTES // (words * 4))
        for lo in range(0, len(slots), batch):
            hi = min(lo + batch, len(slots))
            scratch = cuda.device_array((hi - lo) * words, dtype=np.uint32)
            _zero[max(1, min(4096, -(-scratch.shape[0] // THREADS))), THREADS](scratch)
            d_order, d_clusters = cuda.to_device(np.ascontiguousarray(order[lo:hi])), cuda.to_device(clusters[lo:hi])
            longest = max(int(self.train_x.shape[0]), 1)
            _write_cells[(_grid(longest), hi - lo), THREADS](self.train_x, *self.by_target, self.n_negatives,
                                                             d_clusters, d_order, words, scratch)
            _read_cells[(_grid(self.n), hi - lo), THREADS](self.fit_x, d_order, words, scratch, self.rows,
                                                           cuda.to_device(slots[lo:hi]))

    def memory_rows(self, tier_index: int, neurons, slots) -> None:
        order, dense, offsets, keys, vals = self.memory(tier_index)
        sparse = self.memories[tier_index].tier.storage != DENSE
        _memory_rows[(_grid(self.n), len(neurons)), THREADS](self.fit_x, order, cuda.to_device(neurons), sparse,
                                                             dense, offsets, keys, vals, self.rows,
                                                             cuda.to_device(slots))

    def apply(self, offsets, old_slots, new_slots, positions, tiers, write: bool, want_levels: bool):
        k, n = len(positions), self.n
        sumexp, target_level = cuda.device_array(n, np.float64), cuda.device_array(n, np.int32)
        correct = cuda.device_array(n, np.bool_)
        new_levels = cuda.device_array((k if want_levels else 0, n), np.int32)
        args = [cuda.to_device(a) for a in (offsets, old_slots, new_slots, positions, tiers)]
        _apply[-(-n // THREADS), THREADS](self.hist, self.before, self.target_level, self.target_pos, self.rows,
                                          *args, self.level_tables, self.exp_levels, write, sumexp, target_level,
                                          correct, new_levels)
        levels = new_levels.copy_to_host() if want_levels else None
        return sumexp.copy_to_host(), target_level.copy_to_host(), correct.copy_to_host(), levels

    def snapshot(self):
        copies = []
        for a in (self.hist, self.before, self.target_level):
            b = cuda.device_array_like(a)
            b.copy_to_device(a)
            copies.append(b)
        return copies

    def restore(self, saved) -> None:
        for a, b in zip((self.hist, self.before, self.target_level), saved):
            a.copy_to_device(b)

    def read_rows(self, slots) -> np.ndarray:
        return np.stack([self.rows[int(s)].copy_to_host() for s in slots]) if len(slots) else np.zeros((0, self.n))
