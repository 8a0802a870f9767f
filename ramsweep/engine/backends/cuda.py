"""CUDA kernels (numba-cuda): train and evaluate one tier on an NVIDIA GPU, giving exactly the
cells and counts of cpu.py (DESIGN.md §3; shapes and cell codes as documented there).

Evaluation: one thread per example, a block of THREADS consecutive examples (coalesced reads
of the packed contexts) times a range of clusters, so the threads of a warp read the same
neuron's cells at once. Each thread counts its clusters per score level (the tier's own
levels) in its own column of a shared-memory histogram and keeps its argmax as one integer
key (level, then the earlier cluster), so nothing is ever compared as a float on the GPU; the
host turns levels into scores. Examples go through in chunks of CHUNK, so device memory
stays bounded for any split, and no examples x clusters matrix is ever made.

Training: TRUE/FALSE writes are atomic ORs of 2-bit codes (the memory is order-independent,
so any thread order gives the same cells). A sparse tier is written into a dense scratch a
batch of neurons at a time, then compacted into sorted keys per neuron by a block-wide scan
(addresses come out in order, so no sort is needed). Sparse tiers wider than
SCRATCH_MAX_BITS are trained on the CPU.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import cuda, int32, uint16, uint32, uint64

from ramsweep.engine.backends import cpu
from ramsweep.engine.backends.levels import level_scores, tier_levels

THREADS = 128  # examples per evaluation block
MAX_LEVELS = 128  # one tier's score levels: a shared histogram of up to MAX_LEVELS x THREADS uint16 = 32 KiB
MAX_WORDS = 8  # packed input words per example (512 input bits)
CHUNK = 1 << 16  # examples per launch
TARGET_BLOCKS = 4096  # enough blocks per launch to fill a large GPU
TRAIN_THREADS = 256
SCAN_THREADS = 1024
SCRATCH_MAX_BITS = 26  # a sparse neuron's dense scratch is 2^bits / 4 bytes (16 MiB at 26 bits)
SCRATCH_BYTES = 1 << 30  # scratch of one sparse training batch

GATES = True  # evaluates gated tiers (evaluate_tier's g_ arguments)
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


def trains(words: int, sparse: bool, bits: int) -> bool:
    """These kernels can write a tier's cells (else the CPU engine does, with the same cells)."""
    return words <= MAX_WORDS and (not sparse or bits <= SCRATCH_MAX_BITS)


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


@cuda.jit(device=True, inline=True)
def _address2(x0, x1, order, n):
    """_address for inputs of at most two words, held in registers."""
    a = uint64(0)
    for j in range(order.shape[1]):
        q = order[n, j]
        w = x0 if q < 64 else x1
        a = (a << uint64(1)) | ((w >> uint64(q & 63)) & uint64(1))
    return a


# the CPU engine's binary search and LSH hash (plain Python), compiled again as device functions
_sparse_read = cuda.jit(device=True, inline=True)(cpu.sparse_read.py_func)
_hashed = cuda.jit(device=True, inline=True)(cpu.hashed.py_func)


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


@cuda.jit
def _evaluate(x, target_pos, order, hashes, neurons, first, per_block, is_sparse, dense, offsets, keys, vals,
              level_table, hist, best_key, target_level, empty_all, empty_target,
              g_need, g_order, g_neurons, g_is_sparse, g_dense, g_offsets, g_keys, g_vals, open_all, target_open):
    # levels x threads, sized at launch to the tier's levels (few: more blocks fit on an SM);
    # each count is at most per_block <= 65535
    counts = cuda.shared.array(0, uint16)
    tid = cuda.threadIdx.x
    threads = cuda.blockDim.x
    e = cuda.blockIdx.x * threads + tid
    n_levels = hist.shape[1]
    for lv in range(n_levels):
        counts[lv * threads + tid] = 0  # a thread's own column: no synchronisation needed
    if e >= x.shape[0]:
        return
    words = x.shape[1]
    xw = cuda.local.array(MAX_WORDS, uint64)
    _load_x(x, e, xw)
    x0 = xw[0]
    x1 = xw[1] if words > 1 else uint64(0)
    n_clusters = order.shape[0] // neurons
    c0 = cuda.blockIdx.y * per_block
    c1 = min(c0 + per_block, n_clusters)
    target = target_pos[e]
    best = uint64(0)
    empties = uint64(0)
    opens = uint64(0)
    for c in range(c0, c1):
        n_true, n_empty = 0, 0
        for n in range(c * neurons, (c + 1) * neurons):
            # up to 128 input bits the context stays in registers (a uniform branch)
            a = _address2(x0, x1, order, n) if words <= 2 else _address(xw, order, n)
            if hashes.shape[0] > 0:  # LSH: the address's cell is its hash
                a = _hashed(a, hashes, n)
            # spelled out, not _read(): numba-cuda's simulator (CI) pays a Python call per lookup
            if is_sparse:
                v = _sparse_read(offsets, keys, vals, n, a)
            else:
                v = (dense[n, a >> uint64(4)] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3)
            n_true += v == 3
            n_empty += v == 0
        level = level_table[n_true, n_empty]
        if g_need > 0:  # gating (cpu.evaluate_tier): a closed gate scores the cluster 0
            g_true = 0
            for n in range(c * g_neurons, (c + 1) * g_neurons):
                a = _address2(x0, x1, g_order, n) if words <= 2 else _address(xw, g_order, n)
                if g_is_sparse:
                    v = _sparse_read(g_offsets, g_keys, g_vals, n, a)
                else:
                    v = (g_dense[n, a >> uint64(4)] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3)
                g_true += v == 3
            if g_true >= g_need:
                opens += uint64(1)
                if first + c == target:
                    target_open[e] = 1
            else:
                level = level_table[0, 0]
        counts[level * threads + tid] += uint16(1)
        # larger level first, then the earlier cluster: cpu.py's strict '>' in cluster order
        key = (uint64(level) << uint64(32)) | uint64(0xFFFFFFFF - (first + c))
        if key > best:
            best = key
        if first + c == target:
            target_level[e] = level
            empty_target[e] = n_empty
        empties += uint64(n_empty)
    for lv in range(n_levels):
        k = counts[lv * threads + tid]
        if k != 0:
            cuda.atomic.add(hist, (e, lv), int32(k))
    cuda.atomic.max(best_key, e, best)
    cuda.atomic.add(empty_all, e, empties)
    if g_need > 0:
        cuda.atomic.add(open_all, e, opens)


def why_not(words: int, level_table: np.ndarray, bits: int) -> str | None:
    """Why these kernels cannot evaluate a tier (None: they can); the CPU engine then does."""
    return unsupported(words, len(tier_levels(level_table)[0]))


def evaluate_tier(x, target_pos, masks, order, hashes, neurons, first, is_sparse, dense, offsets, keys, vals,
                  score_table, level_table, best_score, best_pos, target_score, empty_all, empty_target, hist,
                  g_need=0, g_masks=None, g_order=None, g_neurons=1, g_is_sparse=False, g_dense=None, g_offsets=None,
                  g_keys=None, g_vals=None, open_all=None, target_open=None):
    """cpu.evaluate_tier on the GPU (same arguments less chunk and block; same results)."""
    n = hist.shape[0]
    used, local_table = tier_levels(level_table)
    reason = unsupported(x.shape[1], len(used))
    if reason:
        raise ValueError(reason)
    n_clusters = order.shape[0] // neurons
    d_order = cuda.to_device(np.ascontiguousarray(order))
    d_hashes = cuda.to_device(np.ascontiguousarray(hashes))
    d_tables = [cuda.to_device(np.ascontiguousarray(a)) for a in (dense, offsets, keys, vals)]
    d_level = cuda.to_device(local_table)
    if g_need > 0:
        d_gates = [cuda.to_device(np.ascontiguousarray(a)) for a in (g_order, g_dense, g_offsets, g_keys, g_vals)]
    else:  # no gate: placeholders of the right kinds
        d_gates = [cuda.to_device(a) for a in (np.zeros((1, 1), np.uint16), np.zeros((1, 1), np.uint32),
                                               np.zeros(2, np.int64), np.zeros(1, np.uint32), np.zeros(1, np.uint8))]
    scores = level_scores(score_table, level_table, hist.shape[1])[used]
    for e0 in range(0, n, CHUNK):
        e1 = min(e0 + CHUNK, n)
        m = e1 - e0
        d_hist = cuda.to_device(np.zeros((m, len(used)), dtype=np.int32))
        d_best = cuda.to_device(np.zeros(m, dtype=np.uint64))
        d_tlevel = cuda.to_device(np.full(m, -1, dtype=np.int32))
        d_empty = cuda.to_device(np.zeros(m, dtype=np.uint64))
        d_empty_t = cuda.to_device(np.zeros(m, dtype=np.int64))
        d_open = cuda.to_device(np.zeros(m if g_need else 1, dtype=np.uint64))
        d_topen = cuda.to_device(np.zeros(m if g_need else 1, dtype=np.int64))
        x_blocks = -(-m // THREADS)
        ranges = max(1, min(n_clusters, -(-TARGET_BLOCKS // x_blocks)), -(-n_clusters // 65535))
        per_block = -(-n_clusters // ranges)
        _evaluate[(x_blocks, -(-n_clusters // per_block)), THREADS, 0, len(used) * THREADS * 2](
            cuda.to_device(np.ascontiguousarray(x[e0:e1])), cuda.to_device(np.ascontiguousarray(target_pos[e0:e1])),
            d_order, d_hashes, neurons, first, per_block, is_sparse, *d_tables, d_level,
            d_hist, d_best, d_tlevel, d_empty, d_empty_t,
            g_need, d_gates[0], g_neurons, g_is_sparse, *d_gates[1:], d_open, d_topen,
        )
        hist[e0:e1, used] += d_hist.copy_to_host()
        key = d_best.copy_to_host()
        tier_score = scores[(key >> np.uint64(32)).astype(np.int64)]
        tier_pos = (np.uint64(0xFFFFFFFF) - (key & np.uint64(0xFFFFFFFF))).astype(best_pos.dtype)
        better = tier_score > best_score[e0:e1]  # strict: an earlier tier keeps a tie
        best_score[e0:e1][better] = tier_score[better]
        best_pos[e0:e1][better] = tier_pos[better]
        tlevel = d_tlevel.copy_to_host()
        hit = tlevel >= 0
        target_score[e0:e1][hit] = scores[tlevel[hit]]
        empty_target[e0:e1][hit] = d_empty_t.copy_to_host()[hit]
        empty_all[e0:e1] += d_empty.copy_to_host().astype(empty_all.dtype)
        if g_need:
            open_all[e0:e1] += d_open.copy_to_host().astype(open_all.dtype)
            target_open[e0:e1] |= d_topen.copy_to_host()


# --- training --------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _or_cell(cells, n, a, code):
    w = a >> uint64(4)
    bits = uint32(code) << uint32((a & uint64(15)) << uint64(1))
    if cells[n, w] & bits != bits:  # cells only gain bits: skip the atomic when already set
        cuda.atomic.or_(cells, (n, w), bits)


@cuda.jit(device=True, inline=True)
def _cell(xw, order, hashes, n):
    """Neuron n's cell for the context in xw: its address, or the address's hash (LSH)."""
    a = _address(xw, order, n)
    if hashes.shape[0] > 0:
        a = _hashed(a, hashes, n)
    return a


@cuda.jit
def _write_negatives(x, order, hashes, lo, hi, cells):
    """FALSE at every example's address in neurons [lo, hi) (rows n - lo of cells)."""
    e = cuda.grid(1)
    if e >= x.shape[0]:
        return
    xw = cuda.local.array(MAX_WORDS, uint64)
    _load_x(x, e, xw)
    for n in range(lo + cuda.blockIdx.y, hi, cuda.gridDim.y):
        _or_cell(cells, n - lo, _cell(xw, order, hashes, n), 1)


@cuda.jit
def _write_targets(x, target_cluster, order, hashes, neurons, lo, hi, cells):
    """TRUE at each example's address in the neurons of its target cluster within [lo, hi)."""
    e = cuda.grid(1)
    if e >= x.shape[0] or target_cluster[e] < 0:
        return
    xw = cuda.local.array(MAX_WORDS, uint64)
    _load_x(x, e, xw)
    c = target_cluster[e]
    for n in range(max(lo, c * neurons), min(hi, (c + 1) * neurons)):
        _or_cell(cells, n - lo, _cell(xw, order, hashes, n), 3)


def _write(x_dev, target_cluster_dev, order_dev, hashes_dev, neurons, n_negative_neurons, lo, hi, cells_dev):
    n = x_dev.shape[0]
    blocks = -(-n // TRAIN_THREADS)
    neg_hi = min(hi, n_negative_neurons)
    if neg_hi > lo:
        _write_negatives[(blocks, min(neg_hi - lo, 65535)), TRAIN_THREADS](x_dev, order_dev, hashes_dev, lo, neg_hi,
                                                                           cells_dev)
    _write_targets[blocks, TRAIN_THREADS](x_dev, target_cluster_dev, order_dev, hashes_dev, neurons, lo, hi, cells_dev)


def train_tier(x, target_cluster, order, neurons, n_negative_neurons, bits, sparse, hashes=cpu.NO_HASHES):
    """The tier's cells: (dense,) for a dense tier, (offsets, keys, vals) for a sparse one.

    x: packed training contexts; target_cluster: each example's target cluster within this
    tier, -1 outside it; the first n_negative_neurons neurons belong to negative clusters.
    LSH: `hashes` has a row per neuron, and `bits` is the hash's width (the cells' index)."""
    n_neurons = order.shape[0]
    x_dev, t_dev, o_dev, h_dev = (cuda.to_device(np.ascontiguousarray(a)) for a in (x, target_cluster, order, hashes))
    words = max(1, (1 << bits) // 16)
    if not sparse:
        cells = cuda.to_device(np.zeros((n_neurons, words), dtype=np.uint32))
        _write(x_dev, t_dev, o_dev, h_dev, neurons, n_negative_neurons, 0, n_neurons, cells)
        return (cells.copy_to_host(),)
    key_dtype = np.uint32 if bits <= 32 else np.uint64
    batch = max(1, SCRATCH_BYTES // (words * 4))
    counts = np.zeros(n_neurons, dtype=np.int64)
    keys_parts, vals_parts = [], []
    for lo in range(0, n_neurons, batch):
        hi = min(lo + batch, n_neurons)
        scratch = cuda.to_device(np.zeros((hi - lo, words), dtype=np.uint32))
        _write(x_dev, t_dev, o_dev, h_dev, neurons, n_negative_neurons, lo, hi, scratch)
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
    return offsets, np.concatenate(keys_parts), np.concatenate(vals_parts)


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

