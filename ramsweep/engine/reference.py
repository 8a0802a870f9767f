"""The oracle: docs/design.md §3 transcribed line by line in plain Python and numpy.

Slow on purpose and shares no code with the numba engine beyond config parsing, so the
tests can hold every backend to it. Cells live in a dict {(tier, neuron, address): code}.
"""

from __future__ import annotations

import math

import numpy as np

from ramsweep.config import Experiment

EMPTY, FALSE, TRUE = 0, 1, 3  # codes ordered so that max() is "TRUE beats FALSE beats EMPTY"
MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def connectivity(seed: int, tier: int, neuron: int, bits: int, n_input: int, gate: bool = False) -> list[int]:
    """`bits` distinct input positions, uniform without replacement, from a splitmix64
    generator seeded by (seed, tier, neuron), or (seed, "gate", tier, neuron) for a gate
    neuron; the first is the address's MSB."""
    base = (_mix64(seed) + int.from_bytes(b"gate", "big")) & MASK64 if gate else seed
    return drawn(_mix64((_mix64((_mix64(base) + tier) & MASK64) + neuron) & MASK64), bits, n_input)


def drawn(state: int, bits: int, n_input: int) -> list[int]:
    """`bits` distinct positions of `n_input`: a partial Fisher–Yates shuffle driven by the
    splitmix64 stream that starts at `state` (every neuron's wiring, whatever its architecture)."""
    pool = list(range(n_input))
    for j in range(bits):
        r = _mix64(state)
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        k = j + r % (n_input - j)
        pool[j], pool[k] = pool[k], pool[j]
    return pool[:bits]


def lsh_words(seed: int, tier: int, neuron: int, bits: int, lsh_bits: int) -> list[int]:
    """An LSH neuron's H3 hash words q_0..q_{bits-1}: the top lsh_bits bits of a splitmix64
    stream seeded by (seed, tier, neuron, "lsh")."""
    state = _mix64((_mix64((_mix64((_mix64(seed) + tier) & MASK64) + neuron) & MASK64)
                    + int.from_bytes(b"lsh", "big")) & MASK64)
    words = []
    for _ in range(bits):
        words.append(_mix64(state) >> (64 - lsh_bits))
        state = (state + 0x9E3779B97F4A7C15) & MASK64
    return words


class ReferenceModel:
    def __init__(self, exp: Experiment, train_tokens, vocab_size: int, order=None, wiring=None):
        self.exp, self.V = exp, vocab_size
        train_tokens = [int(t) for t in train_tokens]
        # Clusters: tokens by descending training frequency, ties by ascending id.
        freq = [0] * vocab_size
        for tok in train_tokens:
            freq[tok] += 1
        self.clusters = sorted(range(vocab_size), key=lambda tok: (-freq[tok], tok))
        self.position = {tok: i for i, tok in enumerate(self.clusters)}
        # Tiers take consecutive clusters; rest takes the remainder.
        self.tier_of = []
        self.tiers = []  # (first position, count, neurons, bits)
        first = 0
        for i, (spec, count) in enumerate(zip(exp.tiers.tiers, exp.tiers.cluster_counts(vocab_size))):
            self.tiers.append((first, count, spec.neurons, spec.bits))
            self.tier_of += [i] * count
            first += count
        # Negatives: the most frequent tokens of the training split.
        seen = [tok for tok in self.clusters if freq[tok] > 0]
        self.negatives = [self.position[tok] for tok in seen[: exp.negatives]]
        # Input: each context token's code in ceil(log2 V) bits, oldest token first, MSB first. The
        # code is the id (native), its frequency rank (= cluster position) or the rank of its first
        # appearance in training (unseen ids after, ascending), Gray-coded when asked.
        if exp.encoding == "frequency":
            rank = dict(self.position)
        elif exp.encoding == "appearance":
            appearance = list(dict.fromkeys(train_tokens)) + [t for t in range(vocab_size) if freq[t] == 0]
            rank = {tok: i for i, tok in enumerate(appearance)}
        else:
            rank = {tok: tok for tok in range(vocab_size)}
        self.code = [rank[tok] ^ (rank[tok] >> 1) if exp.gray else rank[tok] for tok in range(vocab_size)]
        self.bpt = max(1, math.ceil(math.log2(vocab_size))) if vocab_size > 1 else 1
        n_input = exp.context * self.bpt
        self.conn = [np.asarray(c, dtype=np.int64) for c in wiring] if wiring is not None else [
            np.array([connectivity(exp.seed, t, n, bits, n_input) for n in range(count * neurons)], dtype=np.int64)
            .reshape(count * neurons, bits)
            for t, (_, count, neurons, bits) in enumerate(self.tiers)
        ]
        # LSH tiers (bits above sparse_max_bits): a cell is h(a), the XOR of the neuron's hash
        # words q_j at the address bits j (MSB = j 0) that are 1
        self.hashes = [[lsh_words(exp.seed, t, n, bits, exp.lsh_bits) for n in range(count * neurons)]
                       if exp.memory_kind(bits) == "lsh" else None
                       for t, (_, count, neurons, bits) in enumerate(self.tiers)]
        self.cells: dict[tuple[int, int, int], int] = {}
        # Gating: G gate neurons of B bits per cluster, wired by (seed, "gate", tier, neuron)
        gating = exp.gating
        self.gate_conn = [np.array([connectivity(exp.seed, t, n, gating.bits, n_input, gate=True)
                                    for n in range(count * gating.neurons)], dtype=np.int64)
                          for t, (_, count, _, _) in enumerate(self.tiers)] if gating else None
        self.gate_cells: dict[tuple[int, int, int], int] = {}
        positions = range(exp.context, len(train_tokens)) if order is None else order
        for t in positions:
            self._train_example(train_tokens[t - exp.context : t], train_tokens[t])

    def input_bits(self, context_tokens) -> np.ndarray:
        return np.array([(self.code[tok] >> (self.bpt - 1 - b)) & 1 for tok in context_tokens for b in range(self.bpt)])

    def addresses(self, x: np.ndarray, tier: int, cluster_pos: int) -> list[tuple[int, int]]:
        """(neuron index in tier, cell index) for every neuron of one cluster: the address, or
        its hash in an LSH tier."""
        first, _, neurons, bits = self.tiers[tier]
        out = []
        for n in range((cluster_pos - first) * neurons, (cluster_pos - first + 1) * neurons):
            a = sum(int(x[c]) << (bits - 1 - j) for j, c in enumerate(self.conn[tier][n]))
            if self.hashes[tier] is not None:
                h = 0
                for j in range(bits):
                    if (a >> (bits - 1 - j)) & 1:
                        h ^= self.hashes[tier][n][j]
                a = h
            out.append((n, a))
        return out

    def gate_addresses(self, x, tier: int, cluster_pos: int) -> list[tuple[int, int]]:
        """(gate neuron index in tier, address) for every gate neuron of one cluster."""
        first, g = self.tiers[tier][0], self.exp.gating.neurons
        bits = self.exp.gating.bits
        return [(n, sum(int(x[c]) << (bits - 1 - j) for j, c in enumerate(self.gate_conn[tier][n])))
                for n in range((cluster_pos - first) * g, (cluster_pos - first + 1) * g)]

    def gate_open(self, x, cluster_pos: int) -> bool:
        """At least ceil(G/2) of the cluster's gate neurons read TRUE."""
        tier = self.tier_of[cluster_pos]
        trues = sum(self.gate_cells.get((tier, n, a), EMPTY) == TRUE for n, a in self.gate_addresses(x, tier, cluster_pos))
        return trues >= math.ceil(self.exp.gating.neurons / 2)

    def _write(self, x, cluster_pos, value):
        tier = self.tier_of[cluster_pos]
        for n, a in self.addresses(x, tier, cluster_pos):
            key = (tier, n, a)
            self.cells[key] = max(self.cells.get(key, EMPTY), value)
        if self.exp.gating:  # gate neurons are written exactly like the cluster's neurons
            for n, a in self.gate_addresses(x, tier, cluster_pos):
                key = (tier, n, a)
                self.gate_cells[key] = max(self.gate_cells.get(key, EMPTY), value)

    def _train_example(self, context_tokens, target):
        x = self.input_bits(context_tokens)
        target_pos = self.position[target]
        self._write(x, target_pos, TRUE)
        for c in self.negatives:
            if c != target_pos:
                self._write(x, c, FALSE)

    def scores(self, x, gated: bool = True):
        """Mean over a cluster's neurons of TRUE→1, FALSE→0, EMPTY→empty_value, per cluster,
        with the number of EMPTY cells each cluster read and whether its gate is open. The mean
        is taken as (n_true + empty_value·n_empty) / neurons so that equal means compare equal
        bit for bit. A closed gate makes the score 0 (with `gated`)."""
        scores, empties = np.zeros(self.V), np.zeros(self.V, dtype=np.int64)
        opened = np.ones(self.V, dtype=bool)
        for c in range(self.V):
            tier = self.tier_of[c]
            values = [self.cells.get((tier, n, a), EMPTY) for n, a in self.addresses(x, tier, c)]
            n_true, n_empty = values.count(TRUE), values.count(EMPTY)
            scores[c] = (n_true + self.exp.empty_value * n_empty) / len(values)
            empties[c] = n_empty
            if self.exp.gating and gated:
                opened[c] = self.gate_open(x, c)
                scores[c] = scores[c] if opened[c] else 0.0
        return scores, empties, opened

    def evaluate(self, tokens, gated: bool = True) -> dict:
        tokens = [int(t) for t in tokens]
        ctx = self.exp.context
        rows = []  # (target tier, -ln p(target), correct, empties per tier, target's empties, open per tier, target open)
        tiers = np.array(self.tier_of)
        for t in range(ctx, len(tokens)):
            scores, empties, opened = self.scores(self.input_bits(tokens[t - ctx : t]), gated)
            p = np.exp(scores) / np.exp(scores).sum()
            target_pos = self.position[tokens[t]]
            per_tier_empty = [int(empties[tiers == i].sum()) for i in range(len(self.tiers))]
            per_tier_open = [int(opened[tiers == i].sum()) for i in range(len(self.tiers))]
            rows.append((self.tier_of[target_pos], -math.log(p[target_pos]), int(np.argmax(scores)) == target_pos,
                         per_tier_empty, int(empties[target_pos]), per_tier_open, bool(opened[target_pos])))
        out = self._metrics(rows)
        if self.exp.gating and gated:  # what the gates did: the same split with every gate open
            without = self.evaluate(tokens, gated=False)
            out["ungated"] = {k: without[k] for k in ("ce", "ppl", "accuracy")}
            for i, (row, plain) in enumerate(zip(out["tiers"], without["tiers"])):
                sel = [r for r in rows if r[0] == i]
                row["gate_open"] = sum(r[5][i] for r in rows) / (len(rows) * self.tiers[i][1]) if rows else None
                row["gate_target_open"] = sum(r[6] for r in sel) / len(sel) if sel else None
                row["ungated_ce"], row["ungated_accuracy"] = plain["ce"], plain["accuracy"]
        return out

    def ce_at(self, tokens, temperature: float) -> float:
        """Mean -ln p(target) with p = softmax(scores / temperature)."""
        tokens = [int(t) for t in tokens]
        ctx, total = self.exp.context, 0.0
        for t in range(ctx, len(tokens)):
            z = self.scores(self.input_bits(tokens[t - ctx : t]))[0] / temperature
            z = z - z.max()
            total -= z[self.position[tokens[t]]] - math.log(np.exp(z).sum())
        return total / (len(tokens) - ctx)

    def _metrics(self, rows) -> dict:
        def summary(sel):
            if not sel:
                return {"examples": 0, "ce": None, "ppl": None, "accuracy": None}
            ce = sum(r[1] for r in sel) / len(sel)
            return {"examples": len(sel), "ce": ce, "ppl": math.exp(ce), "accuracy": sum(r[2] for r in sel) / len(sel)}

        out = {**summary(rows), "ppl_floor": (math.e + self.V - 1) / math.e, "tiers": []}
        for i, (_, count, neurons, _) in enumerate(self.tiers):
            sel = [r for r in rows if r[0] == i]
            lookups = len(rows) * count * neurons
            out["tiers"].append({
                **summary(sel),
                "share": 100.0 * len(sel) / len(rows) if rows else None,
                "empty_rate": sum(r[3][i] for r in rows) / lookups if lookups else None,
                "target_empty_rate": sum(r[4] for r in sel) / (len(sel) * neurons) if sel else None,
            })
        return out
