"""Exact incremental fitness of rewired neurons (docs/design.md §5 "Incremental evaluation").

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
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ramsweep.engine.evaluate import score_levels
from ramsweep.engine.layout import DENSE, Layout
from ramsweep.engine.train import Model, examples_of, group_by_target, pack, wire
from ramsweep.optimize import cpu

FITNESSES = ("ce", "accuracy", "simple")


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
    """Which row is in which slot of the kernels' (slots × examples) array, least recently used
    evicted first. Rows a batch needs are pinned until the batch is done; the array grows
    when they do not fit."""

    def __init__(self, n_examples: int, max_bytes: int, grow: Callable[[int], None]):
        self.capacity = max(64, max_bytes // max(1, n_examples))
        self.size, self.grow = 64, grow
        grow(64)
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
        """Slots for new keys, evicting the least recently used rows not pinned (one pass)."""
        need = len(keys) - len(self.free)
        if need > 0 and self.size >= self.capacity:
            victims = []
            for key in self.slot_of:  # oldest first
                if len(victims) == need:
                    break
                if key not in pinned:
                    victims.append(key)
            self.free.extend(self.slot_of.pop(key) for key in victims)
        if len(self.free) < len(keys):  # grow: double up to the capacity (beyond it only for pinned rows)
            old = self.size
            self.size = max(old + len(keys) - len(self.free), min(2 * old, self.capacity))
            self.grow(self.size)
            self.free.extend(range(self.size - 1, old - 1, -1))
        slots = np.array([self.free.pop() for _ in keys], dtype=np.int64)
        for key, slot in zip(keys, slots):
            self.slot_of[key] = int(slot)
        return slots


class Fitness:
    """The fitness state of one model on one fitness slice, moved by commits.

    `model` is trained on the search's training part (`train`), with the layout the final
    model will have; `fit` is the held-out slice. `kind` is one of FITNESSES. Without `train`
    the state only measures the model as it is (no neuron can be retrained). `device` "cuda"
    keeps the state and runs the kernels on the GPU, "wgpu" trains and reads the rewired
    neurons' rows through WGSL: the same results.
    """

    def __init__(self, model: Model, train: Examples | None, fit: Examples, kind: str, pool_bytes: int | None = None,
                 device: str = "cpu"):
        if kind not in FITNESSES:
            raise ValueError(f"unknown fitness {kind!r}")
        self.model, self.layout, self.kind, self.fit = model, model.layout, kind, fit
        self.conn = [c.copy() for c in model.connectivity]  # the current connectivity, per tier
        self.levels, tables = score_levels(model)
        self.exp_levels = np.exp(self.levels)
        size = max(t.shape[0] for t in tables)
        self.level_tables = np.zeros((len(tables), size, size), dtype=np.int32)
        for i, t in enumerate(tables):
            self.level_tables[i, : t.shape[0], : t.shape[1]] = t
        if device == "cuda":
            from ramsweep.optimize import cuda as backend  # numba-cuda only where a GPU is used
        elif device == "wgpu":
            from ramsweep.optimize import wgpu as backend  # wgpu only where it is used
        else:
            backend = cpu
        by_target = group_by_target(train.target_pos, self.layout.vocab_size) if train is not None else None
        # the counts of the trained model, computed by the kernels where they will live
        self.kernels = backend.Kernels(train.x if train is not None else None, by_target, self.layout.n_negatives,
                                       fit, len(self.levels), self.level_tables, self.exp_levels, model.memories)
        self.pool = RowPool(fit.x.shape[0], pool_bytes or self.kernels.pool_bytes(), self.kernels.grow)
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
                               local, tier.storage != DENSE, mem.dense, mem.offsets, mem.keys, mem.vals, table, counts)
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
            tier, drawn = self.layout.tiers[t], self.model.connectivity[t]
            neurons = np.array([n for n, _, _ in items], dtype=np.int64)
            conns = np.frombuffer(b"".join(c for _, c, _ in items), dtype=np.int32).reshape(len(items), tier.bits)
            slot_arr = np.array([s for _, _, s in items], dtype=np.int64)
            known = (conns == drawn[neurons]).all(axis=1)
            if known.any():
                self.kernels.memory_rows(t, neurons[known], slot_arr[known])
            new = ~known
            if new.any():
                masks, order, _ = wire(conns[new], self.layout)
                self.kernels.train_rows(tier.first + neurons[new] // tier.neurons, masks, order, tier.bits,
                                        slot_arr[new])

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
        """The fitness of each candidate (a list of changes from the current state). When the
        rows all of them need fit half the pool, they are computed in one batch (the training
        of a generation's new neurons spread over all threads), then each is evaluated."""
        plans = [self._moves(changes) for changes in candidates]
        keys = list(dict.fromkeys(key for moves in plans for _, _, old, new in moves for key in (*old, *new)))
        if len(keys) <= self.pool.capacity // 2:
            self._rows(keys, set(keys))
        self.evaluations += len(candidates)
        return [self._run(moves, write=False) for moves in plans]

    def commit(self, changes: list[Change]) -> Value:
        """Make a candidate the current state (for TS moves and finished clusters); its value."""
        moves = self._moves(changes)
        value = self._run(moves, write=True)
        for t, neurons, conns in changes:
            self.conn[t][np.asarray(neurons, dtype=np.int64)] = conns
        return value

    def current(self) -> Value:
        """The fitness of the current state."""
        return self._run([], write=False)

    def _chunks(self, moves) -> list[list]:
        """Moves in groups whose rows fit half the pool (a GA child of a big tier moves thousands
        of clusters: its rows are made and used a group at a time)."""
        chunks, size = [[]], 0
        for move in moves:
            rows = 2 * len(move[2])
            if chunks[-1] and size + rows > self.pool.capacity // 2:
                chunks.append([])
                size = 0
            chunks[-1].append(move)
            size += rows
        return chunks

    def _run(self, moves, write: bool) -> Value:
        """Move the state by `moves` and read the fitness off it; without `write` the state is
        left as it was. One group is moved and put back by the kernel itself; several are
        applied one after another over a copy of the counts, which is put back after."""
        chunks = self._chunks(moves)
        saved = None
        if len(chunks) > 1 and not write:
            saved = self.kernels.snapshot()
        changed = {}
        try:
            for chunk in chunks:
                out = self._apply(chunk, write=write or saved is not None)
                if self.kind == "simple":
                    changed.update(zip((c for c, *_ in chunk), self._changed_simple(chunk, out[3])))
        finally:
            if saved is not None:
                self.kernels.restore(saved)
        if write:
            for c, value in changed.items():
                self.simple[c] = value
        return self._value(out, changed)

    def _apply(self, moves, write: bool):
        """(Σ exp(score), target level, correct, new levels per moved cluster) after `moves`."""
        offsets = np.zeros(len(moves) + 1, dtype=np.int64)
        np.cumsum([len(old) for _, _, old, _ in moves], out=offsets[1:])
        pinned = {key for _, _, old, new in moves for key in (*old, *new)}
        old_slots = self._rows([key for _, _, old, _ in moves for key in old], pinned)
        new_slots = self._rows([key for _, _, _, new in moves for key in new], pinned)
        positions = np.array([c for c, *_ in moves], dtype=np.int64)
        tiers = np.array([t for _, t, *_ in moves], dtype=np.int64)
        return self.kernels.apply(offsets, old_slots, new_slots, positions, tiers, write, self.kind == "simple")

    def _value(self, out, changed: dict) -> Value:
        sumexp, target_level, correct, _ = out
        mean_ce, accuracy = float(self._ce(sumexp, target_level).mean()), float(correct.mean())
        simple = None
        if self.kind == "simple":
            simple = float(sum(changed.get(c, self.simple[c]) for c in self.scope_clusters.tolist()))
        loss = {"ce": mean_ce, "accuracy": -accuracy, "simple": -(simple or 0.0)}[self.kind]
        return Value(loss, mean_ce, accuracy, simple)

    def _ce(self, sumexp: np.ndarray, target_level: np.ndarray) -> np.ndarray:
        return np.log(sumexp) - self.levels[target_level]

    def _changed_simple(self, moves, new_levels: np.ndarray) -> list[float]:
        """SIMPLE of each moved cluster at its new levels (from integer counts, as set_scope)."""
        n_levels, k = len(self.levels), len(moves)
        hit = self.fit.target_pos[None, :] == np.array([c for c, *_ in moves], dtype=np.int64)[:, None]
        index = (np.arange(k)[:, None] * n_levels + new_levels) * 2 + hit
        counts = np.bincount(index.ravel(), minlength=k * n_levels * 2).reshape(k, n_levels, 2)
        return self._simple_of(counts).tolist()

    def per_tier(self) -> list[dict]:
        """CE and accuracy of the current state on the fitness slice, by the target's tier."""
        sumexp, target_level, correct, _ = self._apply([], write=False)
        ce = self._ce(sumexp, target_level)
        tiers = self.layout.tier_of_position[self.fit.target_pos]
        out = []
        for tier in self.layout.tiers:
            sel = tiers == tier.index
            out.append({"tier": tier.index, "examples": int(sel.sum()),
                        "ce": float(ce[sel].mean()) if sel.any() else None,
                        "accuracy": float(correct[sel].mean()) if sel.any() else None})
        return out
