"""WGSL kernels (wgpu: Metal on macOS, Vulkan elsewhere) for the bitwise model (docs/design.md §3c),
giving exactly the CPU engine's (engine/bitwise.py) cells and P, and through it its metrics. The
interface is bitwise_cuda.py's: NAME, available(), read_clusters(), train_clusters().

WGSL has no 64-bit integer and no float we could trust to round as the CPU's, so everything the
kernels read and write is u32 (shaders/bitwise_common.wgsl does u64 arithmetic on u32 pairs):
  x        (chunk, 2 * words)     each example's packed uint64 context as u32 pairs, low word first
  t        (chunk, 2)             training: each example's target position t as a u32 pair
  codes    (chunk,)               training: each example's target code (a cluster reads its bit)
  order    (neurons, bits) rows   the engine's address order (bitwise.BitCluster.order) widened, a
                                  row a neuron (a shader is told where its first row starts);
                                  addresses are built MSB first in a u32, so at most 32 bits
  cells    DENSE ternary          (neurons, max(1, 2**bits // 16)): 16 2-bit codes a u32, as the engine's
           DENSE quad             (neurons, max(1, 2**bits // 4)): 4 uint8 codes a u32, low byte
                                  first (rows of 1-bit neurons padded to a whole word); one buffer
                                  may hold the rows of several clusters, each from its first word
           SPARSE                 the range's keys (u32), with offsets (range neurons + 1,) rebased
                                  to 0 and vals (4 uint8 codes a u32)
  out      (chunk, 3) a cluster   per example: Σ decided values in QUARTERS, #EMPTY, #no decision

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
  i32 net count (any order gives the same counts), then a fold pass writes the 2-bit codes and
  zeroes the counts, so one counts buffer serves every range.
- DENSE quad: order-exact. A workgroup of LANES invocations a neuron goes through the examples
  LANES at a time: each invocation works out one example's write into workgroup memory, then each
  applies, in example order, the writes to the words it owns (word index mod LANES: a byte can't
  be written alone, so ownership is by word), so each cell sees exactly its writes in ascending t.
  As CUDA's _train_quad_group, one dispatch takes a group of neurons of several clusters (all of
  them, when their cells fit one binding: a workgroup a neuron, so a lone cluster's 200 neurons
  would leave most of a large GPU idle). Chunks and dispatches run in example order.
- The DENSE cells stay where they trained (bitwise.BitCluster.gpu, a _Cells: the lookups read
  them there, and the host copies them only if it reads them), their stored codes counted on the
  GPU (count_codes): training reads nothing else back.
- SPARSE clusters, and a DENSE one whose neuron's counts exceed the buffer cap, train on the CPU
  engine (their lookups run here where they can).

Dispatches go through a _Queue: recorded in order and submitted in command buffers of bounded
work, their parameters in one uniform buffer; the host waits only where it reads a result.

Buffer limits: one storage binding holds at most wgpu.binding_cap() bytes (128 MiB on lavapipe;
the adapter's limit elsewhere; the tests shrink it with wgpu.BINDING_CAP), so a cluster's neurons
are cut into consecutive ranges (quad: groups) whose tables fit it. Examples go through in
uploaded chunks, and each dispatch takes at most about PAIRS (example, neuron) pairs and, in the
lookups, NEURONS_PER_DISPATCH neurons, so it stays short (GPU watchdogs).
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
SUBMIT_WORK = 1 << 27  # (example, neuron) pairs, or words, of one command buffer at most (about 8 full dispatches)
SUBMIT_COMMANDS = 256  # dispatches and copies of one command buffer at most
PARAMS_ALIGN = 256  # bytes between dispatches' Params in the uniform buffer (WebGPU's largest offset alignment)
KIND_TERNARY, KIND_QUAD, KIND_SPARSE = 0, 1, 2
SHADERS = Path(wgpu_backend.__file__).with_name("shaders")
ENTRIES = {"bitwise_read.wgsl": ("read_cluster",),
           "bitwise_train.wgsl": ("count_ternary", "fold_ternary", "train_quad", "count_codes", "probe")}
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
    """Each entry point's (compute pipeline, bind group layout), made once (bitwise_common.wgsl
    prepended to each file)."""
    device, common = _device(), (SHADERS / "bitwise_common.wgsl").read_text()
    pipelines = {}
    for file, entries in ENTRIES.items():
        module = device.create_shader_module(code=common + (SHADERS / file).read_text())
        for entry in entries:
            pipeline = device.create_compute_pipeline(layout="auto", compute={"module": module, "entry_point": entry})
            pipelines[entry] = (pipeline, pipeline.get_bind_group_layout(0))
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


def _staging(nbytes: int):
    """A host-readable buffer that copies land in."""
    import wgpu

    return _device().create_buffer(size=max(4, nbytes), usage=wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.MAP_READ)


def _mapped(staging, out: np.ndarray) -> None:
    """A staging buffer's first out.nbytes bytes into the contiguous u32 array `out` (one host copy:
    read_buffer makes two), once the GPU has written them; the staging buffer is then freed."""
    staging.map_sync("READ")
    np.copyto(out, np.frombuffer(staging.read_mapped(0, out.nbytes, copy=False), dtype=np.uint32).reshape(out.shape))
    staging.unmap()
    staging.destroy()


def _read_into(buffer, out: np.ndarray, offset: int = 0) -> None:
    """`buffer`'s bytes from `offset` into the contiguous u32 array `out` (the work queued before
    it has been submitted)."""
    staging = _staging(out.nbytes)
    queue = _Queue()
    queue.copy(buffer, offset, staging, 0, out.nbytes)
    queue.submit()
    _mapped(staging, out)


class _Queue:
    """Dispatches and copies recorded in order and submitted together: a command buffer takes up
    to SUBMIT_WORK (example, neuron) pairs or SUBMIT_COMMANDS commands, their parameters in one
    uniform buffer. They run in the order recorded, each seeing the writes of those before it (a
    dispatch is a usage scope of its own: WebGPU orders a read-write binding's uses), as when each
    dispatch was a submit of its own; a command buffer still ends after a bounded amount of work."""

    def __init__(self) -> None:
        self.commands: list = []
        self.work = 0

    def dispatch(self, entry: str, params: list[int] | None, buffers: dict, groups: tuple[int, ...],
                 work: int = 0) -> None:
        """One dispatch of `entry` with its Params (None: the entry has none, at binding 0) and
        {binding: buffer}; `work` counts toward SUBMIT_WORK."""
        self.commands.append((entry, params, buffers, groups))
        self.work += work
        if self.work >= SUBMIT_WORK or len(self.commands) >= SUBMIT_COMMANDS:
            self.submit()

    def copy(self, source, offset: int, target, target_offset: int, nbytes: int) -> None:
        """Copy nbytes of `source` from `offset` to `target` from `target_offset` (after what is queued)."""
        self.commands.append((None, (source, offset, target, target_offset, nbytes), None, None))

    def submit(self) -> None:
        import wgpu

        if not self.commands:
            return
        device, pipelines = _device(), _pipelines()
        sizes = [-(-len(params) // 4) * 16 for entry, params, *_ in self.commands if entry is not None and params]
        stride = -(-max(sizes, default=16) // PARAMS_ALIGN) * PARAMS_ALIGN
        table = np.zeros((max(1, len(sizes)), stride // 4), dtype=np.uint32)
        k = 0
        for entry, params, *_ in self.commands:
            if entry is not None and params:
                table[k, : len(params)] = params
                k += 1
        d_params = device.create_buffer_with_data(data=table, usage=wgpu.BufferUsage.UNIFORM) if sizes else None
        encoder = device.create_command_encoder()
        compute, current, k = None, None, 0
        for entry, params, buffers, groups in self.commands:
            if entry is None:
                if compute is not None:
                    compute.end()
                    compute, current = None, None
                encoder.copy_buffer_to_buffer(*params)
                continue
            if compute is None:
                compute = encoder.begin_compute_pass()
            pipeline, layout = pipelines[entry]
            if entry != current:
                compute.set_pipeline(pipeline)
                current = entry
            entries = [{"binding": b, "resource": {"buffer": d, "offset": 0, "size": d.size}} for b, d in buffers.items()]
            if params:
                entries.append({"binding": 0, "resource": {"buffer": d_params, "offset": k * stride, "size": sizes[k]}})
                k += 1
            compute.set_bind_group(0, device.create_bind_group(layout=layout, entries=entries))
            compute.dispatch_workgroups(*groups)
        if compute is not None:
            compute.end()
        device.queue.submit([encoder.finish()])
        self.commands, self.work = [], 0


def _fields(names: tuple[str, ...], **values) -> list[int]:
    """A shader's Params in its field order (`names`), fields not given 0."""
    assert set(values) <= set(names), set(values) - set(names)
    return [int(values.get(name, 0)) for name in names]


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
    out, got = _zeros(4 * 12 * n), np.empty(12 * n, dtype=np.uint32)
    queue = _Queue()
    queue.dispatch("probe", None, {7: _buffer(packed), 8: out}, (-(-n // 64),))
    queue.submit()
    _read_into(out, got)
    return got.view("<u8").reshape(n, 6)


# --- DENSE cells left on the GPU ----------------------------------------------------------------


def quad_words(bits: int) -> int:
    """u32 words of a DENSE quad neuron's row: 4 cells a word, 1-bit rows padded to one."""
    return max(1, (1 << bits) // 4)


def row_words(quad: bool, bits: int) -> int:
    """u32 words of a DENSE neuron's row on the GPU: 4 quad or 16 ternary cells a word (ternary's
    rows are the engine's)."""
    return quad_words(bits) if quad else max(1, (1 << bits) // 16)


def _to_words(dense8: np.ndarray, bits: int) -> np.ndarray:
    """(neurons, 2**bits) uint8 quad cells as (neurons, quad_words) u32."""
    rows = np.zeros((dense8.shape[0], 4 * quad_words(bits)), dtype=np.uint8)
    rows[:, : dense8.shape[1]] = dense8
    return rows.view("<u4")


def _from_words(words: np.ndarray, bits: int) -> np.ndarray:
    """(neurons, quad_words) u32 as (neurons, 2**bits) uint8 quad cells (no copy from 2 bits up)."""
    return np.ascontiguousarray(words.view(np.uint8)[:, : 1 << bits])


@dataclass(eq=False)
class _Cells:
    """A DENSE cluster's cells in the buffers WGSL trained them in (bitwise.BitCluster.gpu): its
    neurons' rows in pieces [(n0, n1, buffer, first word)], each piece's rows consecutive from its
    first word (a quad buffer may hold several clusters). Read through the kernels from there;
    copied to the host only when the host reads them (BitCluster.dense)."""

    quad: bool
    bits: int
    neurons: int
    pieces: list
    ranges: list  # read_cluster's ranges over them (_Table.ranges)

    @property
    def words(self) -> int:
        return row_words(self.quad, self.bits)

    @property
    def dtype(self):
        return np.dtype(np.uint8 if self.quad else np.uint32)

    @property
    def nbytes(self) -> int:
        """The host array's bytes (the CPU engine's): 2**bits a quad neuron, 4 · words a ternary one."""
        return self.neurons * ((1 << self.bits) if self.quad else 4 * self.words)

    def copy_to_host(self) -> np.ndarray:
        """The CPU engine's array: (neurons, 2**bits) uint8 quad or (neurons, words) uint32 ternary."""
        words = np.empty((self.neurons, self.words), dtype=np.uint32)
        for n0, n1, buffer, first in self.pieces:
            _read_into(buffer, words[n0:n1], 4 * first)
        return _from_words(words, self.bits) if self.quad else words

    @property
    def table(self) -> _Table:
        return _Table(KIND_QUAD if self.quad else KIND_TERNARY, self.words, self.ranges)


# --- evaluation ---------------------------------------------------------------------------------


def _kind(cluster) -> int:
    if cluster.storage == SPARSE:
        return KIND_SPARSE
    cells = cluster.host if cluster.host is not None else cluster.gpu  # the dtype, without a copy to the host
    return KIND_QUAD if cells.dtype == np.uint8 else KIND_TERNARY


def read_bytes(cluster) -> np.ndarray:
    """(neurons,) bytes of each neuron's tables as uploaded: order row, then DENSE row or SPARSE
    offset, keys and vals."""
    order = 4 * cluster.bits
    if cluster.storage == SPARSE:
        return order + 4 + 5 * np.diff(cluster.offsets)
    words = row_words(_kind(cluster) == KIND_QUAD, cluster.bits)
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
    """One cluster on the GPU: per neuron range [n0, n1), its buffers and where its rows start in
    them, (n0, n1, order, order_first, cells, cells_first, offsets, vals), or, in `cpu`, why the
    CPU engine reads it."""

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
    if cluster.storage == DENSE and isinstance(cluster.gpu, _Cells):
        return cluster.gpu.table  # trained here: the buffers it trained in
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
            ranges.append((n0, n1, order, 0, _buffer(cluster.keys[k0:k1]), 0, _buffer(cluster.offsets[n0:n1 + 1] - k0),
                           _buffer(vals.view("<u4"))))
        else:
            ranges.append((n0, n1, order, 0, _buffer(dense[n0:n1]), 0, none, none))
    return _Table(kind, 0 if dense is None else dense.shape[1], ranges)


def _code_masks(cell_mode: str) -> tuple[int, int, int]:
    """bitwise.code_tables as bit fields by cell code c: the value in quarters at bits 4c..4c+3
    (every value is a multiple of 0.25), takes_empty and no_decision at bit c."""
    quarters, takes_empty, no_decision = bitwise.quarter_tables(cell_mode)
    assert quarters.max() < 16
    return (sum(int(q) << (4 * c) for c, q in enumerate(quarters)), sum(int(b) << c for c, b in enumerate(takes_empty)),
            sum(int(b) << c for c, b in enumerate(no_decision)))


READ_FIELDS = ("e0", "e1", "row", "bits", "neurons", "kind", "words", "quarters", "takes_empty",
               "no_decision", "order_first", "cells_first")  # bitwise_read.wgsl's Params


def read_clusters(model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bitwise.read_clusters on the GPU: (n, B) unclamped P (the same floats) and (n, B) int64
    lookups holding no decision; a cluster beyond the kernel (cannot_read) on the CPU engine. Every
    chunk's dispatches are queued, then its sums copied back, with one wait for them all. Each
    cluster sums into its own buffer, so nothing orders its dispatches after another cluster's (the
    GPU may run them side by side); a cluster's ranges add up one after another."""
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
    row, (quarters, takes_empty, no_decision) = 2 * x.shape[1], _code_masks(model.cell_mode)
    queue, back = _Queue(), []
    for c0, c1 in _chunks(n, binding_cap(), max(row, 3 * len(here))):
        d_x, block = _buffer(_pairs(x[c0:c1])), 4 * 3 * (c1 - c0)
        staging = _staging(block * len(here))
        for slot, i in enumerate(here):
            table, bits, d_out = tables[i], model.clusters[i].bits, _zeros(block)
            for n0, n1, order, order_first, cells, cells_first, offsets, vals in table.ranges:
                for e0, e1 in _slices(c1 - c0, n1 - n0):
                    params = _fields(READ_FIELDS, e0=e0, e1=e1, row=row, bits=bits, neurons=n1 - n0, kind=table.kind,
                                     words=table.words, quarters=quarters,
                                     takes_empty=takes_empty, no_decision=no_decision, order_first=order_first,
                                     cells_first=cells_first)
                    queue.dispatch("read_cluster", params, {1: d_x, 2: order, 3: cells, 4: offsets, 5: vals, 6: d_out},
                                   (-(-(e1 - e0) // 64),), (e1 - e0) * (n1 - n0))
            queue.copy(d_out, 0, staging, slot * block, block)
        back.append((c0, c1, staging))
    queue.submit()
    sums = np.empty((len(here), n, 3), dtype=np.int64)  # quarters, #EMPTY, #no decision
    for c0, c1, staging in back:
        block = np.empty((len(here), c1 - c0, 3), dtype=np.uint32)
        _mapped(staging, block)
        sums[:, c0:c1] = block
    for slot, i in enumerate(here):
        q, n_empty, n_none = sums[slot].T
        p[:, i] = bitwise.p_of_quarters(q, n_empty, model.empty_value, model.clusters[i].neurons)
        empty[:, i] = n_none
    return p, empty


# --- training -----------------------------------------------------------------------------------

TRAIN_FIELDS = ("e0", "e1", "row", "bits", "n0", "neurons", "cluster", "shift", "seed_lo", "seed_hi", "threshold_lo",
                "threshold_hi", "all_kept", "size", "words", "steps", "first", "slot",
                "ternary")  # bitwise_train.wgsl's Params
JOB = 5  # u32 of a train_quad job: cluster, neuron, bits, its order row's start, its cells row's start


def train_bytes(cell_mode: str, bits: int) -> int:
    """Bytes a neuron's training buffers take: its order row and its codes, and in ternary its i32
    net counts (one a cell), in quad its job."""
    if cell_mode == bitwise.TERNARY:
        return 4 * bits + 4 * (1 << bits) + 4 * max(1, (1 << bits) // 16)
    return 4 * bits + 4 * quad_words(bits) + 4 * JOB


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
    clusters trained by the kernels, their cells left in the buffers they trained in (for the
    lookups; copied to the host only if read there: BitCluster.dense) and their stored codes
    counted there; the rest by the CPU engine (cannot_train). The work is queued, and the counts
    are the one thing read back."""
    clusters: dict[int, bitwise.BitCluster] = {}
    tables: dict[int, object] = {}  # by cluster: specs may name any clusters (a size search's)
    here = []
    for i, neurons, bits, storage in specs:
        reason = cannot_train(cell_mode, storage, bits)
        if reason is None:
            here.append((i, neurons, bits))
        else:
            if storage != SPARSE:
                log.info(f"bitwise wgpu: cluster {i}: {reason}")
            clusters[i] = bitwise.train_cluster(data, inputs, i, neurons, bits, cell_mode, storage)
    if not here:
        return [clusters[i] for i, *_ in specs], [tables.get(i) for i, *_ in specs]
    wired = {}
    for i, neurons, bits in here:
        conn = draw_bit_connectivity(int(data.seed), i, neurons, bits, inputs.n_input)
        wired[i] = (conn, *wire(conn, inputs)[:2])
    row, threshold = 2 * data.x.shape[1], int(data.threshold)
    chunks = [(c1 - c0, _buffer(_pairs(data.x[c0:c1])), _buffer(_pairs(data.t[c0:c1, None])),
               _buffer(data.target_codes[c0:c1].astype(np.uint32)))
              for c0, c1 in _chunks(data.x.shape[0], binding_cap(), max(row, 2))]
    common = dict(row=row, seed_lo=_halves(data.seed)[0], seed_hi=_halves(data.seed)[1],
                  threshold_lo=_halves(threshold)[0], threshold_hi=_halves(threshold)[1],
                  all_kept=int(threshold >= int(bitwise.ALL_KEPT)))
    queue = _Queue()
    train = _train_quad if cell_mode != bitwise.TERNARY else _train_ternary
    cells = train(queue, chunks, common, data.n_bits, here, {i: w[2] for i, w in wired.items()})
    stored = _count_codes(queue, [cells[i] for i, *_ in here])
    for (i, *_), count in zip(here, stored):
        conn, masks, order = wired[i]
        clusters[i] = bitwise.BitCluster(DENSE, conn, masks, order, None, gpu=cells[i], stored=count)
        tables[i] = cells[i].table
    return [clusters[i] for i, *_ in specs], [tables.get(i) for i, *_ in specs]


def _read_ranges(n0: int, n1: int, bits: int, words: int, order, order_first: int, cells, cells_first: int,
                 none) -> list:
    """read_cluster's ranges over neurons [n0, n1) whose rows start at order[order_first] and
    cells[cells_first]: at most NEURONS_PER_DISPATCH neurons each."""
    return [(m0, min(m0 + NEURONS_PER_DISPATCH, n1), order, order_first + (m0 - n0) * bits, cells,
             cells_first + (m0 - n0) * words, none, none) for m0 in range(n0, n1, NEURONS_PER_DISPATCH)]


def _train_ternary(queue: _Queue, chunks, common: dict, n_bits: int, here: list, orders: dict) -> dict:
    """{cluster: _Cells}: each cluster's neurons in ranges whose training buffers fit the cap; per
    range, net counts over every chunk, then one fold into its own buffer of codes. One counts
    buffer serves every range (the fold sets it back to 0)."""
    cap, none = binding_cap(), _buffer(np.zeros(1, np.uint32))
    ranges = {i: _ranges(train_bytes(bitwise.TERNARY, bits), neurons, cap) for i, neurons, bits in here}
    d_counts = _zeros(max(4 * (n1 - n0) << bits for i, _, bits in here for n0, n1 in ranges[i]))
    out = {}
    for i, neurons, bits in here:
        words, pieces, reads = row_words(False, bits), [], []
        for n0, n1 in ranges[i]:
            k = n1 - n0
            d_order, d_cells = _buffer(orders[i][n0:n1]), _zeros(4 * k * words)
            fields = dict(common, bits=bits, n0=n0, neurons=k, cluster=i, shift=n_bits - 1 - i, size=1 << bits,
                          words=words)
            for n, d_x, d_t, d_codes in chunks:
                for e0, e1 in _slices(n, k):
                    queue.dispatch("count_ternary", _fields(TRAIN_FIELDS, e0=e0, e1=e1, **fields),
                                   {1: d_x, 2: d_order, 3: d_t, 4: d_codes, 5: d_counts},
                                   (-(-(e1 - e0) // 64), k), (e1 - e0) * k)
            queue.dispatch("fold_ternary", _fields(TRAIN_FIELDS, **fields), {5: d_counts, 6: d_cells},
                           _grid(-(-k * words // 64)), k << bits)
            pieces.append((n0, n1, d_cells, 0))
            reads += _read_ranges(n0, n1, bits, words, d_order, 0, d_cells, 0, none)
        out[i] = _Cells(False, bits, neurons, pieces, reads)
    return out


def _quad_groups(here: list, cap: int) -> list[list]:
    """The quad clusters' neurons, in order, cut into groups [(cluster, n0, n1, bits)] of at most
    MAX_GROUPS neurons (a dispatch's workgroups) whose cells, order rows and jobs each fit one
    binding: a group is one dispatch (a cluster may span groups, and a group hold many)."""
    groups, current, used, count = [], [], np.zeros(3, dtype=np.int64), 0
    for i, neurons, bits in here:
        per = np.array([4 * quad_words(bits), 4 * bits, 4 * JOB], dtype=np.int64)
        n0 = 0
        while n0 < neurons:
            room = min(int(((cap - used) // per).min()), MAX_GROUPS - count, neurons - n0)
            if room <= 0:
                assert current, f"one {bits}-bit quad neuron's buffers exceed the cap of {cap} bytes"
                groups.append(current)
                current, used, count = [], np.zeros(3, dtype=np.int64), 0
                continue
            current.append((i, n0, n0 + room, bits))
            used += room * per
            count += room
            n0 += room
    return groups + ([current] if current else [])


def _train_quad(queue: _Queue, chunks, common: dict, n_bits: int, here: list, orders: dict) -> dict:
    """{cluster: _Cells}: the quad clusters' neurons in groups (_quad_groups), each group in one
    buffer of cells, trained by one dispatch a slice of examples, the chunks and their slices in
    example order (a neuron's writes in ascending t; a dispatch sees the one before's cells)."""
    none = _buffer(np.zeros(1, np.uint32))
    pieces: dict = {i: [] for i, *_ in here}
    reads: dict = {i: [] for i, *_ in here}
    for group in _quad_groups(here, binding_cap()):
        jobs, rows, order_first, cells_first = [], [], 0, 0
        places = []
        for i, n0, n1, bits in group:
            k, words = n1 - n0, quad_words(bits)
            n = np.arange(n0, n1, dtype=np.int64)
            jobs.append(np.stack([np.full(k, i), n, np.full(k, bits), order_first + (n - n0) * bits,
                                  cells_first + (n - n0) * words], axis=1))
            rows.append(orders[i][n0:n1].reshape(-1))
            places.append((order_first, cells_first))
            order_first += k * bits
            cells_first += k * words
        d_order, d_jobs, d_cells = _buffer(np.concatenate(rows)), _buffer(np.concatenate(jobs)), _zeros(4 * cells_first)
        neurons = sum(n1 - n0 for _, n0, n1, _ in group)
        for n, d_x, d_t, d_codes in chunks:
            for e0, e1 in _slices(n, neurons, LANES):
                params = _fields(TRAIN_FIELDS, e0=e0, e1=e1, neurons=neurons, shift=n_bits - 1,
                                 steps=-(-(e1 - e0) // LANES), **common)
                queue.dispatch("train_quad", params, {1: d_x, 2: d_order, 3: d_t, 4: d_codes, 6: d_cells, 9: d_jobs},
                               (neurons,), (e1 - e0) * neurons)
        for (i, n0, n1, bits), (o, c) in zip(group, places):
            pieces[i].append((n0, n1, d_cells, c))
            reads[i] += _read_ranges(n0, n1, bits, quad_words(bits), d_order, o, d_cells, c, none)
    return {i: _Cells(True, bits, neurons, pieces[i], reads[i]) for i, neurons, bits in here}


def _count_codes(queue: _Queue, cells: list) -> list[int]:
    """Each _Cells' non-zero codes (bitwise.cells_stored's count), counted on the GPU after the
    work queued: one u64 tally a cluster, read back once."""
    tally = _zeros(8 * len(cells))
    for slot, c in enumerate(cells):
        for n0, n1, buffer, first in c.pieces:
            words = (n1 - n0) * c.words
            queue.dispatch("count_codes", _fields(TRAIN_FIELDS, words=words, first=first, slot=slot,
                                                  ternary=int(not c.quad)),
                           {6: buffer, 10: tally}, (min(MAX_GROUPS, -(-words // 64)),), words)
    got = np.empty(2 * len(cells), dtype=np.uint32)
    queue.submit()
    _read_into(tally, got)
    return [int(lo) + (int(hi) << 32) for lo, hi in got.reshape(-1, 2)]
