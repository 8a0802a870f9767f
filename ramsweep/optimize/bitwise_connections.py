"""§5's connectivity search on a bitwise model: a search in phases' `connections` phase
(docs/design.md §5b), on the sizes the phases before it chose.

The units are the bit clusters, in cluster order, each a genome of its (neurons, bits) connection
array, searched by optimize/search.py's GA and TS (its mutation, crossover, tabu, aspiration,
patience and history, §5's semantics) and checkpointed by optimize/checkpoint.py (every array
checked on restore). What is bitwise here is the fitness, `ConnectionScorer`, which search.py and
checkpoint.py drive as they drive the tiered model's optimize/fitness.Fitness.

Incremental and exact. Training is per neuron: neuron n of cluster i samples with its own stream
(seed, "sample", i, n) and its cells depend only on its connections and the data, so a candidate
that rewires k neurons of cluster i retrains those k alone (bitwise.train_rows, the same streams)
on the search part and reads their codes on the fitness slice. Per example the scorer keeps
cluster i's integer sums (quarters, #EMPTY, #no decision: bitwise.code_increments' fields) and
each neuron's increments; a candidate's sums are the current ones minus its old neurons'
increments plus its new ones, the very operands of a retrain's bitwise.read_cluster, so
bitwise.p_of_quarters gives the same P float, and the closed forms the same CE and best code.
Codes are cached per (cluster, neuron, connections as a set), so a GA child made of neurons seen
before costs no training; the new neurons of a generation are trained together (a cluster's in one
call), on the CPU engine or, given `gpu` = engine/bitwise_cuda.py, by its kernels (train_rows;
DENSE there even for a SPARSE cluster, whose absent cell is the DENSE cell never written): the
same cells and codes. Under a CE fitness a candidate that changes the focus cluster alone is
scored from its split closed forms (_focus_ce). On the GPU its rows stay there
(bitwise_cuda.RowStore): the candidates' swapped sums are made there, and only those integers
reach the host, whose closed forms give the same floats. WGSL's kernels (bitwise_wgpu) have no
train_rows: with them the rows train on the CPU engine.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ramsweep.config import Experiment, bits_per_token
from ramsweep.engine import bitwise
from ramsweep.engine import bitwise_reference as oracle
from ramsweep.engine.connectivity import draw_bit_connectivity
from ramsweep.engine.layout import DENSE
from ramsweep.optimize import checkpoint as checkpoints
from ramsweep.optimize import search
from ramsweep.optimize.fitness import Change, Value
from ramsweep.optimize.sizes import scored_examples

ROW_CACHE_BYTES = 1 << 30  # rewired neurons' codes on the fitness slice, least recently used dropped first
MATRIX_CACHE_BYTES = 2 << 30  # each cluster's current neurons' codes (the unit searched is always kept)
BATCH_BYTES = 1 << 30  # the new codes (and trained cells, on the CPU) one training call may hold
GPU_ROW_BYTES = 1 << 30  # a row trains DENSE on a GPU up to this (its codes are all the search reads)
GPU_BATCH_BYTES = 16 << 30  # DENSE cells one training call may hold on a GPU (at most half its free memory)
GPU_STORE_BYTES = 4 << 30  # rewired neurons' codes kept on a GPU (bitwise_cuda.RowStore)
GPU_STORE_ROWS = 1 << 16  # ... and at most this many rows (a small fitness slice needs no more)


@dataclass(frozen=True)
class Unit:
    """What search.Genome.clusters reads of a unit's tier: its first cluster and neurons per cluster."""

    first: int
    neurons: int


@dataclass(frozen=True)
class Shape:
    """The scorer's `layout` as search.py and checkpoint.py read it: the input's width, a unit a cluster."""

    n_input: int
    tiers: tuple[Unit, ...]


@dataclass(frozen=True)
class Drawn:
    """The scorer's `model` as checkpoint.encode reads it: the drawn wiring the moved neurons are kept against."""

    connectivity: list[np.ndarray]


# ---- kernels ------------------------------------------------------------------------------------------

@njit(cache=True, parallel=True, nogil=True)
def swapped_sums(quarters, empty, none, matrix, old, new, out_quarters, out_empty, out_none):
    """Per example e, a cluster's sums (quarters, #EMPTY, #no decision: (n_examples,) int64) with the
    increments of its neurons `old` (rows of matrix (neurons, n_examples) uint8) taken out and the
    rows of new (k, n_examples) uint8 put in: integers, so exactly the sums of the rewired cluster."""
    for e in prange(quarters.shape[0]):
        q, n_empty, n_none = quarters[e], empty[e], none[e]
        for k in range(old.shape[0]):
            v = np.int64(matrix[old[k], e])
            w = np.int64(new[k, e])
            q += (w & 7) - (v & 7)
            n_empty += ((w >> 3) & 1) - ((v >> 3) & 1)
            n_none += ((w >> 4) & 1) - ((v >> 4) & 1)
        out_quarters[e], out_empty[e], out_none[e] = q, n_empty, n_none


@njit(cache=True, parallel=True, nogil=True)
def focus_losses(quarters, n_empty, matrix, old, new, empty_value, neurons, log_a0, log_a1, rest_target,
                 target_bit, out):
    """Per example the CE at T = 1 of the model whose focus cluster has the sums (quarters, #EMPTY)
    with its neurons `old` (rows of matrix) swapped for the rows of new (swapped_sums' integers)
    and whose other clusters are as when bitwise.split_log_z split them: P (p_of_quarters'
    expression, clamped as bit_logs), log Z = logaddexp(ln(1 − P) + log_a0, ln P + log_a1), minus
    the target's score; into out (n,). A block of examples at a time, a row at a time within it
    (each row read in order)."""
    n, block = quarters.shape[0], 2048
    for c in prange((n + block - 1) // block):
        lo = c * block
        hi = min(n, lo + block)
        q = quarters[lo:hi].copy()
        m = n_empty[lo:hi].copy()
        for k in range(old.shape[0]):
            was, now = matrix[old[k], lo:hi], new[k, lo:hi]
            for e in range(hi - lo):
                v, w = np.int64(was[e]), np.int64(now[e])
                q[e] += (w & 7) - (v & 7)
                m[e] += ((w >> 3) & 1) - ((v >> 3) & 1)
        for e in range(hi - lo):
            p = (q[e] / 4.0 + empty_value * m[e]) / neurons
            p = min(max(p, bitwise.P_MIN), 1.0 - bitwise.P_MIN)
            log_p, log_q = math.log(p), math.log1p(-p)
            a, b = log_q + log_a0[lo + e], log_p + log_a1[lo + e]
            big, small = (a, b) if a >= b else (b, a)
            out[lo + e] = (big + math.log1p(math.exp(small - big)) - rest_target[lo + e]
                           - (log_p if target_bit[lo + e] else log_q))


def row_key(i: int, neuron: int, row: np.ndarray) -> tuple:
    """A neuron's codes depend on its cluster, its id (its sampling stream) and its connections as a
    set (the engine's address lists them in sorted order)."""
    return i, int(neuron), np.sort(row).astype(np.int32).tobytes()


def moved(conn: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The neurons (int64) whose connections differ as sets between two (neurons, bits) arrays."""
    return np.flatnonzero((np.sort(conn, axis=1) != np.sort(base, axis=1)).any(axis=1)).astype(np.int64)


# ---- the fitness -------------------------------------------------------------------------------------

class ConnectionScorer:
    """The fitness of a bitwise model's connectivity, trained on `train_tokens` (the search part)
    and scored on `score_tokens` (the fitness slice), rewired neuron by neuron, exactly as a
    retrain: search.py's and checkpoint.py's Fitness for a bitwise model (conn, model.connectivity,
    layout.n_input, set_scope, evaluate, commit, current, evaluations).

    `neurons`, `bits`: the sizes (one value or one per cluster); it starts from their drawn wiring.
    `fitness`: ce or accuracy (the loss is CE or −accuracy). `drawn_codes(i, neurons, bits)`: the
    (neurons, n_examples) uint8 code increments of cluster i's drawn neurons on score_tokens (e.g. a
    SizeScorer's matrices: drawn_codes_from); by default trained here. `gpu`: engine/bitwise_cuda.py to
    train the rows (and the default drawn codes) and read their codes on the GPU, or None: the CPU
    engine (a module without train_rows, as bitwise_wgpu, leaves them on the CPU engine too). `stats`
    counts the work."""

    def __init__(self, train_tokens, score_tokens, vocab_size: int, *, codes, context: int, seed: int,
                 sample_rate: float, cell_mode: str, empty_value: float = 0.0, neurons, bits, fitness: str = "ce",
                 memory: str = "auto", drawn_codes: Callable[[int, int, int], np.ndarray] | None = None,
                 row_cache_bytes: int = ROW_CACHE_BYTES, matrix_cache_bytes: int = MATRIX_CACHE_BYTES,
                 batch_bytes: int = BATCH_BYTES, gpu=None):
        if cell_mode not in oracle.CELL_MODES:
            raise ValueError(f"unknown cell_mode {cell_mode!r}: one of {', '.join(oracle.CELL_MODES)}")
        if fitness not in ("ce", "accuracy"):
            raise ValueError(f"a bitwise connectivity search's fitness is ce or accuracy, got {fitness!r}")
        self.n_bits = bits_per_token(vocab_size)
        self.neurons = oracle.per_cluster(neurons, self.n_bits, "neurons")
        self.bits = oracle.per_cluster(bits, self.n_bits, "bits")
        if not all(1 <= b <= min(64, context * self.n_bits) for b in self.bits):
            raise ValueError(f"bits must be 1..{min(64, context * self.n_bits)}, got {self.bits}")
        if not all(1 <= n <= bitwise.MAX_INCREMENT_NEURONS for n in self.neurons):
            raise ValueError(f"neurons must be 1..{bitwise.MAX_INCREMENT_NEURONS}, got {self.neurons}")
        self.kind, self.cell_mode, self.empty_value = fitness, cell_mode, float(empty_value)
        self.codes = np.asarray(codes, dtype=np.int64)
        tokens = np.ascontiguousarray(train_tokens, dtype=np.int64)
        self.data = bitwise.training_set(tokens, self.codes, context, seed, sample_rate, self.n_bits)
        self.inputs = bitwise.InputBits(context, self.n_bits, self.codes)

        self.positions, self.x, self.targets, self.target_codes, self.star, self.branch = scored_examples(
            score_tokens, context, self.inputs, vocab_size)
        self.increments = bitwise.code_increments(cell_mode)
        self.n_examples = self.positions.shape[0]

        n_input = self.inputs.n_input
        self.drawn = [draw_bit_connectivity(int(self.data.seed), i, n, b, n_input)
                      for i, (n, b) in enumerate(zip(self.neurons, self.bits))]
        self.conn = [c.copy() for c in self.drawn]
        self.model = Drawn(self.drawn)
        self.layout = Shape(n_input, tuple(Unit(i, n) for i, n in enumerate(self.neurons)))
        kept = self.data.t.shape[0] * sample_rate
        self.storage = [bitwise.choose_storage(memory, cell_mode, n, b, kept) for n, b in zip(self.neurons, self.bits)]
        self._drawn_codes = drawn_codes or self._train_drawn
        self.row_cache_bytes, self.matrix_cache_bytes = int(row_cache_bytes), int(matrix_cache_bytes)
        self.batch_bytes = int(batch_bytes)
        self.gpu = gpu if hasattr(gpu, "train_rows") else None
        self._rows: OrderedDict[tuple, np.ndarray] = OrderedDict()  # row_key -> (n_examples,) uint8 increments
        self._store = None  # on a GPU: its RowStore, made when first needed, and
        self._slots: OrderedDict[tuple, int] = OrderedDict()  # row_key -> its row there (least recently used first)
        self._free: list[int] = []
        self._matrices: OrderedDict[int, tuple] = OrderedDict()  # i -> (codes (neurons, n_examples), q, empty, none)
        self.focus: int | None = None
        self._split: tuple | None = None  # the focus cluster's (log_a0, log_a1, rest_target, target_bit)
        self._losses = np.empty(self.n_examples)
        self._no_change = (np.zeros(0, dtype=np.int64), np.zeros((0, self.n_examples), dtype=np.uint8))
        self._new_codes = np.empty((max(self.neurons), self.n_examples), dtype=np.uint8)
        self.evaluations = 0
        self.stats = {"rows_trained": 0, "rows_reused": 0, "train_calls": 0, "train_s": 0.0, "read_s": 0.0,
                      "score_s": 0.0}

        shape = (self.n_examples, self.n_bits)
        self._p, self._log_p, self._log_q = np.empty(shape), np.empty(shape), np.empty(shape)
        self._none = np.empty(shape, dtype=np.int64)
        for i in range(self.n_bits):
            self._set_column(i, *self._matrix(i)[1:])

    # ---- what the search reads ------------------------------------------------------------------------

    def set_scope(self, clusters: np.ndarray) -> None:
        """The unit searched now (its cluster's codes stay at hand); rewired rows of other clusters go."""
        i = int(np.asarray(clusters).ravel()[0])
        if i != self.focus:
            self.focus, self._split = i, None
            for key in [k for k in self._rows if k[0] != i]:
                del self._rows[key]
            for key in [k for k in self._slots if k[0] != i]:
                self._free.append(self._slots.pop(key))
            codes, q, n_empty, _ = self._matrix(i)
            if self.gpu is not None:
                self._device_rows().focus(codes, q, n_empty)

    def evaluate(self, candidates: list[list[Change]]) -> list[Value]:
        """The fitness of each candidate (changes from the current connectivity). The neurons they
        rewire that no cache holds are trained together, a batch of at most batch_bytes of codes.
        A value carries its loss's figure alone (CE, or accuracy; the other is NaN: the search
        reads the loss, and the closed forms and the best codes each cost a third of a candidate)."""
        self.evaluations += len(candidates)
        plans = [self._plan(changes) for changes in candidates]
        out, lo, limit = [], 0, self._batch_rows()
        while lo < len(plans):  # as many candidates as their new rows fit batch_bytes (one at least)
            hi, keys = lo, {}
            while hi < len(plans):
                more = {k: v for k, v in self._wanted(plans[hi]).items() if k not in keys}
                if hi > lo and len(keys) + len(more) > limit:
                    break
                keys.update(more)
                hi += 1
            if self.gpu is not None and all(self._focus_only(plans[k]) for k in range(lo, hi)):
                out += self._focus_values(plans[lo:hi], self._slots_of(keys))
            else:
                rows = self._codes_of(keys)
                out += [self._value(plans[k], rows, both=False) for k in range(lo, hi)]
            lo = hi
        return out

    def commit(self, changes: list[Change]) -> Value:
        """Make a candidate the current connectivity; its value."""
        plan = self._plan(changes)
        rows = self._codes_of(self._wanted(plan))
        for i, (neurons, new) in plan.items():
            codes, q, n_empty, n_none = self._matrix(i)
            if neurons.shape[0]:
                codes[neurons] = np.stack([rows[row_key(i, n, r)] for n, r in zip(neurons, new)])
                bitwise.sum_increments(codes, codes.shape[0], q, n_empty, n_none)
                self._set_column(i, q, n_empty, n_none)
                if i == self.focus and self._store is not None:  # its copy on the GPU too
                    self._store.put(neurons, [self._slots[row_key(i, n, r)] for n, r in zip(neurons, new)])
                    self._store.sums(q, n_empty)
        for t, idx, new in changes:
            self.conn[t][np.asarray(idx)] = new
        if any(i != self.focus and plan[i][0].shape[0] for i in plan):
            self._split = None  # the focus cluster's split holds the others' columns
        return self.current()

    def current(self) -> Value:
        """The fitness of the current connectivity (its CE as a candidate's, see _value)."""
        if self.kind == "ce" and self.focus is not None:
            ce = self._focus_ce(*self._no_change)
            return Value(ce, ce, self._of(self._log_p, self._log_q, ce=False).accuracy, None)
        return self._of(self._log_p, self._log_q)

    def release(self) -> None:
        """Drop the cached codes (the search is over; current() and scores() still answer)."""
        self._rows.clear()
        self._matrices.clear()
        self._store, self._slots, self._free = None, OrderedDict(), []
        self.focus, self._split = None, None

    def scores(self) -> bitwise.Scores:
        """The current connectivity's Scores on the score split: bitwise.score(bitwise.train(...,
        connectivity=self.conn), score_tokens), every array identical."""
        return bitwise.scores_of(self.positions.copy(), self.targets.copy(), self.target_codes, self._p.copy(),
                                 self._log_p.copy(), self._log_q.copy(), self._none.copy(), self.star, self.branch)

    # ---- candidates -----------------------------------------------------------------------------------

    def _plan(self, changes: list[Change]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Per cluster a candidate changes: (its neurons rewired from the current connectivity, their rows)."""
        plan = {}
        for t, idx, new in changes:
            idx = np.asarray(idx, dtype=np.int64)
            which = moved(new, self.conn[t][idx])
            plan[int(t)] = (idx[which], np.asarray(new)[which])
        return plan

    def _wanted(self, plan: dict) -> dict[tuple, tuple[int, int, np.ndarray]]:
        return {row_key(i, n, r): (i, int(n), r) for i, (neurons, new) in plan.items() for n, r in zip(neurons, new)}

    def _focus_only(self, plan: dict) -> bool:
        """Whether a candidate is scored from the focus's split (a CE fitness, the focus alone changed)."""
        return (self.kind == "ce" and self.focus is not None
                and all(i == self.focus for i, (neurons, _) in plan.items() if neurons.shape[0]))

    def _focus_values(self, plans: list[dict], slots: dict) -> list[Value]:
        """_focus_only candidates' values from their rows on the GPU: their sums swapped there
        (integers), then the focus's split closed forms here, as _focus_ce (the same floats)."""
        t0 = time.perf_counter()
        f, empty = self.focus, self._no_change
        old = [plan[f][0] if f in plan else empty[0] for plan in plans]
        new = [[slots[row_key(f, n, r)] for n, r in zip(*plan[f])] if f in plan else [] for plan in plans]
        quarters, n_empty = self._device_rows().swapped(old, new)
        out = []
        for c in range(len(plans)):
            ce = self._focus_ce(*empty, sums=(quarters[c], n_empty[c]))
            out.append(Value(ce, ce, float("nan"), None))
        self.stats["score_s"] += time.perf_counter() - t0
        return out

    def _value(self, plan: dict, rows: dict, both: bool = True) -> Value:
        """A candidate's fitness: its clusters' columns from the swapped sums, the others' as they are.
        A CE fitness whose candidate changes the focus cluster alone (the search's) is read from the
        focus's split (bitwise.split_log_z: O(1) an example, not the closed forms' O(B)): the same
        CE to rounding, and current() reads it so too, so a committed candidate keeps its value."""
        t0 = time.perf_counter()
        changed = [i for i, (neurons, _) in plan.items() if neurons.shape[0]]
        if self.kind == "ce" and not both and self.focus is not None and set(changed) <= {self.focus}:
            neurons, new_codes = self._no_change
            if changed:
                neurons, new = plan[self.focus]
                new_codes = np.stack([rows[row_key(self.focus, n, r)] for n, r in zip(neurons, new)],
                                     out=self._new_codes[: neurons.shape[0]])
            ce = self._focus_ce(neurons, new_codes)
            self.stats["score_s"] += time.perf_counter() - t0
            return Value(ce, ce, float("nan"), None)
        saved = {}
        for i, (neurons, new) in plan.items():
            if not neurons.shape[0]:
                continue
            codes, q, n_empty, n_none = self._matrix(i)
            new_codes = np.stack([rows[row_key(i, n, r)] for n, r in zip(neurons, new)])
            sums = [np.empty(self.n_examples, dtype=np.int64) for _ in range(3)]
            swapped_sums(q, n_empty, n_none, codes, neurons, new_codes, *sums)
            _, log_p, log_q = bitwise.bit_logs(bitwise.p_of_quarters(sums[0], sums[1], self.empty_value,
                                                                     self.neurons[i]))
            saved[i] = (self._log_p[:, i].copy(), self._log_q[:, i].copy())
            self._log_p[:, i], self._log_q[:, i] = log_p, log_q
        try:
            return self._of(self._log_p, self._log_q, ce=both or self.kind == "ce",
                            accuracy=both or self.kind == "accuracy")
        finally:
            for i, (log_p, log_q) in saved.items():
                self._log_p[:, i], self._log_q[:, i] = log_p, log_q
            self.stats["score_s"] += time.perf_counter() - t0

    def _of(self, log_p: np.ndarray, log_q: np.ndarray, ce: bool = True, accuracy: bool = True) -> Value:
        """(CE at T = 1, accuracy) from the (n, B) logarithms: bitwise.ce and bitwise.correct's
        expressions (those asked for; the others NaN)."""
        want_ce, want_accuracy = ce, accuracy
        ce = accuracy = float("nan")
        if want_ce:
            log_z = np.empty(self.n_examples)
            bitwise.closed_forms(log_p, log_q, self.star, self.branch, 1.0, bitwise.LOG_Z, log_z, log_z)
            ce = float((log_z - bitwise.target_scores(log_p, log_q, self.target_codes)).mean())
        if want_accuracy:
            accuracy = float((bitwise.best_codes(log_p, log_q, self.star, self.branch) == self.target_codes).mean())
        return Value(ce if self.kind == "ce" else -accuracy, ce, accuracy, None)

    def _focus_ce(self, neurons: np.ndarray, new_codes: np.ndarray, sums: tuple | None = None) -> float:
        """The mean CE with the focus cluster's `neurons` rewired to the rows new_codes (or with the
        focus's sums (quarters, #EMPTY) made elsewhere), the other clusters' columns as they are."""
        f = self.focus
        codes, q, n_empty, _ = self._matrix(f)
        if sums is not None:
            q, n_empty = sums
        if self._split is None:
            split = tuple(np.empty(self.n_examples) for _ in range(3))
            bitwise.split_log_z(self._log_p, self._log_q, self.star, self.branch, f, *split, self.target_codes)
            self._split = (*split, ((self.target_codes >> (self.n_bits - 1 - f)) & 1).astype(np.bool_))
        losses = self._losses
        focus_losses(q, n_empty, codes, neurons, new_codes, self.empty_value, self.neurons[f], *self._split, losses)
        return float(losses.mean())

    def _set_column(self, i: int, q: np.ndarray, n_empty: np.ndarray, n_none: np.ndarray) -> None:
        """Cluster i's P column from its sums: read_cluster's float exactly, then clamped and logged."""
        p, log_p, log_q = bitwise.bit_logs(bitwise.p_of_quarters(q, n_empty, self.empty_value, self.neurons[i]))
        self._p[:, i], self._log_p[:, i], self._log_q[:, i], self._none[:, i] = p, log_p, log_q, n_none

    # ---- codes ----------------------------------------------------------------------------------------

    def _matrix(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Cluster i's current neurons' code increments (neurons, n_examples) uint8 and their sums
        (quarters, #EMPTY, #no decision), from its drawn codes with its rewired neurons' put in."""
        if i in self._matrices:
            self._matrices.move_to_end(i)
            return self._matrices[i]
        codes = np.array(self._drawn_codes(i, self.neurons[i], self.bits[i]), dtype=np.uint8, order="C", copy=True)
        assert codes.shape == (self.neurons[i], self.n_examples), codes.shape
        neurons = moved(self.conn[i], self.drawn[i])
        if neurons.shape[0]:
            wanted = {row_key(i, n, self.conn[i][n]): (i, int(n), self.conn[i][n]) for n in neurons}
            rows = self._codes_of(wanted)
            codes[neurons] = np.stack(list(rows[k] for k in wanted))
        sums = tuple(np.empty(self.n_examples, dtype=np.int64) for _ in range(3))
        bitwise.sum_increments(codes, codes.shape[0], *sums)
        self._matrices[i] = (codes, *sums)
        spare = [k for k in self._matrices if k not in (i, self.focus)]  # least recently used first
        while spare and sum(m[0].nbytes for m in self._matrices.values()) > self.matrix_cache_bytes:
            del self._matrices[spare.pop(0)]
        return self._matrices[i]

    def _train_drawn(self, i: int, neurons: int, bits: int) -> np.ndarray:
        """Cluster i's drawn neurons trained here and read on the score split (as code increments)."""
        conn = draw_bit_connectivity(int(self.data.seed), i, neurons, bits, self.inputs.n_input)
        return self._trained(i, conn, bitwise.sample_states(self.data.seed, i, neurons))

    def _train_rows(self, i: int, conn: np.ndarray, states: np.ndarray) -> tuple:
        """Neurons of cluster i wired as `conn` and sampling with `states`, trained on the CPU engine
        or the GPU (the same cells): (BitCluster, its table on the GPU or None)."""
        t0 = time.perf_counter()
        if self.gpu is not None:
            out = self.gpu.train_rows(self.data, self.inputs, i, conn, states, self.cell_mode, self._row_storage(i))
        else:
            out = bitwise.train_rows(self.data, self.inputs, i, conn, states, self.cell_mode, self.storage[i]), None
        self.stats["train_s"] += time.perf_counter() - t0
        return out

    def _trained(self, i: int, conn: np.ndarray, states: np.ndarray) -> np.ndarray:
        """(rows, n_examples) code increments on the score split of the rows _train_rows trains."""
        cluster, table = self._train_rows(i, conn, states)
        t0 = time.perf_counter()
        if self.gpu is not None:
            codes = self.gpu.read_neuron_codes(cluster, self.x, table)
        else:
            codes = bitwise.neuron_codes(cluster, self.x)
        codes = np.ascontiguousarray(codes.T)  # neuron-major (no copy: both readers write it so)
        bitwise.increments_of(codes, self.increments)
        self.stats["read_s"] += time.perf_counter() - t0
        return codes

    def _row_storage(self, i: int) -> str:
        """How cluster i's rows train here: as its storage, but DENSE on a GPU wherever a row's DENSE
        cells fit GPU_ROW_BYTES. Only the rows' codes are read, and a SPARSE cell absent is the
        DENSE cell never written (EMPTY): the same codes, without compacting the rows to the host."""
        if self.gpu is not None and bitwise.dense_row_bytes(self.cell_mode, self.bits[i]) <= GPU_ROW_BYTES:
            return DENSE
        return self.storage[i]

    def _calls(self, i: int, items: list) -> list[tuple[list, np.ndarray, np.ndarray]]:
        """Rows [(key, neuron, connections)] of cluster i split into training calls of at most
        batch_bytes of cells and codes (on a GPU, cells that stay there: its room): per call (its
        items, their (k, bits) int32 connections, their sampling states)."""
        bits, dense = self.bits[i], self._row_storage(i) == DENSE
        cells = (bitwise.dense_row_bytes(self.cell_mode, bits) if dense
                 else min(2.0**bits, self.data.t.shape[0]) * bitwise.sparse_cell_bytes(bits))
        if self.gpu is not None and dense:
            room = min(GPU_BATCH_BYTES, self.gpu.free_memory() // 2)
            per_call = max(1, min(int(room // cells), int(self.batch_bytes // self.n_examples)))
        else:
            per_call = max(1, int(self.batch_bytes // (cells + self.n_examples)))
        out = []
        for lo in range(0, len(items), per_call):
            part = items[lo:lo + per_call]
            ids = np.array([n for _, n, _ in part], dtype=np.int64)
            conn = np.ascontiguousarray(np.stack([r for _, _, r in part]), dtype=np.int32)
            out.append((part, conn, bitwise.sample_states_of(self.data.seed, i, ids)))
            self.stats["train_calls"] += 1
            self.stats["rows_trained"] += len(part)
        return out

    def _missing(self, wanted: dict, cached: OrderedDict, out: dict) -> dict[int, list]:
        """The wanted rows `cached` holds into out (marked recently used); the others by cluster."""
        todo = {}
        for key, what in wanted.items():
            if key in cached:
                cached.move_to_end(key)
                out[key] = cached[key]
                self.stats["rows_reused"] += 1
            else:
                todo.setdefault(what[0], []).append((key, what[1], what[2]))
        return todo

    def _codes_of(self, wanted: dict[tuple, tuple[int, int, np.ndarray]]) -> dict[tuple, np.ndarray]:
        """Each wanted row's (n_examples,) code increments: from the cache, else trained (those of a
        cluster together, in calls of at most batch_bytes of cells and codes) and cached. On a GPU
        they are its store's rows, copied here."""
        if self.gpu is not None:
            slots = self._slots_of(wanted)
            return {key: self._store.row(slots[key]) for key in wanted}
        out = {}
        for i, items in self._missing(wanted, self._rows, out).items():
            for part, conn, states in self._calls(i, items):
                codes = self._trained(i, conn, states)
                for k, (key, _, _) in enumerate(part):
                    out[key] = codes[k].copy()
                    self._remember(key, out[key])
        return out

    def _batch_rows(self) -> int:
        """The rows one batch of candidates may want: batch_bytes of codes (on a GPU, its store's)."""
        rows = self.batch_bytes // max(1, self.n_examples)
        return min(rows, GPU_STORE_ROWS) if self.gpu is not None else rows

    def _device_rows(self):
        """The GPU's RowStore, made when first needed: room for a batch and one more candidate."""
        if self._store is None:
            rows = max(GPU_STORE_BYTES // max(1, self.n_examples), self._batch_rows())
            self._store = self.gpu.RowStore(self.x, self.increments, min(rows, GPU_STORE_ROWS) + sum(self.neurons))
            self._slots, self._free = OrderedDict(), list(range(self._store.capacity))[::-1]
        return self._store

    def _slots_of(self, wanted: dict[tuple, tuple[int, int, np.ndarray]]) -> dict[tuple, int]:
        """Each wanted row's slot in the GPU's store: kept, else trained there (as _codes_of) into
        slots freed from the least recently used rows not wanted now."""
        store, out = self._device_rows(), {}
        todo = self._missing(wanted, self._slots, out)
        need = sum(len(items) for items in todo.values())
        for key in list(self._slots):
            if len(self._free) >= need:
                break
            if key not in wanted:
                self._free.append(self._slots.pop(key))
        for i, items in todo.items():
            for part, conn, states in self._calls(i, items):
                cluster, table = self._train_rows(i, conn, states)
                t0 = time.perf_counter()
                slots = [self._free.pop() for _ in part]
                store.write(cluster, table, np.array(slots, dtype=np.int64))
                for (key, _, _), slot in zip(part, slots):
                    out[key] = self._slots[key] = slot
                self.stats["read_s"] += time.perf_counter() - t0
        return out

    def _remember(self, key: tuple, row: np.ndarray) -> None:
        if row.nbytes > self.row_cache_bytes:
            return
        while self._rows and (len(self._rows) + 1) * row.nbytes > self.row_cache_bytes:
            self._rows.popitem(last=False)
        self._rows[key] = row


def drawn_codes_from(scorer) -> Callable[[int, int, int], np.ndarray]:
    """A ConnectionScorer's drawn_codes from an optimize/sizes.SizeScorer of the same data and
    split (its (cluster, bits) code matrices: a cluster of n neurons is their first n rows; trained
    on its GPU where it has one, and often cached by the size phases already)."""
    def codes(i: int, neurons: int, bits: int) -> np.ndarray:
        ((_, matrix),) = list(scorer._code_matrices([(i, bits)]))
        return matrix[:neurons]
    return codes


# ---- the search ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """A connections phase's outcome: the start's and the chosen models (trained on the whole
    training split by `validate`), the chosen connectivity and label, and §5's summary."""

    start: object
    chosen: object
    connectivity: list[np.ndarray]
    chosen_label: str
    summary: dict


def units(scorer: ConnectionScorer, opt) -> list[search.Genome]:
    """One unit a bit cluster, in cluster order, each its (neurons, bits) connection array."""
    return [search.Genome(((i, 0, n),), opt.budget(i), f"bit cluster {i}") for i, n in enumerate(scorer.neurons)]


def figure(value: Value, kind: str) -> dict:
    return {"value": value.of(kind), "ce": value.ce, "accuracy": value.accuracy}


def run(exp: Experiment, scorer: ConnectionScorer, validate: Callable[[list[np.ndarray]], tuple[object, float, float]],
        *, resume: dict | None = None, checkpoint: Callable[[dict], None] = lambda s: None,
        progress: Callable[[dict], None] = lambda p: None, examples: dict | None = None) -> Found:
    """§5's search of `exp.optimize` (a connections phase as Optimize.connections gives it; `exp`
    has the chosen sizes) from the drawn wiring, resumed from `resume` (what `checkpoint` was
    handed last, checked by checkpoint.restore: set aside when invalid). The candidates (the start,
    the connectivity the search ended with, and for a single unit its best distinct ones) are each
    `validate`d: (the model trained on the whole training split, its validation CE, accuracy); the
    lowest loss wins, ties keeping the earlier (the start first)."""
    opt, t0 = exp.optimize, time.perf_counter()
    genomes = units(scorer, opt)
    before = figure(scorer.current(), opt.fitness)
    state = search.new_state(opt) if resume is None else checkpoints.restore(scorer, resume, exp, genomes)
    deadline = opt.max_minutes * 60 if opt.max_minutes is not None else None
    ctx = search.Context(scorer, opt, genomes, lambda s: checkpoint(checkpoints.encode(s, scorer, exp)), progress,
                         deadline)
    state = search.run(ctx, state)
    search_s = time.perf_counter() - t0
    scorer.release()  # its codes: the candidates' models need the memory
    after = figure(scorer.current(), opt.fitness)  # no focus now: the full closed forms, as `before`

    found = [("start", [c.copy() for c in scorer.drawn]), ("final", [c.copy() for c in scorer.conn])]
    for k, (_, cand) in enumerate(state["top"]):
        conn = [c.copy() for c in scorer.drawn]
        for (t, lo, hi), rows in zip(genomes[0].segments, cand):
            conn[t][lo:hi] = rows
        found.append((f"candidate {k + 1}", conn))
    labelled, seen = [], set()
    for label, conn in found:
        key = b"".join(c.tobytes() for c in conn)
        if key not in seen:
            seen.add(key)
            labelled.append((label, conn))
    selection, start, best = [], None, None
    for label, conn in labelled:
        model, ce, accuracy = validate(conn)
        value = Value(ce if opt.fitness == "ce" else -accuracy, ce, accuracy, None)
        selection.append({"label": label, "validation_fitness": value.of(opt.fitness), "validation_ce": ce,
                          "validation_accuracy": accuracy})
        start = model if start is None else start
        if best is None or value.loss < best[0]:
            best = (value.loss, model, label, conn)
    summary = {"strategy": opt.strategy, "fitness": opt.fitness, "units": len(genomes), "improved": state["improved"],
               "evaluations": state["evaluations"], "search_s": search_s, "stopped": state["stopped"],
               "examples": examples, "fitness_before": before, "fitness_after": after, "selection": selection,
               "chosen": best[2], "history": state["history"]}
    return Found(start, best[1], best[3], best[2], summary)
