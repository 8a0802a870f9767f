"""CUDA ≡ CPU: the same cells and the same scores, counts and metrics.

On a machine with an NVIDIA GPU these run on it. Elsewhere (CI) the one test
`test_cuda_kernels_in_the_simulator` runs this file again in a subprocess under numba-cuda's
simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba starts), on tiny sizes, with the
kernels' block sizes shrunk so that the simulator's thread-per-thread execution stays quick.
"""

import os
import subprocess
import sys

import numpy as np
import orjson
import pytest

from ramsweep.config import Experiment
from ramsweep.data.spec import DataSpec
from ramsweep.engine import evaluate as evaluate_module
from ramsweep.engine.evaluate import evaluate, score
from ramsweep.engine.reference import ReferenceModel
from ramsweep.engine.train import cells, train
from ramsweep.errors import ConfigError
from ramsweep.report import report
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


def zipf(rng, n, vocab):
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, n, p=p / p.sum()).astype(np.int32)


CASES = {
    # dense and sparse tiers, negatives spanning tiers, ties, empty_value 0.5
    "mixed": dict(tiers="3,4,9;5,3,7;rest,2,5", context=3, negatives=6, dense_max_bits=6, memory="bits", empty_value=0.5),
    # 7 bits per token x 10 = 70 input bits: neurons read across two 64-bit words
    "two_words": dict(tiers="4,3,12;rest,2,6", context=10, negatives=3, dense_max_bits=8, memory="bits"),
    # 2^9 cells = 32 words per neuron: two tiles of the simulator's 16-thread compaction scan
    "all_sparse": dict(tiers="rest,3,9", context=3, negatives=10, dense_max_bits=4, memory="bits"),
    # 37 + 31 + 3 neurons with EMPTY at 0.5: more score levels over the model than one tier has
    "many_levels": dict(tiers="2,37,6;3,31,5;rest,3,4", context=2, negatives=4, empty_value=0.5),
    # LSH: 30 and 40-bit addresses hashed into 2^7 cells, stored SPARSE (training stays on the CPU)
    "lsh": dict(tiers="3,3,30;rest,2,40", context=8, negatives=5, dense_max_bits=4, sparse_max_bits=12, lsh_bits=7,
                memory="bits"),
    # ids numbered by first appearance and Gray-coded before their bits are read
    "encoded": dict(tiers="3,3,7;rest,2,5", context=3, negatives=5, memory="bits", encoding="appearance", gray=True),
    # unhashed sparse neurons of 34 bits (sparse_max_bits raised) and gates of 36: the kernels' 64-bit address
    # build, chosen by the gate too (tier 0's own neurons have 9 bits)
    "wide": dict(tiers="3,2,9;rest,2,34", context=9, negatives=4, dense_max_bits=4, sparse_max_bits=40, memory="bits",
                 gating={"neurons": 2, "bits": 36}),
}
VOCAB = {"mixed": 40, "two_words": 100, "all_sparse": 14, "many_levels": 20, "lsh": 20, "encoded": 30,
         "wide": 12}  # small: the simulator is slow


@on_cuda
@pytest.mark.parametrize("case", CASES)
def test_cuda_training_writes_the_cpus_cells_and_scores_match(case):
    rng = np.random.default_rng(len(case))
    vocab = VOCAB[case]
    n_train, n_eval = (300, 120) if SIMULATED else (20_000, 5_000)
    if SIMULATED and case in ("many_levels", "all_sparse", "two_words", "lsh", "wide"):  # the slowest in the simulator
        n_train, n_eval = 150, 50
    exp = Experiment(name=case, seed=7, **CASES[case])
    tokens, held_out = zipf(rng, n_train, vocab), zipf(rng, n_eval, vocab)
    if case == "wide":  # 36-bit gates open only on contexts seen in training
        held_out = tokens[: n_eval + exp.context]
    on_cpu, on_gpu = train(exp, tokens, vocab), train(exp, tokens, vocab, device="cuda")
    for a, b in zip(on_cpu.memories, on_gpu.memories):
        for name in ("dense", "offsets", "keys", "vals"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (a.tier, name)
            assert getattr(a, name).dtype == getattr(b, name).dtype

    cpu_s, gpu_s = score(on_cpu, held_out), score(on_cpu, held_out, device="cuda")
    for name in ("hist", "correct", "target_tier", "target_score", "ce"):
        assert np.array_equal(getattr(cpu_s, name), getattr(gpu_s, name)), name
    for (a_all, a_t), (b_all, b_t) in zip(cpu_s.empties, gpu_s.empties):
        assert np.array_equal(a_all, b_all) and np.array_equal(a_t, b_t)


@on_cuda
def test_cuda_metrics_equal_the_oracles():
    rng = np.random.default_rng(5)
    exp = Experiment(name="x", tiers="3,4,9;rest,2,6", context=3, negatives=5, dense_max_bits=7, memory="bits", seed=2)
    assert_cuda_matches_oracle(exp, zipf(rng, 250, 40), zipf(rng, 90, 40), 40)


def assert_cuda_matches_oracle(exp, tokens, held_out, vocab):
    """Trained on the GPU: the oracle's cells; evaluated there: the oracle's metrics. Returns the model."""
    model, oracle = train(exp, tokens, vocab, device="cuda"), ReferenceModel(exp, tokens, vocab)
    assert cells(model) == oracle.cells
    got, want = evaluate(model, held_out, device="cuda"), oracle.evaluate(held_out)
    assert got["examples"] == want["examples"] and got["accuracy"] == want["accuracy"]
    assert got["ce"] == pytest.approx(want["ce"], rel=1e-9)
    return model


@on_cuda
def test_cuda_encoded_metrics_equal_the_oracles():  # appearance and Gray: the "encoded" case above
    rng = np.random.default_rng(9)
    exp = Experiment(name="x", tiers="3,3,8;rest,2,6", context=3, negatives=5, seed=1, encoding="frequency")
    assert_cuda_matches_oracle(exp, zipf(rng, 200 if SIMULATED else 5_000, 30), zipf(rng, 40 if SIMULATED else 2_000, 30),
                               30)


@on_cuda
def test_cuda_lsh_metrics_equal_the_oracles():
    rng = np.random.default_rng(6)
    exp = Experiment(name="x", tiers="3,3,30;rest,2,40", context=8, negatives=5, sparse_max_bits=12, lsh_bits=6,
                     seed=4)  # memory auto: the hashed cells stored DENSE
    model = assert_cuda_matches_oracle(exp, zipf(rng, 200 if SIMULATED else 5_000, 20),
                                       zipf(rng, 40 if SIMULATED else 2_000, 20), 20)
    assert [(m.tier.memory, m.tier.backend) for m in model.memories] == [("lsh", "dense")] * 2


@on_cuda
def test_cuda_gated_scores_equal_the_cpus_and_the_oracles():
    rng = np.random.default_rng(8)
    exp = Experiment(name="g", tiers="3,3,7;rest,2,5", context=3, negatives=6, seed=3, dense_max_bits=6,
                     memory="bits", gating={"neurons": 3, "bits": 8}, empty_value=0.5)  # sparse gate memory
    tokens, held_out = zipf(rng, 120 if SIMULATED else 5_000, 30), zipf(rng, 30 if SIMULATED else 2_000, 30)
    model = train(exp, tokens, 30, device="cuda")
    cpu_s, gpu_s = score(model, held_out), score(model, held_out, device="cuda")
    for name in ("hist", "correct", "target_tier", "target_score", "ce"):
        assert np.array_equal(getattr(cpu_s, name), getattr(gpu_s, name)), name
    for (a_open, a_target), (b_open, b_target) in zip(cpu_s.gates, gpu_s.gates):
        assert np.array_equal(a_open, b_open) and np.array_equal(a_target, b_target)
    oracle = ReferenceModel(exp, tokens, 30)
    got, want = evaluate(model, held_out, device="cuda"), oracle.evaluate(held_out)
    assert got["accuracy"] == want["accuracy"] and got["ce"] == pytest.approx(want["ce"], rel=1e-9)
    assert [t["gate_open"] for t in got["tiers"]] == pytest.approx([t["gate_open"] for t in want["tiers"]], rel=1e-12)


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


WORDS = "the lord said unto moses and aaron of israel land house king people day god son".split()


def tiny_set(tmp_path):
    """A one-experiment set file and a tiny text corpus (ten 1 kB chunks) to run it on."""
    rng = np.random.default_rng(0)
    text = tmp_path / "tiny.txt"
    text.write_text("\n".join(" ".join(rng.choice(WORDS, 220)) for _ in range(10)) + "\n")
    (tmp_path / "set.yaml").write_text(
        'experiments:\n  - name: e\n    tiers: "4,3,7;rest,2,5"\n    context: 2\n    negatives: 4\n')
    return str(tmp_path / "set.yaml"), DataSpec(corpus="text", path=str(text))


@on_cuda
def test_a_model_too_big_for_the_gpu_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_backend, "free_memory", lambda: 2**30)
    set_file, data = tiny_set(tmp_path)
    with pytest.raises(ConfigError, match=r"^experiment 'e': needs about [\d.]+ GiB of GPU memory, more than the "
                                          r"1.0 GiB free on cuda: .*use --device cpu$"):
        run_set(set_file, results=tmp_path / "results.json", data=data, device="cuda")
    assert not (tmp_path / "results.json").exists()


@on_cuda
def test_a_gpu_run_and_a_cpu_run_of_a_set_agree(tmp_path):
    """The same set on both devices: the same keys and numbers; the record and the report
    say which device ran."""
    set_file, data = tiny_set(tmp_path)
    found = {}
    for device in ("cpu", "cuda"):
        results = tmp_path / device / "results.json"
        run_set(set_file, results=results, data=data, device=device)
        found[device] = [r for r in orjson.loads(results.read_bytes())["results"] if r.get("kind") != "baseline"]
        assert device in report(results, format="md")
    (cpu_run,), (gpu_run,) = found["cpu"], found["cuda"]
    assert cpu_run["key"] == gpu_run["key"] and cpu_run["metrics"] == gpu_run["metrics"]
    assert cpu_run["resources"]["device"] == "cpu" and gpu_run["resources"]["device"].startswith("cuda: ")


@on_cuda
def test_search_on_cuda_equals_the_cpu():
    """The incremental fitness gives the same bits on the GPU (rows, counts, Σ exp), so a whole
    search takes the same path and ends with the same connectivity and figures."""
    from ramsweep.optimize.driver import run_search
    from ramsweep.optimize.fitness import Examples, Fitness

    rng = np.random.default_rng(3)
    vocab = 30
    tokens = zipf(rng, 300 if SIMULATED else 3000, vocab)
    part, fit = tokens[: len(tokens) * 4 // 5], tokens[len(tokens) * 4 // 5 - 6 :]
    # DENSE and SPARSE tiers: in shared memory (5 bits; 9 on a GPU), in a scratch (9 in the simulator), too wide
    # for one (27: trained on the CPU)
    exp = Experiment(name="x", tiers="2,3,27;4,2,9;rest,2,5", context=6, negatives=5, dense_max_bits=6,
                     memory="bits", empty_value=0.5)
    model = train(exp, part, vocab)
    examples = Examples.of(part, model.layout), Examples.of(fit, model.layout)
    on_cpu, on_gpu = (Fitness(model, *examples, "simple", device=d, pool_bytes=1) for d in ("cpu", "cuda"))
    for f in (on_cpu, on_gpu):
        f.set_scope(np.arange(vocab))
    for _ in range(3):
        changes = []
        for t, tier in enumerate(model.layout.tiers):
            neurons = rng.choice(tier.n_neurons, size=2, replace=False)
            changes.append((t, neurons, np.stack([rng.choice(model.layout.n_input, tier.bits, replace=False)
                                                  for _ in neurons]).astype(np.int32)))
        assert on_cpu.evaluate([changes]) == on_gpu.evaluate([changes])
        assert on_cpu.commit(changes) == on_gpu.commit(changes)
    slots = list(on_cpu.pool.slot_of.values())
    assert list(on_gpu.pool.slot_of.values()) == slots
    assert np.array_equal(on_cpu.kernels.read_rows(slots), on_gpu.kernels.read_rows(slots))

    if SIMULATED:  # the kernels are covered above; a whole search is checked on a real GPU
        return
    search = Experiment(name="s", tiers="3,3,8;rest,2,6", context=3, negatives=6, optimize={
        "strategy": "ga+ts", "generations": 2, "population": 4, "iterations": 2, "neighbours": 3, "mutation": 0.05,
        "tiers": [0]})
    args = (search, tokens, zipf(rng, 60 if SIMULATED else 400, vocab), vocab)
    a, b = run_search(*args, device="cpu"), run_search(*args, device="cuda")
    drop = ("elapsed_s", "search_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in a.summary["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b.summary["history"]]
    assert a.summary["selection"] == b.summary["selection"]
    assert all(np.array_equal(x, y) for x, y in zip(a.chosen.connectivity, b.chosen.connectivity))


@pytest.mark.skipif(SIMULATED or cuda_backend.available(), reason="runs the file itself")
def test_cuda_kernels_in_the_simulator():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                           "-k", "not test_cuda_kernels_in_the_simulator"],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1], done.stdout[-500:]
