"""wgpu evaluation kernel (WebGPU: Metal on macOS, Vulkan elsewhere): evaluate one tier with
exactly the counts and argmax of cpu.evaluate_tier (docs/design.md §3; shapes and cell codes as
documented in cpu.py). Training stays on the CPU engine.

The WGSL kernel (shaders/evaluate.wgsl) runs one invocation per example over a range of the
tier's clusters. WGSL has neither 64-bit integers nor a float we could trust to match the
CPU's, so what it reads and writes is all u32:
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
  stats   (chunk, 5)               best level + 1 and its cluster, target level + 1, the
                                   target's EMPTY reads, all EMPTY reads
Scores are integer levels (the tier's own, renumbered from level_table); the host turns levels
into scores and merges tiers with a strict '>', so an earlier tier keeps a tie, as on the CPU.
A tier beyond the kernel (wider than 32 bits) gets a reason from why_not(), and score() runs
it on the CPU engine instead; evaluate_tier() itself raises ValueError for one.

One storage buffer may hold at most maxStorageBufferBindingSize bytes (128 MiB on Vulkan and
lavapipe): the tier's clusters are cut into consecutive ranges whose tables fit under that
cap, one dispatch each. Ranges run in cluster order and carry the argmax, target and empty
counts in `stats`, so they merge exactly like one pass. Ranges are also capped in neurons so
one dispatch stays short (GPU watchdogs kill command buffers that run for seconds), and
examples go through in chunks that keep `hist` under the cap.
"""

from __future__ import annotations

import os
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from ramsweep.engine.backends.levels import level_scores, tier_levels

GATES = False  # gated tiers are evaluated by the CPU engine (docs/design.md §3 asks gates of the CPU and CUDA)
WORKGROUP = 64  # the shader's @workgroup_size
CHUNK = 1 << 16  # examples per dispatch at most
NEURONS_PER_DISPATCH = 1 << 12  # with CHUNK: at most 2^28 lookups (a fraction of a second) per dispatch
STATS = 5  # u32 per example in `stats`
MAX_BITS = 32  # addresses and sparse keys are u32
BINDING_CAP: int | None = None  # bytes per storage buffer; None: the device's limit (tests shrink it)
NO_TARGET = np.uint32(0xFFFFFFFF)  # target of the padding rows: matches no cluster
SHADER = Path(__file__).with_name("shaders") / "evaluate.wgsl"


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


def why_not(words: int, level_table: np.ndarray, bits: int) -> str | None:
    """Why this kernel cannot evaluate a tier (None: it can); the CPU engine then does."""
    return unsupported(bits, len(tier_levels(level_table)[0]), 2 * words + 1, binding_cap())


def cluster_bytes(order, neurons, is_sparse, dense, offsets, hashed=False) -> np.ndarray:
    """Bytes of each cluster's tables as uploaded (u32 order rows and hash words, dense rows or
    keys + vals)."""
    n_clusters = order.shape[0] // neurons
    per_neuron = 4 * order.shape[1] * (2 if hashed else 1) + (4 + 5 * np.diff(offsets) if is_sparse
                                                             else 4 * dense.shape[1])
    return np.broadcast_to(per_neuron, (n_clusters * neurons,)).reshape(n_clusters, neurons).sum(axis=1)


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


def _tables(order, hashes, neurons, is_sparse, dense, offsets, keys, vals, c0, c1):
    """The u32 tables (order then hash words, cells, offsets, vals) of clusters [c0, c1)."""
    n0, n1 = c0 * neurons, c1 * neurons
    rows = order[n0:n1].astype(np.uint32)
    if hashes.shape[0]:
        rows = np.concatenate([rows.ravel(), hashes[n0:n1].ravel()])
    if not is_sparse:
        return rows, dense[n0:n1], np.zeros(1, np.uint32), np.zeros(1, np.uint32)
    k0, k1 = int(offsets[n0]), int(offsets[n1])
    packed = np.zeros(-(-(k1 - k0) // 4) * 4, dtype=np.uint8)
    packed[: k1 - k0] = vals[k0:k1]
    return rows, keys[k0:k1].astype(np.uint32), (offsets[n0 : n1 + 1] - k0).astype(np.uint32), packed.view(np.uint32)


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


def _bind_groups(device, pipeline, ranges, chunk, row, order, hashes, neurons, first, is_sparse, dense, offsets,
                 keys, vals, level_table, n_levels, d_inputs, d_hist, d_stats) -> list:
    """One bind group per cluster range: its params and tables, and the shared chunk buffers."""
    d_levels = _buffer(device, level_table)
    groups = []
    for c0, c1 in ranges:
        hashed = int(hashes.shape[0] > 0)
        params = [chunk, row, order.shape[1], neurons, c0, c1, first, n_levels, int(is_sparse), dense.shape[1],
                  hashed, (c1 - c0) * neurons * order.shape[1] * hashed]
        d_order, d_cells, d_offsets, d_vals = (_buffer(device, t) for t in _tables(
            order, hashes, neurons, is_sparse, dense, offsets, keys, vals, c0, c1))
        buffers = [_buffer(device, np.array(params), "UNIFORM"), d_inputs, d_order, d_levels, d_cells, d_offsets,
                   d_vals, d_hist, d_stats]  # in the shader's binding order
        entries = [{"binding": i, "resource": {"buffer": b, "offset": 0, "size": b.size}}
                   for i, b in enumerate(buffers)]
        groups.append(device.create_bind_group(layout=pipeline.get_bind_group_layout(0), entries=entries))
    return groups


def evaluate_tier(x, target_pos, masks, order, hashes, neurons, first, is_sparse, dense, offsets, keys, vals,
                  score_table, level_table, best_score, best_pos, target_score, empty_all, empty_target, hist,
                  g_need=0, *gates):
    """cpu.evaluate_tier through wgpu (same arguments less chunk and block; same results). No
    gates (GATES): g_need must be 0."""
    if g_need:
        raise ValueError("the wgpu kernel has no gates; score() evaluates gated tiers on the CPU engine")
    n = hist.shape[0]
    device, pipeline = _gpu()
    cap = binding_cap()
    row = 2 * x.shape[1] + 1
    used, local_table = tier_levels(level_table)
    n_levels = len(used)
    reason = unsupported(32 if hashes.shape[0] else order.shape[1], n_levels, row, cap)  # a hash fits a u32
    if reason:
        raise ValueError(reason)
    n_clusters = order.shape[0] // neurons
    if n == 0 or n_clusters == 0:
        return
    chunk = min(CHUNK, cap // (4 * max(n_levels, row, STATS)))
    chunk = -(-n // -(-n // chunk))  # equal chunks: the last one pads few rows
    ranges = cluster_ranges(cluster_bytes(order, neurons, is_sparse, dense, offsets, hashes.shape[0] > 0), cap,
                            max(1, NEURONS_PER_DISPATCH // neurons))
    d_inputs, d_hist, d_stats = (_scratch(device, 4 * chunk * k) for k in (row, n_levels, STATS))
    groups = _bind_groups(device, pipeline, ranges, chunk, row, order, hashes, neurons, first, is_sparse, dense, offsets,
                          keys, vals, local_table, n_levels, d_inputs, d_hist, d_stats)
    scores = level_scores(score_table, level_table, hist.shape[1])[used]
    rows = np.empty((chunk, row), dtype=np.uint32)  # padding rows: zero context, no target
    zeros = np.zeros(chunk * max(n_levels, STATS), dtype=np.uint32)
    for e0 in range(0, n, chunk):
        m = min(chunk, n - e0)
        rows[:] = 0
        rows[:m, :-1] = np.ascontiguousarray(x[e0 : e0 + m], dtype="<u8").view("<u4")
        rows[:, -1] = NO_TARGET
        rows[:m, -1] = target_pos[e0 : e0 + m]
        device.queue.write_buffer(d_inputs, 0, rows)
        device.queue.write_buffer(d_hist, 0, zeros[: chunk * n_levels])
        device.queue.write_buffer(d_stats, 0, zeros[: chunk * STATS])
        for group in groups:  # one submit each: they run in cluster order, and each one is short
            encoder = device.create_command_encoder()
            compute = encoder.begin_compute_pass()
            compute.set_pipeline(pipeline)
            compute.set_bind_group(0, group)
            compute.dispatch_workgroups(-(-chunk // WORKGROUP))
            compute.end()
            device.queue.submit([encoder.finish()])
        got = np.frombuffer(device.queue.read_buffer(d_hist), dtype=np.uint32).reshape(chunk, n_levels)
        hist[e0 : e0 + m, used] += got[:m].astype(hist.dtype)
        stats = np.frombuffer(device.queue.read_buffer(d_stats), dtype=np.uint32).reshape(chunk, STATS)[:m]
        sl = slice(e0, e0 + m)
        _merge(stats, scores, first, best_score[sl], best_pos[sl], target_score[sl], empty_all[sl], empty_target[sl])


def _merge(stats, scores, first, best_score, best_pos, target_score, empty_all, empty_target):
    """Fold one chunk's tier results into the running ones (views of the caller's arrays)."""
    best_level, best_c, target_level, target_empty, empties = stats.T.astype(np.int64)
    tier_score = scores[best_level - 1]  # every example met at least one cluster
    better = tier_score > best_score  # strict: an earlier tier keeps a tie
    best_score[better] = tier_score[better]
    best_pos[better] = first + best_c[better]
    hit = target_level > 0
    target_score[hit] = scores[target_level[hit] - 1]
    empty_target[hit] = target_empty[hit]
    empty_all += empties
