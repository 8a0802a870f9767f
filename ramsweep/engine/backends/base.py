"""The Backend protocol: what every device's kernels (cpu.py, cuda.py, wgpu.py) give the engine.

A backend writes one tier's cells (`train`) and folds one tier's clusters into a batch of
examples (`evaluate`), with exactly the cells and counts of the CPU engine (docs/design.md §3).
Each call receives one frozen TierArrays, the tier's arrays and scalars by name; only the
innermost kernel launch unpacks it into plain arrays. What a backend can do is declared
(`trains`, `gates`, `lsh`), and what a tier asks beyond its kernels' limits is said by
`cannot_train` / `cannot_evaluate`: backends.choose() reads both and gives the tier to the
CPU engine instead, with the same results. Shapes and cell codes are documented in cpu.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


def _empty(shape, dtype):
    return field(default_factory=lambda: np.zeros(shape, dtype=dtype))


@dataclass(frozen=True)
class TierArrays:
    """One tier's neurons as the kernels read them: wiring, then cells once trained, then for
    evaluation the score tables and the gate neurons. The clusters are masks' rows / neurons
    (evaluation may pass the tier's first clusters only)."""

    neurons: int  # per cluster
    first: int  # cluster position of the tier's cluster 0
    bits: int  # width of a cell's index: the address, or its hash under LSH
    is_sparse: bool  # cells as sorted keys per neuron, else dense rows of 2-bit cells
    masks: np.ndarray  # (n_neurons, words) uint64: packed input bits each neuron reads
    order: np.ndarray  # (n_neurons, address bits) uint16: the same bits in address order
    hashes: np.ndarray  # LSH: (n_neurons, address bits) uint32 hash words; (0, 1) without
    dense: np.ndarray = _empty((0, 1), np.uint32)  # (n_neurons, 2**bits // 16) uint32, 16 cells a word
    offsets: np.ndarray = _empty(1, np.int64)  # sparse: (n_neurons + 1,) int64 into keys and vals
    keys: np.ndarray = _empty(0, np.uint32)  # sparse: (n_cells,) sorted per neuron; uint64 past 32 bits
    vals: np.ndarray = _empty(0, np.uint8)  # sparse: (n_cells,) uint8 cell codes
    score_table: np.ndarray | None = None  # evaluation: (neurons+1, neurons+1) float64 score of (TRUE, EMPTY) reads
    level_table: np.ndarray | None = None  # evaluation: (neurons+1, neurons+1) int32, its column in Batch.hist
    gate: TierArrays | None = None  # gating: each cluster's gate neurons (wiring and cells, no tables)
    gate_need: int = 0  # gating: TRUE gate reads that open a cluster's gate; 0 without gates

    @property
    def n_neurons(self) -> int:
        return self.masks.shape[0]

    @property
    def n_clusters(self) -> int:
        return self.masks.shape[0] // self.neurons

    @property
    def hashed(self) -> bool:
        return self.hashes.shape[0] > 0

    @property
    def nbytes(self) -> int:
        """Bytes of the wiring and cells, the gate's included."""
        own = sum(a.nbytes for a in (self.masks, self.order, self.hashes, self.dense, self.offsets, self.keys,
                                     self.vals))
        return own + (self.gate.nbytes if self.gate is not None else 0)


@dataclass(frozen=True)
class Batch:
    """Examples of a split and what evaluating a tier folds into each of them, in place: the
    running argmax, target score and histogram over the tiers so far, and this tier's counts."""

    x: np.ndarray  # (n, words) uint64: packed contexts
    target_pos: np.ndarray  # (n,) int32: cluster position of each target
    best_score: np.ndarray  # (n,) float64: highest score so far (ties: the earlier cluster)
    best_pos: np.ndarray  # (n,) int32: its cluster position
    target_score: np.ndarray  # (n,) float64: the target's score, set by the tier that holds it
    hist: np.ndarray  # (n, levels) int32: clusters of each example per score level
    empty_all: np.ndarray  # (n,) int64: EMPTY reads over the tier's clusters
    empty_target: np.ndarray  # (n,) int64: EMPTY reads of the target's cluster
    open_all: np.ndarray | None = None  # gating: (n,) int64 open gates over the tier's clusters
    target_open: np.ndarray | None = None  # gating: (n,) int64, 1 where the target's gate is open

    def __len__(self) -> int:
        return self.x.shape[0]

    def part(self, lo: int, hi: int) -> Batch:
        """Examples [lo, hi): views, so the kernels write into this batch's arrays."""
        return Batch(**{f.name: None if (a := getattr(self, f.name)) is None else a[lo:hi]
                        for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class TrainingSet:
    """The training examples every tier's cells are written from."""

    x: np.ndarray  # (n, words) uint64: packed contexts
    target_pos: np.ndarray  # (n,) cluster position of each target
    n_negatives: int  # clusters [0, n_negatives) are written FALSE at every example
    by_target: Callable[[], tuple[np.ndarray, np.ndarray]]  # examples grouped by target, CSR (offsets, indices); on first call


@runtime_checkable
class Backend(Protocol):
    """One device's kernels. A backend gives the CPU engine's cells and counts exactly, for any
    batch size and any split of a split into batches (the hybrid device relies on it)."""

    name: str  # "cpu", "cuda", "wgpu"
    trains: bool  # writes cells; else the CPU engine trains for it
    gates: bool  # evaluates gated tiers; else the CPU engine evaluates them
    lsh: bool  # reads hashed (LSH) tiers; else the CPU engine does

    def cannot_train(self, tier: TierArrays) -> str | None:
        """Why the kernels cannot write this tier's cells (None: they can)."""

    def cannot_evaluate(self, tier: TierArrays) -> str | None:
        """Why the kernels cannot evaluate this tier (None: they can)."""

    def upload(self, tier: TierArrays) -> TierArrays:
        """The tier with its tables where the kernels read them, for several evaluate() calls on
        one split (the CPU's: the tier itself)."""

    def train(self, tier: TierArrays, data: TrainingSet) -> TierArrays:
        """The tier (wiring, no cells) with its cells written from `data`."""

    def evaluate(self, tier: TierArrays, batch: Batch) -> None:
        """Fold the tier's clusters into `batch` (cpu.evaluate_tier's semantics); ValueError for a
        tier that cannot_evaluate() refuses."""
