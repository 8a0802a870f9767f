"""The bitwise model's CUDA kernels (ramsweep/engine/bitwise_cuda.py) against its CPU engine
(bitwise.py, itself held to the oracle in test_bitwise.py): the same cells, DENSE and SPARSE, the
same P and lookups, and every metric identical (not close: the same floats), over the three cell
modes, sample rates 1 and 0.25, and through the sweep with device cuda.

On a machine with an NVIDIA GPU these run on it, on larger cases as well. Elsewhere (CI) the one
test `test_bitwise_kernels_in_the_simulator` runs this file again in a subprocess under numba-cuda's
simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba starts), on tiny cases, with the
kernels' blocks, quad thread splits and batch sizes shrunk (the kernels must give the same cells
for any of them, so this tests that too).
"""


import numpy as np
import pytest
from conftest import SIMULATED, run_in_the_simulator, shrink_bitwise_cuda
from test_bitwise import corpus, same_model, same_scores  # corpus: a learnable successor, and noise

from ramsweep.config import bits_per_token
from ramsweep.engine import bitwise as engine
from ramsweep.engine import bitwise_reference as bw
from ramsweep.engine.layout import DENSE, SPARSE

bitwise_cuda = pytest.importorskip("ramsweep.engine.bitwise_cuda", reason="numba-cuda is not installed")
on_cuda = pytest.mark.skipif(not bitwise_cuda.available(), reason="no CUDA device (see the simulator test)")
on_real_gpu = pytest.mark.skipif(SIMULATED or not bitwise_cuda.available(), reason="needs a real CUDA GPU")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """The simulator runs each GPU thread as a Python thread: keep blocks small, and force every
    batch boundary (ternary count batches of one neuron, quad launches of one cluster, SPARSE
    scratch of a few neurons)."""
    shrink_bitwise_cuda(bitwise_cuda, monkeypatch)




def check(vocab_size, context, mode, rate, memory, neurons, bits, n_train, n_eval, empty_value=0.0, gray=True,
          seed=7) -> None:
    """Train on the CPU engine and on the GPU; cells, scores (of both models on the GPU, so a model
    trained on the CPU is uploaded and read), the fitted temperature and every metric identical."""
    tokens, valid, test = (corpus(vocab_size, n, vocab_size + k) for k, n in enumerate((n_train, n_eval, n_eval)))
    codes = bw.token_codes(tokens, vocab_size, "frequency", gray)
    kwargs = dict(codes=codes, context=context, neurons=neurons, bits=bits, seed=seed, sample_rate=rate,
                  cell_mode=mode, empty_value=empty_value, memory=memory)
    cpu = engine.train(tokens, vocab_size, **kwargs)
    gpu = engine.train(tokens, vocab_size, **kwargs, gpu=bitwise_cuda)
    assert gpu.device == "cuda" and cpu.device == "cpu"
    # DENSE cells stay on the GPU, counted there; the record's count is the host's
    assert all(c.host is None for c in gpu.clusters if c.storage == DENSE)
    assert [engine.cells_stored(c, mode) for c in gpu.clusters] == [engine.cells_stored(c, mode) for c in cpu.clusters]
    assert gpu.nbytes == cpu.nbytes
    same_model(cpu, gpu)  # reading `dense` copies them to the host
    want = engine.score(cpu, valid)
    for model in (gpu, cpu):
        got = engine.score(model, valid, bitwise_cuda)
        same_scores(want, got)
    temperature = engine.fit_temperature(cpu, want)
    assert engine.fit_temperature(gpu, got) == temperature
    bands = (2, 3, "rest") if vocab_size > 5 else ("rest",)
    for split in (valid, test):
        assert engine.evaluate(gpu, split, temperature=temperature, bands=bands, gpu=bitwise_cuda) == engine.evaluate(
            cpu, split, temperature=temperature, bands=bands)


# (V, context, cell mode, sample rate, memory, empty_value): the three modes at both rates, DENSE and SPARSE
MODES = [(mode, rate, memory) for mode in bw.CELL_MODES for rate in (1.0, 0.25) for memory in (DENSE, SPARSE)]


@on_cuda
@pytest.mark.parametrize("mode,rate,memory", MODES, ids=lambda v: str(v))
def test_tiny_cases_equal_the_cpu_engine(mode, rate, memory):
    """V 13 (not a power of two: 4 clusters), neurons 2-4 and bits 3-6 per cluster, 300 tokens."""
    check(13, 2, mode, rate, memory, neurons=[2, 3, 4, 2], bits=[3, 6, 4, 5], n_train=300, n_eval=90,
          empty_value=0.5 if mode == bw.TERNARY else 0.0)


@on_cuda
@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_one_bit_neurons_collide_at_every_write(mode):
    """V 2, context 1, 1-bit neurons: two cells take every write, so a quad counter saturates back
    and forth and its result depends on the exact order, and ternary ties stay EMPTY."""
    check(2, 1, mode, 1.0, DENSE, neurons=3, bits=1, n_train=200, n_eval=40, empty_value=0.5, gray=False)
    check(2, 1, mode, 0.25, DENSE, neurons=3, bits=1, n_train=200, n_eval=40, gray=False)


@on_cuda
def test_sparse_clusters_too_wide_for_the_scratch_train_on_the_cpu_engine(monkeypatch):
    monkeypatch.setattr(bitwise_cuda, "SCRATCH_BYTES", 16)  # under one neuron of 5 or 6 bits: those go to the CPU
    check(13, 2, bw.QUAD_WEIGHTED, 0.25, SPARSE, neurons=[2, 3, 4, 2], bits=[3, 6, 4, 5], n_train=300, n_eval=90)


@on_cuda
@pytest.mark.parametrize("memory", [DENSE, SPARSE])
@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_rows_of_explicit_wiring_and_states_equal_the_cpu_engine(mode, memory):
    """train_rows (a connections search's rewired neurons): random neuron ids and distinct wirings,
    at sample rate 0.5, give bitwise.train_rows's cells and codes; DENSE cells stay on the GPU."""
    tokens = corpus(13, 120, 5)
    codes = bw.token_codes(tokens, 13, "frequency", True)
    inputs = engine.InputBits(2, 4, codes)
    data = engine.training_set(tokens, codes, 2, 7, 0.5, 4)
    rng = np.random.default_rng(len(mode) + len(memory))
    i, ids = 2, rng.choice(40, 5, replace=False).astype(np.int64)
    conn = np.stack([rng.choice(inputs.n_input, 5, replace=False) for _ in ids]).astype(np.int32)
    states = engine.sample_states_of(data.seed, i, ids)
    cpu = engine.train_rows(data, inputs, i, conn, states, mode, memory)
    gpu, table = bitwise_cuda.train_rows(data, inputs, i, conn, states, mode, memory)
    assert gpu.storage == memory and (table is None) == (memory == SPARSE)
    x = data.x[::3]
    assert np.array_equal(bitwise_cuda.read_neuron_codes(gpu, x, table), engine.neuron_codes(cpu, x))
    if memory == DENSE:  # the rows' cells stay on the GPU, uncounted (the search reads their codes alone)
        assert gpu.host is None and gpu.stored is None and np.array_equal(gpu.dense, cpu.dense)
    assert engine.cells_stored(gpu, mode) == engine.cells_stored(cpu, mode) > 0
    for name in ("conn", "order", "masks", "offsets", "keys", "vals"):
        assert np.array_equal(getattr(gpu, name), getattr(cpu, name)), name
        assert getattr(gpu, name).dtype == getattr(cpu, name).dtype, name


@on_cuda
def test_tables_go_to_the_gpu_once_per_model():
    tokens = corpus(13, 200, 1)
    model = engine.train(tokens, 13, codes=bw.token_codes(tokens, 13, "native"), context=2, neurons=2, bits=4, seed=1,
                         cell_mode=bw.QUAD_WEIGHTED)
    assert model.gpu is None
    engine.score(model, tokens[:40], bitwise_cuda)
    tables = list(model.gpu)
    engine.score(model, tokens[40:80], bitwise_cuda)
    assert all(a is b for a, b in zip(tables, model.gpu))


@on_cuda
def test_a_bitwise_experiment_on_cuda_equals_the_cpu_run():
    """architecture: bitwise through run_experiment with device cuda (and hybrid: the GPU alone): the
    record names the GPU, and every figure is the CPU run's."""
    from ramsweep.config import Experiment
    from ramsweep.data import Corpus
    from ramsweep.engine.devices import describe
    from ramsweep.sweep.experiment import Task, run_experiment

    vocab = 11
    splits = {"train": corpus(vocab, 300, 1), "validation": corpus(vocab, 80, 2), "test": corpus(vocab, 80, 3)}
    data = Corpus(name="text", tokenizer="word", vocab=tuple(f"w{i}" for i in range(vocab)), full_data=True,
                  fingerprint="synthetic-bw", variant="synthetic", path=None, source_sha256="0" * 64,
                  tokenizer_files={}, token_bytes={s: np.full(a.size, 3, np.int32) for s, a in splits.items()},
                  **splits)
    records = {}
    for device in ("cpu", "cuda", "hybrid"):
        exp = Experiment(name="bw", architecture="bitwise", context=2, encoding="frequency", gray=True, device=device,
                         bitwise={"neurons": [2, 3, 2, 3], "bits": 5, "sample_rate": 0.25, "cell_mode": "quad_weighted"})
        record = run_experiment(Task(exp, "k", "s"), data)
        assert record.ok, record.error
        records[device] = record
    assert records["cpu"].resources.device == "cpu"
    for device in ("cuda", "hybrid"):
        assert records[device].resources.device == describe("cuda")
        assert records[device].metrics == records["cpu"].metrics


@on_real_gpu
@pytest.mark.parametrize("mode,rate,memory", MODES, ids=lambda v: str(v))
def test_larger_cases_on_a_real_gpu(mode, rate, memory):
    """V 300 (9 clusters) and 50,257 (16), context 3-4, up to 20 neurons of 14 bits, 30 k tokens."""
    check(300, 3, mode, rate, memory, neurons=[8 + i for i in range(9)], bits=[10, 12, 14, 9, 11, 13, 8, 12, 14],
          n_train=30_000, n_eval=5_000, empty_value=0.25 if mode == bw.TERNARY else 0.0)
    assert bits_per_token(50_257) == 16
    check(50_257, 4, mode, rate, memory, neurons=12, bits=14, n_train=20_000, n_eval=3_000, gray=False)


@pytest.mark.slow
@pytest.mark.skipif(SIMULATED or bitwise_cuda.available(), reason="runs the file itself")
def test_bitwise_kernels_in_the_simulator():
    run_in_the_simulator(__file__, "test_bitwise_kernels_in_the_simulator")
