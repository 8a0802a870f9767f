"""CUDA kernels (numba-cuda): train and evaluate one tier on an NVIDIA GPU, giving exactly the
cells and counts of cpu.py (docs/design.md §3; shapes and cell codes as documented there).

Evaluation: each thread takes EX examples, a block of up to THREADS x EX examples times a
range of clusters, so the threads of a warp read the same neuron's wiring and cells at once,
and each thread decodes a neuron's wiring once for its EX contexts. Each thread counts its
clusters per score level (the tier's own levels) in its own columns of a shared-memory
histogram and keeps its argmax as one integer key (level, then the earlier cluster), so nothing
is ever compared as a float on the GPU; the host turns levels into scores. Examples go through in chunks of CHUNK, so device memory
stays bounded for any split, and no examples x clusters matrix is ever made.

Training: TRUE/FALSE writes are atomic ORs of 2-bit codes (the memory is order-independent,
so any thread order gives the same cells). A sparse tier is written into a dense scratch a
batch of neurons at a time, then compacted into sorted keys per neuron by a block-wide scan
(addresses come out in order, so no sort is needed). Sparse tiers wider than
SCRATCH_MAX_BITS are trained on the CPU.
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
from numba import cuda, int32, uint16, uint32, uint64

from ramsweep.engine.backends import cpu
from ramsweep.engine.backends.levels import level_scores, tier_levels

THREADS = 128  # threads of an evaluation block (fewer for tiers of many levels: block_threads)
MAX_LEVELS = 128  # one tier's score levels: a shared histogram of MAX_LEVELS x EX x 32 uint16 = 32 KiB
MAX_WORDS = 8  # packed input words per example (512 input bits)
CHUNK = 1 << 16  # examples per launch
TARGET_BLOCKS = 4096  # enough blocks per launch to fill a large GPU
TRAIN_THREADS = 256
SCAN_THREADS = 1024
SCRATCH_MAX_BITS = 26  # a sparse neuron's dense scratch is 2^bits / 4 bytes (16 MiB at 26 bits)
SCRATCH_BYTES = 1 << 30  # scratch of one sparse training batch

SIMULATOR = bool(numba.config.ENABLE_CUDASIM)  # NUMBA_ENABLE_CUDASIM=1: kernels run on the CPU
_available: bool | None = None


def available() -> bool:
    """A CUDA GPU (or numba-cuda's simulator) is usable; never raises."""
    global _available
    if _available is None:
        try:
            _available = bool(cuda.is_available())
        except Exception:  # a broken driver or toolkit means: no CUDA here
            _available = False
    return _available


def device_name() -> str:
    if SIMULATOR:
        return "cuda simulator"
    name = cuda.get_current_device().name
    return name.decode() if isinstance(name, bytes) else str(name)


def free_memory() -> int:
    """Bytes free on the current GPU now."""
    if SIMULATOR:
        return 1 << 40
    return int(cuda.current_context().get_memory_info()[0])


def unsupported(words: int, levels: int) -> str | None:
    """Why a tier cannot run on these kernels (None: it can)."""
    if words > MAX_WORDS:
        return f"{words * 64} packed input bits exceed the CUDA kernels' {MAX_WORDS * 64}"
    if levels > MAX_LEVELS:
        return f"{levels} distinct score levels exceed the CUDA kernels' {MAX_LEVELS}"
    return None


# --- device functions ------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _address(xw, order, n):
    a = uint64(0)
    for j in range(order.shape[1]):
        q = order[n, j]
        a = (a << uint64(1)) | ((xw[q >> 6] >> uint64(q & 63)) & uint64(1))
    return a


# the CPU engine's binary search (plain Python), compiled again as a device function
_sparse_read = cuda.jit(device=True, inline=True)(cpu.sparse_read.py_func)


@cuda.jit(device=True, inline=True)
def _read(is_sparse, dense, offsets, keys, vals, n, a):
    """Neuron n's cell at address a: binary search (SPARSE) or one packed word (DENSE)."""
    if is_sparse:
        return _sparse_read(offsets, keys, vals, n, a)
    return (dense[n, a >> uint64(4)] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3)


@cuda.jit(device=True, inline=True)
def _load_x(x, e, xw):
    for w in range(x.shape[1]):
        xw[w] = x[e, w]


# --- evaluation ------------------------------------------------------------------------------
# A thread takes EX examples, so each neuron's wiring (uniform across the warp) is read and
# decoded once for EX contexts; the contexts stay in registers (up to 128 input bits), and
# addresses are 32-bit unless a neuron or gate reads more than 32 unhashed bits (wide()).
# Profiled on an H100 (ncu), the one-example kernel spent ~370 instructions a lookup on 64-bit
# index arithmetic and was bound by issue, not by memory.


def _kernels(A, EX: int):
    """The evaluation and training kernels for addresses of type A (uint32 or uint64), EX
    examples a thread. Compiled on first use, for the types they meet. Loops run on unsigned
    counters: numba's signed ones pay a negative-index check at every array access."""
    ZERO, ONE = A(0), A(1)
    NOT_HERE = uint64(0xFFFFFFFFFFFFFFFF)  # no cluster of this tier

    @cuda.jit(device=True, inline=True)
    def cells(x, e, x0, x1, order, hashes, n, out):
        """out[k] = neuron n's cell for example e[k] (first packed words x0[k], x1[k]): its
        address, or the address's hash (LSH: the XOR of the hash words of the address's 1 bits,
        cpu.hashed). The wiring is read once for the EX examples."""
        for k in range(EX):
            out[k] = ZERO
        bits, words = uint64(order.shape[1]), x.shape[1]
        j = uint64(0)
        if hashes.shape[0] > 0:
            while j < bits:
                q = uint64(order[n, j])
                h = A(hashes[n, j])
                for k in range(EX):
                    w = x0[k] if q < uint64(64) else (x1[k] if words == 2 else x[e[k], q >> uint64(6)])
                    if (w >> (q & uint64(63))) & uint64(1):
                        out[k] ^= h
                j += uint64(1)
        elif words == 1:  # contexts of up to 64 bits: one register an example
            while j < bits:
                q = uint64(order[n, j])
                for k in range(EX):
                    out[k] = (out[k] << ONE) | A((x0[k] >> q) & uint64(1))
                j += uint64(1)
        else:
            while j < bits:
                q = uint64(order[n, j])
                for k in range(EX):
                    w = x0[k] if q < uint64(64) else (x1[k] if words == 2 else x[e[k], q >> uint64(6)])
                    out[k] = (out[k] << ONE) | A((w >> (q & uint64(63))) & uint64(1))
                j += uint64(1)

    @cuda.jit(device=True, inline=True)
    def read(is_sparse, dense, offsets, keys, vals, n, a):
        if is_sparse:
            return _sparse_read(offsets, keys, vals, n, a)
        return (dense[n, a >> A(4)] >> uint32((a & A(15)) << ONE)) & uint32(3)

    @cuda.jit(device=True, inline=True)
    def or_cell(cells_out, n, a, code):
        bits = uint32(code) << uint32((a & A(15)) << ONE)
        w = a >> A(4)
        if cells_out[n, w] & bits != bits:  # cells only gain bits: skip the atomic when already set
            cuda.atomic.or_(cells_out, (n, w), bits)

    @cuda.jit(device=True, inline=True)
    def load(x, first_e, stride, e, x0, x1):
        """This thread's examples first_e + k * stride (the last example where past the end)."""
        last = uint64(x.shape[0] - 1)
        for k in range(EX):
            e[k] = min(uint64(first_e + k * stride), last)
            x0[k] = x[e[k], 0]
            x1[k] = x[e[k], 1] if x.shape[1] > 1 else uint64(0)

    @cuda.jit
    def evaluate(x, target_pos, order, hashes, neurons, first, per_block, is_sparse, dense, offsets, keys, vals,
                 level_table, hist, best_key, target_level, empty_all, empty_target,
                 g_need, g_order, g_neurons, g_is_sparse, g_dense, g_offsets, g_keys, g_vals, open_all, target_open):
        # levels x (EX x threads) counts, sized at launch to the tier's levels; each count is at
        # most per_block <= 65535
        counts = cuda.shared.array(0, uint16)
        tid = cuda.threadIdx.x
        threads = cuda.blockDim.x
        span = threads * EX
        n_levels = hist.shape[1]
        for lv in range(n_levels):
            for k in range(EX):
                counts[lv * span + k * threads + tid] = 0  # this thread's own columns: no synchronisation
        base = cuda.blockIdx.x * span + tid
        if base >= x.shape[0]:
            return
        e = cuda.local.array(EX, uint64)
        x0 = cuda.local.array(EX, uint64)
        x1 = cuda.local.array(EX, uint64)
        load(x, base, threads, e, x0, x1)
        a = cuda.local.array(EX, A)
        n_true = cuda.local.array(EX, int32)
        n_empty = cuda.local.array(EX, int32)
        g_true = cuda.local.array(EX, int32)
        best = cuda.local.array(EX, uint64)
        empties = cuda.local.array(EX, uint32)  # at most 65535 clusters x neurons
        opens = cuda.local.array(EX, uint32)
        target = cuda.local.array(EX, uint64)
        u_neurons, u_g_neurons = uint64(neurons), uint64(g_neurons)
        n_clusters = uint64(order.shape[0]) // u_neurons
        for k in range(EX):
            best[k] = uint64(0)
            empties[k] = uint32(0)
            opens[k] = uint32(0)
            t = target_pos[e[k]] - first
            target[k] = uint64(t) if t >= 0 and uint64(t) < n_clusters else NOT_HERE
        c = uint64(cuda.blockIdx.y) * uint64(per_block)
        c1 = min(c + uint64(per_block), n_clusters)
        while c < c1:
            for k in range(EX):
                n_true[k] = 0
                n_empty[k] = 0
            n, n_end = c * u_neurons, (c + uint64(1)) * u_neurons
            while n < n_end:
                cells(x, e, x0, x1, order, hashes, n, a)
                for k in range(EX):
                    v = read(is_sparse, dense, offsets, keys, vals, n, a[k])
                    n_true[k] += v == uint64(3)  # unsigned constants: numba compares uint64 with int64 as floats
                    n_empty[k] += v == uint64(0)
                n += uint64(1)
            if g_need > 0:  # gating (cpu.evaluate_tier): a closed gate scores the cluster 0
                for k in range(EX):
                    g_true[k] = 0
                n, n_end = c * u_g_neurons, (c + uint64(1)) * u_g_neurons
                while n < n_end:
                    cells(x, e, x0, x1, g_order, hashes[:0], n, a)
                    for k in range(EX):
                        g_true[k] += read(g_is_sparse, g_dense, g_offsets, g_keys, g_vals, n, a[k]) == uint64(3)
                    n += uint64(1)
            # larger level first, then the earlier cluster: cpu.py's strict '>' in cluster order
            rank = uint64(0xFFFFFFFF) - (uint64(first) + c)
            for k in range(EX):
                level = level_table[n_true[k], n_empty[k]]
                if g_need > 0:
                    if g_true[k] >= g_need:
                        opens[k] += uint32(1)
                        if c == target[k]:
                            target_open[e[k]] = 1
                    else:
                        level = level_table[0, 0]
                counts[level * span + k * threads + tid] += uint16(1)
                key = (uint64(level) << uint64(32)) | rank
                if key > best[k]:
                    best[k] = key
                if c == target[k]:
                    target_level[e[k]] = level
                    empty_target[e[k]] = n_empty[k]
                empties[k] += uint32(n_empty[k])
            c += uint64(1)
        for k in range(EX):
            if base + k * threads < x.shape[0]:  # not a repeat of the last example
                for lv in range(n_levels):
                    m = counts[lv * span + k * threads + tid]
                    if m != 0:
                        cuda.atomic.add(hist, (e[k], lv), int32(m))
                cuda.atomic.max(best_key, e[k], best[k])
                cuda.atomic.add(empty_all, e[k], uint64(empties[k]))
                if g_need > 0:
                    cuda.atomic.add(open_all, e[k], uint64(opens[k]))

    @cuda.jit
    def write_negatives(x, order, hashes, lo, hi, cells_out):
        """FALSE at every example's cell in neurons [lo, hi) (rows n - lo of cells_out)."""
        base = cuda.blockIdx.x * cuda.blockDim.x * EX + cuda.threadIdx.x
        if base >= x.shape[0]:
            return
        e = cuda.local.array(EX, uint64)
        x0 = cuda.local.array(EX, uint64)
        x1 = cuda.local.array(EX, uint64)
        a = cuda.local.array(EX, A)
        load(x, base, cuda.blockDim.x, e, x0, x1)
        n, u_lo, u_hi, step = uint64(lo + cuda.blockIdx.y), uint64(lo), uint64(hi), uint64(cuda.gridDim.y)
        while n < u_hi:
            cells(x, e, x0, x1, order, hashes, n, a)
            for k in range(EX):
                or_cell(cells_out, n - u_lo, a[k], 1)  # a repeated last example writes the same cell again
            n += step

    @cuda.jit
    def write_targets(x, target_cluster, order, hashes, neurons, lo, hi, cells_out):
        """TRUE at each example's cell in the neurons of its target cluster within [lo, hi): one
        example a thread (EX is 1 here), since the examples' clusters differ."""
        base = cuda.grid(1)
        if base >= x.shape[0] or target_cluster[base] < 0:
            return
        e = cuda.local.array(EX, uint64)
        x0 = cuda.local.array(EX, uint64)
        x1 = cuda.local.array(EX, uint64)
        a = cuda.local.array(EX, A)
        load(x, base, 1, e, x0, x1)
        c = target_cluster[base]
        n, n_end, u_lo = uint64(max(lo, c * neurons)), uint64(min(hi, (c + 1) * neurons)), uint64(lo)
        while n < n_end:
            cells(x, e, x0, x1, order, hashes, n, a)
            or_cell(cells_out, n - u_lo, a[0], 3)
            n += uint64(1)

    return evaluate, write_negatives, write_targets


EX = 4  # examples a thread in evaluation and in writing negatives
_compiled: dict = {}


def kernels(wide: bool = False) -> tuple:
    """(evaluate, write_negatives, write_targets), with 64-bit addresses where `wide`, else 32-bit
    (see wide())."""
    if wide not in _compiled:
        A = uint64 if wide else uint32
        evaluate, write_negatives, _ = _kernels(A, EX)
        _compiled[wide] = evaluate, write_negatives, _kernels(A, 1)[2]
    return _compiled[wide]


def wide(order, hashes) -> bool:
    """Whether a neuron's cells need 64-bit addresses: more than 32 address bits, not hashed (an
    LSH cell has at most 32 bits)."""
    return hashes.shape[0] == 0 and order.shape[1] > 32


def block_threads(levels: int) -> int:
    """Threads of an evaluation block: the shared counts (levels x EX x threads uint16) stay
    within 32 KiB, so several blocks fit on a multiprocessor."""
    threads = THREADS
    while threads > 32 and levels * EX * threads * 2 > 32 * 1024:
        threads //= 2
    return threads


def _on_device(a):
    """A host array copied to the GPU; a device array (upload's) as it is."""
    return cuda.to_device(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a


TABLES = ("order", "hashes", "dense", "offsets", "keys", "vals")  # what the kernels read of a TierArrays


def upload(tier):
    """The tier with its tables (and its gate's) on the GPU; host arrays are copied, device arrays
    kept. masks and the score tables stay on the host (the kernels read `order` and levels)."""
    gate = upload(tier.gate) if tier.gate is not None else None
    return dataclasses.replace(tier, gate=gate, **{k: _on_device(getattr(tier, k)) for k in TABLES})


def _no_gate() -> list:
    """The gate tables of a tier without gates: placeholders of the right kinds."""
    return [cuda.to_device(a) for a in (np.zeros((1, 1), np.uint16), np.zeros((1, 1), np.uint32), np.zeros(2, np.int64),
                                        np.zeros(1, np.uint32), np.zeros(1, np.uint8))]


def _evaluate_chunk(evaluate, tier, d_level, gate, batch, scores, most_threads) -> None:
    """One launch over the examples of `batch` (at most CHUNK): the tier's clusters folded into
    each, then merged into the batch's running results on the host."""
    m, n_levels, n_clusters = len(batch), len(scores), tier.n_clusters
    d_hist = cuda.to_device(np.zeros((m, n_levels), dtype=np.int32))
    d_best = cuda.to_device(np.zeros(m, dtype=np.uint64))
    d_tlevel = cuda.to_device(np.full(m, -1, dtype=np.int32))
    d_empty = cuda.to_device(np.zeros(m, dtype=np.uint64))
    d_empty_t = cuda.to_device(np.zeros(m, dtype=np.int64))
    d_open = cuda.to_device(np.zeros(m if tier.gate_need else 1, dtype=np.uint64))
    d_topen = cuda.to_device(np.zeros(m if tier.gate_need else 1, dtype=np.int64))
    threads = min(most_threads, -(-m // (EX * 32)) * 32)  # few examples: no thread repeats the last one
    x_blocks = -(-m // (threads * EX))
    ranges = max(1, min(n_clusters, -(-TARGET_BLOCKS // x_blocks)), -(-n_clusters // 65535))
    per_block = -(-n_clusters // ranges)
    g_order, g_dense, g_offsets, g_keys, g_vals = gate
    g = tier.gate
    evaluate[(x_blocks, -(-n_clusters // per_block)), threads, 0, n_levels * EX * threads * 2](
        cuda.to_device(np.ascontiguousarray(batch.x)), cuda.to_device(np.ascontiguousarray(batch.target_pos)),
        tier.order, tier.hashes, tier.neurons, tier.first, per_block, tier.is_sparse, tier.dense, tier.offsets,
        tier.keys, tier.vals, d_level, d_hist, d_best, d_tlevel, d_empty, d_empty_t,
        tier.gate_need, g_order, g.neurons if g else 1, g.is_sparse if g else False, g_dense, g_offsets, g_keys,
        g_vals, d_open, d_topen,
    )
    batch.hist[:, scores.used] += d_hist.copy_to_host()
    key = d_best.copy_to_host()
    tier_score = scores.values[(key >> np.uint64(32)).astype(np.int64)]
    tier_pos = (np.uint64(0xFFFFFFFF) - (key & np.uint64(0xFFFFFFFF))).astype(batch.best_pos.dtype)
    better = tier_score > batch.best_score  # strict: an earlier tier keeps a tie
    batch.best_score[better] = tier_score[better]
    batch.best_pos[better] = tier_pos[better]
    tlevel = d_tlevel.copy_to_host()
    hit = tlevel >= 0
    batch.target_score[hit] = scores.values[tlevel[hit]]
    batch.empty_target[hit] = d_empty_t.copy_to_host()[hit]
    batch.empty_all[:] += d_empty.copy_to_host().astype(batch.empty_all.dtype)
    if tier.gate_need:
        batch.open_all[:] += d_open.copy_to_host().astype(batch.open_all.dtype)
        batch.target_open[:] |= d_topen.copy_to_host()


@dataclasses.dataclass(frozen=True)
class _Levels:
    """The tier's own score levels: the model's levels it reaches and their scores."""

    used: np.ndarray  # (tier levels,) columns of the batch's hist
    values: np.ndarray  # (tier levels,) float64 score of each

    def __len__(self) -> int:
        return self.used.shape[0]


def evaluate_tier(tier, batch) -> None:
    """cpu.evaluate_tier on the GPU (the same results): CHUNK examples a launch."""
    used, local_table = tier_levels(tier.level_table)
    reason = unsupported(batch.x.shape[1], len(used))
    if reason:
        raise ValueError(reason)
    tier = upload(tier)
    d_level = cuda.to_device(local_table)
    gate = [tier.gate.order, tier.gate.dense, tier.gate.offsets, tier.gate.keys, tier.gate.vals] if tier.gate_need \
        else _no_gate()
    scores = _Levels(used, level_scores(tier.score_table, tier.level_table, batch.hist.shape[1])[used])
    evaluate = kernels(wide(tier.order, tier.hashes) or (tier.gate_need > 0 and wide(tier.gate.order, cpu.NO_HASHES)))[0]
    most_threads = block_threads(len(used))
    for e0 in range(0, len(batch), CHUNK):
        _evaluate_chunk(evaluate, tier, d_level, gate, batch.part(e0, min(e0 + CHUNK, len(batch))), scores,
                        most_threads)


# --- training --------------------------------------------------------------------------------


def _write(x_dev, target_cluster_dev, tier, n_negative_neurons, lo, hi, cells_dev):
    """TRUE and FALSE codes of neurons [lo, hi) of `tier` (uploaded) into rows n - lo of cells_dev."""
    n = x_dev.shape[0]
    _, write_negatives, write_targets = kernels(wide(tier.order, tier.hashes))
    neg_hi = min(hi, n_negative_neurons)
    if neg_hi > lo:
        threads = min(TRAIN_THREADS, -(-n // (EX * 32)) * 32)
        write_negatives[(-(-n // (threads * EX)), min(neg_hi - lo, 65535)), threads](
            x_dev, tier.order, tier.hashes, lo, neg_hi, cells_dev)
    write_targets[-(-n // TRAIN_THREADS), TRAIN_THREADS](x_dev, target_cluster_dev, tier.order, tier.hashes,
                                                         tier.neurons, lo, hi, cells_dev)


def train_tier(tier, data):
    """The tier with its cells: dense rows, or sparse offsets, keys and vals; the first neurons,
    of negative clusters, are written FALSE at every example (LSH: `bits` is the hash's width)."""
    target_cluster = (data.target_pos - tier.first).astype(np.int32)
    target_cluster[(target_cluster < 0) | (target_cluster >= tier.n_clusters)] = -1
    n_negative_neurons = min(max(data.n_negatives - tier.first, 0) * tier.neurons, tier.n_neurons)
    n_neurons, bits = tier.n_neurons, tier.bits
    x_dev, t_dev = (cuda.to_device(np.ascontiguousarray(a)) for a in (data.x, target_cluster))
    on_gpu = dataclasses.replace(tier, order=_on_device(tier.order), hashes=_on_device(tier.hashes))
    words = max(1, (1 << bits) // 16)
    if not tier.is_sparse:
        cells = cuda.to_device(np.zeros((n_neurons, words), dtype=np.uint32))
        _write(x_dev, t_dev, on_gpu, n_negative_neurons, 0, n_neurons, cells)
        return dataclasses.replace(tier, dense=cells.copy_to_host())
    key_dtype = np.uint32 if bits <= 32 else np.uint64
    batch = max(1, SCRATCH_BYTES // (words * 4))
    counts = np.zeros(n_neurons, dtype=np.int64)
    keys_parts, vals_parts = [], []
    for lo in range(0, n_neurons, batch):
        hi = min(lo + batch, n_neurons)
        scratch = cuda.to_device(np.zeros((hi - lo, words), dtype=np.uint32))
        _write(x_dev, t_dev, on_gpu, n_negative_neurons, lo, hi, scratch)
        d_counts = cuda.to_device(np.zeros(hi - lo, dtype=np.int64))
        _count_cells[(-(-words // TRAIN_THREADS), min(hi - lo, 65535)), TRAIN_THREADS](scratch, d_counts)
        counts[lo:hi] = d_counts.copy_to_host()
        starts = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(counts[lo:hi], out=starts[1:])
        d_keys = cuda.to_device(np.zeros(max(1, starts[-1]), dtype=key_dtype))
        d_vals = cuda.to_device(np.zeros(max(1, starts[-1]), dtype=np.uint8))
        _emit_cells[hi - lo, SCAN_THREADS](scratch, cuda.to_device(starts), d_keys, d_vals)
        keys_parts.append(d_keys.copy_to_host()[: starts[-1]])
        vals_parts.append(d_vals.copy_to_host()[: starts[-1]])
        del scratch
    offsets = np.zeros(n_neurons + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return dataclasses.replace(tier, offsets=offsets, keys=np.concatenate(keys_parts), vals=np.concatenate(vals_parts))


class Cuda:
    """The CUDA kernels: train and evaluate on an NVIDIA GPU (or numba-cuda's simulator)."""

    name = "cuda"
    trains = gates = lsh = True

    def cannot_train(self, tier) -> str | None:
        if tier.masks.shape[1] > MAX_WORDS:
            return f"{tier.masks.shape[1] * 64} packed input bits exceed the CUDA kernels' {MAX_WORDS * 64}"
        if tier.is_sparse and tier.bits > SCRATCH_MAX_BITS:
            return f"a sparse {tier.bits}-bit tier is wider than the CUDA training scratch's {SCRATCH_MAX_BITS} bits"
        return None

    def cannot_evaluate(self, tier) -> str | None:
        return unsupported(tier.masks.shape[1], len(tier_levels(tier.level_table)[0]))

    def upload(self, tier):
        return upload(tier)

    def train(self, tier, data):
        return train_tier(tier, data)

    def evaluate(self, tier, batch) -> None:
        evaluate_tier(tier, batch)


BACKEND = Cuda()


@cuda.jit(device=True, inline=True)
def _used(word):
    return (word | (word >> uint32(1))) & uint32(0x55555555)


@cuda.jit
def _count_cells(scratch, counts):
    w = cuda.grid(1)
    if w >= scratch.shape[1]:
        return
    for n in range(cuda.blockIdx.y, scratch.shape[0], cuda.gridDim.y):
        k = cuda.popc(_used(scratch[n, w]))
        if k:
            cuda.atomic.add(counts, n, k)


@cuda.jit
def _emit_cells(scratch, starts, keys, vals):
    """Neuron blockIdx.x's non-EMPTY cells, in address order, at keys[starts[n]:]: each
    thread takes one word per tile and finds where its cells go by a block-wide scan."""
    scan = cuda.shared.array(SCAN_THREADS, int32)
    n = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    carry = starts[n]
    words = scratch.shape[1]
    for base in range(0, words, SCAN_THREADS):
        w = base + tid
        word = scratch[n, w] if w < words else uint32(0)
        k = cuda.popc(_used(word))
        scan[tid] = k
        cuda.syncthreads()
        step = 1
        while step < SCAN_THREADS:  # Hillis-Steele inclusive scan
            add = scan[tid - step] if tid >= step else 0
            cuda.syncthreads()
            scan[tid] += add
            cuda.syncthreads()
            step *= 2
        at = carry + scan[tid] - k
        for i in range(16):
            code = (word >> uint32(2 * i)) & uint32(3)
            if code != 0:
                keys[at] = w * 16 + i
                vals[at] = code
                at += 1
        carry += scan[SCAN_THREADS - 1]
        cuda.syncthreads()  # before the next tile overwrites scan

