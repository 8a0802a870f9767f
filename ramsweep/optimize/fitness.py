"""Exact incremental fitness of rewired neurons (DESIGN.md §5 "Incremental evaluation").

Training is order-free and a neuron's memory depends only on its own connections and the
training data, so a candidate that rewires k neurons needs only those k neurons retrained,
and only their clusters' scores move. All the search needs of a neuron is its *row*: the
cell code it reads on each fitness example. Rows are cached by (tier, neuron, connections),
so a GA child made of its parents' neurons costs no training at all.

Per fitness example the state keeps integer counts: clusters at each score level (`hist`),
those earlier than the target in cluster order (`before`), and the target's level. A move
updates them in O(examples × changed clusters), and CE, accuracy and SIMPLE follow exactly:
the softmax's sum is Σ hist · exp(level), the target is the argmax when its level is the
top one and no earlier cluster is there. Nothing here builds an examples × clusters matrix.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ramsweep.engine.evaluate import score_levels
from ramsweep.engine.layout import DENSE, Layout
from ramsweep.engine.train import Model, examples_of, group_by_target, pack, wire
from ramsweep.optimize import cpu

FITNESSES = ("ce", "accuracy", "simple")
POOL_BYTES = 1 << 30  # rows kept for reuse (a row is one byte per fitness example)


@dataclass(frozen=True)
class Examples:
    """A split's examples, packed (engine/backends/cpu.py), with their targets' cluster positions."""

    x: np.ndarray
    target_pos: np.ndarray

    @classmethod
    def of(cls, tokens: np.ndarray, layout: Layout) -> Examples:
        tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        examples = examples_of(tokens, layout.context)
        return cls(pack(tokens, examples, layout), layout.position[tokens[examples]].astype(np.int64))


@dataclass(frozen=True)
class Value:
    """One candidate's fitness: `loss` is what the search minimises (CE, −accuracy, −SIMPLE)."""

    loss: float
    ce: float
    accuracy: float
    simple: float | None  # over the clusters in scope; None unless the fitness is SIMPLE

    def of(self, kind: str) -> float:
        """The fitness as a user reads it (CE lower is better; the others higher)."""
        return {"ce": self.ce, "accuracy": self.accuracy, "simple": self.simple}[kind]


# A change: (tier index, neuron indices in the tier, their new connections (k, bits) int32).
Change = tuple[int, np.ndarray, np.ndarray]


class RowPool:
    """Rows in one (slots × examples) array, least recently used evicted first. Rows a batch
    needs are pinned until the batch is done; the pool grows when they do not fit."""

    def __init__(self, n_examples: int, max_bytes: int = POOL_BYTES):
        self.capacity = max(64, max_bytes // max(1, n_examples))
        self.rows = np.zeros((64, n_examples), dtype=np.uint8)
        self.slot_of: OrderedDict = OrderedDict()
        self.free = list(range(63, -1, -1))

    def lookup(self, keys) -> list:
        """Slots of the keys present (None where absent), marking them recently used."""
        found = []
        for key in keys:
            slot = self.slot_of.get(key)
            if slot is not None:
                self.slot_of.move_to_end(key)
            found.append(slot)
        return found

    def allocate(self, keys, pinned: set) -> np.ndarray:
        """Slots for new keys, evicting rows not pinned."""
        while len(self.free) < len(keys) and len(self.slot_of) > len(pinned) and len(self.rows) >= self.capacity:
            for key in self.slot_of:
                if key not in pinned:
                    self.free.append(self.slot_of.pop(key))
                    break
        if len(self.free) < len(keys):  # grow: at least double, so growth is rare
            old = len(self.rows)
            new = max(2 * old, old + len(keys) - len(self.free))
            self.rows = np.concatenate([self.rows, np.zeros((new - old, self.rows.shape[1]), np.uint8)])
            self.free.extend(range(new - 1, old - 1, -1))
        slots = np.array([self.free.pop() for _ in keys], dtype=np.int64)
        for key, slot in zip(keys, slots):
            self.slot_of[key] = int(slot)
        return slots


class Fitness:
    """The fitness state of one model on one fitness slice, moved by commits.

    `model` is trained on the search's training part (`train`), with the layout the final
    model will have; `fit` is the held-out slice. `kind` is one of FITNESSES. Without `train`
    the state only measures the model as it is (no neuron can be retrained).
    """

    def __init__(self, model: Model, train: Examples | None, fit: Examples, kind: str, pool_bytes: int = POOL_BYTES):
        if kind not in FITNESSES:
            raise ValueError(f"unknown fitness {kind!r}")
        self.model, self.layout, self.kind, self.fit = model, model.layout, kind, fit
        self.train_x = train.x if train is not None else None
        self.by_target = group_by_target(train.target_pos, self.layout.vocab_size) if train is not None else None
        self.conn = [c.copy() for c in model.connectivity]  # the current connectivity, per tier
        self.levels, tables = score_levels(model)
        self.exp_levels = np.exp(self.levels)
        size = max(t.shape[0] for t in tables)
        self.level_tables = np.zeros((len(tables), size, size), dtype=np.int32)
        for i, t in enumerate(tables):
            self.level_tables[i, : t.shape[0], : t.shape[1]] = t
        n, n_levels = fit.x.shape[0], len(self.levels)
        self.hist = np.zeros((n, n_levels), dtype=np.int32)
        self.before = np.zeros((n, n_levels), dtype=np.int32)
        self.target_level = np.zeros(n, dtype=np.int32)
        for mem, table in zip(model.memories, tables):
            tier = mem.tier
            cpu.tier_state(fit.x, fit.target_pos, mem.masks, mem.order, tier.neurons, tier.first,
                           tier.backend != DENSE, mem.dense, mem.offsets, mem.keys, mem.vals, table,
                           self.hist, self.before, self.target_level)
        self.pool = RowPool(n, pool_bytes)
        self.simple = np.full(self.layout.vocab_size, np.nan)  # per cluster position, filled by scope()
        self.scope_clusters = np.zeros(0, dtype=np.int64)
        self.evaluations = 0

    # ------------------------------------------------------------------ scope and rows

    def set_scope(self, clusters: np.ndarray) -> None:
        """The clusters SIMPLE sums over (the search's genome). A cluster's value is read from
        the trained model the first time it is in scope (it cannot have moved before) and
        kept up to date by commits after that."""
        self.scope_clusters = np.asarray(clusters, dtype=np.int64)
        if self.kind != "simple":
            return
        todo = self.scope_clusters[np.isnan(self.simple[self.scope_clusters])]
        for mem, table in zip(self.model.memories, self.level_tables):
            tier = mem.tier
            mine = todo[(todo >= tier.first) & (todo < tier.first + tier.clusters)]
            if mine.shape[0] == 0:
                continue
            counts = np.zeros((tier.clusters, len(self.levels), 2), dtype=np.int64)
            local = mine - tier.first
            cpu.cluster_counts(self.fit.x, self.fit.target_pos, mem.masks, mem.order, tier.neurons, tier.first,
                               local, tier.backend != DENSE, mem.dense, mem.offsets, mem.keys, mem.vals, table, counts)
            self.simple[mine] = self._simple_of(counts[local])

    def _simple_of(self, counts: np.ndarray) -> np.ndarray:
        """SIMPLE per cluster from counts[c, level, hit]: Σ score on its targets − Σ score elsewhere."""
        return (counts[:, :, 1] - counts[:, :, 0]) @ self.levels

    def _rows(self, requests: list[tuple[int, int, bytes]], pinned: set) -> np.ndarray:
        """Slots of the rows of (tier, neuron, connections) requests, computing the missing ones:
        a neuron wired as in the trained model is read from its memory, any other is trained."""
        found = self.pool.lookup(requests)
        missing = list(dict.fromkeys(r for r, s in zip(requests, found) if s is None))
        if missing:
            self._compute(missing, self.pool.allocate(missing, pinned))
            found = self.pool.lookup(requests)
        return np.array(found, dtype=np.int64)

    def _compute(self, keys: list, slots: np.ndarray) -> None:
        by_tier: dict[int, list] = {}
        for key, slot in zip(keys, slots):
            by_tier.setdefault(key[0], []).append((key[1], key[2], slot))
        for t, items in sorted(by_tier.items()):
            mem, tier, drawn = self.model.memories[t], self.layout.tiers[t], self.model.connectivity[t]
            neurons = np.array([n for n, _, _ in items], dtype=np.int64)
            conns = np.frombuffer(b"".join(c for _, c, _ in items), dtype=np.int32).reshape(len(items), tier.bits)
            slot_arr = np.array([s for _, _, s in items], dtype=np.int64)
            known = (conns == drawn[neurons]).all(axis=1)
            if known.any():
                cpu.memory_rows(self.fit.x, mem.masks, mem.order, neurons[known], tier.backend != DENSE,
                                mem.dense, mem.offsets, mem.keys, mem.vals, self.pool.rows, slot_arr[known])
            new = ~known
            if new.any():
                masks, order, _ = wire(conns[new], self.layout)
                clusters = tier.first + neurons[new] // tier.neurons
                cpu.train_rows(self.train_x, *self.by_target, self.layout.n_negatives, clusters, masks, order,
                               tier.bits, self.fit.x, self.pool.rows, slot_arr[new])

    # ------------------------------------------------------------------ evaluation

    def _moves(self, changes: list[Change]):
        """(cluster positions, tiers, old keys, new keys per cluster) of the clusters a change
        really moves (a neuron given its current connections is no change)."""
        clusters = {}
        for t, neurons, conns in changes:
            tier = self.layout.tiers[t]
            neurons = np.asarray(neurons, dtype=np.int64)
            conns = np.ascontiguousarray(conns, dtype=np.int32)
            moved = ~(conns == self.conn[t][neurons]).all(axis=1)
            for n, conn in zip(neurons[moved], conns[moved]):
                c = tier.first + int(n) // tier.neurons
                clusters.setdefault(c, (t, {}))[1][int(n)] = conn.tobytes()
        moves = []
        for c in sorted(clusters):
            t, new = clusters[c]
            tier = self.layout.tiers[t]
            own = range((c - tier.first) * tier.neurons, (c - tier.first + 1) * tier.neurons)
            old_keys = [(t, n, self.conn[t][n].tobytes()) for n in own]
            new_keys = [(t, n, new.get(n, self.conn[t][n].tobytes())) for n in own]
            moves.append((c, t, old_keys, new_keys))
        return moves

    def evaluate(self, candidates: list[list[Change]]) -> list[Value]:
        """The fitness of each candidate (a list of changes from the current state). The rows
        all of them need are computed in one batch, then each is evaluated in turn."""
        plans = [self._moves(changes) for changes in candidates]
        pinned = {key for moves in plans for _, _, old, new in moves for key in (*old, *new)}
        self._rows([key for moves in plans for _, _, old, new in moves for key in (*old, *new)], pinned)
        self.evaluations += len(candidates)
        return [self._apply(moves, pinned, write=False)[0] for moves in plans]

    def commit(self, changes: list[Change]) -> Value:
        """Make a candidate the current state (for TS moves and finished clusters); its value."""
        moves = self._moves(changes)
        keys = {key for _, _, old, new in moves for key in (*old, *new)}
        value, new_levels, _ = self._apply(moves, keys, write=True)
        for t, neurons, conns in changes:
            self.conn[t][np.asarray(neurons, dtype=np.int64)] = conns
        if self.kind == "simple":
            for (c, *_), simple in zip(moves, self._changed_simple(moves, new_levels)):
                self.simple[c] = simple
        return value

    def current(self) -> Value:
        """The fitness of the current state."""
        return self._apply([], set(), write=False)[0]

    def _apply(self, moves, pinned: set, write: bool):
        """(value, new levels per moved cluster, per-example (ce, correct)) of moving `moves`."""
        n = self.fit.x.shape[0]
        k = len(moves)
        offsets = np.zeros(k + 1, dtype=np.int64)
        np.cumsum([len(old) for _, _, old, _ in moves], out=offsets[1:])
        old_slots = self._rows([key for _, _, old, _ in moves for key in old], pinned)
        new_slots = self._rows([key for _, _, _, new in moves for key in new], pinned)
        positions = np.array([c for c, *_ in moves], dtype=np.int64)
        tiers = np.array([t for _, t, *_ in moves], dtype=np.int64)
        sumexp, target_level = np.empty(n), np.empty(n, dtype=np.int32)
        correct = np.empty(n, dtype=np.bool_)
        old_levels, new_levels = np.empty((k, n), dtype=np.int32), np.empty((k, n), dtype=np.int32)
        cpu.apply_changes(self.hist, self.before, self.target_level, self.fit.target_pos, self.pool.rows, offsets,
                          old_slots, new_slots, positions, tiers, self.level_tables, self.exp_levels, write,
                          sumexp, target_level, correct, old_levels, new_levels)
        ce = np.log(sumexp) - self.levels[target_level]
        simple = None
        if self.kind == "simple":
            changed = dict(zip(positions.tolist(), self._changed_simple(moves, new_levels)))
            simple = float(sum(changed.get(c, self.simple[c]) for c in self.scope_clusters.tolist()))
        mean_ce, accuracy = float(ce.mean()), float(correct.mean())
        loss = {"ce": mean_ce, "accuracy": -accuracy, "simple": -(simple or 0.0)}[self.kind]
        return Value(loss, mean_ce, accuracy, simple), new_levels, (ce, correct)

    def _changed_simple(self, moves, new_levels: np.ndarray) -> list[float]:
        n_levels = len(self.levels)
        out = []
        for row, (c, *_) in zip(new_levels, moves):
            hit = (self.fit.target_pos == c).astype(np.int64)
            counts = np.bincount(row * 2 + hit, minlength=2 * n_levels).reshape(1, n_levels, 2)
            out.append(float(self._simple_of(counts)[0]))
        return out

    def per_tier(self) -> list[dict]:
        """CE and accuracy of the current state on the fitness slice, by the target's tier."""
        ce, correct = self._apply([], set(), write=False)[2]
        tiers = self.layout.tier_of_position[self.fit.target_pos]
        out = []
        for tier in self.layout.tiers:
            sel = tiers == tier.index
            out.append({"tier": tier.index, "examples": int(sel.sum()),
                        "ce": float(ce[sel].mean()) if sel.any() else None,
                        "accuracy": float(correct[sel].mean()) if sel.any() else None})
        return out
