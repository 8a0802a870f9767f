"""What is the CUDA backend's own: hybrid evaluation, its 64-bit address build, its memory check
and the search's kernels. That its cells and scores are the CPU's and its metrics the oracle's
is the Backend contract (test_backends.py).

On a machine with an NVIDIA GPU these run on it. Elsewhere (CI) the one test
`test_cuda_kernels_in_the_simulator` runs this file again in a subprocess under numba-cuda's
simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba starts), on tiny sizes, with the
kernels' block sizes shrunk so that the simulator's thread-per-thread execution stays quick.
"""

import os

import numpy as np
import pytest
from conftest import run_in_the_simulator
from test_backends import CASES, moves_are_the_cpus, search_is_the_cpus, tiny_set, trained, zipf

from ramsweep.config import Experiment
from ramsweep.engine import evaluate as evaluate_module
from ramsweep.engine.evaluate import score
from ramsweep.engine.train import train
from ramsweep.errors import ConfigError
from ramsweep.sweep.runner import run_set

cuda_backend = pytest.importorskip("ramsweep.engine.backends.cuda", reason="numba-cuda is not installed")
search_backend = pytest.importorskip("ramsweep.optimize.cuda", reason="numba-cuda is not installed")
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
on_cuda = pytest.mark.skipif(not cuda_backend.available(), reason="no CUDA device (see the simulator test)")


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """The simulator runs each GPU thread as a Python thread: keep blocks small. The kernels
    must give the same results for any block size, so this also tests that."""
    if SIMULATED:
        for name, value in (("THREADS", 16), ("SCAN_THREADS", 16), ("TARGET_BLOCKS", 4), ("CHUNK", 40),
                            ("TRAIN_THREADS", 32), ("SCRATCH_BYTES", 4096)):
            monkeypatch.setattr(cuda_backend, name, value)
        for name, value in (("THREADS", 16), ("SPLITS", 2), ("SCRATCH_BYTES", 4096), ("SHARED_MAX_BITS", 8)):
            monkeypatch.setattr(search_backend, name, value)


def test_addresses_past_32_bits_take_the_64_bit_kernels():
    """Unhashed neurons of more than 32 bits (the contract's "wide" case, gates included) need
    64-bit addresses; a hashed cell never does."""
    _, model, _ = trained("wide")
    tier, gate = model.memories[1].arrays(), model.gates[0].arrays()
    assert cuda_backend.wide(tier.order, tier.hashes) and cuda_backend.wide(gate.order, gate.hashes)
    assert not cuda_backend.wide(model.memories[0].order, model.memories[0].hashes)
    _, lsh, _ = trained("lsh")
    assert not cuda_backend.wide(lsh.memories[1].order, lsh.memories[1].hashes)


@pytest.fixture(autouse=True)
def hybrid_not_yet_decided():
    """Hybrid's verdict holds for the process (a sweep): each test starts without one."""
    evaluate_module.GPU_ALONE.clear()
    yield
    evaluate_module.GPU_ALONE.clear()


@on_cuda
def test_hybrid_that_does_not_pay_leaves_the_gpu_alone_and_says_so(caplog, monkeypatch):
    caplog.set_level("INFO", logger="ramsweep")
    rng = np.random.default_rng(4)
    model = train(Experiment(name="h", **CASES["mixed"]), zipf(rng, 300, 40), 40)
    held_out = zipf(rng, 150 if SIMULATED else 5_000, 40)
    want = score(model, held_out)
    # a tier of a few milliseconds is too small to decide for the process: it alone stays out
    small = train(Experiment(name="h0", **CASES["mixed"]), zipf(rng, 300, 40), 40)
    small.throughput.update({0: {"cpu": 1.0, "cuda": 1e12}})
    score(small, held_out, "hybrid")
    assert small.throughput[0]["gpu_alone"] and not evaluate_module.GPU_ALONE
    monkeypatch.setattr(evaluate_module, "HYBRID_VERDICT_S", 0.0)  # from here these tiny tiers decide for the process
    # a CPU measured a trillion times slower than the GPU: its share is too small to pay
    model.throughput.update({0: {"cpu": 1.0, "cuda": 1e12}})
    got = score(model, held_out, "hybrid")
    assert "too little to pay for sharing: the GPU alone evaluates every tier from here on" in caplog.text
    assert set(model.throughput[1]) == set()  # the verdict holds for the process: tier 1 was not even measured
    later = train(Experiment(name="h2", **CASES["mixed"]), zipf(rng, 300, 40), 40)
    score(later, held_out, "hybrid")  # another experiment in the same sweep: no measuring, no split
    assert all(not measured for measured in later.throughput.values())
    # a split that cannot beat the time measured for the GPU alone (a trillion examples a second)
    evaluate_module.GPU_ALONE.clear()
    again_model = train(Experiment(name="h3", **CASES["mixed"]), zipf(rng, 300, 40), 40)
    again_model.throughput.update({0: {"cpu": 1e12, "cuda": 1e12}})
    again = score(again_model, held_out, "hybrid")
    assert again_model.throughput[0]["gpu_alone"] and evaluate_module.GPU_ALONE
    assert "split between the GPU and the CPU threads" in caplog.text
    assert caplog.text.count("the GPU alone evaluates every tier from here on") == 2  # once for each verdict
    for name in ("hist", "correct", "target_score", "ce"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
        assert np.array_equal(getattr(again, name), getattr(score(again_model, held_out), name)), name


@on_cuda
def test_hybrid_and_gpu_fallback_give_the_cpus_scores(monkeypatch):
    """Hybrid splits examples between the CPU threads and the GPU (the split moves with the
    measured throughput); a tier beyond the kernel's limits runs on the CPU instead."""
    monkeypatch.setattr(evaluate_module, "HYBRID_PROBE", 8)
    monkeypatch.setattr(evaluate_module, "HYBRID_MIN_SHARE", 0.0)  # always split, however fast the GPU
    rng = np.random.default_rng(4)
    exp = Experiment(name="h", **CASES["mixed"])
    model = train(exp, zipf(rng, 300, 40), 40)
    held_out = zipf(rng, 150 if SIMULATED else 5_000, 40)
    want = score(model, held_out)
    monkeypatch.setattr(evaluate_module, "HYBRID_CPU_BLOCK_S", 0.0)  # the CPU's share in many small blocks
    first, again = score(model, held_out, "hybrid"), score(model, held_out, "hybrid")
    assert {"cpu", "cuda"} <= set(model.throughput[0])  # measured, then reused
    monkeypatch.undo()
    monkeypatch.setattr(cuda_backend, "MAX_LEVELS", 3)  # every tier here has more levels
    fallback = score(model, held_out, "cuda")
    for got in (first, again, fallback):
        for name in ("hist", "correct", "target_score", "ce"):
            assert np.array_equal(getattr(got, name), getattr(want, name)), name


@on_cuda
def test_a_model_too_big_for_the_gpu_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_backend, "free_memory", lambda: 2**30)
    set_file, data = tiny_set(tmp_path)
    with pytest.raises(ConfigError, match=r"^experiment 'e': needs about [\d.]+ GiB of GPU memory, more than the "
                                          r"1.0 GiB free on cuda: .*use --device cpu$"):
        run_set(set_file, results=tmp_path / "results.json", data=data, device="cuda")
    assert not (tmp_path / "results.json").exists()


@on_cuda
def test_search_on_cuda_equals_the_cpu():
    """The incremental fitness gives the same bits on the GPU (rows, counts, Σ exp), so a whole
    search takes the same path and ends with the same connectivity and figures."""
    rng = np.random.default_rng(3)
    vocab = 30
    tokens = zipf(rng, 300 if SIMULATED else 3000, vocab)
    part, fit = tokens[: len(tokens) * 4 // 5], tokens[len(tokens) * 4 // 5 - 6 :]
    # DENSE and SPARSE tiers: in shared memory (5 bits; 9 on a GPU), in a scratch (9 in the simulator), too wide
    # for one (27: trained on the CPU)
    exp = Experiment(name="x", tiers="2,3,27;4,2,9;rest,2,5", context=6, negatives=5, dense_max_bits=6,
                     memory="bits", empty_value=0.5)
    moves_are_the_cpus(train(exp, part, vocab), part, fit, "cuda", "simple", rng)
    if not SIMULATED:  # the kernels are covered above; a whole search is checked on a real GPU
        search_is_the_cpus(tokens, vocab, "cuda", rng)


@pytest.mark.slow  # 11 s: the simulator's run of this file; the backend contract's CUDA cases stay fast
@pytest.mark.skipif(SIMULATED or cuda_backend.available(), reason="runs the file itself")
def test_cuda_kernels_in_the_simulator():
    assert "skipped" not in run_in_the_simulator(__file__, "test_cuda_kernels_in_the_simulator")
