"""The bitwise model's oracle: docs/design.md §3c transcribed in plain Python and numpy.

One cluster per bit of a token's code. Slow on purpose: cells live in dicts, every write is a
Python step in ascending example order, and token probabilities enumerate all V tokens. It shares
no code with the engines beyond reference.py's splitmix64 mixer, so the tests can hold every
backend to it. It also holds the O(B) closed forms the engines use instead of enumerating
(`log_normaliser`, `best_code`), tested here against the enumeration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ramsweep.config import bits_per_token
from ramsweep.engine.reference import MASK64, _mix64, drawn

TERNARY, QUAD_BINARY, QUAD_WEIGHTED = "ternary", "quad_binary", "quad_weighted"
CELL_MODES = (TERNARY, QUAD_BINARY, QUAD_WEIGHTED)
QUAD_START = 1  # a quad cell's counter before any write
QUAD_VALUES = {QUAD_BINARY: (0.0, 0.0, 1.0, 1.0), QUAD_WEIGHTED: (0.0, 0.25, 0.75, 1.0)}  # read value by counter
P_MIN = 1e-7  # bit probabilities are clamped to [P_MIN, 1 - P_MIN]
BIT_SALT = int.from_bytes(b"bit", "big")  # connectivity streams (seed, "bit", cluster, neuron)
SAMPLE_SALT = int.from_bytes(b"sample", "big")  # sampling streams (seed, "sample", cluster, neuron)
BETA_RANGE = (1e-3, 1e3)  # inverse temperatures searched, as evaluate.BETA_RANGE: T from 0.001 to 1000


# ---- codes, streams, sampling -------------------------------------------------------------------

def token_codes(train_tokens, vocab_size: int, encoding: str = "native", gray: bool = False) -> np.ndarray:
    """(V,) int64: each token id's code (§3 "Input bits"), the input's and the output's: native the
    id, frequency its training-frequency position, appearance the rank of its first appearance in
    training (unseen ids after, ascending); with `gray` the Gray code c ^ (c >> 1) of that."""
    if encoding == "frequency":
        codes = frequency_positions(train_tokens, vocab_size)
    elif encoding == "appearance":
        seen = list(dict.fromkeys(int(t) for t in train_tokens))
        ranked = seen + sorted(set(range(vocab_size)) - set(seen))
        codes = np.empty(vocab_size, dtype=np.int64)
        codes[ranked] = np.arange(vocab_size)
    elif encoding == "native":
        codes = np.arange(vocab_size, dtype=np.int64)
    else:
        raise ValueError(f"unknown encoding {encoding!r}: native, frequency or appearance")
    return codes ^ (codes >> 1) if gray else codes


def frequency_positions(train_tokens, vocab_size: int) -> np.ndarray:
    """(V,) int64: each token's position in the training frequency order (§3 "Clusters and tiers"):
    descending count, ties and unseen tokens by ascending id."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size)
    order = sorted(range(vocab_size), key=lambda tok: (-counts[tok], tok))
    position = np.empty(vocab_size, dtype=np.int64)
    position[order] = np.arange(vocab_size)
    return position


def real_codes(vocab_size: int, gray: bool) -> np.ndarray:
    """The output codes that are outcomes, ascending: those of ids (ranks) 0..V-1, Gray-coded with
    `gray` (every encoding is a permutation of 0..V-1, so the set does not depend on it)."""
    k = np.arange(vocab_size, dtype=np.int64)
    return np.sort(k ^ (k >> 1)) if gray else k


def stream_state(seed: int, salt: int, cluster: int, neuron: int) -> int:
    """mix(mix(mix(mix(seed) + salt) + cluster) + neuron), all mod 2^64: a neuron's splitmix64 state."""
    state = _mix64((_mix64(seed) + salt) & MASK64)
    return _mix64((_mix64((state + cluster) & MASK64) + neuron) & MASK64)


def bit_connectivity(seed: int, cluster: int, neuron: int, bits: int, n_input: int) -> list[int]:
    """`bits` distinct input positions of one neuron of bit cluster `cluster` (§3 "Connectivity"):
    a partial Fisher–Yates shuffle from its (seed, "bit", cluster, neuron) stream; first = MSB."""
    return drawn(stream_state(seed, BIT_SALT, cluster, neuron), bits, n_input)


def sample_hash(seed: int, cluster: int, neuron: int, example: int) -> int:
    """The 64-bit draw of (neuron, example): mix(stream_state(seed, "sample", cluster, neuron) + example)."""
    return _mix64((stream_state(seed, SAMPLE_SALT, cluster, neuron) + example) & MASK64)


def sample_threshold(sample_rate: float) -> int:
    """R = ceil(r · 2^53): a neuron keeps an example iff the top 53 bits of its draw are below R."""
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    return math.ceil(sample_rate * 2.0**53)


def kept(seed: int, cluster: int, neuron: int, example: int, sample_rate: float) -> bool:
    """Whether neuron `neuron` of bit cluster `cluster` trains on the example whose target is at
    position `example` of the training split (§3c "Sampling"). r = 1 keeps every example."""
    return (sample_hash(seed, cluster, neuron, example) >> 11) < sample_threshold(sample_rate)


# ---- the model and training ---------------------------------------------------------------------

@dataclass
class BitwiseModel:
    """A trained bitwise model. cells[i] maps (neuron, address) to the cell of bit cluster i: the
    net count #1-writes − #0-writes (ternary) or the counter c (quad modes); a cell never written
    is absent (EMPTY, or c = QUAD_START)."""

    vocab_size: int
    context: int
    codes: np.ndarray  # (V,) int64: each token id's code, input and output
    position: np.ndarray  # (V,) int64: each token id's training-frequency position (bands)
    cell_mode: str
    empty_value: float
    conn: list[np.ndarray]  # per bit cluster (n_i, b_i) int64 input positions, column 0 the MSB
    cells: list[dict]

    @property
    def n_bits(self) -> int:
        return len(self.conn)

    @property
    def bits_per_token(self) -> int:
        return bits_per_token(self.vocab_size)


def per_cluster(value, n_bits: int, name: str) -> list[int]:
    """One int for every bit cluster, or a list of one per cluster."""
    values = [int(value)] * n_bits if np.isscalar(value) else [int(v) for v in value]
    if len(values) != n_bits:
        raise ValueError(f"{name}: {len(values)} values for {n_bits} bit clusters")
    return values


def input_bits(model: BitwiseModel, context_tokens) -> list[int]:
    """Each context token's code in bits_per_token bits, MSB first, oldest token first."""
    bpt = model.bits_per_token
    return [int(model.codes[tok] >> (bpt - 1 - b)) & 1 for tok in context_tokens for b in range(bpt)]


def address(x: list[int], conn) -> int:
    """Σ_j x[conn[j]] · 2^(bits-1-j): the first connection is the most significant bit."""
    bits = len(conn)
    return sum(x[int(c)] << (bits - 1 - j) for j, c in enumerate(conn))


def code_bit(code: int, i: int, n_bits: int) -> int:
    """Bit i of a code, i = 0 the most significant of n_bits."""
    return (int(code) >> (n_bits - 1 - i)) & 1


def train(train_tokens, vocab_size: int, *, codes, context: int, neurons, bits, seed: int,
          sample_rate: float = 1.0, cell_mode: str = TERNARY, empty_value: float = 0.0) -> BitwiseModel:
    """Train every bit cluster on every example (positions t >= context, in ascending t): each
    neuron that keeps the example (`kept`, with example = t) writes the target code's bit at its
    address. `neurons` and `bits`: one int for all clusters or one per cluster."""
    tokens = [int(t) for t in train_tokens]
    n_bits = bits_per_token(vocab_size)
    neurons, bits = per_cluster(neurons, n_bits, "neurons"), per_cluster(bits, n_bits, "bits")
    n_input = context * n_bits
    if cell_mode not in CELL_MODES:
        raise ValueError(f"unknown cell_mode {cell_mode!r}: one of {', '.join(CELL_MODES)}")
    if not all(1 <= b <= min(64, n_input) for b in bits) or min(neurons) < 1:
        raise ValueError(f"bits must be 1..{min(64, n_input)} and neurons at least 1, got {bits}, {neurons}")
    sample_threshold(sample_rate)
    codes = np.asarray(codes, dtype=np.int64)
    conn = [np.array([bit_connectivity(seed, i, n, bits[i], n_input) for n in range(neurons[i])], dtype=np.int64)
            for i in range(n_bits)]
    model = BitwiseModel(vocab_size, context, codes, frequency_positions(tokens, vocab_size), cell_mode,
                         empty_value, conn, [{} for _ in range(n_bits)])
    for t in range(context, len(tokens)):
        x = input_bits(model, tokens[t - context : t])
        for i in range(n_bits):
            y = code_bit(codes[tokens[t]], i, n_bits)
            for n in range(neurons[i]):
                if kept(seed, i, n, t, sample_rate):
                    write(model, i, (n, address(x, conn[i][n])), y)
    return model


def write(model: BitwiseModel, cluster: int, key: tuple[int, int], y: int) -> None:
    """One write of bit y: ternary counts it; a quad counter steps up (y = 1) or down, saturating."""
    cells = model.cells[cluster]
    if model.cell_mode == TERNARY:
        cells[key] = cells.get(key, 0) + (1 if y else -1)
    else:
        c = cells.get(key, QUAD_START)
        cells[key] = min(c + 1, 3) if y else max(c - 1, 0)


def read(model: BitwiseModel, cluster: int, key: tuple[int, int]) -> tuple[float | None, bool]:
    """(the cell's value, None for a ternary EMPTY; whether it holds no decision: EMPTY in
    ternary, never written in the quad modes)."""
    cell = model.cells[cluster].get(key)
    if model.cell_mode == TERNARY:
        return (None, True) if not cell else (1.0 if cell > 0 else 0.0, False)
    return QUAD_VALUES[model.cell_mode][QUAD_START if cell is None else cell], cell is None


def bit_probabilities(model: BitwiseModel, context_tokens) -> tuple[np.ndarray, np.ndarray]:
    """(B,) P_i, clamped to [P_MIN, 1 - P_MIN], and (B,) the lookups of each cluster that found no
    decision. P_i = (Σ values of the decided cells + empty_value · #EMPTY) / neurons."""
    x = input_bits(model, context_tokens)
    p, empty = np.zeros(model.n_bits), np.zeros(model.n_bits, dtype=np.int64)
    for i, conn in enumerate(model.conn):
        reads = [read(model, i, (n, address(x, c))) for n, c in enumerate(conn)]
        n_empty = sum(value is None for value, _ in reads)
        decided = sum(value for value, _ in reads if value is not None)
        p[i] = (decided + model.empty_value * n_empty) / len(conn)
        empty[i] = sum(no_decision for _, no_decision in reads)
    return np.clip(p, P_MIN, 1.0 - P_MIN), empty


# ---- token scores: the enumeration and its O(B) closed forms ------------------------------------

def token_scores(p: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """s(c) = Σ_i [b_i(c) ln P_i + (1 - b_i(c)) ln(1 - P_i)], summed in ascending i, for P (n, B)
    and codes (m,) or (n, m): (n, m). Each term is the selected logarithm, so a tie between codes
    is the same tie on every backend that sums in the same order."""
    n_bits = p.shape[1]
    log_p, log_q = np.log(p), np.log1p(-p)
    s = np.zeros(np.broadcast_shapes((p.shape[0], 1), np.shape(codes)))
    for i in range(n_bits):
        bit = (np.asarray(codes) >> (n_bits - 1 - i)) & 1
        s = s + np.where(bit == 1, log_p[:, i : i + 1], log_q[:, i : i + 1])
    return s


def branch_points(vocab_size: int, n_bits: int, gray: bool) -> tuple[int, list[int]]:
    """The real codes as one code and subcubes (docs/design.md §3c "Closed forms"): with K = V - 1
    and c* its code (K, or its Gray code), the ids 0..K are K itself plus, for each bit j where K
    has a 1, the ids that agree with K above j and have 0 at j. Their codes are exactly the codes
    that agree with c* above j, differ from it at j, and take any value below: Gray coding maps a
    free low part of an id onto a free low part of the code. Returns (c*, those j)."""
    k = vocab_size - 1
    return (k ^ (k >> 1) if gray else k), [j for j in range(n_bits) if code_bit(k, j, n_bits)]


def star_terms(p: np.ndarray, vocab_size: int, gray: bool):
    """The subcubes' bits j, and per bit (n, B): c*'s log term ("on"), the other one ("off"), and
    the two logs ln(1 - P_i), ln P_i."""
    n_bits = p.shape[1]
    c_star, branches = branch_points(vocab_size, n_bits, gray)
    s1, s0 = np.log(p), np.log1p(-p)
    star = np.array([code_bit(c_star, i, n_bits) for i in range(n_bits)], dtype=bool)
    return branches, np.where(star, s1, s0), np.where(star, s0, s1), s0, s1


def below(x: np.ndarray) -> np.ndarray:
    """(n, B): Σ_{i>j} x[:, i] at each j."""
    return np.cumsum(x[:, ::-1], axis=1)[:, ::-1] - x


def log_normaliser(p: np.ndarray, vocab_size: int, gray: bool = False, temperature: float = 1.0) -> np.ndarray:
    """(n,) log Σ_{u real} exp(s(u)/T) in O(B) per example: the subcube of bit j contributes c*'s
    terms above j, the other term at j and, below j, log(e^{w_i(0)} + e^{w_i(1)}) per bit."""
    branches, on, off, s0, s1 = star_terms(p, vocab_size, gray)
    on, off, free = on / temperature, off / temperature, np.logaddexp(s0 / temperature, s1 / temperature)
    above, rest = np.cumsum(on, axis=1) - on, below(free)  # Σ_{i<j} of c*'s terms; Σ_{i>j} of the free bits
    terms = [above[:, j] + off[:, j] + rest[:, j] for j in branches] + [on.sum(axis=1)]
    return np.logaddexp.reduce(np.stack(terms, axis=1), axis=1)


def expected_score(p: np.ndarray, vocab_size: int, gray: bool = False, temperature: float = 1.0) -> np.ndarray:
    """(n,) E_T[s] = Σ_{u real} p_T(u) s(u) in O(B): the slope of log_normaliser in 1/T, which a
    temperature fit needs (CE's slope in 1/T is mean(E_T[s]) - mean(s(target))). Per subcube, the
    fixed bits' terms plus each free bit's mean under its own two-way softmax, weighted by the
    subcube's share of the normaliser."""
    branches, on, off, s0, s1 = star_terms(p, vocab_size, gray)
    free_log = np.logaddexp(s0 / temperature, s1 / temperature)
    free_mean = s0 * np.exp(s0 / temperature - free_log) + s1 * np.exp(s1 / temperature - free_log)
    above, rest_log, rest_mean = np.cumsum(on, axis=1) - on, below(free_log), below(free_mean)
    logs = [(above[:, j] + off[:, j]) / temperature + rest_log[:, j] for j in branches] + [on.sum(axis=1) / temperature]
    means = [above[:, j] + off[:, j] + rest_mean[:, j] for j in branches] + [on.sum(axis=1)]
    logs, means = np.stack(logs, axis=1), np.stack(means, axis=1)
    return (np.exp(logs - np.logaddexp.reduce(logs, axis=1, keepdims=True)) * means).sum(axis=1)


def best_code(p: np.ndarray, vocab_size: int, gray: bool = False) -> np.ndarray:
    """(n,) the real code with the highest s, ties to the lowest code, in O(B) candidates: c*, and
    per subcube its best code (each free bit 1 where ln P_i > ln(1 - P_i), else 0: the lowest).
    The candidates' s is token_scores' sum, so ties are decided as the enumeration decides them."""
    n_bits = p.shape[1]
    c_star, branches = branch_points(vocab_size, n_bits, gray)
    ones = np.log(p) > np.log1p(-p)  # (n, B): where a free bit is best set
    candidates = [np.full(p.shape[0], c_star, dtype=np.int64)]
    for j in branches:
        shift = n_bits - 1 - j
        low = np.zeros(p.shape[0], dtype=np.int64)
        for i in range(j + 1, n_bits):
            low |= ones[:, i].astype(np.int64) << (n_bits - 1 - i)
        candidates.append(((c_star >> (shift + 1)) << (shift + 1)) | ((c_star ^ (1 << shift)) & (1 << shift)) | low)
    codes = np.stack(candidates, axis=1)
    s = token_scores(p, codes)
    best = s.max(axis=1, keepdims=True)
    return np.where(s == best, codes, np.iinfo(np.int64).max).min(axis=1)


# ---- scoring a split, metrics, the temperature ---------------------------------------------------

@dataclass
class Scored:
    """One split scored by enumeration: per example its position, target, bit probabilities, the
    lookups that found no decision, and every token's score s (by token id)."""

    positions: np.ndarray  # (n,) split positions t >= context
    targets: np.ndarray  # (n,) token ids
    p: np.ndarray  # (n, B) clamped bit probabilities
    empty: np.ndarray  # (n, B) lookups per cluster that found no decision
    s: np.ndarray  # (n, V) token scores by token id

    def ce(self, temperature: float = 1.0) -> np.ndarray:
        """(n,) -ln p(target), p normalised over the V real tokens at temperature T."""
        z = self.s / temperature
        top = z.max(axis=1)
        log_z = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
        return log_z - z[np.arange(len(z)), self.targets]


def scored(model: BitwiseModel, p: np.ndarray, empty: np.ndarray, positions, targets) -> Scored:
    """A Scored from bit probabilities (tests build small cases by hand this way)."""
    p = np.asarray(p, dtype=np.float64).reshape(-1, model.n_bits)
    return Scored(np.asarray(positions, dtype=np.int64), np.asarray(targets, dtype=np.int64), p,
                  np.asarray(empty, dtype=np.int64).reshape(p.shape), token_scores(p, model.codes))


def score(model: BitwiseModel, tokens) -> Scored:
    """Look up every example of a split (positions t >= context) and enumerate every token's score."""
    tokens = [int(t) for t in tokens]
    positions = list(range(model.context, len(tokens)))
    reads = [bit_probabilities(model, tokens[t - model.context : t]) for t in positions]
    p = np.array([r[0] for r in reads]).reshape(-1, model.n_bits)
    empty = np.array([r[1] for r in reads]).reshape(-1, model.n_bits)
    return scored(model, p, empty, positions, [tokens[t] for t in positions])


def correct(model: BitwiseModel, sc: Scored) -> np.ndarray:
    """(n,) whether the target has the highest s over the real tokens, ties to the lowest code."""
    by_code = np.argsort(model.codes, kind="stable")
    best = by_code[np.argmax(sc.s[:, by_code], axis=1)]  # argmax keeps the first: the lowest code
    return best == sc.targets


def fit_temperature(sc: Scored) -> float:
    """The T in [0.001, 1000] that minimises mean CE on these (validation) scores. CE is convex in
    u = ln(1/T), with slope mean(E_T[s]) - mean(s(target)), increasing: bisection on the slope."""
    if len(sc.targets) == 0:
        return 1.0
    target = float(sc.s[np.arange(len(sc.s)), sc.targets].mean())

    def slope(u: float) -> float:
        z = sc.s * math.exp(u)
        w = np.exp(z - z.max(axis=1, keepdims=True))
        return float(((w * sc.s).sum(axis=1) / w.sum(axis=1)).mean()) - target

    lo, hi = math.log(BETA_RANGE[0]), math.log(BETA_RANGE[1])
    if slope(lo) >= 0:
        return 1 / BETA_RANGE[0]
    if slope(hi) <= 0:
        return 1 / BETA_RANGE[1]
    while hi - lo > 1e-12:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return math.exp(-(lo + hi) / 2)


def temperature_bound(temperature: float) -> str | None:
    """"highest" (T = 1000), "lowest" (T = 0.001) or None: which end of the range a fit sits at."""
    if temperature >= 1 / BETA_RANGE[0]:
        return "highest"
    if temperature <= 1 / BETA_RANGE[1]:
        return "lowest"
    return None


def summary(ce: np.ndarray, right: np.ndarray) -> dict:
    """examples, CE (nats), PPL, accuracy; None where there is no example."""
    if len(ce) == 0:
        return {"examples": 0, "ce": None, "ppl": None, "accuracy": None}
    mean = float(ce.mean())
    return {"examples": len(ce), "ce": mean, "ppl": math.exp(mean), "accuracy": float(right.mean())}


def bits_per_byte(ce: np.ndarray, n_bytes: float | None) -> float | None:
    return float(ce.sum()) / math.log(2) / n_bytes if n_bytes else None


def metrics(model: BitwiseModel, sc: Scored, *, temperature: float | None = None, bands: Sequence | None = None,
            byte_lengths=None) -> dict:
    """Overall (CE, PPL, accuracy, bpb), `calibrated` at `temperature`, per bit cluster, and per
    frequency band of the target when `bands` are given (counts over the training frequency order,
    the last may be "rest")."""
    ce, right = sc.ce(), correct(model, sc)
    n_bytes = float(np.asarray(byte_lengths)[sc.positions].sum()) if byte_lengths is not None and len(ce) else None
    out = {**summary(ce, right), "bpb": bits_per_byte(ce, n_bytes)}
    ce_t = sc.ce(temperature) if temperature is not None else None
    if temperature is not None:
        mean = float(ce_t.mean()) if len(ce) else None
        out["calibrated"] = {"temperature": temperature, "ce": mean, "ppl": math.exp(mean) if len(ce) else None,
                             "bpb": bits_per_byte(ce_t, n_bytes), "bound": temperature_bound(temperature)}
    out["bits"] = bit_metrics(model, sc)
    if bands is not None:
        out["bands"] = band_metrics(model, sc, bands, ce, right, ce_t)
    return out


def bit_metrics(model: BitwiseModel, sc: Scored) -> list[dict]:
    """Per bit cluster: accuracy of P_i > 0.5 against the target's bit, binary CE, mean P_i, the
    share of lookups that found no decision (`empty`) and of examples with P_i = 0.5 (`undecided`)."""
    out = []
    for i, conn in enumerate(model.conn):
        y = (model.codes[sc.targets] >> (model.n_bits - 1 - i)) & 1
        p = sc.p[:, i]
        n = len(y)
        out.append({
            "bit": i, "neurons": conn.shape[0], "bits": conn.shape[1],
            "accuracy": float(((p > 0.5) == (y == 1)).mean()) if n else None,
            "ce": float(-np.where(y == 1, np.log(p), np.log1p(-p)).mean()) if n else None,
            "mean_p": float(p.mean()) if n else None,
            "empty": float(sc.empty[:, i].sum()) / (n * conn.shape[0]) if n else None,
            "undecided": float((p == 0.5).mean()) if n else None,
        })
    return out


def band_of_position(vocab_size: int, bands: Sequence) -> np.ndarray:
    """(V,) the band of each training-frequency position: band k takes the next bands[k] positions,
    a last "rest" the remaining ones (§3 "Clusters and tiers", as the tiered model's tiers)."""
    counts = list(bands)
    if "rest" in counts[:-1] or sum(c for c in counts if c != "rest") > vocab_size:
        raise ValueError(f"bands {counts}: counts within {vocab_size} tokens, at most one 'rest', last")
    if counts[-1] == "rest":
        counts[-1] = vocab_size - sum(counts[:-1])
    if sum(counts) != vocab_size or min(counts) < 1:
        raise ValueError(f"bands {list(bands)} must cover the {vocab_size} tokens, each at least one")
    return np.repeat(np.arange(len(counts)), counts)


def band_metrics(model: BitwiseModel, sc: Scored, bands: Sequence, ce, right, ce_t) -> list[dict]:
    """CE, PPL and accuracy (and calibrated CE) of the examples grouped by their target's band."""
    band = band_of_position(model.vocab_size, bands)[model.position[sc.targets]]
    sizes = np.bincount(band_of_position(model.vocab_size, bands))
    out = []
    for k, size in enumerate(sizes):
        sel = band == k
        row = {"band": k, "first": int(sizes[:k].sum()), "tokens": int(size), **summary(ce[sel], right[sel]),
               "share": 100.0 * float(sel.sum()) / len(sel) if len(sel) else None}
        if ce_t is not None:
            row["calibrated_ce"] = float(ce_t[sel].mean()) if sel.any() else None
        out.append(row)
    return out


def evaluate(model: BitwiseModel, tokens, *, temperature: float | None = None, bands: Sequence | None = None,
             byte_lengths=None) -> dict:
    """Metrics of `model` on one split (see metrics())."""
    return metrics(model, score(model, tokens), temperature=temperature, bands=bands, byte_lengths=byte_lengths)
