"""Train a tiered RAM LM: build the layout, wire the neurons, write the cells (docs/design.md §3)."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ramsweep.config import Experiment
from ramsweep.engine import backends
from ramsweep.engine.backends import cpu
from ramsweep.engine.backends.base import TierArrays, TrainingSet
from ramsweep.engine.connectivity import draw_connectivity, draw_hashes
from ramsweep.engine.layout import DENSE, Layout, Tier, build_layout
from ramsweep.errors import DataError


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

    def arrays(self, **evaluation) -> TierArrays:
        """The tier as the backends' kernels read it; `evaluation`: its score tables and gate."""
        tier = self.tier
        return TierArrays(tier.neurons, tier.first, tier.cell_bits, tier.storage != DENSE, self.masks, self.order,
                          self.hashes, self.dense, self.offsets, self.keys, self.vals, **evaluation)

    @classmethod
    def of(cls, tier: Tier, arrays: TierArrays) -> TierMemory:
        """The memory of a tier a backend trained."""
        return cls(tier, arrays.masks, arrays.order, arrays.dense, arrays.offsets, arrays.keys, arrays.vals,
                   arrays.hashes)


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
    (the same cells; a tier beyond its kernels, see Backend.cannot_train, stays on the CPU).
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
    data = TrainingSet(x, target_pos, layout.n_negatives, by_target)
    memories, gates = [], []
    for tier, conn in zip(layout.tiers, connectivity):
        memories.append(train_tier(layout, tier, conn, data, device, exp.seed))
        if layout.gates:  # trained exactly like the cluster's neurons, on their own wiring
            gate = layout.gates[tier.index]
            wiring = draw_connectivity(exp.seed, tier.index, gate.n_neurons, gate.bits, layout.n_input, True)
            gates.append(train_tier(layout, gate, wiring, data, device, exp.seed))
        if progress is not None:
            progress(neuron_share(layout.tiers, tier.index))
    return Model(exp, layout, memories, connectivity, encode_s, gates=gates)


def neuron_share(tiers, index: int) -> float:
    """The share of all neurons in tiers 0..index: the engine's work is about proportional to it."""
    total = sum(t.n_neurons for t in tiers)
    return sum(t.n_neurons for t in tiers[: index + 1]) / max(1, total)


def train_tier(layout, tier, conn, data: TrainingSet, device="cpu", seed=0) -> TierMemory:
    """One tier's memory, its cells written by `device`'s backend (or the CPU engine's, the same
    cells, where that backend cannot: backends.choose)."""
    masks, order, perm = wire(conn, layout)
    wiring = TierArrays(tier.neurons, tier.first, tier.cell_bits, tier.storage != DENSE, masks, order,
                        hashes_of(seed, tier, perm))
    memory = TierMemory.of(tier, backends.choose(device, wiring, training=True).train(wiring, data))
    if tier.lsh_bits:
        memory = dataclasses.replace(memory, lsh_sample=lsh_sample(memory, layout, data.x, data.by_target))
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
    if memory.tier.storage == DENSE:
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
    if mem.tier.storage == DENSE:
        codes = (mem.dense[:, :, None] >> (2 * np.arange(16, dtype=np.uint32))) & 3
        codes = codes.reshape(mem.tier.n_neurons, -1)[:, : 1 << mem.tier.cell_bits]
        for n, a in zip(*np.nonzero(codes)):
            yield int(n), int(a), int(codes[n, a])
    else:
        for n in range(mem.tier.n_neurons):
            for i in range(mem.offsets[n], mem.offsets[n + 1]):
                yield n, int(mem.keys[i]), int(mem.vals[i])
