"""WGSL kernels (wgpu: Metal on macOS, Vulkan elsewhere) for the bitwise model (docs/design.md §3c),
giving exactly the CPU engine's (engine/bitwise.py) cells and P, and through it its metrics. The
interface is bitwise_cuda.py's: NAME, available(), read_clusters(), train_clusters().

WGSL has no 64-bit integer and no float we could trust to round as the CPU's, so everything the
kernels read and write is u32 (shaders/bitwise_common.wgsl does u64 arithmetic on u32 pairs):
  x        (chunk, 2 * words)     each example's packed uint64 context as u32 pairs, low word first
  t        (chunk, 2)             training: each example's target position t as a u32 pair
  codes    (chunk,)               training: each example's target code (a cluster reads its bit)
  order    (range neurons, bits)  the engine's address order (bitwise.BitCluster.order) widened;
                                  addresses are built MSB first in a u32, so at most 32 bits
  cells    DENSE ternary          (range neurons, max(1, 2**bits // 16)): 16 2-bit codes a u32, as the engine's
           DENSE quad             (range neurons, max(1, 2**bits // 4)): 4 uint8 codes a u32, low byte
                                  first (rows of 1-bit neurons padded to a whole word)
           SPARSE                 the range's keys (u32), with offsets (range neurons + 1,) rebased
                                  to 0 and vals (4 uint8 codes a u32)
  out      (clusters, chunk, 3)   per example: Σ decided values in QUARTERS, #EMPTY, #no decision

Evaluation (`read_clusters`): one invocation an example over a range of one cluster's neurons
(shaders/bitwise_read.wgsl); it sums integer quarters (every cell value is a multiple of 0.25) and
counts, and the host computes P = (quarters / 4 + empty_value · #EMPTY) / neurons, the CPU
engine's expression on the same exact operands, so P is the same float. A cluster's tables go to
the GPU once per model (kept in `Model.gpu`; a model trained here keeps the buffers it trained
in), a split's contexts once per call. A cluster beyond the kernel (SPARSE keys wider than 32
bits are uint64; a neuron whose tables exceed the buffer cap) is read by the CPU engine, with the
reason from cannot_read().

Training (`train_clusters`, shaders/bitwise_train.wgsl), the sampling hash computed in WGSL
exactly as the CPU's: S = mix(mix(mix(mix(seed) + "sample") + i) + n), keep iff (mix(S + t) ≫ 11)
< R, on u32 pairs.
- DENSE ternary: one invocation an (example, neuron); each kept write atomically adds ±1 to an
  i32 net count (any order gives the same counts), then a fold pass writes the 2-bit codes.
- DENSE quad: order-exact. A workgroup of LANES invocations a neuron goes through the examples
  LANES at a time: each invocation works out one example's write into workgroup memory, then each
  applies, in example order, the writes to the words it owns (word index mod LANES: a byte can't
  be written alone, so ownership is by word), so each cell sees exactly its writes in ascending t.
  Chunks and dispatches run in example order, one after another.
- SPARSE clusters, and a DENSE one whose neuron's counts exceed the buffer cap, train on the CPU
  engine (their lookups run here where they can).

Buffer limits: one storage binding holds at most wgpu.binding_cap() bytes (128 MiB on Vulkan,
lavapipe and Metal; the tests shrink it with wgpu.BINDING_CAP), so a cluster's neurons are cut
into consecutive ranges whose tables fit it (a 200-neuron, 20-bit quad cluster's 200 MiB takes
two). Examples go through in uploaded chunks, and each dispatch takes at most about PAIRS
(example, neuron) pairs and NEURONS_PER_DISPATCH neurons, so it stays short (GPU watchdogs).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ramsweep.engine import bitwise
from ramsweep.engine.backends import wgpu as wgpu_backend
from ramsweep.engine.connectivity import draw_bit_connectivity
from ramsweep.engine.layout import DENSE, SPARSE
from ramsweep.engine.train import wire

__all__ = ["NAME", "available", "cannot_read", "hash_probe", "read_clusters", "train_clusters"]

NAME = "wgpu"  # the device a model trained here names (bitwise.Model.device)
LANES = 64  # invocations a neuron in quad training: the shaders' LANES and @workgroup_size
CHUNK = 1 << 16  # examples of one uploaded chunk of contexts (and one `out` block)
PAIRS = 1 << 24  # (example, neuron) pairs one dispatch takes at most: dispatches stay short
NEURONS_PER_DISPATCH = 1 << 10  # neurons of one range at most (a dispatch grid's y)
MAX_BITS = 32  # addresses and SPARSE keys are u32
MAX_GROUPS = 65535  # workgroups along one dimension of a dispatch
KIND_TERNARY, KIND_QUAD, KIND_SPARSE = 0, 1, 2
SHADERS = Path(wgpu_backend.__file__).with_name("shaders")
ENTRIES = {"bitwise_read.wgsl": ("read_cluster",),
           "bitwise_train.wgsl": ("count_ternary", "fold_ternary", "train_quad", "probe")}
log = logging.getLogger("ramsweep")


def available() -> bool:
    """wgpu is installed and gives an adapter; never raises."""
    return wgpu_backend.available()


def binding_cap() -> int:
    """Bytes one storage buffer may hold (wgpu.BINDING_CAP, when set, lowers it)."""
    return wgpu_backend.binding_cap()


# --- plumbing: buffers and dispatches ---------------------------------------------------------


def _device():
    return wgpu_backend._gpu()[0]  # the tiered kernel's device: buffers can't cross devices


@cache
def _pipelines() -> dict:
    """Each entry point's compute pipeline, made once (bitwise_common.wgsl prepended to each file)."""
    device, common = _device(), (SHADERS / "bitwise_common.wgsl").read_text()
    pipelines = {}
    for file, entries in ENTRIES.items():
        module = device.create_shader_module(code=common + (SHADERS / file).read_text())
        for entry in entries:
            pipelines[entry] = device.create_compute_pipeline(layout="auto",
                                                              compute={"module": module, "entry_point": entry})
    return pipelines


def _buffer(a: np.ndarray):
    """A storage buffer holding `a` as u32 (one zero word when `a` is empty: bindings can't be)."""
    import wgpu  # the wgpu-py package

    a = np.ascontiguousarray(a, dtype=np.uint32)
    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC
    return _device().create_buffer_with_data(data=a if a.size else np.zeros(1, np.uint32), usage=usage)


def _zeros(nbytes: int):
    """A storage buffer of `nbytes` zero bytes (wgpu zero-fills new buffers: no host copy)."""
    import wgpu

    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_SRC
    return _device().create_buffer(size=max(4, nbytes), usage=usage)


def _params(values: list[int]):
    import wgpu

    a = np.zeros(-(-len(values) // 4) * 4, dtype=np.uint32)  # whole 16-byte rows
    a[: len(values)] = values
    return _device().create_buffer_with_data(data=a, usage=wgpu.BufferUsage.UNIFORM)


def _read(buffer) -> np.ndarray:
    return np.frombuffer(_device().queue.read_buffer(buffer), dtype=np.uint32)


def _read_into(buffer, out: np.ndarray) -> None:
    """The start of `buffer` into the contiguous u32 array `out`, with one host copy (read_buffer
    makes two: a DENSE quad cluster is hundreds of MiB)."""
    import wgpu

    device = _device()
    staging = device.create_buffer(size=out.nbytes, usage=wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.MAP_READ)
    encoder = device.create_command_encoder()
    encoder.copy_buffer_to_buffer(buffer, 0, staging, 0, out.nbytes)
    device.queue.submit([encoder.finish()])
    staging.map_sync("READ")
    np.copyto(out, np.frombuffer(staging.read_mapped(copy=False), dtype=np.uint32).reshape(out.shape))
    staging.unmap()
    staging.destroy()


def _run(entry: str, buffers: dict, groups: tuple[int, ...]) -> None:
    """One dispatch of `entry` with {binding: buffer}, in its own submit: submits run in order, so
    the chunks and ranges of one cluster run one after another."""
    device, pipeline = _device(), _pipelines()[entry]
    entries = [{"binding": k, "resource": {"buffer": b, "offset": 0, "size": b.size}} for k, b in buffers.items()]
    group = device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, group)
    compute.dispatch_workgroups(*groups)
    compute.end()
    device.queue.submit([encoder.finish()])


def _grid(groups: int) -> tuple[int, int]:
    """A 2-D grid of at least `groups` workgroups (one dimension holds at most MAX_GROUPS)."""
    return min(groups, MAX_GROUPS), -(-groups // MAX_GROUPS)


def _chunks(n: int, cap: int, words: int) -> list[tuple[int, int]]:
    """Consecutive example chunks [c0, c1) whose buffers of `words` u32 an example fit the cap."""
    chunk = min(CHUNK, cap // (4 * words))
    if chunk < 1:
        raise ValueError(f"one example's {words} u32 words exceed the wgpu buffer cap of {cap} bytes")
    return [(c0, min(c0 + chunk, n)) for c0 in range(0, n, chunk)]


def _slices(n: int, neurons: int, step: int = 1) -> list[tuple[int, int]]:
    """A chunk's n examples in dispatches of about PAIRS // neurons, a multiple of `step`, in order."""
    size = max(step, PAIRS // max(1, neurons) // step * step)
    return [(e0, min(e0 + size, n)) for e0 in range(0, n, size)]


def _ranges(per_neuron, neurons: int, cap: int) -> list[tuple[int, int]]:
    """Consecutive neuron ranges [n0, n1) whose tables (`per_neuron` bytes each) fit the cap."""
    sizes = np.broadcast_to(np.asarray(per_neuron, dtype=np.int64), (neurons,))
    return wgpu_backend.cluster_ranges(sizes, cap, NEURONS_PER_DISPATCH)


def _pairs(a: np.ndarray) -> np.ndarray:
    """(n, k) uint64 (or int64 >= 0) as (n, 2k) u32: low word first."""
    return np.ascontiguousarray(a, dtype="<u8").view("<u4")


def _halves(v) -> list[int]:
    v = int(v)
    return [v & 0xFFFFFFFF, v >> 32]


def hash_probe(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, 6) uint64 of the shaders' helpers on uint64 pairs (a, b): a + b, a · b, mix(a), a ≫ 11,
    sample_state(a, b's low word, b's high word), a < b: for the tests."""
    n = a.shape[0]
    packed = _pairs(np.stack([a, b], axis=1).astype(np.uint64)).reshape(-1)
    out = _zeros(4 * 12 * n)
    _run("probe", {7: _buffer(packed), 8: out}, (-(-n // 64),))
    return _read(out)[: 12 * n].view("<u8").reshape(n, 6)


# --- evaluation ---------------------------------------------------------------------------------


def quad_words(bits: int) -> int:
    """u32 words of a DENSE quad neuron's row: 4 cells a word, 1-bit rows padded to one."""
    return max(1, (1 << bits) // 4)


def _to_words(dense8: np.ndarray, bits: int) -> np.ndarray:
    """(neurons, 2**bits) uint8 quad cells as (neurons, quad_words) u32."""
    rows = np.zeros((dense8.shape[0], 4 * quad_words(bits)), dtype=np.uint8)
    rows[:, : dense8.shape[1]] = dense8
    return rows.view("<u4")


def _from_words(words: np.ndarray, bits: int) -> np.ndarray:
    """(neurons, quad_words) u32 as (neurons, 2**bits) uint8 quad cells (no copy from 2 bits up)."""
    return np.ascontiguousarray(words.view(np.uint8)[:, : 1 << bits])


def _kind(cluster) -> int:
    if cluster.storage == SPARSE:
        return KIND_SPARSE
    return KIND_QUAD if cluster.dense.dtype == np.uint8 else KIND_TERNARY


def read_bytes(cluster) -> np.ndarray:
    """(neurons,) bytes of each neuron's tables as uploaded: order row, then DENSE row or SPARSE
    offset, keys and vals."""
    order = 4 * cluster.bits
    if cluster.storage == SPARSE:
        return order + 4 + 5 * np.diff(cluster.offsets)
    words = cluster.dense.shape[1] if _kind(cluster) == KIND_TERNARY else quad_words(cluster.bits)
    return np.full(cluster.neurons, order + 4 * words, dtype=np.int64)


def cannot_read(cluster, cap: int | None = None) -> str | None:
    """Why the kernel cannot look up a cluster (None: it can); the CPU engine then does."""
    if cluster.bits > MAX_BITS:
        return (f"a {cluster.bits}-bit cluster's SPARSE keys are uint64, wider than the wgpu kernel's "
                f"{MAX_BITS}-bit addresses: the CPU engine looks it up")
    cap = binding_cap() if cap is None else cap
    largest = int(read_bytes(cluster).max())
    if largest > cap - 16:  # wgpu.cluster_ranges' budget
        return f"one neuron's tables take {largest} bytes, more than the wgpu buffer cap of {cap} allows: the CPU engine looks it up"
    return None


@dataclass
class _Table:
    """One cluster on the GPU: per neuron range, its buffers (n0, n1, order, cells, offsets,
    vals), or, in `cpu`, why the CPU engine reads it."""

    kind: int
    words: int  # DENSE: u32 words of a neuron's row
    ranges: list
    cpu: str | None = None


def _upload(model) -> list[_Table]:
    """Each cluster's tables on the GPU, once per model (training's own where it trained here)."""
    if model.gpu is None:
        model.gpu = [None] * model.n_bits
    for i, cluster in enumerate(model.clusters):
        if not isinstance(model.gpu[i], _Table):
            model.gpu[i] = _table(cluster)
    return model.gpu


def _table(cluster) -> _Table:
    kind = _kind(cluster)
    reason = cannot_read(cluster)
    if reason:
        log.info(f"bitwise wgpu: {reason}")
        return _Table(kind, 0, [], reason)
    none = _buffer(np.zeros(1, np.uint32))
    dense = cluster.dense if kind == KIND_TERNARY else _to_words(cluster.dense, cluster.bits) if kind == KIND_QUAD else None
    ranges = []
    for n0, n1 in _ranges(read_bytes(cluster), cluster.neurons, binding_cap()):
        order = _buffer(cluster.order[n0:n1])
        if kind == KIND_SPARSE:
            k0, k1 = int(cluster.offsets[n0]), int(cluster.offsets[n1])
            vals = np.zeros(-(-(k1 - k0) // 4) * 4, dtype=np.uint8)
            vals[: k1 - k0] = cluster.vals[k0:k1]
            ranges.append((n0, n1, order, _buffer(cluster.keys[k0:k1]), _buffer(cluster.offsets[n0:n1 + 1] - k0),
                           _buffer(vals.view("<u4"))))
        else:
            ranges.append((n0, n1, order, _buffer(dense[n0:n1]), none, none))
    return _Table(kind, 0 if dense is None else dense.shape[1], ranges)


def _code_masks(cell_mode: str) -> tuple[int, int, int]:
    """bitwise.code_tables as bit fields by cell code c: the value in quarters at bits 4c..4c+3
    (every value is a multiple of 0.25), takes_empty and no_decision at bit c."""
    values, takes_empty, no_decision = bitwise.code_tables(cell_mode)
    quarters = (values * 4).astype(np.int64)
    assert np.array_equal(quarters / 4.0, values) and quarters.max() < 16
    return (sum(int(q) << (4 * c) for c, q in enumerate(quarters)), sum(int(b) << c for c, b in enumerate(takes_empty)),
            sum(int(b) << c for c, b in enumerate(no_decision)))


def read_clusters(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bitwise.read_clusters on the GPU: (n, B) unclamped P (the same floats) and (n, B) int64
    lookups holding no decision; a cluster beyond the kernel (cannot_read) on the CPU engine."""
    n = x.shape[0]
    p = np.empty((n, model.n_bits))
    empty = np.empty((n, model.n_bits), dtype=np.int64)
    if n == 0:
        return p, empty
    tables = _upload(model)
    here = [i for i, table in enumerate(tables) if table.cpu is None]
    for i in range(model.n_bits):
        if tables[i].cpu is not None:
            one = dataclasses.replace(model, clusters=[model.clusters[i]], gpu=None)
            p[:, i:i + 1], empty[:, i:i + 1] = bitwise.read_clusters(one, x)
    if not here:
        return p, empty
    row, masks = 2 * x.shape[1], _code_masks(model.cell_mode)
    sums = np.empty((len(here), n, 3), dtype=np.int64)  # quarters, #EMPTY, #no decision
    for c0, c1 in _chunks(n, binding_cap(), max(row, 3 * len(here))):
        d_x, d_out = _buffer(_pairs(x[c0:c1])), _zeros(4 * 3 * len(here) * (c1 - c0))
        for slot, i in enumerate(here):
            table, bits = tables[i], model.clusters[i].bits
            for n0, n1, order, cells, offsets, vals in table.ranges:
                for e0, e1 in _slices(c1 - c0, n1 - n0):
                    params = [e0, e1, row, bits, n1 - n0, table.kind, table.words, 3 * slot * (c1 - c0), *masks]
                    _run("read_cluster", {0: _params(params), 1: d_x, 2: order, 3: cells, 4: offsets, 5: vals, 6: d_out},
                         (-(-(e1 - e0) // 64),))
        sums[:, c0:c1] = _read(d_out)[: 3 * len(here) * (c1 - c0)].reshape(len(here), c1 - c0, 3)
    for slot, i in enumerate(here):
        q, n_empty, n_none = sums[slot].T
        # the CPU engine's (decided + empty_value · n_empty) / neurons, on the same exact operands
        p[:, i] = (q / 4.0 + model.empty_value * n_empty) / model.clusters[i].neurons
        empty[:, i] = n_none
    return p, empty


# --- training -----------------------------------------------------------------------------------


def train_bytes(cell_mode: str, bits: int) -> int:
    """Bytes a neuron's training buffers take: its order row, its codes, and in ternary its i32
    net counts (one a cell)."""
    if cell_mode == bitwise.TERNARY:
        return 4 * bits + 4 * (1 << bits) + 4 * max(1, (1 << bits) // 16)
    return 4 * bits + 4 * quad_words(bits)


def cannot_train(cell_mode: str, storage: str, bits: int, cap: int | None = None) -> str | None:
    """Why the kernels cannot train a cluster (None: they can); the CPU engine then does."""
    if storage == SPARSE:
        return "SPARSE clusters train on the CPU engine"
    cap = binding_cap() if cap is None else cap
    if train_bytes(cell_mode, bits) > cap - 16:
        return (f"a {bits}-bit {cell_mode} neuron's training buffers take {train_bytes(cell_mode, bits)} bytes, more "
                f"than the wgpu buffer cap of {cap} allows: the CPU engine trains it")
    return None


def train_clusters(data, inputs, specs, cell_mode: str) -> tuple[list, list]:
    """(clusters, device tables) for bitwise.train's specs [(cluster, neurons, bits, storage)]: DENSE
    clusters trained by the kernels (their buffers stay on the GPU for evaluation, and are copied
    to the host), the rest by the CPU engine (cannot_train)."""
    clusters: dict[int, bitwise.BitCluster] = {}
    tables: list = [None] * len(specs)
    here = []
    for i, neurons, bits, storage in specs:
        reason = cannot_train(cell_mode, storage, bits)
        if reason is None:
            here.append((i, neurons, bits))
        else:
            if storage != SPARSE:
                log.info(f"bitwise wgpu: cluster {i}: {reason}")
            clusters[i] = bitwise.train_cluster(data, inputs, i, neurons, bits, cell_mode, storage)
    if here:
        row = 2 * data.x.shape[1]
        chunks = [(c1 - c0, _buffer(_pairs(data.x[c0:c1])), _buffer(_pairs(data.t[c0:c1, None])),
                   _buffer(data.target_codes[c0:c1].astype(np.uint32)))
                  for c0, c1 in _chunks(data.x.shape[0], binding_cap(), max(row, 2))]
        for i, neurons, bits in here:
            clusters[i], tables[i] = _train_cluster(data, inputs, chunks, cell_mode, i, neurons, bits)
    return [clusters[i] for i, *_ in specs], tables


def _train_cluster(data, inputs, chunks, cell_mode: str, i: int, neurons: int, bits: int):
    """One DENSE cluster trained range by range: (its BitCluster, its _Table of the trained buffers)."""
    conn = draw_bit_connectivity(int(data.seed), i, neurons, bits, inputs.n_input)
    masks, order, _ = wire(conn, inputs)
    quad = cell_mode != bitwise.TERNARY
    words = quad_words(bits) if quad else max(1, (1 << bits) // 16)
    threshold = int(data.threshold)
    common = [2 * data.x.shape[1], bits, 0, 0, i, data.n_bits - 1 - i, *_halves(data.seed), *_halves(threshold),
              int(threshold >= int(bitwise.ALL_KEPT)), 1 << bits, words]  # params after e0, e1; n0, neurons set per range
    dense, ranges, none = np.empty((neurons, words), dtype=np.uint32), [], _buffer(np.zeros(1, np.uint32))
    for n0, n1 in _ranges(train_bytes(cell_mode, bits), neurons, binding_cap()):
        common[2:4] = [n0, n1 - n0]
        d_order = _buffer(order[n0:n1])
        d_cells = (_train_quad if quad else _train_ternary)(chunks, common, d_order, n1 - n0, words)
        _read_into(d_cells, dense[n0:n1])
        ranges.append((n0, n1, d_order, d_cells, none, none))
    dense = _from_words(dense, bits) if quad else dense
    return (bitwise.BitCluster(DENSE, conn, masks, order, dense),
            _Table(KIND_QUAD if quad else KIND_TERNARY, words, ranges))


def _train_ternary(chunks, common, d_order, neurons: int, words: int):
    """A range's (neurons, words) 2-bit codes: net counts over every chunk, then one fold."""
    size = common[-2]
    d_counts, d_cells = _zeros(4 * neurons * size), _zeros(4 * neurons * words)
    for n, d_x, d_t, d_codes in chunks:
        for e0, e1 in _slices(n, neurons):
            buffers = {0: _params([e0, e1, *common, 0]), 1: d_x, 2: d_order, 3: d_t, 4: d_codes, 5: d_counts}
            _run("count_ternary", buffers, (-(-(e1 - e0) // 64), neurons))
    _run("fold_ternary", {0: _params([0, 0, *common, 0]), 5: d_counts, 6: d_cells}, _grid(-(-neurons * words // 64)))
    return d_cells


def _train_quad(chunks, common, d_order, neurons: int, words: int):
    """A range's (neurons, words) quad codes, 4 a u32: the chunks and their slices in example order."""
    d_cells = _zeros(4 * neurons * words)
    for n, d_x, d_t, d_codes in chunks:
        for e0, e1 in _slices(n, neurons, LANES):
            steps = -(-(e1 - e0) // LANES)
            buffers = {0: _params([e0, e1, *common, steps]), 1: d_x, 2: d_order, 3: d_t, 4: d_codes, 6: d_cells}
            _run("train_quad", buffers, (neurons,))
    return d_cells
