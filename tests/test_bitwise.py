"""The bitwise CPU engine (ramsweep/engine/bitwise.py) against the oracle (bitwise_reference.py):
the same cells, DENSE and SPARSE, and the same metrics, field by field (docs/design.md §3c)."""

import math

import numba
import numpy as np
import pytest

from ramsweep.config import bits_per_token
from ramsweep.engine import bitwise as engine
from ramsweep.engine import bitwise_reference as bw
from ramsweep.engine.layout import DENSE, SPARSE

REL = 1e-12  # the closed forms against the oracle's enumeration; everything else is compared exactly


def corpus(vocab_size: int, n: int, seed: int) -> np.ndarray:
    """A first-order chain with a learnable successor (and noise), so calibration lands inside its range."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(n, dtype=np.int64)
    tokens[0] = 0
    jump = rng.integers(0, vocab_size, n)
    for t in range(1, n):
        tokens[t] = (3 * tokens[t - 1] + 1) % vocab_size if jump[t] % 3 else jump[t]
    return tokens


def same_model(cpu: engine.Model, gpu: engine.Model) -> None:
    """A GPU-trained model holds the CPU engine's cells, array for array (bitwise_cuda, bitwise_wgpu)."""
    assert engine.cells(gpu) == engine.cells(cpu)
    for a, b in zip(cpu.clusters, gpu.clusters):
        assert a.storage == b.storage
        for k in ("conn", "masks", "order", "dense", "offsets", "keys", "vals"):
            x, y = getattr(a, k), getattr(b, k)
            assert x.dtype == y.dtype and np.array_equal(x, y), k


def same_scores(a: engine.Scores, b: engine.Scores) -> None:
    """Every array of two lookups of one split equal (a GPU's P is the CPU engine's float)."""
    for k in ("positions", "targets", "p", "empty", "log_p", "log_q", "target_s", "best"):
        assert np.array_equal(getattr(a, k), getattr(b, k)), k


def same(ours, theirs, path="metrics"):
    """Equal field by field: floats to REL (exactly where REL is not needed), the rest exactly."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), path
        for k in theirs:
            same(ours[k], theirs[k], f"{path}.{k}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float):
        assert isinstance(ours, float) and math.isclose(ours, theirs, rel_tol=REL, abs_tol=REL), (path, ours, theirs)
    else:
        assert type(ours) is type(theirs) and ours == theirs, (path, ours, theirs)


def oracle_cells(model: bw.BitwiseModel) -> list[dict]:
    """The oracle's cells as engine.cells gives them: ternary the sign of a non-zero net count."""
    if model.cell_mode == bw.TERNARY:
        return [{k: int(np.sign(v)) for k, v in c.items() if v} for c in model.cells]
    return model.cells


# V, context, cell mode, sample rate, encoding, gray, empty_value: the modes at both rates, V a power
# of two and not, the three codes, context 1-4; neurons and bits are lists, one per cluster
CASES = [
    (13, 2, bw.TERNARY, 1.0, "native", False, 0.0),
    (13, 1, bw.QUAD_BINARY, 0.25, "frequency", True, 0.0),
    (13, 3, bw.QUAD_WEIGHTED, 0.25, "native", True, 0.0),
    (64, 1, bw.TERNARY, 0.25, "frequency", False, 0.5),
    (64, 2, bw.QUAD_WEIGHTED, 1.0, "native", True, 0.0),
    (64, 4, bw.QUAD_BINARY, 1.0, "frequency", False, 0.0),
    (300, 2, bw.QUAD_WEIGHTED, 0.25, "frequency", True, 0.0),
    (300, 1, bw.TERNARY, 0.25, "native", True, 0.5),
    (300, 3, bw.TERNARY, 1.0, "frequency", False, 0.25),
    (5, 4, bw.QUAD_BINARY, 0.25, "native", True, 0.0),
    (2, 3, bw.TERNARY, 0.25, "native", False, 0.5),
    (1, 2, bw.QUAD_WEIGHTED, 1.0, "native", False, 0.0),
]


def sizes(vocab_size: int, context: int) -> dict:
    n_bits = bits_per_token(vocab_size)
    width = min(7, context * n_bits)
    return {"neurons": [2 + i % 4 for i in range(n_bits)], "bits": [1 + (3 * i + context) % width for i in range(n_bits)]}


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"V{c[0]}-ctx{c[1]}-{c[2]}-r{c[3]}-{c[4]}-gray{c[5]}")
def trained(request):
    """(case, oracle model, engine DENSE and SPARSE models, validation tokens)."""
    vocab_size, context, mode, rate, encoding, gray, empty_value = request.param
    tokens = corpus(vocab_size, 900, seed=vocab_size + context)
    train, valid = tokens[:700], tokens[700:]
    kwargs = dict(codes=bw.token_codes(train, vocab_size, encoding, gray), context=context, seed=11,
                  sample_rate=rate, cell_mode=mode, empty_value=empty_value, **sizes(vocab_size, context))
    oracle = bw.train(train, vocab_size, **kwargs)
    models = {memory: engine.train(train, vocab_size, memory=memory, **kwargs) for memory in (DENSE, SPARSE)}
    return request.param, oracle, models, valid


def test_cells_equal_the_oracle_dense_and_sparse(trained):
    _, oracle, models, _ = trained
    for memory, model in models.items():
        assert all(c.storage == memory for c in model.clusters)
        assert engine.cells(model) == oracle_cells(oracle), memory
        assert model.position.tolist() == oracle.position.tolist()
        # the record's count: every cell holding a code, as stored_cells lists them
        assert [engine.cells_stored(c, model.cell_mode) for c in model.clusters] == [
            len(engine.stored_cells(c, model.cell_mode)[0]) for c in model.clusters]


def test_metrics_equal_the_oracle(trained):
    (vocab_size, *_), oracle, models, valid = trained
    theirs = bw.score(oracle, valid)
    bands = ("rest",) if vocab_size == 1 else (1, "rest") if vocab_size < 6 else (2, 3, "rest")
    byte_lengths = np.arange(len(valid)) % 4 + 1
    temperature = bw.fit_temperature(theirs)
    expected = bw.metrics(oracle, theirs, temperature=temperature, bands=bands, byte_lengths=byte_lengths)
    results = []
    for model in models.values():
        ours = engine.score(model, valid)
        assert np.array_equal(ours.p, theirs.p) and np.array_equal(ours.empty, theirs.empty)
        assert math.isclose(engine.fit_temperature(model, ours), temperature, rel_tol=REL)
        results.append(engine.metrics(model, ours, temperature=temperature, bands=bands, byte_lengths=byte_lengths))
        same(results[-1], expected)
        assert results[-1]["bits"] == expected["bits"]  # the oracle's expressions on the same P: exact
    assert results[0] == results[1]  # DENSE and SPARSE: identical, not close


def test_the_evaluate_entry_and_a_split_without_examples(trained):
    (_, context, *_), oracle, models, valid = trained
    model = models[DENSE]
    same(engine.evaluate(model, valid, temperature=2.0), bw.evaluate(oracle, valid, temperature=2.0))
    short = valid[:context]
    assert engine.evaluate(model, short, temperature=2.0) == bw.evaluate(oracle, short, temperature=2.0)


def test_the_sampling_hash_in_the_kernels():
    """docs/design.md §3c's test vectors, through the numba functions the training kernels call."""
    assert engine.sample_state(np.uint64(0), 0, 0) == 0x364577391C4DE70E
    state = np.uint64(engine.sample_state(np.uint64(42), 3, 7))  # a Python int above 2^63 would type as float
    keeps = [e for e in range(20) if engine.keeps(state, e, np.uint64(2**51))]
    assert keeps == [1, 5, 8, 16, 17, 18]
    t = np.arange(5000, dtype=np.int64)
    kept = engine.count_kept(t, np.uint64(9), 2, 6, np.uint64(bw.sample_threshold(0.25)))
    assert kept.tolist() == [sum(bw.kept(9, 2, n, int(e), 0.25) for e in t) for n in range(6)]


@pytest.mark.parametrize("mode", [bw.QUAD_BINARY, bw.QUAD_WEIGHTED])
@pytest.mark.parametrize("memory", [DENSE, SPARSE])
def test_a_quad_counter_follows_the_example_order(mode, memory):
    """The oracle's hand case: address 0 gets 1, 1, 1, 0 (1 → 2 → 3 → 3 → 2) or 0, 1, 1, 1 (→ 3)."""
    def cells(tokens):
        return engine.cells(engine.train(tokens, 2, codes=np.arange(2), context=1, neurons=1, bits=1, seed=0,
                                         cell_mode=mode, memory=memory))

    assert cells([0, 1, 0, 1, 0, 1, 0, 0]) == [{(0, 0): 2, (0, 1): 0}]
    assert cells([0, 0, 1, 0, 1, 0, 1]) == [{(0, 0): 3, (0, 1): 0}]


def test_deterministic_across_runs_and_thread_counts():
    tokens = corpus(300, 3000, seed=1)
    kwargs = dict(codes=bw.token_codes(tokens, 300, "frequency", True), context=3, neurons=7, bits=12, seed=3,
                  sample_rate=0.25, cell_mode=bw.QUAD_WEIGHTED)
    before = numba.get_num_threads()
    runs = []
    try:
        for threads, memory in [(1, DENSE), (min(2, numba.config.NUMBA_NUM_THREADS), DENSE), (1, SPARSE), (2, SPARSE)]:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            model = engine.train(tokens[:2500], 300, memory=memory, **kwargs)
            runs.append((engine.cells(model), engine.evaluate(model, tokens[2500:], temperature=1.5, bands=(5, "rest"))))
    finally:
        numba.set_num_threads(before)
    assert all(run == runs[0] for run in runs[1:])


def test_memory_kinds_and_the_estimate():
    tokens = corpus(64, 2000, seed=2)
    shape = dict(neurons=[3, 4, 5, 3, 4, 5], bits=[4, 6, 8, 10, 12, 3])
    kwargs = dict(codes=np.arange(64), context=2, seed=1, **shape)
    n_examples = len(tokens) - 2
    for mode in bw.CELL_MODES:
        dense = engine.train(tokens, 64, memory=DENSE, cell_mode=mode, **kwargs)
        assert dense.nbytes == engine.estimate_memory_bytes(64, 2, n_examples, memory=DENSE, cell_mode=mode,
                                                            sample_rate=1.0, **shape)
        for rate in (1.0, 0.25):
            sparse = engine.train(tokens, 64, memory=SPARSE, cell_mode=mode, sample_rate=rate, **kwargs)
            estimate = engine.estimate_memory_bytes(64, 2, n_examples, memory=SPARSE, cell_mode=mode, sample_rate=rate,
                                                    **shape)
            assert sparse.nbytes <= estimate * (1.0 if rate == 1.0 else 1.1)  # at r < 1 the kept count varies
    per_cell = {bw.TERNARY: 0.25, bw.QUAD_BINARY: 1, bw.QUAD_WEIGHTED: 1}  # DENSE bytes a cell
    for mode, size in per_cell.items():
        assert engine.dense_row_bytes(mode, 16) == 2**16 * size
    assert engine.choose_storage("auto", bw.TERNARY, 200, 20, 500_000) == DENSE  # 50 MiB: always DENSE
    assert engine.choose_storage("auto", bw.QUAD_WEIGHTED, 200, 30, 500_000) == SPARSE  # 1 GiB a neuron
    assert engine.choose_storage("auto", bw.QUAD_WEIGHTED, 200, 21, 4_000_000) == DENSE  # ~2 M cells expected: full
    assert engine.choose_storage("auto", bw.TERNARY, 10, 40, 500) == SPARSE
    with pytest.raises(ValueError, match="memory"):
        engine.choose_storage("lsh", bw.TERNARY, 1, 4, 10)
    with pytest.raises(ValueError, match="dense holds"):
        engine.choose_storage(DENSE, bw.TERNARY, 1, 30, 10)


def test_bad_parameters_are_refused_as_the_oracle_refuses_them():
    tokens = [0, 1, 2, 3, 4]
    for kwargs, match in [(dict(neurons=[1, 2], bits=1), "neurons: 2 values for 3"), (dict(neurons=1, bits=4), "bits must be"),
                          (dict(neurons=1, bits=1, cell_mode="quad"), "cell_mode"),
                          (dict(neurons=1, bits=1, sample_rate=0.0), "sample_rate")]:
        for train in (bw.train, engine.train):
            with pytest.raises(ValueError, match=match):
                train(tokens, 5, codes=np.arange(5), context=1, seed=0, **kwargs)


def test_a_bitwise_model_must_fit_the_gpu_whole(monkeypatch):
    """A bitwise model keeps every cluster's cells on the GPU from training to its last lookup, so
    the check before any work counts them all, not the largest one (as a tiered model's tiers)."""
    cuda = pytest.importorskip("ramsweep.engine.backends.cuda", reason="numba-cuda is not installed")
    from ramsweep.config import Experiment
    from ramsweep.engine.bitwise_output import ARCHITECTURE
    from ramsweep.engine.layout import Frequencies
    from ramsweep.errors import ConfigError
    from ramsweep.sweep import resources
    from ramsweep.sweep.resources import GIB, GPU_WORKSPACE, check_fits

    exp = Experiment(name="bw", architecture="bitwise", context=4,
                     bitwise=dict(neurons=200, bits=20, sample_rate=0.25, cell_mode="quad_weighted"))
    tokens = np.arange(100_000) % 50_257
    plan = ARCHITECTURE.plan(exp, Frequencies.of(tokens, 50_257))
    assert len(plan.unit_bytes) == 16 and min(plan.unit_bytes) >= 200 << 20  # 200 neurons of 2**20 quad cells
    contexts = 2 * (len(tokens) - 4) * 8
    monkeypatch.setattr(resources, "describe", lambda device: "cuda: a GPU")
    monkeypatch.setattr(cuda, "free_memory", lambda: max(plan.unit_bytes) + contexts + GPU_WORKSPACE + GIB)
    with pytest.raises(ConfigError, match=r"^experiment 'bw': needs about [\d.]+ GiB of GPU memory, more than the "
                                          r"[\d.]+ GiB free on cuda: a GPU \(its 16 units take 3.1 GiB\); lower its bits"):
        check_fits(exp, plan, len(tokens), "cuda")
    monkeypatch.setattr(cuda, "free_memory", lambda: sum(plan.unit_bytes) + contexts + GPU_WORKSPACE)
    check_fits(exp, plan, len(tokens), "cuda")
