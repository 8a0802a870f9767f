"""The bitwise model's CPU engine (numba): docs/design.md §3c, with bitwise_reference's cells and metrics.

One cluster per bit of the token's code. Training is neuron-parallel (a neuron's cells are its
own, so the quad modes' sequential, order-exact counters need no atomics); evaluation is
example-parallel. Input packing and address building are the tiered CPU engine's (cpu.py):
a neuron's address lists its input bits in sorted order (one `pext` per word), a fixed
bijection of the oracle's connection-order address, so the metrics are the oracle's and
`cells` maps addresses back for the tests.

Cell codes (u8, and 2-bit in DENSE ternary):
  ternary  0 EMPTY (never written, or as many 0s as 1s), 1 FALSE, 3 TRUE: the tiered codes
  quad     0 never written (reads c = 1 but holds no decision), 1 + c for a written counter c
Memory per cluster:
  DENSE    ternary (n_neurons, max(1, 2**bits // 16)) uint32, 16 2-bit cells a word (cpu.dense_read);
           quad (n_neurons, 2**bits) uint8, one code a cell
  SPARSE   offsets (n_neurons + 1,) int64; keys (n_cells,) uint32 (uint64 above 32 bits), each
           neuron's written addresses ascending; vals (n_cells,) uint8 codes. Ternary ties are
           dropped (they read EMPTY, as an absent key does); every written quad cell is kept.
Size search (optimize/sizes.py): read_neuron_codes keeps a cluster's lookups per neuron, and
sum_increments sums any first n neurons of them into read_cluster's operands (docs/design.md §5b).
Connectivity search (optimize/bitwise_connections.py): the training kernels take each row's
sampling state, so train_rows trains any neurons of a cluster, wired as given, each with its own
id's stream; train's `connectivity` builds the model a search chose.
Shapes: x (n_examples, words) uint64 packed contexts (cpu.py); t (n_examples,) int64 target
positions (the sampling hash's e); y (n_examples,) uint8 the target code's bit of one cluster.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange

from ramsweep.config import bits_per_token
from ramsweep.engine import bitwise_reference as oracle
from ramsweep.engine.backends.cpu import SPARSE_BATCH_ENTRIES, address, dense_read, dense_write, sparse_read
from ramsweep.engine.connectivity import draw_bit_connectivity, mix64
from ramsweep.engine.layout import DENSE, DENSE_ALWAYS_BYTES, SPARSE, Frequencies, expected_cells
from ramsweep.engine.reference import MASK64
from ramsweep.engine.train import pack, wire

TERNARY, QUAD_BINARY, QUAD_WEIGHTED = oracle.TERNARY, oracle.QUAD_BINARY, oracle.QUAD_WEIGHTED
P_MIN = oracle.P_MIN
SAMPLE_SALT = np.uint64(oracle.SAMPLE_SALT)
ALL_KEPT = np.uint64(1 << 53)  # R at sample_rate 1: every top-53-bit draw is below it
DENSE_MAX_BITS = 34  # beyond, a DENSE neuron (>= 4 GiB) is never worth it, as layout.dense_pays
TERNARY_DENSE_MAX_BITS = 24  # DENSE ternary counts in a (2**bits,) int32 table per thread: 64 MiB at most


# ---- kernels: sampling and training ---------------------------------------------------------------

@njit(cache=True, inline="always")
def sample_state(seed, cluster, neuron):
    """S = mix(mix(mix(mix(seed) + "sample") + cluster) + neuron) (docs/design.md §3c "Sampling")."""
    return mix64(mix64(mix64(mix64(seed) + SAMPLE_SALT) + np.uint64(cluster)) + np.uint64(neuron))


@njit(cache=True)
def sample_states(seed, cluster, n_neurons):
    """(n_neurons,) uint64: the cluster's sampling states, for the GPU kernels and train_rows."""
    out = np.empty(n_neurons, dtype=np.uint64)
    for n in range(n_neurons):
        out[n] = sample_state(np.uint64(seed), cluster, n)
    return out


@njit(cache=True)
def sample_states_of(seed, cluster, neurons):
    """(len(neurons),) uint64: the sampling states of the cluster's neurons of ids `neurons` (int64):
    a rewired neuron keeps its id's stream (docs/design.md §5b "Incremental")."""
    out = np.empty(neurons.shape[0], dtype=np.uint64)
    for k in range(neurons.shape[0]):
        out[k] = sample_state(np.uint64(seed), cluster, neurons[k])
    return out


@njit(cache=True, inline="always")
def keeps(state, t, threshold):
    """Whether the neuron of sampling state S trains on the example at position t: top 53 bits of
    mix(S + t) below R (every draw is, at R = 2^53: no hash needed)."""
    return threshold >= ALL_KEPT or (mix64(state + np.uint64(t)) >> np.uint64(11)) < threshold


@njit(cache=True, inline="always")
def quad_step(code, y):
    """The code after writing bit y to a quad cell of code `code` (0: never written, c = 1)."""
    c = 1 if code == 0 else np.int64(code) - 1
    c = min(c + 1, 3) if y else max(c - 1, 0)
    return np.uint8(c + 1)


@njit(cache=True, parallel=True, nogil=True)
def count_kept(t, seed, cluster, n_neurons, threshold):
    """(n_neurons,) int64: the examples each neuron of the cluster keeps."""
    kept = np.zeros(n_neurons, dtype=np.int64)
    for n in prange(n_neurons):
        state = sample_state(seed, cluster, n)
        for e in range(t.shape[0]):
            kept[n] += keeps(state, t[e], threshold)
    return kept


@njit(cache=True, parallel=True, nogil=True)
def count_kept_states(t, states, threshold):
    """count_kept for the neurons of sampling states `states` (n,) uint64."""
    kept = np.zeros(states.shape[0], dtype=np.int64)
    for n in prange(states.shape[0]):
        for e in range(t.shape[0]):
            kept[n] += keeps(states[n], t[e], threshold)
    return kept


@njit(cache=True, parallel=True, nogil=True)
def train_dense(x, t, y, masks, order, states, threshold, workers, dense32, dense8):
    """DENSE cells of one cluster's rows: quad into dense8 (n_neurons, 2**bits) uint8, each write
    applied in ascending t; ternary into dense32 (n_neurons, words) uint32 2-bit cells, from each
    worker's (2**bits,) int32 net counts (#1 − #0, any order). Row n samples with states[n] (its
    neuron's sampling state). Each worker takes rows w, w + workers, …"""
    n_neurons, quad = masks.shape[0], dense8.shape[0] > 0
    for w in prange(workers):
        count = np.zeros(0 if quad else 1 << order.shape[1], dtype=np.int32)
        for n in range(w, n_neurons, workers):
            state = states[n]
            for e in range(x.shape[0]):
                if keeps(state, t[e], threshold):
                    a = address(x, e, masks, order, n)
                    if quad:
                        dense8[n, a] = quad_step(dense8[n, a], y[e])
                    else:
                        count[a] += 2 * np.int32(y[e]) - 1
            for a in range(count.shape[0]):
                if count[a] != 0:
                    dense_write(dense32, n, np.uint64(a), np.uint32(3 if count[a] > 0 else 1))
                    count[a] = 0


@njit(cache=True, nogil=True)
def fold_runs(addrs, ys, quad, keys_out, vals_out, start):
    """One neuron's kept writes (addresses, bits, in ascending t) as sorted cells at keys_out[start:]:
    a stable sort by address keeps ascending t within an address, then each run folds in order
    (a quad counter step by step; a ternary net count, kept only when not a tie). Returns the count."""
    idx = np.argsort(addrs, kind="mergesort")
    w, i = start, 0
    while i < idx.shape[0]:
        a, acc, j = addrs[idx[i]], 0, i
        code = np.uint8(0)
        while j < idx.shape[0] and addrs[idx[j]] == a:
            if quad:
                code = quad_step(code, ys[idx[j]])
            else:
                acc += 1 if ys[idx[j]] else -1
            j += 1
        if quad or acc != 0:
            keys_out[w] = a
            vals_out[w] = code if quad else (3 if acc > 0 else 1)
            w += 1
        i = j
    return w - start


@njit(cache=True, parallel=True, nogil=True)
def train_sparse_batch(x, t, y, masks, order, states, threshold, quad, lo, kept, starts, keys_out, vals_out, counts):
    """SPARSE cells of rows lo .. lo + len(counts) − 1 (row n sampling with states[n]): row lo + b's
    at keys_out[starts[b]:], at most starts[b + 1] − starts[b]; counts[b] is how many it wrote."""
    for b in prange(counts.shape[0]):
        n = lo + b
        state = states[n]
        addrs = np.empty(kept[n], dtype=np.uint64)  # (kept,) in ascending t
        ys = np.empty(kept[n], dtype=np.uint8)
        k = 0
        for e in range(x.shape[0]):
            if keeps(state, t[e], threshold):
                addrs[k] = address(x, e, masks, order, n)
                ys[k] = y[e]
                k += 1
        counts[b] = fold_runs(addrs, ys, quad, keys_out, vals_out, starts[b])


# ---- kernels: evaluation --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def cell_code(x, e, masks, order, n, is_sparse, dense32, dense8, offsets, keys, vals):
    """Neuron n's cell code for example e: DENSE ternary, DENSE quad (dense8 not empty) or SPARSE."""
    a = address(x, e, masks, order, n)
    if is_sparse:
        return sparse_read(offsets, keys, vals, n, a)
    if dense8.shape[0]:
        return np.uint32(dense8[n, a])
    return dense_read(dense32, n, a)


@njit(cache=True, parallel=True, nogil=True)
def read_cluster(x, masks, order, is_sparse, dense32, dense8, offsets, keys, vals, values, takes_empty, no_decision,
                 empty_value, p, empty):
    """Per example, P = (Σ decided values + empty_value · #EMPTY) / neurons, unclamped, into p
    (n_examples,) float64, and the lookups holding no decision into empty (n_examples,) int64.
    values, takes_empty, no_decision (5,): by cell code. Quad values are multiples of 0.25, so
    every sum is exact in any order; ternary's is the count of TRUE."""
    n_neurons = masks.shape[0]
    for e in prange(x.shape[0]):
        decided, n_empty, n_none = 0.0, 0, 0
        for n in range(n_neurons):
            code = cell_code(x, e, masks, order, n, is_sparse, dense32, dense8, offsets, keys, vals)
            if takes_empty[code]:
                n_empty += 1
            else:
                decided += values[code]
            n_none += no_decision[code]
        p[e] = (decided + empty_value * n_empty) / n_neurons
        empty[e] = n_none


@njit(cache=True, parallel=True, nogil=True)
def read_neuron_codes(x, masks, order, is_sparse, dense32, dense8, offsets, keys, vals, out):
    """read_cluster's lookups, kept: each example's cell code at every neuron into out[e, n]
    (n_examples, n_neurons) uint8 (ternary 0 EMPTY, 1 FALSE, 3 TRUE; quad 0 never written, 1 + c),
    any layout (neuron_codes hands in the transpose of a neuron-major array). A cluster's first n
    neurons are a cluster of n (docs/design.md §5b "Incremental")."""
    n_neurons = masks.shape[0]
    for e in prange(x.shape[0]):
        for n in range(n_neurons):
            code = cell_code(x, e, masks, order, n, is_sparse, dense32, dense8, offsets, keys, vals)
            out[e, n] = np.uint8(code)


INCREMENT_BITS = 21  # sum_increments' fields in an int64: quarters, #EMPTY, #no decision
MAX_INCREMENT_NEURONS = (1 << INCREMENT_BITS) // 4 - 1  # at most 4 quarters a neuron: no field overflows


def code_increments(cell_mode: str) -> np.ndarray:
    """(5,) uint8 by cell code, what one lookup adds to read_cluster's sums: its value in quarters
    (0 where it reads empty_value) at bits 0-2, takes_empty at bit 3, no_decision at bit 4."""
    quarters, takes_empty, no_decision = quarter_tables(cell_mode)
    inc = np.where(takes_empty, 0, quarters) | (takes_empty.astype(np.int64) << 3) | (no_decision << 4)
    assert inc.max() < 32
    return inc.astype(np.uint8)


@njit(cache=True, parallel=True, nogil=True)
def increments_of(codes, increments):
    """codes (rows, n) uint8 cell codes replaced, in place, by increments[code] (code_increments)."""
    for r in prange(codes.shape[0]):
        for k in range(codes.shape[1]):
            codes[r, k] = increments[codes[r, k]]


@njit(cache=True, parallel=True, nogil=True)
def sum_increments(incs, neurons, out_quarters, out_empty, out_none):
    """Per example e, over the first `neurons` rows of incs (max_neurons, n_examples) uint8
    (increments_of a neuron-major code matrix): Σ decided values in integer quarters, #EMPTY (reads
    empty_value) and #no decision, into the (n_examples,) int64 outputs: read_cluster's operands
    exactly, so p_of_quarters gives its P. The three sums share an int64 (INCREMENT_BITS a field,
    neurons <= MAX_INCREMENT_NEURONS), a block of examples at a time (vectorised over examples)."""
    n_examples, block = incs.shape[1], 2048
    field_mask = np.int64((1 << INCREMENT_BITS) - 1)
    for c in prange((n_examples + block - 1) // block):
        lo = c * block
        hi = min(n_examples, lo + block)
        acc = np.zeros(hi - lo, dtype=np.int64)
        for n in range(neurons):
            row = incs[n, lo:hi]
            for k in range(hi - lo):
                v = np.int64(row[k])
                acc[k] += (v & 7) | (((v >> 3) & 1) << INCREMENT_BITS) | (((v >> 4) & 1) << (2 * INCREMENT_BITS))
        for k in range(hi - lo):
            out_quarters[lo + k] = acc[k] & field_mask
            out_empty[lo + k] = (acc[k] >> INCREMENT_BITS) & field_mask
            out_none[lo + k] = acc[k] >> (2 * INCREMENT_BITS)


@njit(cache=True, parallel=True, nogil=True)
def gather_columns(store, slots, out):
    """out[e, i] = store[slots[i], e]: (n, B) C order from B rows of a column store."""
    for e in prange(out.shape[0]):
        for i in range(slots.shape[0]):
            out[e, i] = store[slots[i], e]


@njit(cache=True, inline="always")
def logsumexp(terms, m):
    top = terms[0]
    for k in range(1, m):
        top = max(top, terms[k])
    total = 0.0
    for k in range(m):
        total += math.exp(terms[k] - top)
    return top + math.log(total)


@njit(cache=True, parallel=True, nogil=True)
def target_scores(log_p, log_q, target_codes):
    """(n,) s(target) = Σ_i the selected log term, in ascending i from 0 (as the oracle's enumeration)."""
    n, n_bits = log_p.shape
    s = np.empty(n)
    for e in prange(n):
        acc = 0.0
        for i in range(n_bits):
            acc += log_p[e, i] if (target_codes[e] >> (n_bits - 1 - i)) & 1 else log_q[e, i]
        s[e] = acc
    return s


LOG_Z, MEAN, MEAN_AND_VARIANCE = 0, 1, 2  # what closed_forms computes


@njit(cache=True, parallel=True, nogil=True)
def closed_forms(log_p, log_q, star, branch, temperature, want, out, variance):
    """Per example (docs/design.md §3c "Closed forms"): log Σ_{u real} exp(s(u)/T) into out (n,)
    (want LOG_Z), or E_T[s] (MEAN), and with MEAN_AND_VARIANCE Var_T[s] into variance (n,) too: c*'s
    terms, and per branch bit j the subcube agreeing with c* above j, differing at j and free below.
    A free bit's two-way softmax takes one exp and one log1p: with x = e^{−|w_i(1) − w_i(0)|}, its
    log-sum is max + log1p(x) and its weights 1/(1 + x), x/(1 + x). star, branch (B,) bool: c*'s
    bits, the branch bits."""
    n, n_bits = log_p.shape
    for e in prange(n):
        rest_log = np.zeros(n_bits)  # Σ_{i>j} log(e^{w_i(0)} + e^{w_i(1)})
        rest_mean = np.zeros(n_bits)  # Σ_{i>j} the free bit's mean term under its two-way softmax
        rest_var = np.zeros(n_bits)  # Σ_{i>j} its variance
        for j in range(n_bits - 2, -1, -1):
            s0, s1 = log_q[e, j + 1], log_p[e, j + 1]
            big, small = (s1, s0) if s1 >= s0 else (s0, s1)
            x = math.exp((small - big) / temperature)
            w_big = 1.0 / (1.0 + x)
            w_small = x * w_big
            rest_log[j] = rest_log[j + 1] + big / temperature + math.log1p(x)
            rest_mean[j] = rest_mean[j + 1] + big * w_big + small * w_small
            rest_var[j] = rest_var[j + 1] + w_big * w_small * (big - small) ** 2
        logs, means, variances = np.empty(n_bits + 1), np.empty(n_bits + 1), np.empty(n_bits + 1)
        above, m = 0.0, 0
        for j in range(n_bits):
            on, off = (log_p[e, j], log_q[e, j]) if star[j] else (log_q[e, j], log_p[e, j])
            if branch[j]:
                logs[m] = (above + off) / temperature + rest_log[j]
                means[m], variances[m] = above + off + rest_mean[j], rest_var[j]
                m += 1
            above += on
        logs[m], means[m], variances[m] = above / temperature, above, 0.0
        m += 1
        log_z = logsumexp(logs, m)
        if want == LOG_Z:
            out[e] = log_z
            continue
        mean = 0.0
        for k in range(m):
            mean += math.exp(logs[k] - log_z) * means[k]
        out[e] = mean
        if want == MEAN_AND_VARIANCE:  # within the subcubes, plus the spread of their means
            var = 0.0
            for k in range(m):
                var += math.exp(logs[k] - log_z) * (variances[k] + (means[k] - mean) ** 2)
            variance[e] = var


@njit(cache=True, parallel=True, nogil=True)
def split_log_z(log_p, log_q, star, branch, f, log_a0, log_a1, rest_target, target_codes):
    """closed_forms' terms at T = 1 without bit f's factor, split by f's value: log_a0[e], log_a1[e]
    = log Σ_{u real, u_f = 0 / 1} exp(Σ_{i≠f} w_i(u_i)), so that log Z = logaddexp(ln(1 − P_f) +
    log_a0, ln P_f + log_a1) for any P_f; and rest_target[e] = Σ_{i≠f} the target's term. A term
    where f is fixed (c*, or a branch at or below f) goes to its value's side; one where f is free
    (a branch above f), to both. A candidate that changes column f alone is then O(1) an example."""
    n, n_bits = log_p.shape
    for e in prange(n):
        rest_log = np.zeros(n_bits)  # Σ_{i>j, i≠f} log(e^{w_i(0)} + e^{w_i(1)})
        for j in range(n_bits - 2, -1, -1):
            rest_log[j] = rest_log[j + 1]
            if j + 1 != f:
                s0, s1 = log_q[e, j + 1], log_p[e, j + 1]
                big, small = (s1, s0) if s1 >= s0 else (s0, s1)
                rest_log[j] += big + math.log1p(math.exp(small - big))
        side0, side1 = np.empty(n_bits + 1), np.empty(n_bits + 1)
        m0, m1, above = 0, 0, 0.0
        for j in range(n_bits):
            on, off = (log_p[e, j], log_q[e, j]) if star[j] else (log_q[e, j], log_p[e, j])
            if branch[j]:
                term = above + rest_log[j] + (off if j != f else 0.0)
                if j >= f:  # f fixed: at c*'s bit above j, at the other at j
                    if star[f] == (j > f):
                        side1[m1] = term
                        m1 += 1
                    else:
                        side0[m0] = term
                        m0 += 1
                else:  # f free below j: both sides
                    side0[m0], side1[m1] = term, term
                    m0 += 1
                    m1 += 1
            if j != f:
                above += on
        if star[f]:
            side1[m1] = above
            m1 += 1
        else:
            side0[m0] = above
            m0 += 1
        log_a0[e] = logsumexp(side0, m0) if m0 else -np.inf
        log_a1[e] = logsumexp(side1, m1) if m1 else -np.inf
        acc = 0.0
        for i in range(n_bits):
            if i != f:
                acc += log_p[e, i] if (target_codes[e] >> (n_bits - 1 - i)) & 1 else log_q[e, i]
        rest_target[e] = acc


@njit(cache=True, parallel=True, nogil=True)
def best_codes(log_p, log_q, star, branch):
    """(n,) int64 the real code of highest s, ties to the lowest: of c* and each subcube's best
    (free bits 1 where ln P > ln(1 − P), else 0). Each candidate's s is summed in ascending i from
    0, the enumeration's sum, so ties fall exactly as there."""
    n, n_bits = log_p.shape
    best = np.empty(n, dtype=np.int64)
    for e in prange(n):
        best_s, best_c = -np.inf, np.int64(-1)
        for j in range(-1, n_bits):  # j = -1: c* itself
            if j >= 0 and not branch[j]:
                continue
            s, c = 0.0, np.int64(0)
            for i in range(n_bits):
                bit = star[i] if (j < 0 or i < j) else (not star[i] if i == j else log_p[e, i] > log_q[e, i])
                s += log_p[e, i] if bit else log_q[e, i]
                c = (c << 1) | np.int64(bit)
            if best_c < 0 or s > best_s or (s == best_s and c < best_c):
                best_s, best_c = s, c
        best[e] = best_c
    return best


# ---- the model -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputBits:
    """The input's shape, as train.pack and train.wire read it from a tiered Layout."""

    context: int
    bits_per_token: int
    codes: np.ndarray  # (V,) int64: each token id's code, input and output

    @property
    def n_input(self) -> int:
        return self.context * self.bits_per_token


@dataclass
class BitCluster:
    """One bit cluster's wiring and cells (layouts: the module docstring)."""

    storage: str  # DENSE | SPARSE
    conn: np.ndarray  # (neurons, bits) int32 input positions, column 0 the oracle's MSB
    masks: np.ndarray  # (neurons, words) uint64 packed input bits each neuron reads
    order: np.ndarray  # (neurons, bits) uint16 the same bits in the engine's address order
    host: np.ndarray | None  # DENSE cells (see `dense`), None while only a GPU holds them; SPARSE: (0, 1) uint32
    offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # SPARSE (neurons + 1,) int64
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint32))  # SPARSE (n_cells,) sorted per neuron
    vals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))  # SPARSE (n_cells,) codes
    # DENSE cells a GPU trained (anything with nbytes and copy_to_host()), copied to `host` on first
    # use: a sweep reads them there only, and copying 3 GiB back took longer than training them
    gpu: object = field(default=None, repr=False, compare=False)
    stored: int | None = None  # the cells holding a code, when counted where they were trained

    @property
    def dense(self) -> np.ndarray:
        """DENSE: ternary (neurons, words) uint32, quad (neurons, 2**bits) uint8; SPARSE: (0, 1) uint32."""
        if self.host is None:
            self.host = self.gpu.copy_to_host()
        return self.host

    @property
    def neurons(self) -> int:
        return self.conn.shape[0]

    @property
    def bits(self) -> int:
        return self.conn.shape[1]

    @property
    def nbytes(self) -> int:
        cells = self.host if self.host is not None else self.gpu
        return sum(a.nbytes for a in (self.conn, self.masks, self.order, cells, self.offsets, self.keys, self.vals))


@dataclass
class Model:
    """A trained bitwise model: the oracle's BitwiseModel with the engine's cells."""

    vocab_size: int
    context: int
    codes: np.ndarray  # (V,) int64: each token id's code
    position: np.ndarray  # (V,) int64: each token id's training-frequency position (bands)
    gray: bool  # whether the real codes are the Gray images of 0..V-1 (the closed forms' c*)
    cell_mode: str
    empty_value: float
    clusters: list[BitCluster]
    device: str = "cpu"  # where it was trained: cpu, cuda (engine/bitwise_cuda.py), wgpu or metal (bitwise_wgpu.py)
    gpu: list | None = field(default=None, repr=False, compare=False)  # bitwise_cuda's device tables, uploaded once
    seed: int | None = None  # the wiring's and sampling's seed (drawn_connectivity)

    @property
    def n_bits(self) -> int:
        return len(self.clusters)

    @property
    def inputs(self) -> InputBits:
        return InputBits(self.context, bits_per_token(self.vocab_size), self.codes)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.clusters)


def real_codes_are_gray(codes: np.ndarray) -> bool:
    """Whether the codes are the Gray images of 0..V-1 (False when they are 0..V-1 itself: for
    V a power of two both hold and either decomposition of the cube is exact)."""
    k = np.arange(codes.shape[0], dtype=np.int64)
    ordered = np.sort(codes)
    if np.array_equal(ordered, k):
        return False
    if np.array_equal(ordered, np.sort(k ^ (k >> 1))):
        return True
    raise ValueError("codes must be a permutation of 0..V-1 or of their Gray codes (bitwise_reference.token_codes)")


# ---- memory: kinds, sizes, the estimate before training ----------------------------------------------

def dense_row_bytes(cell_mode: str, bits: int) -> int:
    """One DENSE neuron: 2 bits a ternary cell (in u32 words), 1 byte a quad cell."""
    return max(1, (1 << bits) // 16) * 4 if cell_mode == TERNARY else 1 << bits


def sparse_cell_bytes(bits: int) -> int:
    return (4 if bits <= 32 else 8) + 1


def choose_storage(memory: str, cell_mode: str, neurons: int, bits: int, kept_writes: float) -> str:
    """DENSE or SPARSE for one cluster. `memory`: "dense", "sparse" or "auto" (layout.dense_pays'
    rule: DENSE when the cluster fits DENSE_ALWAYS_BYTES, or when a DENSE neuron costs no more than
    a SPARSE one at the expected fill of `kept_writes` writes a neuron)."""
    dense_max = TERNARY_DENSE_MAX_BITS if cell_mode == TERNARY else DENSE_MAX_BITS
    if memory == DENSE and bits > dense_max:
        raise ValueError(f"memory: dense holds {cell_mode} cells of at most {dense_max} bits, got {bits}: use auto")
    if memory in (DENSE, SPARSE):
        return memory
    if memory != "auto":
        raise ValueError(f"memory must be auto, dense or sparse, got {memory!r}")
    if bits > dense_max:
        return SPARSE
    row = dense_row_bytes(cell_mode, bits)
    if row * neurons <= DENSE_ALWAYS_BYTES:
        return DENSE
    return DENSE if row <= float(expected_cells(bits, np.float64(kept_writes))) * sparse_cell_bytes(bits) else SPARSE


def cluster_bytes(storage: str, cell_mode: str, neurons: int, bits: int, n_input: int, cells: float) -> int:
    """BitCluster.nbytes when each SPARSE neuron stores `cells` cells (a DENSE cluster's size is fixed)."""
    wiring = neurons * (bits * 4 + ((n_input + 63) // 64) * 8 + bits * 2)  # conn, masks, order
    if storage == DENSE:
        return wiring + neurons * dense_row_bytes(cell_mode, bits) + 8  # + the (1,) offsets
    return wiring + int(math.ceil(cells)) * neurons * sparse_cell_bytes(bits) + (neurons + 1) * 8


def estimate_memory_bytes(vocab_size: int, context: int, n_examples: int, *, neurons, bits, sample_rate: float,
                          cell_mode: str, memory: str = "auto", bound: bool = True) -> int:
    """The trained model's nbytes before any training (cluster_estimates summed)."""
    return sum(cluster_estimates(vocab_size, context, n_examples, neurons=neurons, bits=bits, sample_rate=sample_rate,
                                 cell_mode=cell_mode, memory=memory, bound=bound))


def cluster_estimates(vocab_size: int, context: int, n_examples: int, *, neurons, bits, sample_rate: float,
                      cell_mode: str, memory: str = "auto", bound: bool = True) -> list[int]:
    """Each bit cluster's nbytes before any training, from the sizes and the training examples
    alone: each SPARSE neuron stores at most min(2**bits, its kept writes) cells, its kept writes
    taken at their expectation n_examples · sample_rate (`bound`), or the expected distinct cells
    of that many writes spread evenly (layout.expected_cells: the planning figure)."""
    n_bits = bits_per_token(vocab_size)
    neurons, bits = oracle.per_cluster(neurons, n_bits, "neurons"), oracle.per_cluster(bits, n_bits, "bits")
    kept = n_examples * sample_rate
    sizes = []
    for n, b in zip(neurons, bits):
        cells = min(2.0**b, kept) if bound else float(expected_cells(b, np.float64(kept)))
        sizes.append(cluster_bytes(choose_storage(memory, cell_mode, n, b, kept), cell_mode, n, b, context * n_bits, cells))
    return sizes


# ---- training ---------------------------------------------------------------------------------------

NO_DENSE32, NO_DENSE8 = np.zeros((0, 1), dtype=np.uint32), np.zeros((0, 1), dtype=np.uint8)


@dataclass(frozen=True)
class TrainingSet:
    """What every cluster trains on: the packed contexts and the targets' codes."""

    x: np.ndarray  # (n_examples, words) uint64 packed contexts
    t: np.ndarray  # (n_examples,) int64 target positions, ascending
    target_codes: np.ndarray  # (n_examples,) int64
    n_bits: int
    seed: np.uint64
    threshold: np.uint64  # R = ceil(r · 2^53)

    def y(self, cluster: int) -> np.ndarray:
        """(n_examples,) uint8: the targets' bit `cluster` (0 the MSB)."""
        return ((self.target_codes >> (self.n_bits - 1 - cluster)) & 1).astype(np.uint8)


def training_set(tokens: np.ndarray, codes: np.ndarray, context: int, seed: int, sample_rate: float,
                 n_bits: int) -> TrainingSet:
    """What train's clusters train on: every example (positions t >= context) of `tokens` (int64)
    packed under `codes` (int64, each token id's code), with the seed and the sampling threshold R."""
    t = np.arange(context, tokens.shape[0], dtype=np.int64)
    return TrainingSet(pack(tokens, t, InputBits(context, n_bits, codes)), t, codes[tokens[t]], n_bits,
                       np.uint64(seed & MASK64), np.uint64(oracle.sample_threshold(sample_rate)))


def train(train_tokens, vocab_size: int, *, codes, context: int, neurons, bits, seed: int, sample_rate: float = 1.0,
          cell_mode: str = TERNARY, empty_value: float = 0.0, memory: str = "auto", gpu=None,
          device: str | None = None, connectivity: Sequence[np.ndarray] | None = None) -> Model:
    """Train every bit cluster on every example (positions t >= context): the oracle's train, with
    each cluster stored DENSE or SPARSE (`memory`: auto, dense or sparse; the same cells), on the
    CPU or by `gpu`'s kernels (engine/bitwise_cuda.py or bitwise_wgpu.py: they build on this module,
    so they are handed in, not imported here). `device` names where it ran (metal runs the wgpu
    kernels); by default the kernels' NAME, or cpu. `connectivity`: each cluster's (neurons, bits)
    connections instead of the drawn ones (a connectivity search's; each neuron keeps its sampling
    stream); a cluster wired otherwise than drawn trains on the CPU engine (the GPU kernels draw
    their wiring), and `device` is cpu when no cluster trained on the GPU."""
    tokens = np.ascontiguousarray(train_tokens, dtype=np.int64)
    n_bits = bits_per_token(vocab_size)
    neurons, bits = oracle.per_cluster(neurons, n_bits, "neurons"), oracle.per_cluster(bits, n_bits, "bits")
    if cell_mode not in oracle.CELL_MODES:
        raise ValueError(f"unknown cell_mode {cell_mode!r}: one of {', '.join(oracle.CELL_MODES)}")
    if not all(1 <= b <= min(64, context * n_bits) for b in bits) or min(neurons) < 1:
        raise ValueError(f"bits must be 1..{min(64, context * n_bits)} and neurons at least 1, got {bits}, {neurons}")
    codes = np.asarray(codes, dtype=np.int64)
    inputs = InputBits(context, n_bits, codes)
    data = training_set(tokens, codes, context, seed, sample_rate, n_bits)
    wired = explicit_wiring(connectivity, data, inputs, neurons, bits)
    specs = [(i, neurons[i], bits[i], choose_storage(memory, cell_mode, neurons[i], bits[i], data.t.shape[0] * sample_rate))
             for i in range(n_bits)]
    name = device or ("cpu" if gpu is None else gpu.NAME)
    if gpu is not None and connectivity is None:
        clusters, on_gpu = gpu.train_clusters(data, inputs, specs, cell_mode)
    elif gpu is not None and any(conn is None for conn in wired):  # the drawn clusters on the GPU, the rest here
        drawn = [spec for spec in specs if wired[spec[0]] is None]
        trained, tables = gpu.train_clusters(data, inputs, drawn, cell_mode)
        clusters, on_gpu = [None] * n_bits, [None] * n_bits
        for (i, *_), cluster, table in zip(drawn, trained, tables):
            clusters[i], on_gpu[i] = cluster, table
        for i, n, b, storage in specs:
            if wired[i] is not None:
                clusters[i] = train_cluster(data, inputs, i, n, b, cell_mode, storage, wired[i])
    else:
        clusters, on_gpu = [train_cluster(data, inputs, i, n, b, cell_mode, storage, wired[i])
                            for i, n, b, storage in specs], None
        name = name if gpu is None else "cpu"  # every cluster wired otherwise than drawn: none trained on the GPU
    counted = train_tokens if isinstance(train_tokens, np.ndarray) else tokens  # the sweep's array: counted once
    position = Frequencies.of(counted, vocab_size).position.astype(np.int64)  # §3's cluster order
    return Model(vocab_size, context, codes, position, real_codes_are_gray(codes), cell_mode, empty_value, clusters,
                 name, on_gpu, int(data.seed))


def explicit_wiring(connectivity, data: TrainingSet, inputs: InputBits, neurons: list, bits: list) -> list:
    """Per cluster its explicit connections ((neurons, bits) int32, checked: distinct per neuron and
    inside the input), or None where they are the drawn ones (or none are given)."""
    if connectivity is None:
        return [None] * len(neurons)
    if len(connectivity) != len(neurons):
        raise ValueError(f"connectivity has {len(connectivity)} clusters, the model {len(neurons)}")
    out = []
    for i, (conn, n, b) in enumerate(zip(connectivity, neurons, bits)):
        conn = np.ascontiguousarray(conn, dtype=np.int32)
        if conn.shape != (n, b) or not valid_connections(conn, inputs.n_input):
            raise ValueError(f"connectivity of bit cluster {i}: {conn.shape} connections, each neuron's distinct "
                             f"and in 0..{inputs.n_input - 1}, are needed for {n} neurons of {b} bits")
        drawn = draw_bit_connectivity(int(data.seed), i, n, b, inputs.n_input)
        out.append(None if np.array_equal(conn, drawn) else conn)
    return out


def valid_connections(conn: np.ndarray, n_input: int) -> bool:
    """Whether every connection of a (neurons, bits) array is inside the input and distinct per neuron."""
    return bool(((conn >= 0) & (conn < n_input)).all()) and bool((np.diff(np.sort(conn, axis=1), axis=1) != 0).all())


def drawn_connectivity(model: Model) -> list[np.ndarray]:
    """Each cluster's drawn connections at the model's sizes (its seed's (seed, "bit", i, neuron) streams)."""
    return [draw_bit_connectivity(model.seed, i, c.neurons, c.bits, model.inputs.n_input)
            for i, c in enumerate(model.clusters)]


def train_cluster(data: TrainingSet, inputs: InputBits, i: int, neurons: int, bits: int, cell_mode: str,
                  storage: str, conn: np.ndarray | None = None) -> BitCluster:
    """Bit cluster i's wiring ((seed, "bit", i, neuron) streams, or `conn`) and cells."""
    if conn is None:
        conn = draw_bit_connectivity(int(data.seed), i, neurons, bits, inputs.n_input)
    return train_rows(data, inputs, i, conn, sample_states(data.seed, i, neurons), cell_mode, storage)


def train_rows(data: TrainingSet, inputs: InputBits, i: int, conn: np.ndarray, states: np.ndarray, cell_mode: str,
               storage: str) -> BitCluster:
    """Neurons of bit cluster i wired as `conn` (rows, bits) and sampling with `states` (rows,) uint64
    (sample_states_of their ids), as a BitCluster of those rows: each row's cells are those of its
    neuron in a cluster of that wiring (training is per neuron)."""
    rows, bits = conn.shape
    masks, order, _ = wire(conn, inputs)
    common = (data.x, data.t, data.y(i), masks, order, np.ascontiguousarray(states, dtype=np.uint64), data.threshold)
    if storage == DENSE:
        quad = cell_mode != TERNARY
        dense = np.zeros((rows, dense_row_bytes(cell_mode, bits) // (1 if quad else 4)),
                         dtype=np.uint8 if quad else np.uint32)
        train_dense(*common, numba.get_num_threads(), NO_DENSE32 if quad else dense, dense if quad else NO_DENSE8)
        return BitCluster(DENSE, conn, masks, order, dense)
    offsets, keys, vals = train_sparse(common, cell_mode != TERNARY, rows, bits)
    return BitCluster(SPARSE, conn, masks, order, NO_DENSE32, offsets, keys, vals)


def train_sparse(common: tuple, quad: bool, neurons: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, keys, vals) of a SPARSE cluster, in batches of neurons whose kept writes (an exact
    bound of their cells) fit SPARSE_BATCH_ENTRIES."""
    _, t, _, _, _, states, threshold = common
    kept = count_kept_states(t, states, threshold)
    bound = np.minimum(kept, 2 ** min(bits, 62))
    key_dtype = np.uint32 if bits <= 32 else np.uint64
    counts = np.zeros(neurons, dtype=np.int64)
    keys_parts, vals_parts, lo = [], [], 0
    while lo < neurons:
        hi = lo + max(1, int(np.searchsorted(np.cumsum(bound[lo:]), SPARSE_BATCH_ENTRIES, side="right")))
        starts = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(bound[lo:hi], out=starts[1:])
        keys_out, vals_out = np.empty(starts[-1], dtype=key_dtype), np.empty(starts[-1], dtype=np.uint8)
        train_sparse_batch(*common, quad, lo, kept, starts, keys_out, vals_out, counts[lo:hi])
        used = [slice(starts[b], starts[b] + counts[lo + b]) for b in range(hi - lo)]  # copies: free the batch
        keys_parts.append(np.concatenate([keys_out[u] for u in used]))
        vals_parts.append(np.concatenate([vals_out[u] for u in used]))
        lo = hi
    offsets = np.zeros(neurons + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets, np.concatenate(keys_parts), np.concatenate(vals_parts)


def cells(model: Model) -> list[dict]:
    """Per bit cluster {(neuron, address): state} of every cell holding something, addresses in the
    oracle's connection order: ternary ±1 (the sign of the net count; ties and EMPTY left out),
    quad the counter c of every written cell. For tests against the oracle's cells."""
    out = []
    for cluster in model.clusters:
        neuron, addr, code = stored_cells(cluster, model.cell_mode)
        _, _, perm = wire(cluster.conn, model.inputs)  # perm[n, k]: the connection at engine address bit k
        k = np.arange(cluster.bits)
        bit = (addr[:, None] >> (cluster.bits - 1 - k)[None, :].astype(np.uint64)) & np.uint64(1)  # (cells, bits)
        shift = (cluster.bits - 1 - perm[neuron]).astype(np.uint64)  # (cells, bits)
        oracle_addr = np.bitwise_or.reduce(bit << shift, axis=1)
        state = code.astype(np.int64) - 1 if model.cell_mode != TERNARY else np.where(code == 3, 1, -1)
        out.append({(int(n), int(a)): int(s) for n, a, s in zip(neuron, oracle_addr, state)})
    return out


def cells_stored(cluster: BitCluster, cell_mode: str) -> int:
    """How many cells hold a code (stored_cells' count), without listing them: a DENSE cluster of
    200 neurons of 20 bits is 200 M cells, and the record wants only the count."""
    if cluster.storage == SPARSE:
        return int(np.count_nonzero(cluster.vals))
    if cluster.stored is not None:
        return cluster.stored
    if cell_mode != TERNARY:
        return int(np.count_nonzero(cluster.dense))
    either = (cluster.dense | (cluster.dense >> np.uint32(1))) & np.uint32(0x55555555)  # a bit per non-zero 2-bit code
    return int(np.bitwise_count(either).sum())


def stored_cells(cluster: BitCluster, cell_mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(neuron, engine address (uint64), code) of every non-zero code, DENSE or SPARSE."""
    if cluster.storage == SPARSE:
        neuron = np.repeat(np.arange(cluster.neurons), np.diff(cluster.offsets))
        keep = cluster.vals != 0
        return neuron[keep], cluster.keys[keep].astype(np.uint64), cluster.vals[keep]
    if cell_mode == TERNARY:
        codes = (cluster.dense[:, :, None] >> (2 * np.arange(16, dtype=np.uint32))) & 3
        codes = codes.reshape(cluster.neurons, -1)[:, : 1 << cluster.bits]
    else:
        codes = cluster.dense
    neuron, addr = np.nonzero(codes)
    return neuron, addr.astype(np.uint64), codes[neuron, addr]


# ---- evaluation ---------------------------------------------------------------------------------------

def code_tables(cell_mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(5,) by cell code: the value read, whether it reads empty_value (ternary EMPTY), whether it
    holds no decision (ternary EMPTY; a quad cell never written, which reads c = 1)."""
    values, takes_empty, no_decision = np.zeros(5), np.zeros(5, dtype=np.bool_), np.zeros(5, dtype=np.int64)
    no_decision[0] = 1
    if cell_mode == TERNARY:
        values[3], takes_empty[0] = 1.0, True
    else:
        quad = oracle.QUAD_VALUES[cell_mode]
        values[0], values[1:] = quad[oracle.QUAD_START], quad
    return values, takes_empty, no_decision


def quarter_tables(cell_mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """code_tables with the values as int64 QUARTERS (every value is a multiple of 0.25), for GPU
    kernels that sum integers: their sums are exact, and p_of_quarters makes P from them."""
    values, takes_empty, no_decision = code_tables(cell_mode)
    quarters = (values * 4).astype(np.int64)
    assert np.array_equal(quarters / 4.0, values)
    return quarters, takes_empty, no_decision


def p_of_quarters(quarters: np.ndarray, n_empty: np.ndarray, empty_value: float, neurons: int) -> np.ndarray:
    """read_cluster's P = (decided + empty_value · #EMPTY) / neurons, on the same exact operands
    (decided = quarters / 4 exactly), so a GPU's P is the same float."""
    return (quarters / 4.0 + empty_value * n_empty.astype(np.int64)) / neurons


@dataclass
class Scores:
    """One split looked up: per example its position, target, bit probabilities (clamped), the
    lookups that found no decision, the two logarithms of each P_i, s(target) and the best code."""

    positions: np.ndarray  # (n,) int64 split positions t >= context
    targets: np.ndarray  # (n,) int64 token ids
    p: np.ndarray  # (n, B) float64 clamped bit probabilities
    empty: np.ndarray  # (n, B) int64 lookups per cluster that found no decision
    log_p: np.ndarray  # (n, B) ln P_i, as the oracle takes it (np.log on the (n, B) array)
    log_q: np.ndarray  # (n, B) ln(1 − P_i) as log1p(−P_i)
    target_s: np.ndarray  # (n,) s(target)
    best: np.ndarray  # (n,) int64 the real code of highest s, ties to the lowest


def read_clusters(model: Model, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, B) unclamped P and (n, B) int64 lookups holding no decision, every cluster read on the CPU."""
    p = np.empty((x.shape[0], model.n_bits))  # (n, B) C order, as the oracle's: the same np.log
    empty = np.empty((x.shape[0], model.n_bits), dtype=np.int64)
    tables = code_tables(model.cell_mode)
    for i, cluster in enumerate(model.clusters):
        quad_dense = cluster.storage == DENSE and cluster.dense.dtype == np.uint8
        col, col_empty = np.empty(x.shape[0]), np.empty(x.shape[0], dtype=np.int64)
        read_cluster(x, cluster.masks, cluster.order, cluster.storage == SPARSE,
                     NO_DENSE32 if quad_dense else cluster.dense, cluster.dense if quad_dense else NO_DENSE8,
                     cluster.offsets, cluster.keys, cluster.vals, *tables, float(model.empty_value), col, col_empty)
        p[:, i], empty[:, i] = col, col_empty
    return p, empty


def neuron_codes(cluster: BitCluster, x: np.ndarray) -> np.ndarray:
    """(n_examples, neurons) uint8: every example's cell code at each neuron of the cluster
    (read_neuron_codes), the transpose of a C-ordered (neurons, n_examples) array: a neuron's codes
    are contiguous (sum_increments reads the first n neurons' rows)."""
    out = np.empty((cluster.neurons, x.shape[0]), dtype=np.uint8).T
    quad_dense = cluster.storage == DENSE and cluster.dense.dtype == np.uint8
    read_neuron_codes(x, cluster.masks, cluster.order, cluster.storage == SPARSE,
                      NO_DENSE32 if quad_dense else cluster.dense, cluster.dense if quad_dense else NO_DENSE8,
                      cluster.offsets, cluster.keys, cluster.vals, out)
    return out


def score(model: Model, tokens, gpu=None) -> Scores:
    """Look up every example of a split (positions t >= context): bit probabilities (on the CPU, or
    by `gpu`'s kernel, engine/bitwise_cuda.py: the same floats), then s(target) and the best code by
    the closed forms."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    t = np.arange(model.context, max(model.context, tokens.shape[0]), dtype=np.int64)
    x = pack(tokens, t, model.inputs)
    if gpu is not None:
        p, empty = gpu.read_clusters(model, x)
    else:
        p, empty = read_clusters(model, x)
    targets = tokens[t]
    return scores_of(t, targets, model.codes[targets], *bit_logs(p), empty, *branches(model))


def bit_logs(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P clamped to [P_MIN, 1 − P_MIN], ln P and ln(1 − P) (as log1p(−P)): elementwise, so a column
    taken alone gives the same floats as the (n, B) array (optimize/sizes.py caches them so)."""
    p = np.clip(p, P_MIN, 1.0 - P_MIN)
    return p, np.log(p), np.log1p(-p)


def scores_of(positions: np.ndarray, targets: np.ndarray, target_codes: np.ndarray, p: np.ndarray,
              log_p: np.ndarray, log_q: np.ndarray, empty: np.ndarray, star: np.ndarray, branch: np.ndarray) -> Scores:
    """A split's Scores from its (n, B) clamped P, logarithms (bit_logs) and no-decision lookups:
    s(target) and the best code by the closed forms (star, branch: branch_bits)."""
    return Scores(positions, targets, p, empty, log_p, log_q, target_scores(log_p, log_q, target_codes),
                  best_codes(log_p, log_q, star, branch))


def branches(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """(B,) bool each: c*'s bits and the branch bits (K = V − 1's ones), MSB first (§3c "Closed forms")."""
    return branch_bits(model.vocab_size, model.n_bits, model.gray)


def branch_bits(vocab_size: int, n_bits: int, gray: bool) -> tuple[np.ndarray, np.ndarray]:
    """branches() from the model's vocabulary size, B and whether its real codes are Gray's."""
    c_star, branch = oracle.branch_points(vocab_size, n_bits, gray)
    i = np.arange(n_bits)
    return ((c_star >> (n_bits - 1 - i)) & 1).astype(np.bool_), np.isin(i, branch)


def log_normaliser(model: Model, sc: Scores, temperature: float = 1.0) -> np.ndarray:
    """(n,) log Σ_{u real} exp(s(u)/T)."""
    out = np.empty(sc.p.shape[0])
    closed_forms(sc.log_p, sc.log_q, *branches(model), float(temperature), LOG_Z, out, out)
    return out


def expected_score(model: Model, sc: Scores, temperature: float = 1.0) -> np.ndarray:
    """(n,) E_T[s] over the real tokens: a temperature fit's slope."""
    out = np.empty(sc.p.shape[0])
    closed_forms(sc.log_p, sc.log_q, *branches(model), float(temperature), MEAN, out, out)
    return out


def score_moments(model: Model, sc: Scores, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(n,) E_T[s] and (n,) Var_T[s] over the real tokens: the slope of mean CE in u = ln(1/T) is
    mean(E_T[s]) − mean(s(target)), its derivative (1/T) · mean(Var_T[s])."""
    mean, variance = np.empty(sc.p.shape[0]), np.empty(sc.p.shape[0])
    closed_forms(sc.log_p, sc.log_q, *branches(model), float(temperature), MEAN_AND_VARIANCE, mean, variance)
    return mean, variance


def ce(model: Model, sc: Scores, temperature: float = 1.0) -> np.ndarray:
    """(n,) −ln p(target), p normalised over the V real tokens at temperature T."""
    return log_normaliser(model, sc, temperature) - sc.target_s / temperature


def correct(model: Model, sc: Scores) -> np.ndarray:
    """(n,) whether the target's code is the best code (ties to the lowest code)."""
    return sc.best == model.codes[sc.targets]


def fit_temperature(model: Model, sc: Scores) -> float:
    """The T in [0.001, 1000] minimising mean CE (the oracle's, to 1e-12): CE is convex in
    u = ln(1/T), so Newton's method on its slope, with E_T[s] and Var_T[s] in closed form, inside
    the bracket where the slope changes sign (a step leaving it bisects; docs/design.md §3c
    "Calibration"). The oracle bisects the same bracket in about 45 steps; Newton takes a few."""
    if sc.targets.shape[0] == 0:
        return 1.0
    target = float(sc.target_s.mean())

    def slope(u: float) -> tuple[float, float]:
        mean, variance = score_moments(model, sc, math.exp(-u))
        return float(mean.mean()) - target, math.exp(u) * float(variance.mean())

    lo, hi = math.log(oracle.BETA_RANGE[0]), math.log(oracle.BETA_RANGE[1])
    if slope(lo)[0] >= 0:
        return 1 / oracle.BETA_RANGE[0]
    if slope(hi)[0] <= 0:
        return 1 / oracle.BETA_RANGE[1]
    u = min(max(0.0, lo), hi)
    while hi - lo > 1e-12:
        g, dg = slope(u)
        if g == 0:
            break
        lo, hi = (u, hi) if g < 0 else (lo, u)
        step = u - g / dg if dg > 0 else math.nan
        new = step if lo < step < hi else (lo + hi) / 2
        if abs(new - u) <= 1e-14 * max(1.0, abs(u)):
            u = new
            break
        u = new
    return math.exp(-u)


# ---- metrics: the oracle's dict, field for field ------------------------------------------------------

def metrics(model: Model, sc: Scores, *, temperature: float | None = None, bands: Sequence | None = None,
            byte_lengths=None) -> dict:
    """Overall (CE, PPL, accuracy, bpb), `calibrated` at `temperature`, per bit cluster, and per
    frequency band of the target when `bands` are given: bitwise_reference.metrics' dict."""
    ce_1, right = ce(model, sc), correct(model, sc)
    n_bytes = float(np.asarray(byte_lengths)[sc.positions].sum()) if byte_lengths is not None and len(ce_1) else None
    out = {**oracle.summary(ce_1, right), "bpb": oracle.bits_per_byte(ce_1, n_bytes)}
    ce_t = ce(model, sc, temperature) if temperature is not None else None
    if temperature is not None:
        mean = float(ce_t.mean()) if len(ce_1) else None
        out["calibrated"] = {"temperature": temperature, "ce": mean, "ppl": math.exp(mean) if len(ce_1) else None,
                             "bpb": oracle.bits_per_byte(ce_t, n_bytes), "bound": oracle.temperature_bound(temperature)}
    out["bits"] = bit_metrics(model, sc)
    if bands is not None:
        out["bands"] = band_metrics(model, sc, bands, ce_1, right, ce_t)
    return out


def bit_metrics(model: Model, sc: Scores) -> list[dict]:
    """Per bit cluster: accuracy of P_i > 0.5, binary CE, mean P_i, `empty` and `undecided` shares
    (the oracle's expressions on the same (n, B) array, so the same floats)."""
    out = []
    for i, cluster in enumerate(model.clusters):
        y = (model.codes[sc.targets] >> (model.n_bits - 1 - i)) & 1
        p, n = sc.p[:, i], len(sc.targets)
        out.append({
            "bit": i, "neurons": cluster.neurons, "bits": cluster.bits,
            "accuracy": float(((p > 0.5) == (y == 1)).mean()) if n else None,
            "ce": float(-np.where(y == 1, np.log(p), np.log1p(-p)).mean()) if n else None,
            "mean_p": float(p.mean()) if n else None,
            "empty": float(sc.empty[:, i].sum()) / (n * cluster.neurons) if n else None,
            "undecided": float((p == 0.5).mean()) if n else None,
        })
    return out


def band_metrics(model: Model, sc: Scores, bands: Sequence, ce_1, right, ce_t) -> list[dict]:
    """CE, PPL, accuracy (and calibrated CE) of the examples grouped by their target's frequency band."""
    of_position = oracle.band_of_position(model.vocab_size, bands)
    band, sizes = of_position[model.position[sc.targets]], np.bincount(of_position)
    out = []
    for k, size in enumerate(sizes):
        sel = band == k
        row = {"band": k, "first": int(sizes[:k].sum()), "tokens": int(size), **oracle.summary(ce_1[sel], right[sel]),
               "share": 100.0 * float(sel.sum()) / len(sel) if len(sel) else None}
        if ce_t is not None:
            row["calibrated_ce"] = float(ce_t[sel].mean()) if sel.any() else None
        out.append(row)
    return out


def evaluate(model: Model, tokens, *, temperature: float | None = None, bands: Sequence | None = None,
             byte_lengths=None, gpu=None) -> dict:
    """Metrics of `model` on one split (see metrics()), its lookups on the CPU or by `gpu`'s kernels."""
    return metrics(model, score(model, tokens, gpu), temperature=temperature, bands=bands, byte_lengths=byte_lengths)
