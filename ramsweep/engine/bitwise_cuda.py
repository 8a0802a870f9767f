"""CUDA kernels (numba-cuda) for the bitwise model (docs/design.md §3c), giving exactly the CPU
engine's (engine/bitwise.py) cells and, through it, its metrics.

Evaluation (`read_clusters`, the heavy part: examples × clusters × neurons lookups): one thread
an example, one launch a bit cluster; each thread builds every neuron's address from the packed
context (the engine's address order, `order`), reads the DENSE cell or binary-searches the SPARSE
keys, and sums the decided values in integer QUARTERS (every value is a multiple of 0.25: ternary
TRUE 4, quad (0, 1, 3, 4) or (0, 0, 4, 4)), with the EMPTY and no-decision counts. The host turns
them into P = (quarters / 4 + empty_value · #EMPTY) / neurons, the CPU engine's expression on the
same exact operands, so P is the same float (no float is summed on the GPU, where a fused
multiply-add could round differently); logs, closed forms and metrics are then the CPU engine's.
A cluster's tables go to the GPU once per model (kept in `Model.gpu`; a model trained here keeps
the tables it trained in), a split's packed contexts once per split.

Training (`train_clusters`), with the sampling hash in the kernels exactly as the CPU's: S =
mix(mix(mix(mix(seed) + "sample") + i) + n), keep iff (mix(S + t) ≫ 11) < R, in uint64 arithmetic.
- DENSE ternary: one thread an example, neurons over the grid's y; each kept write is an
  atomicAdd of ±1 on an int32 net count (any order gives the same counts), then a fold kernel
  turns each 16 counts into a word of 2-bit codes (sign: TRUE, FALSE, EMPTY on 0), in batches of
  neurons whose counts fit COUNT_BYTES.
- DENSE quad: order-exact. LANES threads a neuron, of every quad cluster in one launch. They
  walk the examples LANES at a time: lane l hashes example base + l, builds its address into
  shared memory (each example's hash and address made once a neuron) and marks it in the mask of
  the lane that owns the address (address mod LANES; a shared atomic OR), then each lane applies
  the writes its mask names in ascending t (a step's expected writes a lane: the kept share).
  Each cell sees exactly its writes in ascending t: the sequential counter.
Each neuron's sampling state S is computed once, on the host (bitwise.sample_states).
- SPARSE: trained as DENSE in scratch (the kernels above), neurons in batches whose scratch fits
  SCRATCH_BYTES, then each neuron's row compacted to its written cells in ascending address (a
  block a row, a shared-memory prefix sum a tile): the CPU engine's sorted keys and codes, ternary
  ties dropped. A cluster one neuron of which overflows the scratch (over 32 quad or 30 ternary
  bits) trains on the CPU engine.
- Rows (`train_rows`, a connections search's rewired neurons: optimize/bitwise_connections.py):
  neurons of explicit wiring and sampling states, by the same kernels (a row is a neuron: its
  order row, its state), the CPU engine's bitwise.train_rows cells.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int32, int64, uint8, uint32, uint64

from ramsweep.engine import bitwise
from ramsweep.engine.backends.cuda import SIMULATOR, _sparse_read, available, device_name, free_memory
from ramsweep.engine.connectivity import GOLDEN, MIX1, MIX2, draw_bit_connectivity
from ramsweep.engine.layout import DENSE, SPARSE
from ramsweep.engine.train import wire

__all__ = ["available", "device_name", "free_memory", "read_clusters", "read_neuron_codes", "train_clusters",
           "train_rows"]

THREADS = 128  # threads of a block (the simulator's tests shrink it)
LANES = 128  # threads a neuron in quad training, each owning the addresses a ≡ lane (mod LANES); divides THREADS
OWNED_WORDS = THREADS * ((LANES + 31) // 32)  # quad training's shared owner masks (a bit an example of a step)
COUNT_BYTES = 1 << 30  # int32 net counts of one ternary training batch
QUAD_BYTES = 1 << 33  # DENSE quad cells trained in one launch (clusters grouped up to this)
SCRATCH_BYTES = 1 << 32  # DENSE scratch of one SPARSE training batch
NAME = "cuda"  # the device a model trained here names (bitwise.Model.device)
ALL_KEPT = uint64(bitwise.ALL_KEPT)
KIND_TERNARY, KIND_QUAD, KIND_SPARSE = 0, 1, 2


# --- device functions ------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _mix(x):
    """splitmix64's finaliser (connectivity.mix64), mod 2^64."""
    z = x + GOLDEN
    z = (z ^ (z >> uint64(30))) * MIX1
    z = (z ^ (z >> uint64(27))) * MIX2
    return z ^ (z >> uint64(31))


@cuda.jit(device=True, inline=True)
def _keeps(state, t, threshold):
    return threshold >= ALL_KEPT or (_mix(state + uint64(t)) >> uint64(11)) < threshold


@cuda.jit(device=True, inline=True)
def _address(x, e, order, n, bits):
    """Neuron n's address for example e: its input bits in the engine's order (cpu.address)."""
    a = uint64(0)
    for j in range(bits):
        q = uint64(order[n, j])
        a = (a << uint64(1)) | ((x[e, q >> uint64(6)] >> (q & uint64(63))) & uint64(1))
    return a


# --- evaluation ------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def _code(x, e, order, n, bits, kind, dense32, dense8, offsets, keys, vals):
    """Neuron n's cell code for example e: a SPARSE key's, a DENSE quad byte or ternary 2 bits."""
    a = _address(x, e, order, n, bits)
    if kind == KIND_SPARSE:
        return _sparse_read(offsets, keys, vals, n, a)
    if kind == KIND_QUAD:
        return uint32(dense8[n, a])
    return (dense32[n, a >> uint64(4)] >> uint32((a & uint64(15)) << uint64(1))) & uint32(3)


@cuda.jit
def _read_cluster(x, order, kind, dense32, dense8, offsets, keys, vals, quarters, takes_empty, no_decision, row,
                  out_quarters, out_empty, out_none):
    """Per example e: Σ decided values in quarters, #EMPTY (reads empty_value), #no decision, into
    row `row` of the outputs."""
    e = cuda.grid(1)
    if e >= x.shape[0]:
        return
    n_neurons, bits = order.shape[0], order.shape[1]
    q_sum, n_empty, n_none = int64(0), int32(0), int32(0)
    for n in range(n_neurons):
        code = _code(x, e, order, n, bits, kind, dense32, dense8, offsets, keys, vals)
        if takes_empty[code]:
            n_empty += int32(1)
        else:
            q_sum += quarters[code]
        n_none += no_decision[code]
    out_quarters[row, e] = q_sum
    out_empty[row, e] = n_empty
    out_none[row, e] = n_none


@cuda.jit
def _write_codes(x, order, kind, dense32, dense8, offsets, keys, vals, by_code, slots, out):
    """Per example e, by_code[its cell code] at every neuron n into out[slots[n], e] uint8:
    _read_cluster's lookups, kept (bitwise.read_neuron_codes: by_code the identity; a connections
    search's rows: bitwise.code_increments); neighbouring threads write neighbouring bytes."""
    e = cuda.grid(1)
    if e >= x.shape[0]:
        return
    n_neurons, bits = order.shape[0], order.shape[1]
    for n in range(n_neurons):
        out[slots[n], e] = by_code[_code(x, e, order, n, bits, kind, dense32, dense8, offsets, keys, vals)]


@cuda.jit
def _swapped_sums(quarters, empty, matrix, old, slots, counts, store, out_quarters, out_empty):
    """Per candidate c (the grid's y) and example e: a cluster's sums (quarters, #EMPTY) with its
    neurons old[c, :counts[c]] (rows of matrix) swapped for the store's rows slots[c, :counts[c]]
    (bitwise_connections.swapped_sums' integers, exact)."""
    e, c = cuda.grid(2)
    if e >= quarters.shape[0] or c >= counts.shape[0]:
        return
    q, m = quarters[e], empty[e]
    for k in range(counts[c]):
        v, w = int32(matrix[old[c, k], e]), int32(store[slots[c, k], e])
        q += (w & 7) - (v & 7)
        m += ((w >> 3) & 1) - ((v >> 3) & 1)
    out_quarters[c, e], out_empty[c, e] = q, m


@cuda.jit
def _put_rows(store, slots, neurons, matrix):
    """matrix[neurons[k]] = store[slots[k]] (a committed candidate's rows, on the GPU)."""
    e, k = cuda.grid(2)
    if e < matrix.shape[1] and k < slots.shape[0]:
        matrix[neurons[k], e] = store[slots[k], e]


# --- training --------------------------------------------------------------------------------


@cuda.jit
def _count_ternary(x, t, codes, shift, order, states, threshold, lo, hi, counts):
    """Net counts (#1 − #0) of neurons [lo, hi) into rows n − lo of counts: thread = example."""
    e = cuda.grid(1)
    if e >= x.shape[0]:
        return
    delta = int32(1) if (codes[e] >> shift) & 1 else int32(-1)
    bits = order.shape[1]
    n = lo + cuda.blockIdx.y
    while n < hi:
        if _keeps(states[n], t[e], threshold):
            a = _address(x, e, order, n, bits)
            cuda.atomic.add(counts, (n - lo, int64(a)), delta)
        n += cuda.gridDim.y


@cuda.jit
def _fold_ternary(counts, lo, dense32):
    """Each word of 16 cells of neurons lo + row: TRUE (3) where the net count is positive, FALSE (1)
    where negative, EMPTY (0) on a tie or no write."""
    w = cuda.grid(1)
    if w >= dense32.shape[1]:
        return
    size = counts.shape[1]
    for r in range(cuda.blockIdx.y, counts.shape[0], cuda.gridDim.y):
        word = uint32(0)
        for i in range(16):
            a = w * 16 + i
            if a < size:
                c = counts[r, a]
                if c > 0:
                    word |= uint32(3) << uint32(2 * i)
                elif c < 0:
                    word |= uint32(1) << uint32(2 * i)
        dense32[lo + r, w] = word


@cuda.jit
def _train_quad(x, t, codes, n_bits, threshold, pair_slot, pair_cluster, pair_neuron, pair_state, order, bits,
                row_start, cells):
    """LANES threads a neuron: neuron pair_neuron[p] of bit cluster pair_cluster[p] (sampling state
    pair_state[p]; launch slot pair_slot[p]: order[slot] the cluster's (neurons, max bits) wiring,
    bits[slot] its width, its cells at row_start[slot] + n · 2**bits of the flat cells). A step
    takes LANES examples, lane l example start + l: it hashes it, builds its address and sets bit l
    of its owner's mask (the lane a ≡ owner mod LANES, a shared atomic OR); then each lane applies
    the writes its mask names, in ascending l. Every thread of a block runs the same steps (the
    barriers need it); a thread past the last neuron only takes part in them."""
    tid = cuda.threadIdx.x
    p = cuda.blockIdx.x * (cuda.blockDim.x // LANES) + tid // LANES
    lane = tid % LANES
    first = tid - lane  # this neuron's slots in the shared step
    words = (LANES + 31) // 32
    step_addr = cuda.shared.array(THREADS, uint64)
    step_write = cuda.shared.array(THREADS, uint8)  # 1 + y of a kept example
    owned = cuda.shared.array(OWNED_WORDS, uint32)  # per lane, a bit per example of the step it writes
    for w in range(words):
        owned[tid * words + w] = uint32(0)
    live = p < pair_slot.shape[0]
    slot, cluster, n, state, width, base = 0, 0, 0, uint64(0), 0, int64(0)
    if live:
        slot, cluster, n, state = pair_slot[p], pair_cluster[p], pair_neuron[p], pair_state[p]
        width = bits[slot]
        base = row_start[slot] + int64(n) * (int64(1) << int64(width))
    shift = n_bits - 1 - cluster
    cuda.syncthreads()
    for start in range(0, x.shape[0], LANES):
        e = start + lane
        if live and e < x.shape[0] and _keeps(state, t[e], threshold):
            a = _address(x, e, order[slot], n, width)
            step_addr[tid] = a
            step_write[tid] = uint8(1 + ((codes[e] >> shift) & 1))
            owner = first + int32(a & uint64(LANES - 1))
            cuda.atomic.or_(owned, owner * words + lane // 32, uint32(1) << uint32(lane % 32))
        cuda.syncthreads()
        for w in range(words):
            m = owned[tid * words + w]
            owned[tid * words + w] = uint32(0)
            while m != uint32(0):
                k = first + w * 32 + cuda.popc((m & (uint32(0) - m)) - uint32(1))  # the lowest bit: ascending t
                m &= m - uint32(1)
                i = base + int64(step_addr[k])
                code = int32(cells[i])
                c = int32(1) if code == 0 else code - int32(1)
                c = min(c + int32(1), int32(3)) if step_write[k] == 2 else max(c - int32(1), int32(0))
                cells[i] = uint8(c + int32(1))
        cuda.syncthreads()


@cuda.jit
def _count_codes(flat, ternary, count):
    """count[0] += the non-zero cell codes in flat: bytes (quad), or 2-bit codes in u32 words."""
    total = int64(0)
    for i in range(cuda.grid(1), flat.shape[0], cuda.gridsize(1)):
        w = uint32(flat[i])
        if ternary:
            total += cuda.popc((w | (w >> uint32(1))) & uint32(0x55555555))
        else:
            total += int64(w != 0)
    cuda.atomic.add(count, 0, total)


@cuda.jit(device=True, inline=True)
def _stored_code(v, ternary):
    """The code a scratch cell stores: a quad code as it is; a ternary net count's sign (0 on a tie)."""
    if ternary:
        return uint8(3) if v > 0 else (uint8(1) if v < 0 else uint8(0))
    return uint8(v)


@cuda.jit
def _count_rows(scratch, ternary, row_counts):
    """row_counts[r] = the cells of scratch row r that store a code: a block a row."""
    for r in range(cuda.blockIdx.x, scratch.shape[0], cuda.gridDim.x):
        total = int64(0)
        for a in range(cuda.threadIdx.x, scratch.shape[1], cuda.blockDim.x):
            total += int64(_stored_code(scratch[r, a], ternary) != 0)
        cuda.atomic.add(row_counts, r, total)


@cuda.jit
def _compact(scratch, ternary, starts, keys, vals):
    """Row r's stored cells, addresses ascending, into keys/vals from starts[r]: a block a row, its
    threads a tile of addresses at a time, each cell's slot an inclusive prefix sum of the tile's
    flags (Hillis-Steele in shared memory)."""
    flags = cuda.shared.array(THREADS, int32)
    tid, width = cuda.threadIdx.x, cuda.blockDim.x
    for r in range(cuda.blockIdx.x, scratch.shape[0], cuda.gridDim.x):
        out = starts[r]
        for tile in range(0, scratch.shape[1], width):
            a = tile + tid
            code = _stored_code(scratch[r, a], ternary) if a < scratch.shape[1] else uint8(0)
            flags[tid] = int32(code != 0)
            cuda.syncthreads()
            step = 1
            while step < width:
                add = flags[tid - step] if tid >= step else int32(0)
                cuda.syncthreads()
                flags[tid] += add
                cuda.syncthreads()
                step *= 2
            if code != 0:
                keys[out + flags[tid] - 1] = uint32(a)
                vals[out + flags[tid] - 1] = code
            out += flags[width - 1]
            cuda.syncthreads()


@cuda.jit
def _zero8(a):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] = uint8(0)


@cuda.jit
def _zero32(a):
    r, w = cuda.grid(2)
    if r < a.shape[0] and w < a.shape[1]:
        a[r, w] = 0


_POOL: dict = {}  # name -> a device buffer, grown as needed, for results read before the next call


def _pooled(name: str, size: int, dtype):
    """A 1-D device buffer of `size` from the pool: a connections search trains and reads rows
    hundreds of times, and freeing big buffers synchronises."""
    buf = _POOL.get(name)
    if buf is None or buf.size < size or buf.dtype != dtype:
        _POOL.pop(name, None)
        buf = _POOL[name] = cuda.device_array(max(1, size), dtype=dtype)
    return buf[:size]


def _zeros(shape, dtype, pool: str | None = None):
    """A device array of zeros, made on the device (no host buffer of its size); from the pool
    `pool` if named (1-D)."""
    d = _pooled(pool, shape, dtype) if pool else cuda.device_array(shape, dtype=dtype)
    if d.size == 0:
        return d
    if not SIMULATOR:  # the driver's memset: a byte a thread is slow over a connections search's GiBs of cells
        from numba.cuda.cudadrv.driver import device_memset

        device_memset(d, 0, d.nbytes)
    elif d.ndim == 1:  # the simulator has no driver
        _zero8[-(-d.shape[0] // THREADS), THREADS](d)
    else:
        _zero32[(-(-d.shape[0] // 2), -(-d.shape[1] // 4)), (2, 4)](d)
    return d


# --- host side: training -----------------------------------------------------------------------


_RESIDENT: list = [None, None]  # the last training set uploaded, and its (x, t, codes) on the GPU


def _resident(data) -> tuple:
    """A training set's packed contexts, hashes' t and target codes on the GPU, uploaded once while it
    is the last one trained on (a connections search trains rows on one set hundreds of times)."""
    if _RESIDENT[0] is not data:
        _RESIDENT[:] = [data, tuple(cuda.to_device(np.ascontiguousarray(a)) for a in (data.x, data.t,
                                                                                        data.target_codes))]
    return _RESIDENT[1]


def _blocks(n: int) -> int:
    return max(1, -(-n // THREADS))


def train_clusters(data, inputs, specs, cell_mode: str) -> tuple[list, list]:
    """(clusters, device tables) for bitwise.train's specs [(cluster, neurons, bits, storage)]: DENSE
    clusters trained by the kernels (their cells stay on the GPU for evaluation, and reach the host
    only if read there: BitCluster.dense), SPARSE ones compacted from DENSE scratch (or by the CPU
    engine when one neuron's scratch is over SCRATCH_BYTES)."""
    quad = cell_mode != bitwise.TERNARY
    wired = {i: _wiring(data, inputs, i, neurons, bits) for i, neurons, bits, _ in specs}
    clusters: dict[int, bitwise.BitCluster] = {}
    tables: dict[int, object] = {}  # by cluster: specs may name any clusters (a size search's)
    here = []
    for i, neurons, bits, storage in specs:
        if storage == SPARSE and (1 << bits) * (1 if quad else 4) > SCRATCH_BYTES:
            clusters[i] = bitwise.train_cluster(data, inputs, i, neurons, bits, cell_mode, SPARSE)
        else:
            here.append((i, neurons, bits, storage))
    if not here:
        return [clusters[i] for i, *_ in specs], [tables.get(i) for i, *_ in specs]
    x, t, codes = _resident(data)
    common = (x, t, codes, data.n_bits, data.seed, data.threshold)
    dense = [(i, 0, neurons, bits) for i, neurons, bits, storage in here if storage == DENSE]
    if quad:
        for group in _groups(dense):
            for (i, *_), d_cells in zip(group, _train_quad_group(common, group, wired)):
                clusters[i] = _on_gpu(wired[i], d_cells, cell_mode)
                tables[i] = (KIND_QUAD, wired[i][3], d_cells)
    else:
        for i, _, neurons, bits in dense:
            d_cells = _train_ternary(common, i, neurons, bits, wired[i][3])
            clusters[i] = _on_gpu(wired[i], d_cells, cell_mode)
            tables[i] = (KIND_TERNARY, wired[i][3], d_cells)
    for i, neurons, bits, storage in here:
        if storage == SPARSE:
            clusters[i] = _train_sparse(common, i, neurons, bits, quad, wired)
    return [clusters[i] for i, *_ in specs], [tables.get(i) for i, *_ in specs]


def _train_sparse(common, i: int, neurons: int, bits: int, quad: bool, wired: dict, states=None):
    """A SPARSE cluster: its neurons in batches trained in DENSE scratch (quad codes, or ternary net
    counts), each batch's rows compacted to (keys, vals) on the GPU and copied to the host. `states`:
    the rows' (neurons,) uint64 sampling states (by default the cluster's, bitwise.sample_states)."""
    seed = common[4]
    batch = max(1, SCRATCH_BYTES // ((1 << bits) * (1 if quad else 4)))
    if states is None:
        states = bitwise.sample_states(seed, i, neurons)
    d_states = None if quad else cuda.to_device(np.ascontiguousarray(states, dtype=np.uint64))
    counts, keys, vals = np.zeros(neurons, dtype=np.int64), [], []
    for lo in range(0, neurons, batch):
        hi = min(lo + batch, neurons)
        if quad:
            scratch = _train_quad_group(common, [(i, lo, hi, bits)], wired, {i: states})[0]
        else:
            scratch = _count_ternary_rows(common, i, lo, hi, bits, wired[i][3], d_states)
        rows = min(hi - lo, 65535)
        row_counts = cuda.to_device(np.zeros(hi - lo, dtype=np.int64))
        _count_rows[rows, THREADS](scratch, not quad, row_counts)
        counts[lo:hi] = row_counts.copy_to_host()
        starts = np.concatenate([[0], np.cumsum(counts[lo:hi])]).astype(np.int64)
        d_keys = cuda.device_array(max(1, int(starts[-1])), dtype=np.uint32)
        d_vals = cuda.device_array(max(1, int(starts[-1])), dtype=np.uint8)
        _compact[rows, THREADS](scratch, not quad, cuda.to_device(starts), d_keys, d_vals)
        keys.append(d_keys.copy_to_host()[: starts[-1]])
        vals.append(d_vals.copy_to_host()[: starts[-1]])
        del scratch
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    conn, masks, order, _ = wired[i]
    return bitwise.BitCluster(SPARSE, conn, masks, order, bitwise.NO_DENSE32, offsets, np.concatenate(keys),
                              np.concatenate(vals))


def train_rows(data, inputs, i: int, conn: np.ndarray, states: np.ndarray, cell_mode: str, storage: str):
    """bitwise.train_rows on the GPU: neurons of bit cluster i wired as `conn` (rows, bits) and
    sampling with `states` (rows,) uint64, trained by the kernels above (row r the neuron: its
    wiring conn[r], its stream states[r]): (BitCluster of those rows, its table for
    read_neuron_codes). DENSE cells stay on the GPU (the table holds them), uncounted (the search
    reads only their codes; bitwise.cells_stored counts them on the host if asked); SPARSE rows are
    compacted from DENSE scratch to the host (table None: read_neuron_codes uploads them), or
    trained by the CPU engine when one row's scratch is over SCRATCH_BYTES. DENSE quad cells are a
    pooled buffer's: valid until the next train_rows call (the search reads them at once)."""
    quad = cell_mode != bitwise.TERNARY
    conn = np.ascontiguousarray(conn, dtype=np.int32)
    states = np.ascontiguousarray(states, dtype=np.uint64)
    rows, bits = conn.shape
    if storage == SPARSE and (1 << bits) * (1 if quad else 4) > SCRATCH_BYTES:
        return bitwise.train_rows(data, inputs, i, conn, states, cell_mode, SPARSE), None
    masks, order, _ = wire(conn, inputs)
    wired = {i: (conn, masks, order, cuda.to_device(np.ascontiguousarray(order)))}
    x, t, codes = _resident(data)
    common = (x, t, codes, data.n_bits, data.seed, data.threshold)
    if storage == SPARSE:
        return _train_sparse(common, i, rows, bits, quad, wired, states), None
    if quad:
        (d_cells,) = _train_quad_group(common, [(i, 0, rows, bits)], wired, {i: states}, pooled=True)
    else:
        d_cells = _train_ternary(common, i, rows, bits, wired[i][3], states)
    return (_on_gpu(wired[i], d_cells, cell_mode, count=False),
            (KIND_QUAD if quad else KIND_TERNARY, wired[i][3], d_cells))


def _on_gpu(wired, d_cells, cell_mode: str, count: bool = True):
    """A DENSE cluster whose cells stay on the GPU (copied to the host only if read there), with
    its stored cells counted here (unless `count` is False: a search's rows, read at once)."""
    conn, masks, order, _ = wired
    if not count:
        return bitwise.BitCluster(DENSE, conn, masks, order, None, gpu=d_cells)
    count = cuda.to_device(np.zeros(1, dtype=np.int64))
    flat = d_cells.reshape(d_cells.size)
    _count_codes[min(_blocks(flat.shape[0]), 1024), THREADS](flat, cell_mode == bitwise.TERNARY, count)
    return bitwise.BitCluster(DENSE, conn, masks, order, None, gpu=d_cells, stored=int(count.copy_to_host()[0]))


def _wiring(data, inputs, i: int, neurons: int, bits: int):
    conn = draw_bit_connectivity(int(data.seed), i, neurons, bits, inputs.n_input)
    masks, order, _ = wire(conn, inputs)
    return conn, masks, order, cuda.to_device(np.ascontiguousarray(order))


def _train_ternary(common, i: int, neurons: int, bits: int, d_order, states=None):
    """One DENSE ternary cluster's (neurons, words) uint32 cells on the GPU (`states`: its rows'
    sampling states, by default the cluster's)."""
    x, t, codes, n_bits, seed, threshold = common
    size = 1 << bits
    d_cells = _zeros((neurons, max(1, size // 16)), np.uint32)
    if states is None:
        states = bitwise.sample_states(seed, i, neurons)
    d_states = cuda.to_device(np.ascontiguousarray(states, dtype=np.uint64))
    batch = max(1, COUNT_BYTES // (size * 4))
    for lo in range(0, neurons, batch):
        hi = min(lo + batch, neurons)
        counts = _count_ternary_rows(common, i, lo, hi, bits, d_order, d_states)
        _fold_ternary[(_blocks(d_cells.shape[1]), min(hi - lo, 65535)), THREADS](counts, lo, d_cells)
        del counts
    return d_cells


def _count_ternary_rows(common, i: int, lo: int, hi: int, bits: int, d_order, d_states):
    """(hi − lo, 2**bits) int32 net counts of neurons [lo, hi) of ternary cluster i, on the GPU."""
    x, t, codes, n_bits, _, threshold = common
    counts = _zeros((hi - lo, 1 << bits), np.int32)
    _count_ternary[(_blocks(x.shape[0]), min(hi - lo, 65535)), THREADS](
        x, t, codes, n_bits - 1 - i, d_order, d_states, threshold, lo, hi, counts)
    return counts


def _groups(dense: list) -> list[list]:
    """DENSE quad clusters [(cluster, first neuron, end neuron, bits)] grouped so that each group's
    cells fit QUAD_BYTES (a lone larger one goes alone)."""
    groups, current, size = [], [], 0
    for spec in dense:
        nbytes = (spec[2] - spec[1]) << spec[3]
        if current and size + nbytes > QUAD_BYTES:
            groups.append(current)
            current, size = [], 0
        current.append(spec)
        size += nbytes
    return groups + ([current] if current else [])


def _train_quad_group(common, group: list, wired: dict, states: dict | None = None, pooled: bool = False) -> list:
    """The group's quad cells [(cluster, first neuron lo, end neuron hi, bits)], one launch for all
    its neurons: per entry a (hi − lo, 2**bits) uint8 device array (views of one flat buffer).
    Neuron n of cluster i: row n of wired[i]'s order, sampling with states[i][n] (by default the
    cluster's, bitwise.sample_states)."""
    x, t, codes, n_bits, seed, threshold = common
    sizes = [(hi - lo) << bits for _, lo, hi, bits in group]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    flat = _zeros(int(sum(sizes)), np.uint8, pool="cells" if pooled else None)
    max_neurons, max_bits = max(s[2] for s in group), max(s[3] for s in group)
    order = np.zeros((len(group), max_neurons, max_bits), dtype=np.uint16)
    for slot, (i, _, hi, bits) in enumerate(group):
        order[slot, :hi, :bits] = wired[i][2][:hi]
    row_start = starts - np.array([lo << bits for _, lo, _, bits in group], dtype=np.int64)  # where neuron 0 would be
    slot_of = np.concatenate([np.full(hi - lo, k, dtype=np.int64) for k, (_, lo, hi, _) in enumerate(group)])
    cluster_of = np.concatenate([np.full(hi - lo, i, dtype=np.int64) for i, lo, hi, _ in group])
    neuron_of = np.concatenate([np.arange(lo, hi, dtype=np.int64) for _, lo, hi, _ in group])
    state_of = np.concatenate([(bitwise.sample_states(seed, i, hi) if states is None else
                                np.asarray(states[i], dtype=np.uint64))[lo:hi] for i, lo, hi, _ in group])
    bits = np.array([s[3] for s in group], dtype=np.int64)
    _train_quad[_blocks(slot_of.shape[0] * LANES), THREADS](x, t, codes, n_bits, threshold, *(
        cuda.to_device(a) for a in (slot_of, cluster_of, neuron_of, state_of, order, bits, row_start)), flat)
    return [flat[start:start + size].reshape(hi - lo, 1 << b)
            for start, size, (_, lo, hi, b) in zip(starts, sizes, group)]


# --- host side: evaluation ---------------------------------------------------------------------

_PLACEHOLDERS: list = []  # made once (see _placeholders)


def _placeholders() -> tuple:
    """On the GPU, once: the arguments a kernel gets for the tables a cluster has not (DENSE
    ternary, DENSE quad, SPARSE (offsets, keys, vals)) and the identity of cell codes
    (read_neuron_codes' by_code)."""
    if not _PLACEHOLDERS:
        _PLACEHOLDERS.extend([cuda.to_device(np.zeros((1, 1), np.uint32)), cuda.to_device(np.zeros((1, 1), np.uint8)),
                              tuple(cuda.to_device(a) for a in (np.zeros(2, np.int64), np.zeros(1, np.uint32),
                                                                np.zeros(1, np.uint8))),
                              cuda.to_device(np.arange(256, dtype=np.uint8))])
    return tuple(_PLACEHOLDERS)


def _first_rows(n: int):
    """Rows 0..n-1 on the GPU (read_neuron_codes' slots), kept and grown as needed."""
    rows = _POOL.get("first_rows")
    if rows is None or rows.size < n:
        rows = _POOL["first_rows"] = cuda.to_device(np.arange(max(n, 1024), dtype=np.int64))
    return rows[:n]


def _upload(model) -> list:
    """Each cluster's (kind, order, cells) on the GPU, once per model (training's own where it trained
    here); SPARSE cells as (offsets, keys, vals)."""
    if model.gpu is None:
        model.gpu = [None] * model.n_bits
    for i, cluster in enumerate(model.clusters):
        if model.gpu[i] is not None:
            continue
        order = cuda.to_device(np.ascontiguousarray(cluster.order))
        if cluster.storage == SPARSE:
            model.gpu[i] = (KIND_SPARSE, order, tuple(cuda.to_device(a) for a in (cluster.offsets, cluster.keys,
                                                                                   cluster.vals)))
        else:
            kind = KIND_QUAD if cluster.dense.dtype == np.uint8 else KIND_TERNARY
            model.gpu[i] = (kind, order, cuda.to_device(cluster.dense))
    return model.gpu


def read_clusters(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bitwise.read_clusters on the GPU: (n, B) unclamped P (the same floats) and (n, B) int64
    lookups holding no decision."""
    n = x.shape[0]
    p = np.empty((n, model.n_bits))
    empty = np.empty((n, model.n_bits), dtype=np.int64)
    if n == 0:
        return p, empty
    tables = _upload(model)
    d_x = cuda.to_device(np.ascontiguousarray(x))
    quarters, takes_empty, no_decision = (cuda.to_device(a.astype(np.int64 if k == 0 else np.int32)) for k, a in
                                          enumerate(bitwise.quarter_tables(model.cell_mode)))
    out_q = cuda.device_array((model.n_bits, n), dtype=np.int64)
    out_empty = cuda.device_array((model.n_bits, n), dtype=np.int32)
    out_none = cuda.device_array((model.n_bits, n), dtype=np.int32)
    none32, none8, no_sparse = _placeholders()[:3]
    for i, (kind, order, cells) in enumerate(tables):
        dense32 = cells if kind == KIND_TERNARY else none32
        dense8 = cells if kind == KIND_QUAD else none8
        offsets, keys, vals = cells if kind == KIND_SPARSE else no_sparse
        _read_cluster[_blocks(n), THREADS](d_x, order, kind, dense32, dense8, offsets, keys, vals, quarters,
                                           takes_empty, no_decision, i, out_q, out_empty, out_none)
    q, n_empty, n_none = out_q.copy_to_host(), out_empty.copy_to_host(), out_none.copy_to_host()
    for i, cluster in enumerate(model.clusters):
        p[:, i] = bitwise.p_of_quarters(q[i], n_empty[i], model.empty_value, cluster.neurons)
        empty[:, i] = n_none[i]
    return p, empty



def _table(cluster, table):
    """A trained cluster's (kind, order, cells) on the GPU: `table` as train_rows gave it, or
    uploaded (a DENSE cluster trained here is read where it trained)."""
    if table is not None:
        return table
    order = cuda.to_device(np.ascontiguousarray(cluster.order))
    if cluster.storage == SPARSE:
        return KIND_SPARSE, order, tuple(cuda.to_device(a) for a in (cluster.offsets, cluster.keys, cluster.vals))
    cells = cluster.gpu if cluster.host is None else cuda.to_device(cluster.dense)
    return KIND_QUAD if cells.dtype == np.uint8 else KIND_TERNARY, order, cells


def _cells_args(table) -> tuple:
    """(dense32, dense8, offsets, keys, vals) of a table for the reading kernels."""
    kind, _, cells = table
    none32, none8, no_sparse = _placeholders()[:3]
    return (cells if kind == KIND_TERNARY else none32, cells if kind == KIND_QUAD else none8,
            *(cells if kind == KIND_SPARSE else no_sparse))


class RowStore:
    """A connections search's rows on the GPU (optimize/bitwise_connections.py): each rewired
    neuron's code increments on the fitness slice, (capacity, n_examples) uint8 a slot a row, and
    the focus cluster's current rows and sums, so a candidate's sums are made where its rows are
    and only they reach the host (two int32 an example), never the rows themselves."""

    def __init__(self, x: np.ndarray, increments: np.ndarray, capacity: int):
        self.n = x.shape[0]
        self.x = cuda.to_device(np.ascontiguousarray(x))
        self.increments = cuda.to_device(np.ascontiguousarray(increments, dtype=np.uint8))
        self.rows = cuda.device_array((max(1, capacity), max(1, self.n)), dtype=np.uint8)
        self.capacity = int(capacity)
        self.matrix = self.quarters = self.empty = None

    def write(self, cluster, table, slots: np.ndarray) -> None:
        """Rows 0.. of a trained cluster (train_rows') into the slots, as increments."""
        kind, order, _ = table = _table(cluster, table)
        if self.n:
            _write_codes[_blocks(self.n), THREADS](self.x, order, kind, *_cells_args(table), self.increments,
                                                   cuda.to_device(np.asarray(slots, dtype=np.int64)), self.rows)

    def row(self, slot: int) -> np.ndarray:
        return self.rows[slot, : self.n].copy_to_host()

    def focus(self, codes: np.ndarray, quarters: np.ndarray, empty: np.ndarray) -> None:
        """The focus cluster's current increments (neurons, n) and its sums (quarters, #EMPTY)."""
        self.matrix = cuda.to_device(np.ascontiguousarray(codes))
        self.sums(quarters, empty)

    def sums(self, quarters: np.ndarray, empty: np.ndarray) -> None:
        self.quarters, self.empty = (cuda.to_device(np.ascontiguousarray(a, dtype=np.int32)) for a in (quarters, empty))

    def put(self, neurons: np.ndarray, slots: np.ndarray) -> None:
        """The focus's rows `neurons` replaced by the store's `slots` (a commit)."""
        if len(slots) and self.n:
            _put_rows[(_blocks(self.n), len(slots)), THREADS](
                self.rows, cuda.to_device(np.asarray(slots, dtype=np.int64)),
                cuda.to_device(np.asarray(neurons, dtype=np.int64)), self.matrix)

    def swapped(self, old: list[np.ndarray], slots: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Per candidate c, the focus's sums with its neurons old[c] swapped for the rows slots[c]:
        ((C, n) int32 quarters, (C, n) int32 #EMPTY) on the host."""
        c, width = len(old), max(1, max((len(o) for o in old), default=0))
        d_old, d_slots = np.zeros((c, width), np.int64), np.zeros((c, width), np.int64)
        for k, (o, r) in enumerate(zip(old, slots)):
            d_old[k, : len(o)], d_slots[k, : len(r)] = o, r
        counts = np.array([len(o) for o in old], dtype=np.int64)
        out_q = _pooled("swapped_q", c * self.n, np.int32).reshape(c, self.n)
        out_m = _pooled("swapped_m", c * self.n, np.int32).reshape(c, self.n)
        if c and self.n:
            _swapped_sums[(_blocks(self.n), c), THREADS](self.quarters, self.empty, self.matrix, cuda.to_device(d_old),
                                                         cuda.to_device(d_slots), cuda.to_device(counts), self.rows,
                                                         out_q, out_m)
        return out_q.copy_to_host(), out_m.copy_to_host()


def read_neuron_codes(cluster, x: np.ndarray, table=None) -> np.ndarray:
    """bitwise.neuron_codes on the GPU: (n_examples, neurons) uint8, every example's cell code at each
    neuron of one cluster (optimize/sizes.py sums any first n of them), as bitwise.neuron_codes the
    transpose of a C-ordered (neurons, n_examples) array. `table`: the cluster's
    (kind, order, cells) on the GPU as train_clusters returns them; by default its cells are
    uploaded (a DENSE cluster trained here is read where it trained)."""
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, cluster.neurons), dtype=np.uint8)
    kind, order, _ = table = _table(cluster, table)
    out = _pooled("codes", cluster.neurons * n, np.uint8).reshape(cluster.neurons, n)  # copied out below
    _write_codes[_blocks(n), THREADS](cuda.to_device(np.ascontiguousarray(x)), order, kind, *_cells_args(table),
                                      _placeholders()[3], _first_rows(cluster.neurons), out)
    return out.copy_to_host().T
