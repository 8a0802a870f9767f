"""Train a tiered RAM LM: build the layout, wire the neurons, write the cells (docs/design.md §3)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ramsweep.config import Experiment
from ramsweep.engine.backends import cpu
from ramsweep.engine.connectivity import draw_connectivity, draw_hashes
from ramsweep.engine.layout import DENSE, Layout, Tier, build_layout
from ramsweep.errors import DataError

SPARSE_BATCH_ENTRIES = 1 << 26  # bounds the scratch of one sparse training batch (~0.6 GB)


@dataclass
class TierMemory:
    tier: Tier
    masks: np.ndarray  # (n_neurons, words) uint64: packed input bits each neuron reads (see cpu.py)
    order: np.ndarray  # (n_neurons, bits) uint16: the same bits in address order
    dense: np.ndarray  # (n_neurons, words) uint32 packed cells; (0, 1) when sparse
    offsets: np.ndarray  # (n_neurons + 1,) int64; (1,) when dense
    keys: np.ndarray  # sorted addresses per neuron: uint32 up to 32 bits, else uint64
    vals: np.ndarray  # (n_cells,) uint8 cell codes
    hashes: np.ndarray = field(default_factory=lambda: cpu.NO_HASHES)  # LSH: (n_neurons, bits) uint32 hash words in address order
    lsh_sample: tuple[int, int, int] | None = None  # LSH: (neurons counted, their distinct addresses, their cells)

    @property
    def cells_stored(self) -> int:
        return int(cells_per_neuron(self).sum())

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.masks, self.order, self.dense, self.offsets, self.keys, self.vals,
                                      self.hashes))


@dataclass
class Model:
    exp: Experiment
    layout: Layout
    memories: list[TierMemory]
    connectivity: list[np.ndarray]  # per tier (n_neurons, bits) int32 input-bit positions (docs/design.md §3)
    encode_s: float = 0.0  # layout + packing the training contexts, part of the train time
    throughput: dict = field(default_factory=dict)  # hybrid evaluation: tier -> device -> examples/s
    gates: list[TierMemory] = field(default_factory=list)  # gating: each tier's gate neurons; [] without


def examples_of(tokens: np.ndarray, context: int) -> np.ndarray:
    """Positions t >= context of a split, each one example (docs/design.md §3 "Examples")."""
    return np.arange(context, tokens.shape[0], dtype=np.int64)


def pack(tokens: np.ndarray, examples: np.ndarray, layout: Layout) -> np.ndarray:
    """(n_examples, words) uint64: each example's context tokens, packed (see cpu.py)."""
    words = (layout.n_input + 63) // 64
    codes = tokens if layout.codes is None else layout.codes[tokens]  # the encoding: ids as input codes
    return cpu.pack_inputs(codes, examples, layout.context, layout.bits_per_token, words)


def group_by_target(target_pos: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Example indices grouped by their target's cluster position: CSR (offsets, indices)."""
    counts = np.bincount(target_pos, minlength=vocab_size)
    offsets = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.argsort(target_pos, kind="stable").astype(np.int64)


def drawn_connectivity(exp: Experiment, layout: Layout) -> list[np.ndarray]:
    """Each tier's seeded connectivity (docs/design.md §3): what a model is wired with unless a search
    found better."""
    return [draw_connectivity(exp.seed, t.index, t.n_neurons, t.bits, layout.n_input) for t in layout.tiers]


def wire(conn: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(masks, order, perm): connections (neurons, bits) as packed-input bits (see cpu.py).

    Input bit p is bit bpt-1-(p % bpt) of context token p // bpt (MSB first, docs/design.md §3);
    packing stores a token's bit i at k*bpt + i. Address order is by word, high bit first;
    perm[n, i] is the connection (column of the drawn connectivity) at address bit i.
    """
    bpt = layout.bits_per_token
    q = (conn // bpt) * bpt + bpt - 1 - conn % bpt
    perm = np.argsort((q >> 6) * 64 + 63 - (q & 63), axis=1)
    order = np.take_along_axis(q, perm, axis=1).astype(np.uint16)
    words = (layout.n_input + 63) // 64
    bit = np.left_shift(np.uint64(1), (q & 63).astype(np.uint64))
    masks = np.stack([np.bitwise_or.reduce(np.where(q >> 6 == w, bit, np.uint64(0)), axis=1)
                      for w in range(words)], axis=1)
    return masks, order, perm


def train(exp: Experiment, tokens: np.ndarray, vocab_size: int, examples: np.ndarray | None = None,
          device: str = "cpu", connectivity: list[np.ndarray] | None = None, layout: Layout | None = None,
          progress: Callable[[float], None] | None = None) -> Model:
    """Train on `tokens` (the training split). `examples` may reorder the positions written;
    the memory does not depend on that order. `device` "cuda" writes the cells on the GPU
    (the same cells; a tier beyond its kernels, see cuda.trains, stays on the CPU).
    `connectivity` replaces the drawn wiring (a search's result); `layout` is the cluster
    order and tiers to use when they come from other tokens than these (a search trains on
    part of the training split but keeps the whole split's clusters). `progress(fraction)` is
    told after each tier, by its share of the neurons."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    if examples is None:
        examples = examples_of(tokens, exp.context)
    if examples.shape[0] == 0:
        raise DataError(f"experiment '{exp.name}': the training split has no example of context {exp.context}")
    t0 = time.perf_counter()
    layout = layout or build_layout(exp, tokens, vocab_size)
    connectivity = connectivity or drawn_connectivity(exp, layout)
    x = pack(tokens, examples, layout)
    target_pos = layout.position[tokens[examples]]
    # the CPU kernels go through examples by target (the GPU's take them as they come)
    by_target = functools.cache(lambda: group_by_target(target_pos, layout.vocab_size))
    if device == "cpu":
        by_target()
    encode_s = time.perf_counter() - t0
    memories, gates = [], []
    for tier, conn in zip(layout.tiers, connectivity):
        memories.append(train_tier(layout, tier, conn, x, by_target, target_pos, device, exp.seed))
        if layout.gates:  # trained exactly like the cluster's neurons, on their own wiring
            gate = layout.gates[tier.index]
            wiring = draw_connectivity(exp.seed, tier.index, gate.n_neurons, gate.bits, layout.n_input, True)
            gates.append(train_tier(layout, gate, wiring, x, by_target, target_pos, device, exp.seed))
        if progress is not None:
            progress(neuron_share(layout.tiers, tier.index))
    return Model(exp, layout, memories, connectivity, encode_s, gates=gates)


def neuron_share(tiers, index: int) -> float:
    """The share of all neurons in tiers 0..index: the engine's work is about proportional to it."""
    total = sum(t.n_neurons for t in tiers)
    return sum(t.n_neurons for t in tiers[: index + 1]) / max(1, total)


def train_tier(layout, tier, conn, x, by_target, target_pos, device="cpu", seed=0) -> TierMemory:
    masks, order, perm = wire(conn, layout)
    hashes = hashes_of(seed, tier, perm)
    memory = None
    if device == "cuda":
        from ramsweep.engine.backends import cuda  # numba-cuda only where a GPU is used

        if cuda.trains(x.shape[1], tier.backend != DENSE, tier.cell_bits):
            memory = cuda_train_tier(layout, tier, x, target_pos, masks, order, hashes)
    if memory is None:
        offsets_t, examples_t = by_target()
        common = (x, masks, order, hashes, tier.neurons, tier.first, layout.n_negatives, offsets_t, examples_t)
        if tier.backend == DENSE:
            dense = np.zeros((tier.n_neurons, max(1, (1 << tier.cell_bits) // 16)), dtype=np.uint32)
            cpu.train_dense(*common, dense)
            memory = TierMemory(tier, masks, order, dense, np.zeros(1, np.int64), np.zeros(0, np.uint32),
                                np.zeros(0, np.uint8), hashes)
        else:
            offsets, keys, vals = train_sparse(tier, layout, x.shape[0], offsets_t, common)
            memory = TierMemory(tier, masks, order, np.zeros((0, 1), np.uint32), offsets, keys, vals, hashes)
    if tier.lsh_bits:
        memory = dataclasses.replace(memory, lsh_sample=lsh_sample(memory, layout, x, by_target))
    return memory


LSH_SAMPLE = 64  # neurons of an LSH tier whose distinct addresses are counted (a sort each)


def lsh_sample(memory: TierMemory, layout, x, by_target) -> tuple[int, int, int]:
    """(neurons, distinct addresses, cells) of LSH_SAMPLE evenly spaced neurons of a hashed
    tier: what share of the addresses written had to share a cell, without sorting every
    neuron's writes (a tier of negatives: millions each)."""
    tier = memory.tier
    sample = np.unique(np.linspace(0, tier.n_neurons - 1, min(LSH_SAMPLE, tier.n_neurons)).astype(np.int64))
    offsets_t, examples_t = by_target()
    distinct = np.zeros(sample.shape[0], dtype=np.int64)
    cpu.distinct_addresses(x, memory.masks, memory.order, sample, tier.neurons, tier.first, layout.n_negatives,
                           offsets_t, examples_t, distinct)
    return int(sample.shape[0]), int(distinct.sum()), int(cells_per_neuron(memory)[sample].sum())


def cells_per_neuron(memory: TierMemory) -> np.ndarray:
    """Non-EMPTY cells of each neuron."""
    if memory.tier.backend == DENSE:
        out = np.empty(memory.dense.shape[0], dtype=np.int64)
        cpu.dense_cells(memory.dense, out)
        return out
    return np.diff(memory.offsets)


def hashes_of(seed: int, tier: Tier, perm: np.ndarray) -> np.ndarray:
    """An LSH tier's hash words, column k for the engine's address bit k (perm: wire's); a tier
    without LSH gets NO_HASHES. XOR is order-free, so the cell is the one docs/design.md §3 defines."""
    if not tier.lsh_bits:
        return cpu.NO_HASHES
    q = draw_hashes(seed, tier.index, tier.n_neurons, tier.bits, tier.lsh_bits)
    return np.ascontiguousarray(np.take_along_axis(q, perm, axis=1))


def cuda_train_tier(layout, tier, x, target_pos, masks, order, hashes) -> TierMemory:
    target_cluster = (target_pos - tier.first).astype(np.int32)
    target_cluster[(target_cluster < 0) | (target_cluster >= tier.clusters)] = -1
    n_negative_neurons = min(max(layout.n_negatives - tier.first, 0) * tier.neurons, tier.n_neurons)
    from ramsweep.engine.backends import cuda

    found = cuda.train_tier(x, target_cluster, order, tier.neurons, n_negative_neurons, tier.cell_bits,
                            tier.backend != DENSE, hashes)
    if tier.backend == DENSE:
        return TierMemory(tier, masks, order, found[0], np.zeros(1, np.int64), np.zeros(0, np.uint32),
                          np.zeros(0, np.uint8), hashes)
    return TierMemory(tier, masks, order, np.zeros((0, 1), np.uint32), *found, hashes)


def train_sparse(tier, layout, n_examples, offsets_t, common):
    """Sparse neurons in batches whose worst-case cell count fits SPARSE_BATCH_ENTRIES."""
    clusters = tier.first + np.arange(tier.n_neurons) // tier.neurons
    bound = (offsets_t[clusters + 1] - offsets_t[clusters]) + np.where(clusters < layout.n_negatives, n_examples, 0)
    bound = np.minimum(bound, 2 ** min(tier.cell_bits, 62))
    key_dtype = np.uint32 if tier.cell_bits <= 32 else np.uint64
    counts = np.zeros(tier.n_neurons, dtype=np.int64)
    keys_parts, vals_parts = [], []
    lo = 0
    while lo < tier.n_neurons:
        hi = lo + max(1, int(np.searchsorted(np.cumsum(bound[lo:]), SPARSE_BATCH_ENTRIES, side="right")))
        starts = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(bound[lo:hi], out=starts[1:])
        keys_out = np.empty(starts[-1], dtype=key_dtype)
        vals_out = np.empty(starts[-1], dtype=np.uint8)
        cpu.train_sparse_batch(*common, tier.cell_bits, lo, starts, keys_out, vals_out, counts[lo:hi])
        # Compact each neuron's used prefix into new arrays: views would keep the whole
        # worst-case batch alive until the end (gigabytes over a tier of negatives).
        used = [slice(starts[b], starts[b] + counts[lo + b]) for b in range(hi - lo)]
        keys_parts.append(np.concatenate([keys_out[u] for u in used]))
        vals_parts.append(np.concatenate([vals_out[u] for u in used]))
        del keys_out, vals_out
        lo = hi
    offsets = np.zeros(tier.n_neurons + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.concatenate(keys_parts), np.concatenate(vals_parts)


def cells(model: Model) -> dict[tuple[int, int, int], int]:
    """Every non-EMPTY cell as {(tier, neuron, address): code}, addresses in the connection
    order of docs/design.md §3 (the oracle's), undoing the engine's sorted order; for tests."""
    out = {}
    for mem, conn in zip(model.memories, model.connectivity):
        tier = mem.tier
        _, _, perm = wire(conn, model.layout)
        for n, a, code in stored_cells(mem):
            if tier.lsh_bits:  # a hash's cell is the same in any address order
                out[(tier.index, n, a)] = code
                continue
            bits = [(a >> (tier.bits - 1 - i)) & 1 for i in range(tier.bits)]
            out[(tier.index, n, sum(b << (tier.bits - 1 - int(perm[n, i])) for i, b in enumerate(bits)))] = code
    return out


def stored_cells(mem: TierMemory):
    """(neuron, engine address, code) of every non-EMPTY cell of one tier."""
    if mem.tier.backend == DENSE:
        codes = (mem.dense[:, :, None] >> (2 * np.arange(16, dtype=np.uint32))) & 3
        codes = codes.reshape(mem.tier.n_neurons, -1)[:, : 1 << mem.tier.cell_bits]
        for n, a in zip(*np.nonzero(codes)):
            yield int(n), int(a), int(codes[n, a])
    else:
        for n in range(mem.tier.n_neurons):
            for i in range(mem.offsets[n], mem.offsets[n + 1]):
                yield n, int(mem.keys[i]), int(mem.vals[i])
