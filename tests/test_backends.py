"""The Backend contract, held against every backend present: the CPU engine's cells and counts
exactly, the oracle's metrics, any split of a split into batches, and a tier a backend cannot
run (a capability it lacks, a limit of its kernels) handed to the CPU engine with the same results.

Backends: cpu always; cuda on an NVIDIA GPU, or where numba-cuda has none, in its simulator (the
test `test_cuda_in_the_simulator` runs this file again under NUMBA_ENABLE_CUDASIM=1, which must
be set before numba starts, with tiny sizes and the kernels' blocks shrunk: the simulator runs
each GPU thread as a Python thread); wgpu where it finds an adapter (Mesa's lavapipe in CI).
A new backend is checked by adding its name to present().
"""

import dataclasses
import os
from functools import cache

import numpy as np
import orjson
import pytest
from conftest import run_in_the_simulator

from ramsweep.config import Experiment
from ramsweep.data.spec import DataSpec
from ramsweep.engine import backends
from ramsweep.engine.backends.base import Backend, Batch
from ramsweep.engine.evaluate import evaluate, score, score_levels, score_table
from ramsweep.engine.reference import ReferenceModel
from ramsweep.engine.train import cells, train
from ramsweep.report import report
from ramsweep.sweep.runner import run_set

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def cuda_module():
    try:
        from ramsweep.engine.backends import cuda
    except ImportError:  # numba-cuda is not installed
        return None
    return cuda


def present() -> list[str]:
    """The backends this machine can run (in the simulator's run: cuda alone, the rest ran outside)."""
    cuda = cuda_module()
    if SIMULATED:
        return ["cuda"]
    names = ["cpu"] + (["cuda"] if cuda is not None and cuda.available() else [])
    try:
        from ramsweep.engine.backends import wgpu
    except ImportError:
        return names
    return names + (["wgpu"] if wgpu.available() else [])


BACKENDS = present()


@pytest.fixture(params=BACKENDS)
def name(request, monkeypatch) -> str:
    """A backend's device name; in the simulator, the CUDA kernels' blocks made small (the kernels
    must give the same results for any block size, so this tests that too)."""
    if request.param == "cuda" and SIMULATED:
        cuda = cuda_module()
        for constant, value in (("THREADS", 16), ("SCAN_THREADS", 16), ("TARGET_BLOCKS", 4), ("CHUNK", 40),
                                ("TRAIN_THREADS", 32), ("SCRATCH_BYTES", 4096)):
            monkeypatch.setattr(cuda, constant, value)
    return request.param


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
    # LSH: 30 and 40-bit addresses (wider than a u32) hashed into 2^7 cells, stored SPARSE
    "lsh": dict(tiers="3,3,30;rest,2,40", context=8, negatives=5, dense_max_bits=4, sparse_max_bits=12, lsh_bits=7,
                memory="bits"),
    # LSH with memory auto: the hashed cells stored DENSE
    "lsh_dense": dict(tiers="3,3,30;rest,2,40", context=8, negatives=5, sparse_max_bits=12, lsh_bits=6),
    # ids numbered by first appearance and Gray-coded before their bits are read
    "encoded": dict(tiers="3,3,7;rest,2,5", context=3, negatives=5, memory="bits", encoding="appearance", gray=True),
    # gates of 8 bits in sparse memory
    "gated": dict(tiers="3,3,7;rest,2,5", context=3, negatives=6, dense_max_bits=6, memory="bits",
                  gating={"neurons": 3, "bits": 8}, empty_value=0.5),
    # gates of 5 bits in dense memory, beside a sparse tier and a dense one
    "gated_dense": dict(tiers="3,3,7;rest,2,5", context=3, negatives=6, dense_max_bits=6, memory="bits",
                        gating={"neurons": 2, "bits": 5}),
    # unhashed sparse neurons of 34 bits and gates of 36: CUDA's 64-bit address build, chosen by the gate too
    # (tier 0's own neurons have 9 bits); wgpu's 32-bit kernel hands both tiers to the CPU
    "wide": dict(tiers="3,2,9;rest,2,34", context=9, negatives=4, dense_max_bits=4, sparse_max_bits=40, memory="bits",
                 gating={"neurons": 2, "bits": 36}),
}
VOCAB = {"mixed": 40, "two_words": 100, "all_sparse": 14, "many_levels": 20, "lsh": 20, "lsh_dense": 20,
         "encoded": 30, "gated": 30, "gated_dense": 30, "wide": 12}
ORACLE_CASES = ("mixed", "encoded", "lsh_dense", "gated")  # metrics against the oracle: one of each kind of memory


def sizes(case: str) -> tuple[int, int]:
    """(training tokens, held-out tokens): tiny in the simulator (~9k GPU threads a second),
    larger where a real GPU runs (many blocks a launch)."""
    if not SIMULATED:
        return (20_000, 5_000) if "cuda" in BACKENDS else (3_000, 1_000)
    return (300, 120) if case in ("mixed", "encoded") else (150, 50)


@cache
def tokens_of(case: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(len(case))
    n_train, n_eval = sizes(case)
    tokens, held_out = zipf(rng, n_train, VOCAB[case]), zipf(rng, n_eval, VOCAB[case])
    if CASES[case].get("gating"):  # wide gates open only on contexts seen in training
        held_out = np.concatenate([tokens[: n_eval // 2 + 10], held_out[: n_eval // 2]])
    return tokens, held_out


@cache
def trained(case: str):
    """(experiment, model trained by the CPU engine, held-out tokens)."""
    exp = Experiment(name=case, seed=7, **CASES[case])
    tokens, held_out = tokens_of(case)
    return exp, train(exp, tokens, VOCAB[case]), held_out


@cache
def oracle(case: str) -> tuple[dict, dict]:
    """The oracle's cells and metrics on the case's held-out tokens."""
    exp, _, held_out = trained(case)
    model = ReferenceModel(exp, tokens_of(case)[0], VOCAB[case])
    return model.cells, model.evaluate(held_out)


@cache
def trained_on(name: str, case: str):
    """The case's model trained by backend `name` (the simulator's training is slow: once a case)."""
    exp, _, _ = trained(case)
    return train(exp, tokens_of(case)[0], VOCAB[case], device=name)


def assert_same_scores(want, got) -> None:
    for field in ("hist", "correct", "target_tier", "target_score", "ce"):
        assert np.array_equal(getattr(want, field), getattr(got, field)), field
    for (a_all, a_t), (b_all, b_t) in zip(want.empties, got.empties):
        assert np.array_equal(a_all, b_all) and np.array_equal(a_t, b_t)
    assert len(want.gates) == len(got.gates)
    for (a_open, a_target), (b_open, b_target) in zip(want.gates, got.gates):
        assert np.array_equal(a_open, b_open) and np.array_equal(a_target, b_target)


def test_each_backend_declares_what_it_can(name):
    backend = backends.get(name)
    assert isinstance(backend, Backend) and backend.name == name
    assert all(isinstance(getattr(backend, c), bool) for c in ("trains", "gates", "lsh"))
    assert backends.get("cpu").trains and backends.get("cpu").gates and backends.get("cpu").lsh
    _, model, held_out = trained("mixed")  # tier 0 sparse (9 bits), tier 2 dense (5 bits)
    tier, _ = tier_and_batch(model, held_out, 0, False)
    assert backends.choose(name, tier) is backend  # a plain tier runs on the backend's own kernels
    dense, _ = tier_and_batch(model, held_out, 2, False)
    assert tier.is_sparse and not dense.is_sparse
    assert backends.choose(name, dense, training=True).name == (name if backend.trains else "cpu")
    sparse_here = backend.trains and name != "wgpu"  # the WGSL kernel trains dense tiers only
    assert backends.choose(name, tier, training=True).name == (name if sparse_here else "cpu")


@pytest.mark.parametrize("case", CASES)
def test_training_writes_the_cpus_cells(name, case):
    _, on_cpu, _ = trained(case)
    here = trained_on(name, case)
    for a, b in zip(on_cpu.memories + on_cpu.gates, here.memories + here.gates):
        for field in ("dense", "offsets", "keys", "vals"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.tier, field)
            assert getattr(a, field).dtype == getattr(b, field).dtype, (a.tier, field)


@pytest.mark.parametrize("case", CASES)
def test_scores_are_the_cpus(name, case):
    _, model, held_out = trained(case)
    assert_same_scores(score(model, held_out), score(model, held_out, device=name))
    if model.gates:
        assert_same_scores(score(model, held_out, gated=False), score(model, held_out, device=name, gated=False))


@pytest.mark.parametrize("case", ORACLE_CASES)
def test_metrics_are_the_oracles(name, case):
    """Trained and evaluated on the backend: the oracle's cells and metrics."""
    _, _, held_out = trained(case)
    model, (oracle_cells, want) = trained_on(name, case), oracle(case)
    assert cells(model) == oracle_cells
    got = evaluate(model, held_out, device=name)
    assert got["examples"] == want["examples"] and got["accuracy"] == want["accuracy"]
    assert got["ce"] == pytest.approx(want["ce"], rel=1e-9)
    if model.gates:
        assert [t["gate_open"] for t in got["tiers"]] == pytest.approx([t["gate_open"] for t in want["tiers"]],
                                                                       rel=1e-12)


def tier_and_batch(model, held_out, index: int, gated: bool):
    """Tier `index` of `model` as the kernels read it, and a fresh batch of the held-out examples."""
    from ramsweep.engine.train import examples_of, pack

    exp, layout = model.exp, model.layout
    levels, level_tables = score_levels(model)
    mem = model.memories[index]
    gate = model.gates[index] if gated else None
    tier = mem.arrays(score_table=score_table(mem.tier.neurons, exp.empty_value), level_table=level_tables[index],
                      gate=gate.arrays() if gate else None, gate_need=-(-gate.tier.neurons // 2) if gate else 0)
    examples = examples_of(held_out, exp.context)
    n = examples.shape[0]

    def batch() -> Batch:
        counts = (lambda: np.zeros(n, dtype=np.int64)) if gate else (lambda: None)
        return Batch(pack(held_out, examples, layout), layout.position[held_out[examples]].astype(np.int32),
                     np.full(n, -np.inf), np.zeros(n, dtype=np.int32), np.zeros(n), np.zeros((n, len(levels)), np.int32),
                     np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), counts(), counts())

    return tier, batch


@pytest.mark.parametrize("case", ["mixed", "gated", "gated_dense"])
def test_any_split_into_batches_gives_the_same_counts(name, case):
    """evaluate() on parts of a batch (as hybrid runs it) folds exactly what one call on the CPU does."""
    _, model, held_out = trained(case)
    for gated in (False, True) if model.gates else (False,):
        tier, batch = tier_and_batch(model, held_out, 0, gated)
        chosen = backends.choose(name, tier)
        whole, parts = batch(), batch()
        backends.get("cpu").evaluate(tier, whole)
        tables = chosen.upload(tier)
        n = len(parts)
        for lo, hi in ((0, 7), (7, n // 2), (n // 2, n)):
            chosen.evaluate(tables, parts.part(lo, hi))
        for field in dataclasses.fields(Batch):
            a, b = getattr(whole, field.name), getattr(parts, field.name)
            assert (a is None and b is None) or np.array_equal(a, b), field.name


def test_a_tier_the_backend_refuses_runs_on_the_cpu_with_the_same_scores(name, monkeypatch):
    _, model, held_out = trained("mixed")
    backend = backends.get(name)
    tier, _ = tier_and_batch(model, held_out, 0, False)
    monkeypatch.setattr(type(backend), "cannot_evaluate", lambda self, tier: "beyond this backend")
    monkeypatch.setattr(type(backend), "cannot_train", lambda self, tier: "beyond this backend")
    assert backends.choose(name, tier).name == backends.choose(name, tier, training=True).name == "cpu"
    assert_same_scores(score(model, held_out), score(model, held_out, device=name))


def test_gated_tiers_go_to_a_backend_only_if_it_has_gates(name):
    _, model, held_out = trained("gated")
    tier, batch = tier_and_batch(model, held_out, 0, True)
    backend = backends.get(name)
    assert backends.choose(name, tier).name == (name if backend.gates else "cpu")
    if not backend.gates:
        with pytest.raises(ValueError, match="no gates"):
            backend.evaluate(tier, batch())


WORDS = "the lord said unto moses and aaron of israel land house king people day god son".split()


def tiny_set(tmp_path):
    """A one-experiment set file and a tiny text corpus (ten 1 kB chunks) to run it on."""
    rng = np.random.default_rng(0)
    text = tmp_path / "tiny.txt"
    text.write_text("\n".join(" ".join(rng.choice(WORDS, 220)) for _ in range(10)) + "\n")
    (tmp_path / "set.yaml").write_text(
        'experiments:\n  - name: e\n    tiers: "4,3,7;rest,2,5"\n    context: 2\n    negatives: 4\n')
    return str(tmp_path / "set.yaml"), DataSpec(corpus="text", path=str(text))


def test_a_run_of_a_set_on_the_backend_is_the_cpus(name, tmp_path):
    """The same set on the CPU and on the backend: the same keys and numbers; the record and the
    report say which device ran."""
    if name == "cpu":
        pytest.skip("the CPU is what the others are compared with")
    set_file, data = tiny_set(tmp_path)
    found = {}
    for device in ("cpu", name):
        results = tmp_path / device / "results.json"
        run_set(set_file, results=results, data=data, device=device)
        found[device] = [r for r in orjson.loads(results.read_bytes())["results"] if r.get("kind") != "baseline"]
        assert device in report(results, format="md")
    (cpu_run,), (run,) = found["cpu"], found[name]
    assert cpu_run["key"] == run["key"] and cpu_run["metrics"] == run["metrics"]
    assert cpu_run["resources"]["device"] == "cpu" and run["resources"]["device"].startswith(f"{name}: ")


@pytest.mark.slow
@pytest.mark.skipif(SIMULATED or cuda_module() is None or "cuda" in BACKENDS,
                    reason="runs this file in the simulator where numba-cuda has no GPU")
def test_cuda_in_the_simulator():
    assert "skipped" not in run_in_the_simulator(__file__, "test_cuda_in_the_simulator or test_cpu_")


# --- the CPU backend's own paths ------------------------------------------------------------


def test_cpu_blocked_chunked_and_batched_paths_match_oracle(monkeypatch):
    """Tiny cache blocks, work chunks and sparse batches force every loop boundary."""
    from test_engine import V, assert_metrics_equal, zipf_tokens

    from ramsweep.engine.backends import cpu

    monkeypatch.setattr(cpu, "CACHE_BLOCK_BYTES", 64)
    monkeypatch.setattr(cpu, "DENSE_CHUNK", 3)
    monkeypatch.setattr(cpu, "SPARSE_BATCH_ENTRIES", 200)
    rng = np.random.default_rng(11)
    exp = Experiment(name="x", tiers="3,4,14;9,3,9;rest,2,12", context=4, negatives=7, dense_max_bits=9, memory="bits",
                     empty_value=0.5, seed=5)
    train_tokens, valid = zipf_tokens(rng, 700, seen=44), zipf_tokens(rng, 400)
    model = train(exp, train_tokens, V)
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    assert_metrics_equal(evaluate(model, valid), oracle.evaluate(valid))


def test_cpu_sparse_training_memory_stays_near_one_batch(monkeypatch):
    """Every neuron of a tier of negatives sees every example: its worst case is reserved a
    batch at a time, and only the used cells may outlive the batch (a regression: views of
    each batch once kept them all, 9 GB for a 170 MB model on GPT-2 KJV)."""
    import tracemalloc

    from test_engine import V, zipf_tokens

    from ramsweep.engine.backends import cpu

    batch = 1 << 16
    monkeypatch.setattr(cpu, "SPARSE_BATCH_ENTRIES", batch)
    rng = np.random.default_rng(3)
    tokens = zipf_tokens(rng, 20_000)
    exp = Experiment(name="x", tiers="40,4,10;rest,1,3", context=3, negatives=40, dense_max_bits=8, memory="bits")
    train(exp, tokens, V)  # numba compiled and warm before measuring
    tracemalloc.start()
    model = train(exp, tokens, V)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    worst_case = 160 * 20_000 * 5  # 160 neurons, every example, key + value bytes
    assert model.memories[0].keys.nbytes < worst_case / 10  # the cells are few: 10-bit addresses
    assert peak < worst_case / 2, peak  # ~4 MB with 2 threads or 16; every batch kept would be ~16 MB


# ------------------------------------------------------------------ a connectivity search on a backend


def moves_are_the_cpus(model, part, fit, device: str, kind: str, rng) -> tuple:
    """Three rewirings of two random neurons a tier, evaluated then committed by the incremental
    fitness on `device` and on the CPU: the same values each time, then the same rows in the
    same slots. Returns both fitness states."""
    from ramsweep.optimize.fitness import Examples, Fitness

    examples = Examples.of(part, model.layout), Examples.of(fit, model.layout)
    on_cpu, here = (Fitness(model, *examples, kind, device=d, pool_bytes=1) for d in ("cpu", device))
    for f in (on_cpu, here):
        f.set_scope(np.arange(model.layout.vocab_size))
    for _ in range(3):
        changes = []
        for t, tier in enumerate(model.layout.tiers):
            neurons = rng.choice(tier.n_neurons, size=2, replace=False)
            changes.append((t, neurons, np.stack([rng.choice(model.layout.n_input, tier.bits, replace=False)
                                                  for _ in neurons]).astype(np.int32)))
        assert on_cpu.evaluate([changes]) == here.evaluate([changes])
        assert on_cpu.commit(changes) == here.commit(changes)
    slots = list(on_cpu.pool.slot_of.values())
    assert list(here.pool.slot_of.values()) == slots
    assert np.array_equal(on_cpu.kernels.read_rows(slots), here.kernels.read_rows(slots))
    return on_cpu, here


def search_is_the_cpus(tokens, vocab: int, device: str, rng) -> None:
    """A GA+TS search of one tier through run_search on `device` and on the CPU: the same history,
    validation choice and connectivity."""
    from ramsweep.optimize.driver import run_search

    search = Experiment(name="s", tiers="3,3,8;rest,2,6", context=3, negatives=6, optimize={
        "strategy": "ga+ts", "generations": 2, "population": 4, "iterations": 2, "neighbours": 3, "mutation": 0.05,
        "tiers": [0]})
    args = (search, tokens, zipf(rng, 400, vocab), vocab)
    a, b = run_search(*args, device="cpu"), run_search(*args, device=device)
    drop = ("elapsed_s", "search_s")
    assert [{k: v for k, v in h.items() if k not in drop} for h in a.summary["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in b.summary["history"]]
    assert a.summary["selection"] == b.summary["selection"]
    assert all(np.array_equal(x, y) for x, y in zip(a.chosen.connectivity, b.chosen.connectivity))
