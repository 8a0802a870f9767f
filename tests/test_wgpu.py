"""What is the wgpu backend's own: its adapter, and tables cut to fit its buffer cap. That its
scores are the CPU's and its metrics the oracle's is the Backend contract (test_backends.py).

Runs wherever wgpu finds an adapter: Mesa's lavapipe (Vulkan on the CPU) in CI, Metal on a Mac.
"""

import numpy as np
import pytest
from test_backends import assert_same_scores, trained, zipf

from ramsweep.config import Experiment
from ramsweep.engine.evaluate import score, score_levels
from ramsweep.engine.train import train

pytest.importorskip("wgpu", reason="wgpu is not installed")
from ramsweep.engine.backends import wgpu as wgpu_backend  # noqa: E402  (after the skip)

if not wgpu_backend.available():
    pytest.skip("wgpu finds no adapter here", allow_module_level=True)


def same_scores(model, held_out):
    assert_same_scores(score(model, held_out), score(model, held_out, device="wgpu"))


def test_adapter_info():
    info = wgpu_backend.adapter_info()
    assert {"name", "backend", "type"} <= set(info) and all(isinstance(info[k], str) for k in ("name", "backend"))
    assert wgpu_backend.is_real_gpu() == (info["type"] != "CPU")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["two_words", "lsh_dense", "gated_dense"])
def test_training_under_a_low_buffer_cap_writes_the_cpus_cells(case, monkeypatch):
    """Dense tiers train through WGSL (sparse ones on the CPU engine) in neuron ranges and
    example chunks cut to a buffer cap forced low, the negatives in many small dispatches: the
    CPU's cells, bit for bit."""
    from test_backends import VOCAB, tokens_of

    exp, on_cpu, _ = trained(case)
    words = max(m.arrays().dense.shape[1] for m in on_cpu.memories + on_cpu.gates)
    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", 4 * words * 8)  # eight neurons a range, short example chunks
    monkeypatch.setattr(wgpu_backend, "WRITES_PER_DISPATCH", 20_000)
    calls = []
    real = wgpu_backend.train_tier
    monkeypatch.setattr(wgpu_backend, "train_tier", lambda tier, data: calls.append(tier.n_neurons) or real(tier, data))
    here = train(exp, tokens_of(case)[0], VOCAB[case], device="wgpu")
    assert len(calls) == sum(not m.arrays().is_sparse for m in on_cpu.memories + on_cpu.gates) > 0
    for a, b in zip(on_cpu.memories + on_cpu.gates, here.memories + here.gates):
        for field in ("dense", "offsets", "keys", "vals"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (a.tier, field)


@pytest.mark.parametrize("case", ["mixed", "two_words", "all_sparse", "lsh", "encoded", "gated"])
def test_tables_over_the_buffer_cap_are_split_with_the_same_results(case, monkeypatch):
    from test_backends import tier_and_batch

    _, model, held_out = trained(case)
    tiers = [tier_and_batch(model, held_out, i, bool(model.gates))[0] for i in range(len(model.memories))]
    biggest = max(int(wgpu_backend.cluster_bytes(t).max()) for t in tiers)  # a gated cluster's gate included
    cap = biggest + 64  # the biggest cluster alone in its range
    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", cap)
    monkeypatch.setattr(wgpu_backend, "CHUNK", 400)  # and chunks of examples, the last one padded
    seen = []
    real = wgpu_backend.cluster_ranges

    def cluster_ranges(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(wgpu_backend, "cluster_ranges", cluster_ranges)
    same_scores(model, held_out)
    assert max(len(r) for r in seen) > 1


def test_cluster_ranges_are_consecutive_and_fit_the_cap():
    sizes = np.array([40, 10, 30, 30, 5, 60, 1])
    ranges = wgpu_backend.cluster_ranges(sizes, 80, max_clusters=3)
    assert ranges == [(0, 2), (2, 4), (4, 5), (5, 7)]
    with pytest.raises(ValueError, match="cluster 5's tables take 60 bytes, more than the 48 a range may use"):
        wgpu_backend.cluster_ranges(sizes, 64, max_clusters=3)


def test_a_read_cap_per_dispatch_gives_the_same_results(monkeypatch):
    monkeypatch.setattr(wgpu_backend, "READS_PER_INVOCATION", 5)
    same_scores(*trained("mixed")[1:])


def test_tiers_wider_than_32_bits_are_refused_clearly_and_scored_on_the_cpu(monkeypatch):
    rng = np.random.default_rng(3)
    exp = Experiment(name="wide", tiers="rest,2,33", context=6, negatives=3, dense_max_bits=4, sparse_max_bits=40)
    model, held_out = train(exp, zipf(rng, 200, 40), 40), zipf(rng, 50, 40)  # 6 bits per token x 6 = 36 inputs
    tier = model.memories[0].arrays(level_table=score_levels(model)[1][0])
    assert wgpu_backend.BACKEND.cannot_evaluate(tier).startswith(
        "a 33-bit tier is wider than the wgpu kernel's 32-bit addresses")
    same_scores(model, held_out)  # score() sends the tier to the CPU engine
    monkeypatch.setattr(wgpu_backend.Wgpu, "cannot_evaluate", lambda self, tier: None)
    with pytest.raises(ValueError, match="33-bit tier is wider than the wgpu kernel's 32-bit"):
        score(model, held_out, device="wgpu")


def test_search_rows_through_wgsl_equal_the_cpus(monkeypatch):
    """A connectivity search's rewired neurons trained and read through WGSL (negative clusters,
    DENSE and SPARSE tiers; a tier whose scratch rows pass the buffer cap trains on the CPU):
    the same rows, so the same fitness, commits and, through run_search on wgpu, the same search."""
    from test_backends import moves_are_the_cpus, search_is_the_cpus

    from ramsweep.optimize import wgpu as search_wgpu
    from ramsweep.optimize.fitness import Examples

    rng = np.random.default_rng(3)
    vocab = 30
    tokens = zipf(rng, 3000, vocab)
    part, fit = tokens[: len(tokens) * 4 // 5], tokens[len(tokens) * 4 // 5 - 6 :]
    exp = Experiment(name="x", tiers="2,3,18;4,2,9;rest,2,5", context=6, negatives=5, dense_max_bits=6,
                     memory="bits", empty_value=0.5)
    model = train(exp, part, vocab)
    # a cap that holds the examples and batches of 9-bit rows, not one 18-bit row's scratch (16 KiB): the CPU's
    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", 8 * Examples.of(part, model.layout).x.size)
    assert 4 * (1 << 18) // 16 > wgpu_backend.binding_cap() > 4 * (1 << 9) // 16 * 8
    on_gpu_bits = []
    real = search_wgpu.Kernels._rows_of
    monkeypatch.setattr(search_wgpu.Kernels, "_rows_of", lambda self, *a: on_gpu_bits.append(a[2].shape[1]) or
                        real(self, *a))
    moves_are_the_cpus(model, part, fit, "wgpu", "ce", rng)
    assert set(on_gpu_bits) == {9, 5}  # those rows through WGSL, the 18-bit ones on the CPU
    search_is_the_cpus(tokens, vocab, "wgpu", rng)


def test_a_vocabulary_of_thousands_of_clusters_scores_as_the_cpu():
    """Thousands of clusters over the ranges of a real vocabulary (the contract's cases have tens):
    four examples an invocation over ranges of thousands of clusters read zeros on lavapipe before
    an invocation's reads were capped (READS_PER_INVOCATION counts all its examples')."""
    rng = np.random.default_rng(0)
    tokens, held = zipf(rng, 20_000, 2000), zipf(rng, 300, 2000)
    model = train(Experiment(name="wide_vocab", tiers="3,3,9;rest,2,5", context=4), tokens, 2000)
    same_scores(model, held)


def test_a_wide_hashed_tier_is_read_in_short_dispatches_and_scores_as_the_cpu():
    """A sparse LSH tier of 100 clusters of 15 neurons of 40 bits: 120 k input-bit reads an example
    in one dispatch read zeros past a point on lavapipe; cut into short dispatches, the CPU's scores."""
    rng = np.random.default_rng(0)
    tokens, held = zipf(rng, 3000, 3000), zipf(rng, 60, 3000)
    exp = Experiment(name="wide_lsh", tiers="100,15,40;rest,2,5", context=4, memory="bits", dense_max_bits=12)
    model = train(exp, tokens, 3000)
    assert model.memories[0].tier.storage == "sparse"
    same_scores(model, held)
