"""wgpu evaluation kernel (WebGPU: Metal on macOS, Vulkan elsewhere): evaluate one tier with
exactly the counts and argmax of cpu.evaluate_tier, gates included (docs/design.md §3; shapes
and cell codes as documented in cpu.py), and train a dense tier (shaders/train.wgsl: atomic ORs,
the CPU's cells exactly: a cell's code is the OR of its writes, in any order). Sparse tiers
train on the CPU engine.

The WGSL kernel (shaders/evaluate.wgsl) runs one invocation per EX examples (a neuron's
wiring read once for them, as the CUDA kernel does) over a range of the tier's clusters. WGSL
has neither 64-bit integers nor a float we could trust to match the CPU's, so what it reads and
writes is all u32:
  inputs  (chunk, 2*words + 1)     each example's packed uint64 context as u32 pairs (low word
                                   first), then its target's cluster position
  order   (range neurons, bits)    uint16 bit indices widened; addresses are built MSB first,
                                   so tiers wider than 32 bits are refused (keys are uint32);
                                   under LSH followed by the range's hash words (the cell is
                                   their XOR at the address's 1 bits: any width, no uint64)
  cells   dense rows (16 cells a u32) or the range's sparse keys
  offsets (range neurons + 1,)     into the range's keys, rebased to 0 so they fit a u32
  vals    the range's cell codes, 4 uint8 per u32
  hist    (chunk, tier levels)     clusters of each example per score level the tier can reach
  stats   (chunk, 7)               best level + 1 and its cluster, target level + 1, the
                                   target's EMPTY reads, all EMPTY reads, open gates, 1 when the
                                   target's gate is open
A gated tier's gate neurons follow its own in the same buffers (their order rows after the
order and hash words, their cells, offsets (as positions in `cells`) and codes after the
tier's), where the params say: one pass reads both, and the binding count stays portable.
Scores are integer levels (the tier's own, renumbered from level_table); the host turns levels
into scores and merges tiers with a strict '>', so an earlier tier keeps a tie, as on the CPU.
A tier beyond the kernel (wider than 32 bits) gets a reason from cannot_evaluate(), and score()
runs it on the CPU engine instead; evaluate_tier() itself raises ValueError for one.

One storage buffer may hold at most maxStorageBufferBindingSize bytes (128 MiB on Vulkan and
lavapipe): the tier's clusters are cut into consecutive ranges whose tables fit under that
cap, one dispatch each. Ranges run in cluster order and carry the argmax, target and empty
counts in `stats`, so they merge exactly like one pass. Ranges are also capped in the input-bit
reads of one invocation (READS_PER_INVOCATION), so one dispatch stays short (GPU watchdogs kill
command buffers that run for seconds, and lavapipe cut longer invocations short), and
examples go through in chunks that keep `hist` under the cap.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ramsweep.engine.backends.levels import level_scores, tier_levels

WORKGROUP = 64  # the shaders' @workgroup_size
EX = 4  # examples an invocation of the evaluation shader (its EX): a neuron's wiring read once for them
CHUNK = 1 << 16  # examples per dispatch at most
# input-bit reads one invocation makes in one dispatch at most (its EX examples' over a range's
# neurons x bits, twice when hashed, its gates' included): lavapipe cut longer ones short (a
# 100,15,40 LSH tier, 120 k reads an example, read zeros past a point); short dispatches also keep
# clear of GPU watchdogs
READS_PER_INVOCATION = 1 << 15
STATS = 7  # u32 per example in `stats`
MAX_BITS = 32  # addresses and sparse keys are u32
BINDING_CAP: int | None = None  # bytes per storage buffer; None: the device's limit (tests shrink it)
NO_TARGET = np.uint32(0xFFFFFFFF)  # target of the padding rows: matches no cluster
SHADER = Path(__file__).with_name("shaders") / "evaluate.wgsl"
TRAIN_SHADER = SHADER.with_name("train.wgsl")
MAX_GRID = 65535  # workgroups a dispatch dimension may hold (WebGPU's limit)
WRITES_PER_DISPATCH = 1 << 28  # training: (example, neuron) writes one dispatch may make


@cache
def _adapter():
    import wgpu  # the wgpu-py package (absolute import; this module is ramsweep's)

    # Mesa's Vulkan drivers complain on stderr when XDG_RUNTIME_DIR is unset (cron, CI), once
    # per display backend they try; compute needs no display, so give them a folder.
    os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    return wgpu.gpu.request_adapter_sync(power_preference="high-performance")


@cache
def available() -> bool:
    """wgpu is installed and gives an adapter; never raises."""
    try:
        return _adapter() is not None
    except Exception:  # ImportError, no driver, no adapter: no wgpu here
        return False


def adapter_info() -> dict:
    """{"name", "backend", "type", "vendor", "description"} of the adapter, e.g. type "CPU" for
    lavapipe, "DiscreteGPU" or "IntegratedGPU" for real ones."""
    info = _adapter().info
    return {"name": info["device"], "backend": info["backend_type"], "type": info["adapter_type"],
            "vendor": info["vendor"], "description": info["description"]}


def is_real_gpu() -> bool:
    """A GPU, not a software rasteriser such as lavapipe (slower than the numba CPU engine)."""
    return available() and adapter_info()["type"] != "CPU"


@cache
def _gpu():
    """(device, pipeline), made once: the device asks for the adapter's largest buffers."""
    adapter = _adapter()
    wanted = ("max-storage-buffer-binding-size", "max-buffer-size", "max-storage-buffers-per-shader-stage")
    device = adapter.request_device_sync(required_limits={k: adapter.limits[k] for k in wanted})
    shader = device.create_shader_module(code=SHADER.read_text())
    pipeline = device.create_compute_pipeline(layout="auto", compute={"module": shader, "entry_point": "main"})
    return device, pipeline


@cache
def _train_pipeline():
    device = _gpu()[0]
    shader = device.create_shader_module(code=TRAIN_SHADER.read_text())
    return device.create_compute_pipeline(layout="auto", compute={"module": shader, "entry_point": "main"})


def binding_cap() -> int:
    """Bytes one storage buffer may hold on this device (or BINDING_CAP, when smaller)."""
    limits = _gpu()[0].limits
    cap = min(limits["max-storage-buffer-binding-size"], limits["max-buffer-size"])
    return min(cap, BINDING_CAP) if BINDING_CAP else cap


def unsupported(bits: int, levels: int, row: int, cap: int) -> str | None:
    """Why a tier cannot run on this kernel (None: it can)."""
    if bits > MAX_BITS:
        return f"a {bits}-bit tier is wider than the wgpu kernel's {MAX_BITS}-bit addresses (use the CPU or CUDA)"
    if 4 * max(levels, row, STATS) > cap:
        return f"one example's {levels} score levels or {row} input words exceed the {cap}-byte buffer cap"
    return None


def cannot_evaluate(tier) -> str | None:
    """Why this kernel cannot evaluate a tier (None: it can); the CPU engine then does."""
    if tier.gate is not None and tier.gate.order.shape[1] > MAX_BITS:
        return (f"a {tier.gate.order.shape[1]}-bit gate is wider than the wgpu kernel's {MAX_BITS}-bit addresses "
                "(use the CPU or CUDA)")
    bits = 32 if tier.hashed else tier.order.shape[1]  # a hash fits a u32
    return unsupported(bits, len(tier_levels(tier.level_table)[0]), 2 * tier.masks.shape[1] + 1, binding_cap())


def cluster_bytes(tier) -> np.ndarray:
    """Bytes of each cluster's tables as uploaded (u32 order rows and hash words, dense rows or
    keys + vals), its gate neurons' included."""
    per_neuron = 4 * tier.order.shape[1] * (2 if tier.hashed else 1) + (4 + 5 * np.diff(tier.offsets) if tier.is_sparse
                                                                       else 4 * tier.dense.shape[1])
    own = np.broadcast_to(per_neuron, (tier.n_neurons,)).reshape(tier.n_clusters, tier.neurons).sum(axis=1)
    return own + (cluster_bytes(tier.gate) if tier.gate is not None else 0)


def cluster_reads(tier) -> int:
    """Input-bit reads of one example at one cluster: its neurons' bits (twice when hashed: the
    bit and its hash word), and its gate neurons'."""
    own = tier.neurons * tier.order.shape[1] * (2 if tier.hashed else 1)
    return own + (tier.gate.neurons * tier.gate.order.shape[1] if tier.gate is not None else 0)


def cluster_ranges(sizes: np.ndarray, cap: int, max_clusters: int) -> list[tuple[int, int]]:
    """Consecutive ranges [c0, c1) of at most max_clusters clusters whose tables (`sizes`, bytes
    per cluster) fit in `cap` bytes, summed over all of a range's buffers, so each one fits."""
    ends = np.cumsum(sizes)
    budget = cap - 16  # a range's offsets have one entry more; vals round up to a word
    ranges, c0 = [], 0
    while c0 < len(sizes):
        base = ends[c0 - 1] if c0 else 0
        c1 = min(int(np.searchsorted(ends, base + budget, side="right")), c0 + max_clusters)
        if c1 == c0:
            raise ValueError(f"cluster {c0}'s tables take {sizes[c0]} bytes, more than the {budget} a range "
                             f"may use under the wgpu buffer cap of {cap} bytes")
        ranges.append((c0, c1))
        c0 = c1
    return ranges


def _tables(tier, c0, c1) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """The u32 tables (order, cells, offsets, vals) of clusters [c0, c1), their gate neurons'
    after their own, and where the gate's start (in words of order, cells and offsets, and in
    bytes of vals; zeros without a gate)."""
    own = _own_tables(tier, c0, c1)
    if tier.gate is None:
        return own, (0, 0, 0, 0)
    gate = _own_tables(tier.gate, c0, c1)
    bases = (own[0].size, own[1].size, own[2].size, 4 * own[3].size)
    gate[2] = gate[2] + np.uint32(own[1].size)  # the gate's offsets as positions in `cells`
    return [np.concatenate([a.ravel(), b.ravel()]) for a, b in zip(own, gate)], bases


def _own_tables(tier, c0, c1) -> list[np.ndarray]:
    """The u32 tables (order then hash words, cells, offsets, vals) of clusters [c0, c1)."""
    n0, n1 = c0 * tier.neurons, c1 * tier.neurons
    rows = tier.order[n0:n1].astype(np.uint32)
    if tier.hashed:
        rows = np.concatenate([rows.ravel(), tier.hashes[n0:n1].ravel()])
    if not tier.is_sparse:
        return [rows.ravel(), tier.dense[n0:n1].ravel(), np.zeros(1, np.uint32), np.zeros(1, np.uint32)]
    k0, k1 = int(tier.offsets[n0]), int(tier.offsets[n1])
    packed = np.zeros(-(-(k1 - k0) // 4) * 4, dtype=np.uint8)
    packed[: k1 - k0] = tier.vals[k0:k1]
    return [rows.ravel(), tier.keys[k0:k1].astype(np.uint32), (tier.offsets[n0 : n1 + 1] - k0).astype(np.uint32),
            packed.view(np.uint32)]


def _buffer(device, a: np.ndarray, usage: str = "STORAGE"):
    """A buffer holding `a` as u32 (one zero word when `a` is empty: bindings can't be)."""
    import wgpu  # the wgpu-py package

    a = np.ascontiguousarray(a, dtype=np.uint32)
    return device.create_buffer_with_data(data=a if a.size else np.zeros(1, np.uint32),
                                          usage=getattr(wgpu.BufferUsage, usage))


def _scratch(device, nbytes: int):
    import wgpu

    usage = wgpu.BufferUsage.STORAGE | wgpu.BufferUsage.COPY_DST | wgpu.BufferUsage.COPY_SRC
    return device.create_buffer(size=nbytes, usage=usage)


def bind(device, pipeline, buffers: list):
    """A bind group of `pipeline` holding `buffers` at bindings 0, 1, ... (whole buffers)."""
    entries = [{"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}} for i, b in enumerate(buffers)]
    return device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries)


def dispatch(device, pipeline, group, x: int, y: int = 1) -> None:
    """One compute pass of (x, y) workgroups, submitted alone: submissions run in order and each
    stays short (GPU watchdogs)."""
    encoder = device.create_command_encoder()
    compute = encoder.begin_compute_pass()
    compute.set_pipeline(pipeline)
    compute.set_bind_group(0, group)
    compute.dispatch_workgroups(x, y)
    compute.end()
    device.queue.submit([encoder.finish()])


@dataclass(frozen=True)
class _Plan:
    """How one tier goes through the kernel: its examples in chunks, its clusters in ranges."""

    chunk: int  # examples a dispatch (the last chunk padded)
    row: int  # u32 words of an example in `inputs`
    used: np.ndarray  # the model's levels the tier reaches: hist's columns of the tier's levels
    local_table: np.ndarray  # level_table renumbered into them
    scores: np.ndarray  # the score of each
    ranges: list  # [(c0, c1)] cluster ranges, one dispatch each


def _plan(tier, batch) -> _Plan:
    """The tier's plan on this device; ValueError for a tier beyond the kernel."""
    cap = binding_cap()
    row = 2 * batch.x.shape[1] + 1
    used, local_table = tier_levels(tier.level_table)
    reason = cannot_evaluate(tier)
    if reason:
        raise ValueError(reason)
    n = len(batch)
    chunk = min(CHUNK, cap // (4 * max(len(used), row, STATS)))
    chunk = -(-n // -(-n // chunk)) if n else chunk  # equal chunks: the last one pads few rows
    ranges = cluster_ranges(cluster_bytes(tier), cap, max(1, READS_PER_INVOCATION // (EX * cluster_reads(tier))))
    scores = level_scores(tier.score_table, tier.level_table, batch.hist.shape[1])[used]
    return _Plan(chunk, row, used, local_table, scores, ranges)


def _bind_groups(device, pipeline, tier, plan: _Plan, d_inputs, d_hist, d_stats) -> list:
    """One bind group per cluster range: its params and tables, and the shared chunk buffers."""
    d_levels = _buffer(device, plan.local_table)
    groups = []
    gate = tier.gate
    gating = [0] * 5 if gate is None else [tier.gate_need, gate.neurons, gate.order.shape[1], int(gate.is_sparse),
                                           gate.dense.shape[1]]
    for c0, c1 in plan.ranges:
        hashed = int(tier.hashed)
        tables, bases = _tables(tier, c0, c1)
        params = [plan.chunk, plan.row, tier.order.shape[1], tier.neurons, c0, c1, tier.first, len(plan.used),
                  int(tier.is_sparse), tier.dense.shape[1], hashed, (c1 - c0) * tier.neurons * tier.order.shape[1] * hashed,
                  *gating, *bases, 0, 0, 0]  # padded to 16-byte rows
        d_order, d_cells, d_offsets, d_vals = (_buffer(device, t) for t in tables)
        groups.append(bind(device, pipeline, [_buffer(device, np.array(params), "UNIFORM"), d_inputs, d_order, d_levels,
                                              d_cells, d_offsets, d_vals, d_hist, d_stats]))  # the shader's order
    return groups


def evaluate_tier(tier, batch) -> None:
    """cpu.evaluate_tier through wgpu (the same results); ValueError for a tier cannot_evaluate refuses."""
    plan = _plan(tier, batch)
    if len(batch) == 0 or tier.n_clusters == 0:
        return
    device, pipeline = _gpu()
    chunk, n_levels = plan.chunk, len(plan.used)
    d_inputs, d_hist, d_stats = (_scratch(device, 4 * chunk * k) for k in (plan.row, n_levels, STATS))
    groups = _bind_groups(device, pipeline, tier, plan, d_inputs, d_hist, d_stats)
    rows = np.empty((chunk, plan.row), dtype=np.uint32)  # padding rows: zero context, no target
    zeros = np.zeros(chunk * max(n_levels, STATS), dtype=np.uint32)
    for e0 in range(0, len(batch), chunk):
        part = batch.part(e0, min(e0 + chunk, len(batch)))
        m = len(part)
        rows[:] = 0
        rows[:m, :-1] = np.ascontiguousarray(part.x, dtype="<u8").view("<u4")
        rows[:, -1] = NO_TARGET
        rows[:m, -1] = part.target_pos
        device.queue.write_buffer(d_inputs, 0, rows)
        device.queue.write_buffer(d_hist, 0, zeros[: chunk * n_levels])
        device.queue.write_buffer(d_stats, 0, zeros[: chunk * STATS])
        for group in groups:  # in cluster order
            dispatch(device, pipeline, group, -(-chunk // (WORKGROUP * EX)))
        got = np.frombuffer(device.queue.read_buffer(d_hist), dtype=np.uint32).reshape(chunk, n_levels)
        part.hist[:, plan.used] += got[:m].astype(part.hist.dtype)
        stats = np.frombuffer(device.queue.read_buffer(d_stats), dtype=np.uint32).reshape(chunk, STATS)[:m]
        _merge(stats, plan.scores, tier.first, part, gated=tier.gate is not None)


def _merge(stats, scores, first, batch, gated: bool) -> None:
    """Fold one chunk's tier results into the batch's running ones."""
    best_level, best_c, target_level, target_empty, empties, opens, target_open = stats.T.astype(np.int64)
    tier_score = scores[best_level - 1]  # every example met at least one cluster
    better = tier_score > batch.best_score  # strict: an earlier tier keeps a tie
    batch.best_score[better] = tier_score[better]
    batch.best_pos[better] = first + best_c[better]
    hit = target_level > 0
    batch.target_score[hit] = scores[target_level[hit] - 1]
    batch.empty_target[hit] = target_empty[hit]
    batch.empty_all[:] += empties
    if gated:
        batch.open_all[:] += opens
        batch.target_open[target_open == 1] = 1


def cannot_train(tier) -> str | None:
    """Why the training kernel cannot write a tier (None: it can); the CPU engine then does."""
    if tier.is_sparse:
        return "the wgpu kernel trains dense tiers; a sparse tier trains on the CPU engine"
    if not tier.hashed and tier.order.shape[1] > MAX_BITS:
        return f"a {tier.order.shape[1]}-bit tier is wider than the wgpu kernel's {MAX_BITS}-bit addresses"
    cap = binding_cap()
    if 4 * _row_words(tier) > cap or 8 * tier.masks.shape[1] > cap:
        return f"one neuron's {1 << tier.bits} cells or one example's context exceed the {cap}-byte buffer cap"
    return None


def _row_words(tier) -> int:
    return max(1, (1 << tier.bits) // 16)


def train_tier(tier, data):
    """cpu's dense training through wgpu: the tier with its cells (the CPU's exactly). Neurons go
    in ranges whose cells fit the buffer cap, examples in chunks, the negative clusters' neurons
    (FALSE at every example) in dispatches of at most WRITES_PER_DISPATCH writes."""
    reason = cannot_train(tier)
    if reason:
        raise ValueError(reason)
    device, pipeline = _gpu()[0], _train_pipeline()
    cap, words, n = binding_cap(), _row_words(tier), data.x.shape[0]
    row = 2 * data.x.shape[1]
    inputs = np.ascontiguousarray(data.x, dtype="<u8").view("<u4").reshape(n, row)
    cluster = data.target_pos.astype(np.int64) - tier.first
    targets = np.where((cluster >= 0) & (cluster < tier.n_clusters), cluster, int(NO_TARGET)).astype(np.uint32)
    neg_hi = min(max(data.n_negatives - tier.first, 0) * tier.neurons, tier.n_neurons)
    chunk = max(1, min(n, cap // (4 * row), MAX_GRID * WORKGROUP))
    per_range = max(1, cap // (4 * words))
    dense = np.empty((tier.n_neurons, words), dtype=np.uint32)
    d_inputs, d_targets = _scratch(device, 4 * chunk * row), _scratch(device, 4 * chunk)
    for lo in range(0, tier.n_neurons, per_range):
        hi = min(lo + per_range, tier.n_neurons)
        rows = tier.order[lo:hi].astype(np.uint32).ravel()
        if tier.hashed:
            rows = np.concatenate([rows, tier.hashes[lo:hi].ravel()])
        d_order = _buffer(device, rows)
        d_cells = _scratch(device, 4 * (hi - lo) * words)  # WebGPU buffers start zeroed: every cell EMPTY
        for e0 in range(0, n, chunk):
            m = min(chunk, n - e0)
            device.queue.write_buffer(d_inputs, 0, np.ascontiguousarray(inputs[e0:e0 + m]))
            device.queue.write_buffer(d_targets, 0, np.ascontiguousarray(targets[e0:e0 + m]))
            negatives = max(0, min(hi, neg_hi) - lo)
            step = max(1, min(MAX_GRID, WRITES_PER_DISPATCH // m))
            dispatches = [(0, y0, min(step, negatives - y0)) for y0 in range(0, negatives, step)] + [(1, 0, 1)]
            for mode, y0, count in dispatches:
                params = [m, row, tier.order.shape[1], tier.neurons, lo, hi, neg_hi, mode, int(tier.hashed),
                          (hi - lo) * tier.order.shape[1], words, y0]
                group = bind(device, pipeline, [_buffer(device, np.array(params), "UNIFORM"), d_inputs, d_targets,
                                                d_order, d_cells])
                dispatch(device, pipeline, group, -(-m // WORKGROUP), count)
        dense[lo:hi] = np.frombuffer(device.queue.read_buffer(d_cells), dtype=np.uint32).reshape(hi - lo, words)
    return dataclasses.replace(tier, dense=dense)


class Wgpu:
    """The WGSL kernels through wgpu: evaluation (gates included) and dense training."""

    name = "wgpu"
    trains = gates = lsh = True

    def cannot_train(self, tier) -> str | None:
        return cannot_train(tier)

    def cannot_evaluate(self, tier) -> str | None:
        return cannot_evaluate(tier)

    def upload(self, tier):
        return tier  # each evaluate() builds its buffers: one call per tier and split

    def train(self, tier, data):
        return train_tier(tier, data)

    def evaluate(self, tier, batch) -> None:
        evaluate_tier(tier, batch)


BACKEND = Wgpu()
