"""Where every cluster and neuron lives: cluster order, tiers, negatives, memory kinds.

Pure numpy and plain data (docs/design.md §3 "Clusters and tiers", "Memory kinds"); the
kernels receive the arrays this builds, never the objects.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from ramsweep.config import MAX_CONTEXT, Experiment, bits_per_token

DENSE, SPARSE, LSH = "dense", "sparse", "lsh"
DENSE_ALWAYS_BYTES = 256 * 2**20  # memory: auto makes a SPARSE tier DENSE when all of it fits here


@dataclass(frozen=True)
class Tier:
    index: int
    first: int  # position of its first cluster in cluster order
    clusters: int
    neurons: int  # per cluster
    bits: int
    storage: str  # DENSE | SPARSE: how the cells are stored (an LSH tier's hashed cells too)
    lsh_bits: int = 0  # LSH memory: cells indexed by a 2^lsh_bits hash of the address (0: by the address)

    @property
    def n_neurons(self) -> int:
        return self.clusters * self.neurons

    @property
    def cell_bits(self) -> int:
        """Width of a cell's index: the address, or its hash under LSH."""
        return self.lsh_bits or self.bits

    @property
    def memory(self) -> str:
        """The tier's memory as docs/design.md §3 names it: dense, sparse or lsh (then stored dense or sparse)."""
        return LSH if self.lsh_bits else self.storage


@dataclass(frozen=True)
class Layout:
    vocab_size: int
    context: int
    bits_per_token: int
    order: np.ndarray  # (V,) int32: token id at each cluster position
    position: np.ndarray  # (V,) int32: cluster position of each token id
    tier_of_position: np.ndarray  # (V,) int16: tier of each cluster position
    n_negatives: int  # negatives are cluster positions [0, n_negatives)
    tiers: tuple[Tier, ...]
    writes: np.ndarray  # (V,) int64: training writes each neuron of a cluster position receives
    frequencies: Frequencies  # what it was built from (planning estimates read its caches)
    gates: tuple[Tier, ...] = ()  # gating: each tier's gate neurons (same index and clusters); () without
    codes: np.ndarray | None = None  # (V,) int32: the input code of each token id (encoding); None: the id itself

    @property
    def n_input(self) -> int:
        return self.context * self.bits_per_token


def cluster_order(train_tokens: np.ndarray, vocab_size: int) -> tuple[np.ndarray, int]:
    """Token ids by descending training frequency, ties (and unseen tokens) by ascending id.

    Returns the order and the number of tokens seen in training.
    """
    counts = np.bincount(train_tokens, minlength=vocab_size)
    # lexsort sorts by the last key first: -count, then id.
    order = np.lexsort((np.arange(vocab_size), -counts)).astype(np.int32)
    return order, int(np.count_nonzero(counts))


def check_supported(exp: Experiment, vocab_size: int) -> None:
    """Everything that can be known wrong before training."""
    exp.check_against_data(vocab_size)


@dataclass(frozen=True)
class Frequencies:
    """What layouts need of a training split, computed once: a grid of thousands of configs
    on one corpus plans and checks each config in O(vocabulary), not O(training tokens)."""

    vocab_size: int
    tokens: int  # length of the training split
    order: np.ndarray  # (V,) int32: cluster order (cluster_order)
    position: np.ndarray  # (V,) int32: cluster position of each token id
    n_seen: int
    counts: np.ndarray  # (V,) int64: occurrences of each token id in the whole split
    head: np.ndarray  # the first MAX_CONTEXT tokens: they are never a target
    appearance: np.ndarray  # (V,) int32: token ids by first appearance in the split, then unseen ids ascending
    _writes: dict = field(default_factory=dict, compare=False, repr=False)
    _cells: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, train_tokens: np.ndarray, vocab_size: int) -> Frequencies:
        """The counts of a training split. The last few splits counted are kept, by identity: a
        sweep asks again for every experiment on the same corpus, whose arrays are never written."""
        for ref, vocab, freq in _COUNTED:
            if ref() is train_tokens and vocab == vocab_size:
                return freq
        freq = cls.count(train_tokens, vocab_size)
        _COUNTED.insert(0, (weakref.ref(train_tokens), vocab_size, freq))
        del _COUNTED[COUNTED_KEPT:]
        return freq

    @classmethod
    def count(cls, train_tokens: np.ndarray, vocab_size: int) -> Frequencies:
        order, n_seen = cluster_order(train_tokens, vocab_size)
        position = np.empty(vocab_size, dtype=np.int32)
        position[order] = np.arange(vocab_size, dtype=np.int32)
        counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.int64)
        seen, first = np.unique(train_tokens, return_index=True)
        unseen = np.setdiff1d(np.arange(vocab_size), seen)
        appearance = np.concatenate([seen[np.argsort(first)], unseen]).astype(np.int32)
        return cls(vocab_size, int(train_tokens.shape[0]), order, position, n_seen, counts,
                   np.array(train_tokens[:MAX_CONTEXT], dtype=np.int64), appearance)

    def writes(self, context: int, n_negatives: int) -> np.ndarray:
        """Training writes each neuron of a cluster receives, by cluster position: the examples
        whose target it is (positions t >= context), plus every example for a negative cluster.
        (Kept per (context, negatives): do not write into the array returned.)"""
        if (context, n_negatives) not in self._writes:
            targets = self.counts - np.bincount(self.head[:context], minlength=self.vocab_size)
            writes = targets[self.order]
            writes[:n_negatives] += max(0, self.tokens - context)
            self._writes[(context, n_negatives)] = writes
        return self._writes[(context, n_negatives)]

    def cells(self, context: int, n_negatives: int, first: int, count: int, bits: int, bound: bool,
              lsh_bits: int = 0) -> tuple[float, int]:
        """(mean, total) cells of the neurons of clusters [first, first + count): at the expected
        fill (expected_cells), or at most (bound: min(2**bits, writes)). Under LSH the distinct
        addresses fall into 2^lsh_bits cells. Kept per tier, as a grid asks the same tier again
        in thousands of configs."""
        key = (context, n_negatives, first, count, bits, bound, lsh_bits)
        if key not in self._cells:
            writes = self.writes(context, n_negatives)[first : first + count]
            cells = np.minimum(writes, 2 ** min(bits, 62)) if bound else expected_cells(bits, writes)
            if lsh_bits:
                cells = np.minimum(cells, 2**lsh_bits) if bound else expected_cells(lsh_bits, cells)
            self._cells[key] = (float(cells.mean()) if count else 0.0, int(np.ceil(cells).astype(np.int64).sum()))
        return self._cells[key]


COUNTED_KEPT = 4  # training splits whose Frequencies are kept (a corpus, a search's part of it, ...)
_COUNTED: list = []  # (weak reference to the token array, vocabulary size, Frequencies), newest first


def build_layout(exp: Experiment, train_tokens: np.ndarray, vocab_size: int) -> Layout:
    return layout_of(exp, Frequencies.of(train_tokens, vocab_size))


def layout_of(exp: Experiment, freq: Frequencies) -> Layout:
    vocab_size = freq.vocab_size
    check_supported(exp, vocab_size)
    order, position = freq.order, freq.position
    n_negatives = min(exp.negatives, freq.n_seen)  # "the most frequent tokens of the training split": seen ones
    writes = freq.writes(exp.context, n_negatives)
    tiers, gates, first = [], [], 0
    tier_of_position = np.empty(vocab_size, dtype=np.int16)

    def tier(i: int, first: int, count: int, neurons: int, bits: int) -> Tier:
        storage = exp.memory_kind(bits)
        lsh_bits = exp.lsh_bits if storage == LSH else 0
        storage = SPARSE if storage == LSH else storage
        expected_mean = freq.cells(exp.context, n_negatives, first, count, bits, False, lsh_bits)[0]
        if storage == SPARSE and exp.memory == "auto" and dense_pays(lsh_bits or bits, count * neurons, expected_mean):
            storage = DENSE
        return Tier(i, first, count, neurons, bits, storage, lsh_bits)

    for i, (spec, count) in enumerate(zip(exp.tiers.tiers, exp.tiers.cluster_counts(vocab_size))):
        tiers.append(tier(i, first, count, spec.neurons, spec.bits))
        if exp.gating is not None:  # the tier's gate neurons: the same clusters, their own shape
            gates.append(tier(i, first, count, exp.gating.neurons, exp.gating.bits))
        tier_of_position[first : first + count] = i
        first += count
    return Layout(
        vocab_size=vocab_size,
        context=exp.context,
        bits_per_token=bits_per_token(vocab_size),
        order=order,
        position=position,
        tier_of_position=tier_of_position,
        n_negatives=n_negatives,
        tiers=tuple(tiers),
        writes=writes,
        frequencies=freq,
        gates=tuple(gates),
        codes=input_codes(exp, freq),
    )


def input_codes(exp: Experiment, freq: Frequencies) -> np.ndarray | None:
    """Each token id's input code (docs/design.md §3 "Input bits", under the experiment's `encoding`):
    native, the id itself (None); frequency, its training-frequency rank (its cluster position);
    appearance, the rank of its first appearance in the training split (unseen ids after, in
    order). `gray` then takes each code's Gray code, so neighbouring ranks differ in one bit.
    Every one is a permutation of 0..V-1, so the input keeps its width."""
    if exp.encoding == "native" and not exp.gray:
        return None
    if exp.encoding == "frequency":
        codes = freq.position.astype(np.int32)
    elif exp.encoding == "appearance":
        codes = np.empty(freq.vocab_size, dtype=np.int32)
        codes[freq.appearance] = np.arange(freq.vocab_size, dtype=np.int32)
    else:
        codes = np.arange(freq.vocab_size, dtype=np.int32)
    return codes ^ (codes >> 1) if exp.gray else codes


def expected_cells(bits: int, writes: np.ndarray) -> np.ndarray:
    """Distinct cells a neuron is expected to fill with `writes` writes spread evenly over its
    2^bits addresses (real contexts repeat, so this errs high)."""
    space = float(2 ** min(bits, 64))
    return space * -np.expm1(-writes / space)


def dense_pays(bits: int, n_neurons: int, expected_mean: float) -> bool:
    """memory: auto. DENSE reads a cell in one load where SPARSE binary-searches, so a tier
    is DENSE when that costs little memory: the whole tier within DENSE_ALWAYS_BYTES, or no
    more than SPARSE (key + value per cell) at the expected fill (`expected_mean` cells per
    neuron, Frequencies.cells), whatever the bits."""
    if bits > 34:  # 2^bits / 4 bytes per neuron: beyond 4 GiB a neuron is never worth it
        return False
    dense = max(1, (1 << bits) // 16) * 4
    if dense * n_neurons <= DENSE_ALWAYS_BYTES:
        return True
    return dense <= expected_mean * (1 + (4 if bits <= 32 else 8))


def estimate_memory_bytes(layout: Layout) -> int:
    """An upper bound of the trained model's arrays (train.TierMemory.nbytes summed), from the
    config and the training split's frequencies alone: for `--dry-run`, before any training.

    DENSE tiers are exact: (neurons, max(1, 2**bits // 16)) uint32 words. A SPARSE neuron
    stores at most min(2**bits, writes) cells of key (4 bytes up to 32 bits, else 8) + 1
    value byte (Frequencies.writes). Training's scratch (packed inputs, one sparse batch) is
    not counted.
    """
    return sum(tier_bytes(layout, tier, tier_cells(layout, tier, bound=True)) for tier in layout.tiers + layout.gates)


def expected_tier_bytes(layout: Layout, tier: Tier) -> int:
    """One tier's arrays at the expected fill (expected_cells): the planning estimate."""
    return tier_bytes(layout, tier, tier_cells(layout, tier, bound=False))


def tier_cells(layout: Layout, tier: Tier, bound: bool) -> int:
    """Cells one neuron of each of the tier's clusters stores, summed over the clusters."""
    return layout.frequencies.cells(layout.context, layout.n_negatives, tier.first, tier.clusters, tier.bits, bound,
                                    tier.lsh_bits)[1]


def tier_bytes(layout: Layout, tier: Tier, cells: int) -> int:
    """One tier's arrays (train.TierMemory.nbytes) when its clusters' neurons store `cells`
    cells, summed over its clusters, each (SPARSE; a DENSE tier's size is fixed)."""
    words = (layout.n_input + 63) // 64
    total = tier.n_neurons * (words * 8 + tier.bits * (2 + (4 if tier.lsh_bits else 0)))  # masks, order, hashes
    if tier.storage == DENSE:
        return total + tier.n_neurons * max(1, (1 << tier.cell_bits) // 16) * 4 + 8  # + (1,) offsets
    cell_bytes = (4 if tier.cell_bits <= 32 else 8) + 1
    return total + cells * tier.neurons * cell_bytes + (tier.n_neurons + 1) * 8
