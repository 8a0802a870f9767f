"""The fitness of a bitwise size genome without retraining (docs/design.md §5b "Incremental").

A size phase asks, thousands of times, how good a bitwise model is whose bit cluster i has
neurons[i] neurons of bits[i] bits, trained on one token array and scored on one split (the
fitness slice, or validation). Wiring and sampling are per-neuron streams ((seed, "bit", i, n),
(seed, "sample", i, n): §3c), so a cluster of n neurons is exactly the first n neurons of a wider
cluster of the same bits. SizeScorer therefore trains each (cluster i, bits b) it needs ONCE, at
`max_neurons` neurons (the CPU engine, or the GPU kernels handed in as `gpu`, as bitwise.train's
gpu=), and reads every score example's cell code at each of its neurons (bitwise.neuron_codes;
on CUDA bitwise_cuda.read_neuron_codes; a WGSL-trained cluster is copied to the host and read by
the CPU engine): a (max_neurons, examples) uint8 matrix, neuron-major, each code replaced by what
it adds to read_cluster's sums (bitwise.code_increments). Cluster i's P column at any n <=
max_neurons is then p_of_quarters(Σ_{k<n} quarters_k, Σ_{k<n} EMPTY_k, empty_value, n) from the
integer sums over its first n rows (bitwise.sum_increments), the very operands (and so the very
float) of a retrain's bitwise.read_cluster. From the (examples, B) P the closed forms give CE and
the best code exactly as bitwise.score does (bitwise.bit_logs, scores_of).

Two caches, both least recently used, both bounded in bytes; neither changes a result, only how
often work is redone:
- code matrices per (i, b): `code_cache_bytes` (default 4 GiB: a WikiText-2 fitness slice of 240 k
  examples at 300 neurons is 72 MB a matrix; one neurons phase of 16 clusters needs 16). A matrix
  larger than the budget is used once and dropped; one evicted is trained again when needed.
- P columns per (i, b, n): the clamped P, ln P, ln(1 − P) and the no-decision lookups of one
  cluster size (28 bytes an example), in one preallocated column store of `column_cache_bytes`
  (default 2 GiB, at least B columns): a genome whose columns are all there is scored by a gather
  and the closed-form kernels alone (no training, no lookups, no logarithm).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from ramsweep.config import bits_per_token
from ramsweep.engine import bitwise
from ramsweep.engine import bitwise_reference as oracle
from ramsweep.engine.train import pack

CODE_CACHE_BYTES = 4 << 30
COLUMN_CACHE_BYTES = 2 << 30
GPU_BATCH_BYTES = 8 << 30  # clusters trained in one gpu.train_clusters call (their estimated bytes)
COLUMN_BYTES = 8 + 8 + 8 + 4  # an example's P, ln P, ln(1 − P) (float64) and no-decision count (int32)


def scored_examples(score_tokens, context: int, inputs: bitwise.InputBits, vocab_size: int) -> tuple:
    """A scored split's examples, as bitwise.score takes them: (positions, packed contexts,
    targets, their codes, c*'s bits, the branch bits); ValueError for a split with none."""
    split = np.ascontiguousarray(score_tokens, dtype=np.int64)
    positions = np.arange(context, max(context, split.shape[0]), dtype=np.int64)
    if positions.shape[0] == 0:
        raise ValueError(f"the split to score has no example: {split.shape[0]} tokens at context {context}")
    targets = split[positions]
    star, branch = bitwise.branch_bits(vocab_size, inputs.bits_per_token, bitwise.real_codes_are_gray(inputs.codes))
    return positions, pack(split, positions, inputs), targets, inputs.codes[targets], star, branch


class SizeScorer:
    """Scores size genomes (neurons[i], bits[i] per bit cluster) of one bitwise experiment's model,
    trained on `train_tokens`, on the examples of `score_tokens`, exactly as a retrain would.

    `codes`: each token id's code (the whole training split's, as the final model's); `memory`
    chooses each trained cluster's storage as bitwise.train's (auto, dense, sparse: the same cells
    either way); `gpu`: bitwise_cuda or bitwise_wgpu to train (and, on CUDA, read) there, or None.
    `stats` counts the work done: clusters trained, code matrices read, columns made and reused."""

    def __init__(self, train_tokens, score_tokens, vocab_size: int, *, codes, context: int, seed: int,
                 sample_rate: float, cell_mode: str, empty_value: float = 0.0, gpu=None, max_neurons: int,
                 memory: str = "auto", device: str | None = None, code_cache_bytes: int = CODE_CACHE_BYTES,
                 column_cache_bytes: int = COLUMN_CACHE_BYTES):
        if cell_mode not in oracle.CELL_MODES:
            raise ValueError(f"unknown cell_mode {cell_mode!r}: one of {', '.join(oracle.CELL_MODES)}")
        if not 1 <= int(max_neurons) <= bitwise.MAX_INCREMENT_NEURONS:
            raise ValueError(f"max_neurons must be 1..{bitwise.MAX_INCREMENT_NEURONS}, got {max_neurons}")
        self.vocab_size, self.context, self.seed = vocab_size, context, seed
        self.sample_rate, self.cell_mode, self.empty_value = sample_rate, cell_mode, float(empty_value)
        self.max_neurons, self.memory, self.gpu, self.device = int(max_neurons), memory, gpu, device
        self.n_bits = bits_per_token(vocab_size)
        self.codes = np.asarray(codes, dtype=np.int64)
        self.train_tokens = train_tokens  # model_for counts frequencies on it, as bitwise.train does
        tokens = np.ascontiguousarray(train_tokens, dtype=np.int64)
        self.data = bitwise.training_set(tokens, self.codes, context, seed, sample_rate, self.n_bits)
        self.inputs = bitwise.InputBits(context, self.n_bits, self.codes)
        self.max_bits = min(64, context * self.n_bits)

        self.positions, self.x, self.targets, self.target_codes, self.star, self.branch = scored_examples(
            score_tokens, context, self.inputs, vocab_size)
        self.increments = bitwise.code_increments(cell_mode)
        self.n_examples = self.positions.shape[0]

        self.code_cache_bytes = int(code_cache_bytes)
        self._codes: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (i, b) -> (max_neurons, examples)
        capacity = max(self.n_bits, int(column_cache_bytes) // (COLUMN_BYTES * self.n_examples))
        # the column store: one row a cached (i, b, n); np.empty commits pages only as rows are written
        self._p = np.empty((capacity, self.n_examples))
        self._log_p = np.empty((capacity, self.n_examples))
        self._log_q = np.empty((capacity, self.n_examples))
        self._empty = np.empty((capacity, self.n_examples), dtype=np.int32)
        self._slots: OrderedDict[tuple[int, int, int], int] = OrderedDict()  # (i, b, n) -> row
        self._free = list(range(capacity - 1, -1, -1))
        self.stats = {"evaluations": 0, "clusters_trained": 0, "code_reads": 0, "columns_made": 0,
                      "columns_reused": 0, "train_s": 0.0, "read_s": 0.0, "columns_s": 0.0}

    # ---- the genome's figures -----------------------------------------------------------------------

    def scores(self, neurons: Sequence[int], bits: Sequence[int]) -> bitwise.Scores:
        """bitwise.score(bitwise.train(train_tokens, ..., neurons=neurons, bits=bits), score_tokens):
        every array identical."""
        slots = self._columns(neurons, bits)
        p, log_p, log_q = (self._gather(store, slots, np.float64) for store in (self._p, self._log_p, self._log_q))
        empty = self._gather(self._empty, slots, np.int64)
        return bitwise.scores_of(self.positions.copy(), self.targets.copy(), self.target_codes, p, log_p, log_q, empty,
                                 self.star, self.branch)

    def fitness(self, neurons: Sequence[int], bits: Sequence[int]) -> tuple[float, float]:
        """(mean CE at T = 1 over the real tokens, accuracy): bitwise.ce(...).mean() and
        bitwise.correct(...).mean() of scores(neurons, bits), computed from the cached logarithms alone."""
        slots = self._columns(neurons, bits)
        log_p, log_q = self._gather(self._log_p, slots, np.float64), self._gather(self._log_q, slots, np.float64)
        log_z = np.empty(self.n_examples)
        temperature = 1.0
        bitwise.closed_forms(log_p, log_q, self.star, self.branch, temperature, bitwise.LOG_Z, log_z, log_z)
        ce = log_z - bitwise.target_scores(log_p, log_q, self.target_codes) / temperature  # bitwise.ce's expression
        right = bitwise.best_codes(log_p, log_q, self.star, self.branch) == self.target_codes
        return float(ce.mean()), float(right.mean())

    def fitness_many(self, genomes: Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple[float, float]]:
        """fitness of each (neurons, bits), in the order given, evaluated grouped by bits: genomes that
        share their bits share their code matrices, so a grid's pairs (neurons outer) train each
        (cluster, bits) once even when the code cache holds one bits value's matrices only."""
        order = sorted(range(len(genomes)), key=lambda k: tuple(int(b) for b in genomes[k][1]))
        out: list = [None] * len(genomes)
        for k in order:
            out[k] = self.fitness(*genomes[k])
        return out

    def model_for(self, neurons: Sequence[int], bits: Sequence[int]) -> bitwise.Model:
        """The genome's model itself, trained as bitwise.train trains it (for the final figures)."""
        return bitwise.train(self.train_tokens, self.vocab_size, codes=self.codes, context=self.context, neurons=neurons,
                             bits=bits, seed=self.seed, sample_rate=self.sample_rate, cell_mode=self.cell_mode,
                             empty_value=self.empty_value, memory=self.memory, gpu=self.gpu, device=self.device)

    # ---- columns ------------------------------------------------------------------------------------

    def _gather(self, store: np.ndarray, slots: np.ndarray, dtype) -> np.ndarray:
        out = np.empty((self.n_examples, self.n_bits), dtype=dtype)
        bitwise.gather_columns(store, slots, out)
        return out

    def _genome(self, neurons, bits) -> list[tuple[int, int, int]]:
        """[(i, bits, neurons)] of a genome, checked as bitwise.train checks sizes."""
        neurons = oracle.per_cluster(neurons, self.n_bits, "neurons")
        bits = oracle.per_cluster(bits, self.n_bits, "bits")
        if not all(1 <= b <= self.max_bits for b in bits):
            raise ValueError(f"bits must be 1..{self.max_bits}, got {bits}")
        if not all(1 <= n <= self.max_neurons for n in neurons):
            raise ValueError(f"neurons must be 1..{self.max_neurons} (max_neurons), got {neurons}")
        return [(i, b, n) for i, (n, b) in enumerate(zip(neurons, bits))]

    def _columns(self, neurons, bits) -> np.ndarray:
        """(B,) int64 the column-store rows of the genome's P columns, made where missing."""
        keys = self._genome(neurons, bits)
        self.stats["evaluations"] += 1
        missing = [k for k in keys if k not in self._slots]
        self.stats["columns_reused"] += len(keys) - len(missing)
        for k in keys:
            if k in self._slots:
                self._slots.move_to_end(k)
        if missing:
            by_cluster: dict[tuple[int, int], list[int]] = {}
            for i, b, n in missing:
                by_cluster.setdefault((i, b), []).append(n)
            for (i, b), codes in self._code_matrices(list(by_cluster)):
                for n in by_cluster[(i, b)]:
                    self._make_column((i, b, n), codes, keep=set(keys))
        return np.array([self._slots[k] for k in keys], dtype=np.int64)

    def _make_column(self, key: tuple[int, int, int], codes: np.ndarray, keep: set) -> None:
        """Cluster i's P column at n neurons from the first n codes: read_cluster's float exactly."""
        t0 = time.perf_counter()
        n = key[2]
        q, n_empty, n_none = (np.empty(self.n_examples, dtype=np.int64) for _ in range(3))
        bitwise.sum_increments(codes, n, q, n_empty, n_none)
        p, log_p, log_q = bitwise.bit_logs(bitwise.p_of_quarters(q, n_empty, self.empty_value, n))
        if not self._free:  # the least recently used column the genome at hand does not hold
            old = next(k for k in self._slots if k not in keep)
            self._free.append(self._slots.pop(old))
        slot = self._free.pop()
        self._p[slot], self._log_p[slot], self._log_q[slot], self._empty[slot] = p, log_p, log_q, n_none
        self._slots[key] = slot
        self.stats["columns_made"] += 1
        self.stats["columns_s"] += time.perf_counter() - t0

    # ---- code matrices ------------------------------------------------------------------------------

    def _code_matrices(self, wanted: list[tuple[int, int]]):
        """Yield ((i, b), (max_neurons, examples) uint8 code increments) for each wanted (cluster, bits):
        from the cache, else trained at max_neurons (on the GPU in batches of GPU_BATCH_BYTES), read,
        and each code replaced by what it adds to the sums (bitwise.code_increments)."""
        todo = []
        for key in wanted:
            if key in self._codes:
                self._codes.move_to_end(key)
                yield key, self._codes[key]
            else:
                todo.append(key)
        for batch in self._batches(todo):
            for key, codes in self._train_and_read(batch):
                self._remember(key, codes)
                yield key, codes

    def _storage(self, bits: int) -> str:
        return bitwise.choose_storage(self.memory, self.cell_mode, self.max_neurons, bits,
                                      self.data.t.shape[0] * self.sample_rate)

    def _batches(self, todo: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """One cluster a batch on the CPU (its cells are dropped once read); on a GPU, as many as fit
        GPU_BATCH_BYTES by bitwise.cluster_bytes' bound (one launch trains a group better than one)."""
        if self.gpu is None:
            return [[key] for key in todo]
        batches, current, size = [], [], 0
        kept = self.data.t.shape[0] * self.sample_rate
        for i, b in todo:
            nbytes = bitwise.cluster_bytes(self._storage(b), self.cell_mode, self.max_neurons, b, self.inputs.n_input,
                                           min(2.0**b, kept))
            if current and size + nbytes > GPU_BATCH_BYTES:
                batches.append(current)
                current, size = [], 0
            current.append((i, b))
            size += nbytes
        return batches + ([current] if current else [])

    def _train_and_read(self, batch: list[tuple[int, int]]):
        assert len({i for i, _ in batch}) == len(batch), batch  # train_clusters keys its clusters by i
        t0 = time.perf_counter()
        specs = [(i, self.max_neurons, b, self._storage(b)) for i, b in batch]
        if self.gpu is not None:
            clusters, tables = self.gpu.train_clusters(self.data, self.inputs, specs, self.cell_mode)
        else:
            clusters = [bitwise.train_cluster(self.data, self.inputs, i, n, b, self.cell_mode, storage)
                        for i, n, b, storage in specs]
            tables = [None] * len(clusters)
        self.stats["clusters_trained"] += len(specs)
        self.stats["train_s"] += time.perf_counter() - t0
        reader = getattr(self.gpu, "read_neuron_codes", None)  # CUDA's; WGSL's clusters are read on the CPU engine
        for key, cluster, table in zip(batch, clusters, tables or [None] * len(clusters)):
            t0 = time.perf_counter()
            if reader is not None:
                codes = reader(cluster, self.x, table)
            else:
                codes = bitwise.neuron_codes(cluster, self.x)  # a GPU-trained DENSE cluster is copied here first
            codes = np.ascontiguousarray(codes.T)  # neuron-major (no copy: both readers write it so)
            bitwise.increments_of(codes, self.increments)
            self.stats["code_reads"] += 1
            self.stats["read_s"] += time.perf_counter() - t0
            yield key, codes

    def _remember(self, key: tuple[int, int], codes: np.ndarray) -> None:
        if codes.nbytes > self.code_cache_bytes:
            return
        while self._codes and sum(c.nbytes for c in self._codes.values()) + codes.nbytes > self.code_cache_bytes:
            self._codes.popitem(last=False)
        self._codes[key] = codes

