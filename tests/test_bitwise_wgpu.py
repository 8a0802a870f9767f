"""The bitwise model's WGSL kernels (ramsweep/engine/bitwise_wgpu.py) against its CPU engine
(bitwise.py, itself held to the oracle in test_bitwise.py): the same cells, DENSE and SPARSE, the
same P and lookups (np.array_equal, not close), every metric identical, over the three cell modes
and sample rates 1 and 0.25; DENSE cells left on the GPU after training (counted and sized there,
read there by the lookups, the CPU engine's arrays when copied back); the 64-bit helpers WGSL
builds from u32 pairs and the u64 tally of stored codes; tables cut to fit a buffer cap forced low,
and quad clusters grouped into one dispatch; and a bitwise experiment through the sweep with device
wgpu.

Runs wherever wgpu finds an adapter: Mesa's lavapipe (Vulkan on the CPU) in CI, Metal on a Mac.
"""

import numpy as np
import pytest
from test_bitwise import corpus, same_model, same_scores  # corpus: a learnable successor, and noise

from ramsweep.engine import bitwise as engine
from ramsweep.engine import bitwise_reference as bw
from ramsweep.engine.connectivity import mix64
from ramsweep.engine.layout import DENSE, SPARSE

pytest.importorskip("wgpu", reason="wgpu is not installed")
from ramsweep.engine import bitwise_wgpu  # noqa: E402  (after the skip)
from ramsweep.engine.backends import wgpu as wgpu_backend  # noqa: E402

if not bitwise_wgpu.available():
    pytest.skip("wgpu finds no adapter here", allow_module_level=True)

MASK = (1 << 64) - 1


def check(vocab_size, context, mode, rate, memory, neurons, bits, n_train, n_eval, empty_value=0.0, gray=True,
          seed=7, metrics=True) -> engine.Model:
    """Train on the CPU engine and through wgpu: the same cells; the same scores from both models
    read through wgpu (so a CPU-trained model is uploaded too); the same metrics."""
    tokens, valid = corpus(vocab_size, n_train, vocab_size), corpus(vocab_size, n_eval, vocab_size + 1)
    codes = bw.token_codes(tokens, vocab_size, "frequency", gray)
    kwargs = dict(codes=codes, context=context, neurons=neurons, bits=bits, seed=seed, sample_rate=rate,
                  cell_mode=mode, empty_value=empty_value, memory=memory)
    cpu = engine.train(tokens, vocab_size, **kwargs)
    gpu = engine.train(tokens, vocab_size, **kwargs, gpu=bitwise_wgpu)
    assert gpu.device == "wgpu" and cpu.device == "cpu"
    trained_here = [c for c in gpu.clusters if c.storage == DENSE and bitwise_wgpu.cannot_train(mode, DENSE, c.bits) is None]
    assert all(c.host is None for c in trained_here)  # DENSE cells stay in the buffers they trained in
    assert [engine.cells_stored(c, mode) for c in gpu.clusters] == [engine.cells_stored(c, mode) for c in cpu.clusters]
    assert gpu.nbytes == cpu.nbytes
    want = engine.score(cpu, valid)
    same_scores(want, engine.score(gpu, valid, bitwise_wgpu))
    assert all(c.host is None for c in trained_here)  # the lookups read them there
    same_model(cpu, gpu)  # copies them to the host: the CPU engine's arrays
    same_scores(want, engine.score(cpu, valid, bitwise_wgpu))
    if metrics:
        temperature = engine.fit_temperature(cpu, want)
        bands = (2, 3, "rest") if vocab_size > 5 else ("rest",)
        assert engine.evaluate(gpu, valid, temperature=temperature, bands=bands, gpu=bitwise_wgpu) == engine.evaluate(
            cpu, valid, temperature=temperature, bands=bands)
    return gpu


def test_the_64_bit_helpers_equal_numpys_uint64():
    """add, multiply, mix64, shift, sample_state and compare on u32 pairs, against Python's ints and
    the numba functions the CPU engine trains with, on the edges (0, 2^32 ± 1, 2^64 − 1) and at random."""
    edges = [0, 1, 2**32 - 1, 2**32, 2**32 + 1, 2**63, MASK, MASK - 1, 0x9E3779B97F4A7C15, 0xFFFF_0000_FFFF_0000]
    rng = np.random.default_rng(5)
    a = np.array(edges + [int(v) for v in rng.integers(0, 2**63, 40, dtype=np.uint64) * np.uint64(2)]
                 + [int(v) for v in rng.integers(0, 2**32, 10, dtype=np.uint64)], dtype=np.uint64)
    b = np.concatenate([np.array(edges[::-1], dtype=np.uint64), rng.permutation(a[len(edges):])])
    got = bitwise_wgpu.hash_probe(a, b)
    for k, (x, y) in enumerate(zip(a.tolist(), b.tolist())):
        state = int(engine.sample_state(np.uint64(x), y & 0xFFFFFFFF, y >> 32))
        want = [(x + y) & MASK, (x * y) & MASK, int(mix64(np.uint64(x))), x >> 11, state, int(x < y)]
        assert got[k].tolist() == want, (hex(x), hex(y))
    # docs/design.md §3c's test vector: S(0, 0, 0)
    assert int(bitwise_wgpu.hash_probe(np.zeros(1, np.uint64), np.zeros(1, np.uint64))[0, 4]) == 0x364577391C4DE70E


# the three modes at both rates, DENSE and SPARSE (SPARSE trains on the CPU engine, and reads here)
MODES = [(mode, rate, memory) for mode in bw.CELL_MODES for rate in (1.0, 0.25) for memory in (DENSE, SPARSE)]


@pytest.mark.parametrize("mode,rate,memory", MODES, ids=lambda v: str(v))
def test_cells_and_p_equal_the_cpu_engine(mode, rate, memory):
    """V 13 (not a power of two: 4 clusters), neurons 2-4 and bits 3-6 per cluster, 300 tokens;
    empty_value 0.5 in ternary."""
    check(13, 2, mode, rate, memory, neurons=[2, 3, 4, 2], bits=[3, 6, 4, 5], n_train=300, n_eval=90,
          empty_value=0.5 if mode == bw.TERNARY else 0.0)


@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_one_bit_neurons_collide_at_every_write(mode):
    """V 2, context 1, 1-bit neurons: two cells (one u32 word) take every write, so each step's
    writes all go to one lane, a quad counter saturates back and forth and its result depends on
    the exact order, and ternary ties stay EMPTY."""
    check(2, 1, mode, 1.0, DENSE, neurons=3, bits=1, n_train=300, n_eval=40, empty_value=0.5, gray=False)
    check(2, 1, mode, 0.25, DENSE, neurons=3, bits=1, n_train=300, n_eval=40, gray=False)


def test_more_examples_and_wider_neurons():
    """V 300 (9 clusters), context 3, 12-bit neurons and 3,000 examples: many quad words share a
    lane within a step, and every mode's cells and P still equal the CPU engine's."""
    for mode in bw.CELL_MODES:
        check(300, 3, mode, 0.25, DENSE, neurons=[5 + i for i in range(9)], bits=[10, 12, 3, 9, 11, 4, 8, 12, 2],
              n_train=3000, n_eval=500, empty_value=0.25 if mode == bw.TERNARY else 0.0, metrics=False)


def spy(monkeypatch, name: str) -> list:
    """Record what bitwise_wgpu.`name` returns."""
    seen, real = [], getattr(bitwise_wgpu, name)

    def wrapper(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(bitwise_wgpu, name, wrapper)
    return seen


@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_a_buffer_cap_forced_low_splits_clusters_and_examples_with_the_same_results(mode, monkeypatch):
    """A 700-byte cap: each cluster's neurons in several ranges, examples in chunks of a few, and
    dispatches of at most 64 (example, neuron) pairs (several a chunk): the same cells and P."""
    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", 700)
    monkeypatch.setattr(bitwise_wgpu, "PAIRS", 64)
    monkeypatch.setattr(bitwise_wgpu, "SUBMIT_COMMANDS", 3)  # command buffers of a few dispatches and copies
    ranges, chunks, groups = spy(monkeypatch, "_ranges"), spy(monkeypatch, "_chunks"), spy(monkeypatch, "_quad_groups")
    for memory in (DENSE, SPARSE):
        check(13, 2, mode, 0.25, memory, neurons=[5, 9, 6, 4], bits=[3, 6, 4, 5], n_train=300, n_eval=90,
              empty_value=0.25 if mode == bw.TERNARY else 0.0, metrics=False)
    assert max(len(r) for r in ranges) > 1 and max(len(c) for c in chunks) > 1
    if mode != bw.TERNARY:  # quad groups: a cluster cut across groups, and a group holding several clusters
        spans = [{i for i, *_ in group} for group in groups[0]]
        assert len(groups[0]) > 1 and max(len(s) for s in spans) > 1
        assert any(sum(i in s for s in spans) > 1 for i in range(4))


@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_one_dispatch_trains_every_quad_cluster_when_they_fit_one_binding(mode, monkeypatch):
    """Under the real cap the quad clusters' neurons make one group (one dispatch a slice of
    examples, a workgroup a neuron of any cluster); ternary trains range by range."""
    groups = spy(monkeypatch, "_quad_groups")
    check(13, 2, mode, 1.0, DENSE, neurons=[2, 3, 4, 2], bits=[3, 6, 4, 5], n_train=200, n_eval=30, metrics=False)
    assert groups == ([] if mode == bw.TERNARY else [[[(0, 0, 2, 3), (1, 0, 3, 6), (2, 0, 4, 4), (3, 0, 2, 5)]]])


def test_the_stored_codes_count_carries_past_32_bits():
    """count_codes' u64 tally (a u32 pair): an add that wraps the low word carries into the high one."""
    words = np.array([0x0300_0100, 0x0001_0000, 0, 0xFFFF_FFFF], dtype=np.uint32)  # 2 + 1 + 0 + 4 non-zero bytes
    cells, tally = bitwise_wgpu._buffer(words), bitwise_wgpu._buffer(np.array([2**32 - 5, 7], dtype=np.uint32))
    queue = bitwise_wgpu._Queue()
    for ternary in (0, 1):  # ternary: 2-bit codes 0x0300_0100 → 2, 0x0001_0000 → 1, 0xFFFF_FFFF → 16
        params = bitwise_wgpu._fields(bitwise_wgpu.TRAIN_FIELDS, words=4, first=0, slot=0, ternary=ternary)
        queue.dispatch("count_codes", params, {6: cells, 10: tally}, (1,))
    queue.submit()
    got = np.empty(2, dtype=np.uint32)
    bitwise_wgpu._read_into(tally, got)
    assert int(got[0]) + (int(got[1]) << 32) == 7 * 2**32 + 2**32 - 5 + 7 + 19


def test_what_the_kernels_cannot_take_goes_to_the_cpu_engine(monkeypatch):
    """A 33-bit SPARSE cluster (uint64 keys) and, under a small cap, a neuron too big for one
    buffer: each gets a reason, and the CPU engine trains or reads it, with the same results."""
    tokens = corpus(300, 400, 1)
    kwargs = dict(codes=bw.token_codes(tokens, 300, "native"), context=4, neurons=3, bits=[33, 5, 4, 6, 3, 5, 4, 6, 3],
                  seed=2, sample_rate=0.25, cell_mode=bw.QUAD_WEIGHTED)
    cpu = engine.train(tokens, 300, **kwargs)
    assert cpu.clusters[0].storage == SPARSE and cpu.clusters[0].keys.dtype == np.uint64
    assert bitwise_wgpu.cannot_read(cpu.clusters[0]).startswith("a 33-bit cluster's SPARSE keys are uint64")
    assert bitwise_wgpu.cannot_read(cpu.clusters[1]) is None
    valid = corpus(300, 60, 2)
    same_scores(engine.score(cpu, valid), engine.score(cpu, valid, bitwise_wgpu))

    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", 200)  # a 6-bit quad neuron's row and order: 88 bytes
    assert "the CPU engine trains it" in bitwise_wgpu.cannot_train(bw.TERNARY, DENSE, 6)  # its counts: 256 bytes
    assert bitwise_wgpu.cannot_train(bw.QUAD_BINARY, DENSE, 6) is None
    wide = engine.BitCluster(DENSE, np.zeros((1, 8), np.int32), np.zeros((1, 1), np.uint64),
                             np.zeros((1, 8), np.uint16), np.zeros((1, 256), np.uint8))  # an 8-bit quad neuron: 288 bytes
    assert "the CPU engine looks it up" in bitwise_wgpu.cannot_read(wide)
    check(13, 2, bw.TERNARY, 1.0, DENSE, neurons=2, bits=[3, 6, 4, 5], n_train=200, n_eval=40, metrics=False)


def test_tables_go_to_the_gpu_once_per_model():
    tokens = corpus(13, 200, 1)
    model = engine.train(tokens, 13, codes=bw.token_codes(tokens, 13, "native"), context=2, neurons=2, bits=4, seed=1,
                         cell_mode=bw.QUAD_WEIGHTED, memory=SPARSE)
    assert model.gpu is None
    engine.score(model, tokens[:40], bitwise_wgpu)
    tables = list(model.gpu)
    engine.score(model, tokens[40:80], bitwise_wgpu)
    assert all(a is b for a, b in zip(tables, model.gpu))
    trained = engine.train(tokens, 13, codes=bw.token_codes(tokens, 13, "native"), context=2, neurons=2, bits=4,
                           seed=1, cell_mode=bw.TERNARY, gpu=bitwise_wgpu)
    tables = list(trained.gpu)  # the buffers it trained in
    engine.score(trained, tokens[:40], bitwise_wgpu)
    assert all(a is b for a, b in zip(tables, trained.gpu))


def test_a_bitwise_experiment_on_wgpu_equals_the_cpu_run():
    """architecture: bitwise through run_experiment with device wgpu: it trains and looks up on the
    WGSL kernels, the record names the adapter, and every figure is the CPU run's."""
    from ramsweep.config import Experiment
    from ramsweep.data import Corpus
    from ramsweep.engine.devices import describe, trains_on
    from ramsweep.sweep.experiment import Task, run_experiment

    assert [trains_on(d) for d in ("cpu", "cuda", "hybrid", "wgpu", "metal")] == ["cpu", "cuda", "cuda", "wgpu", "metal"]
    vocab = 11
    splits = {"train": corpus(vocab, 300, 1), "validation": corpus(vocab, 80, 2), "test": corpus(vocab, 80, 3)}
    data = Corpus(name="text", tokenizer="word", vocab=tuple(f"w{i}" for i in range(vocab)), full_data=True,
                  fingerprint="synthetic-bw", variant="synthetic", path=None, source_sha256="0" * 64,
                  tokenizer_files={}, token_bytes={s: np.full(a.size, 3, np.int32) for s, a in splits.items()},
                  **splits)
    records = {}
    for device in ("cpu", "wgpu"):
        exp = Experiment(name="bw", architecture="bitwise", context=2, encoding="frequency", gray=True, device=device,
                         bitwise={"neurons": [2, 3, 2, 3], "bits": 5, "sample_rate": 0.25, "cell_mode": "quad_weighted"})
        record = run_experiment(Task(exp, "k", "s"), data)
        assert record.ok, record.error
        records[device] = record
    assert records["cpu"].resources.device == "cpu"
    assert records["wgpu"].resources.device == describe("wgpu")
    assert records["wgpu"].metrics == records["cpu"].metrics
    for k in ("memory_mb", "cells_stored", "backends"):  # counted where the cells are: the GPU's, the CPU's
        assert getattr(records["wgpu"].resources, k) == getattr(records["cpu"].resources, k), k
