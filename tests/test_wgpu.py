"""wgpu ≡ CPU: the WGSL evaluation kernel gives the CPU's scores, counts and metrics.

Runs wherever wgpu finds an adapter: Mesa's lavapipe (Vulkan on the CPU) in CI, Metal on a
Mac. Training stays on the CPU for this device, so only evaluation is compared. Sizes are
small: lavapipe runs the kernel on the CPU's cores.
"""

from functools import cache

import numpy as np
import pytest

from ramsweep.config import Experiment
from ramsweep.engine.evaluate import evaluate, score, score_levels
from ramsweep.engine.layout import DENSE
from ramsweep.engine.reference import ReferenceModel
from ramsweep.engine.train import train

pytest.importorskip("wgpu", reason="wgpu is not installed")
from ramsweep.engine.backends import wgpu as wgpu_backend  # noqa: E402  (after the skip)

if not wgpu_backend.available():
    pytest.skip("wgpu finds no adapter here", allow_module_level=True)


def zipf(rng, n, vocab):
    p = 1.0 / np.arange(1, vocab + 1)
    return rng.choice(vocab, n, p=p / p.sum()).astype(np.int32)


CASES = {  # as in test_cuda.py
    # dense and sparse tiers, negatives spanning tiers, ties, empty_value 0.5
    "mixed": dict(tiers="3,4,9;5,3,7;rest,2,5", context=3, negatives=6, dense_max_bits=6, empty_value=0.5,
                  memory="bits"),
    # 7 bits per token x 10 = 70 input bits: neurons read across two 64-bit words
    "two_words": dict(tiers="4,3,12;rest,2,6", context=10, negatives=3, dense_max_bits=8, memory="bits"),
    "all_sparse": dict(tiers="rest,3,11", context=3, negatives=10, dense_max_bits=4, memory="bits"),
    # LSH: 30 and 40-bit addresses (wider than a u32) hashed into 2^7 cells, stored SPARSE
    "lsh": dict(tiers="3,3,30;rest,2,40", context=8, negatives=5, dense_max_bits=4, sparse_max_bits=12, lsh_bits=7,
                memory="bits"),
    # ids numbered by first appearance and Gray-coded before their bits are read
    "encoded": dict(tiers="3,3,8;rest,2,10", context=3, negatives=5, dense_max_bits=8, memory="bits",
                    encoding="appearance", gray=True),
}
VOCAB = {"mixed": 40, "two_words": 100, "all_sparse": 30, "lsh": 40, "encoded": 30}


@cache
def trained(case):
    rng = np.random.default_rng(len(case))
    vocab = VOCAB[case]
    exp = Experiment(name=case, seed=7, **CASES[case])
    tokens, held_out = zipf(rng, 5_000, vocab), zipf(rng, 1_500, vocab)
    return train(exp, tokens, vocab), held_out


def assert_same_scores(model, held_out):
    cpu_s, gpu_s = score(model, held_out), score(model, held_out, device="wgpu")
    for name in ("hist", "correct", "target_tier", "target_score", "ce"):
        assert np.array_equal(getattr(cpu_s, name), getattr(gpu_s, name)), name
    for (a_all, a_t), (b_all, b_t) in zip(cpu_s.empties, gpu_s.empties):
        assert np.array_equal(a_all, b_all) and np.array_equal(a_t, b_t)


def test_adapter_info():
    info = wgpu_backend.adapter_info()
    assert {"name", "backend", "type"} <= set(info) and all(isinstance(info[k], str) for k in ("name", "backend"))
    assert wgpu_backend.is_real_gpu() == (info["type"] != "CPU")


@pytest.mark.parametrize("case", CASES)
def test_wgpu_scores_match_the_cpu(case):
    model, held_out = trained(case)
    assert "sparse" in {m.tier.backend for m in model.memories}  # the binary search runs too
    assert_same_scores(model, held_out)


@pytest.mark.parametrize("case", CASES)
def test_tables_over_the_buffer_cap_are_split_with_the_same_results(case, monkeypatch):
    model, held_out = trained(case)
    biggest = max(int(wgpu_backend.cluster_bytes(m.order, m.tier.neurons, m.tier.backend != DENSE, m.dense,
                                                 m.offsets, m.hashes.shape[0] > 0).max()) for m in model.memories)
    cap = biggest + 64  # the biggest cluster alone in its range
    monkeypatch.setattr(wgpu_backend, "BINDING_CAP", cap)
    monkeypatch.setattr(wgpu_backend, "CHUNK", 400)  # and chunks of examples, the last one padded
    seen = []
    real = wgpu_backend.cluster_ranges

    def cluster_ranges(*args):
        seen.append(real(*args))
        return seen[-1]

    monkeypatch.setattr(wgpu_backend, "cluster_ranges", cluster_ranges)
    assert_same_scores(model, held_out)
    assert max(len(r) for r in seen) > 1


def test_cluster_ranges_are_consecutive_and_fit_the_cap():
    sizes = np.array([40, 10, 30, 30, 5, 60, 1])
    ranges = wgpu_backend.cluster_ranges(sizes, 80, max_clusters=3)
    assert ranges == [(0, 2), (2, 4), (4, 5), (5, 7)]
    with pytest.raises(ValueError, match="cluster 5's tables take 60 bytes, more than the 48 a range may use"):
        wgpu_backend.cluster_ranges(sizes, 64, max_clusters=3)


def test_neuron_cap_per_dispatch_gives_the_same_results(monkeypatch):
    monkeypatch.setattr(wgpu_backend, "NEURONS_PER_DISPATCH", 5)
    assert_same_scores(*trained("mixed"))


def test_wgpu_metrics_equal_the_oracles():
    rng = np.random.default_rng(5)
    exp = Experiment(name="x", tiers="3,4,9;rest,2,6", context=3, negatives=5, dense_max_bits=7, seed=2,
                     memory="bits")
    tokens, held_out = zipf(rng, 250, 40), zipf(rng, 90, 40)
    model, oracle = train(exp, tokens, 40), ReferenceModel(exp, tokens, 40)
    got, want = evaluate(model, held_out, device="wgpu"), oracle.evaluate(held_out)
    assert got["examples"] == want["examples"] and got["accuracy"] == want["accuracy"]
    assert got["ce"] == pytest.approx(want["ce"], rel=1e-9)


@pytest.mark.parametrize("encoding", ["frequency", "appearance"])
def test_wgpu_encoded_metrics_equal_the_oracles(encoding):
    rng = np.random.default_rng(9)
    exp = Experiment(name="x", tiers="3,3,8;rest,2,6", context=3, negatives=5, seed=1, encoding=encoding, gray=True)
    tokens, held_out = zipf(rng, 300, 30), zipf(rng, 90, 30)
    model, oracle = train(exp, tokens, 30), ReferenceModel(exp, tokens, 30)
    got, want = evaluate(model, held_out, device="wgpu"), oracle.evaluate(held_out)
    assert got["accuracy"] == want["accuracy"] and got["ce"] == pytest.approx(want["ce"], rel=1e-9)


def test_wgpu_lsh_metrics_equal_the_oracles():
    rng = np.random.default_rng(6)
    exp = Experiment(name="x", tiers="3,3,30;rest,2,40", context=8, negatives=5, sparse_max_bits=12, lsh_bits=6,
                     seed=4)  # memory auto: the hashed cells stored DENSE
    tokens, held_out = zipf(rng, 300, 20), zipf(rng, 90, 20)
    model, oracle = train(exp, tokens, 20), ReferenceModel(exp, tokens, 20)
    assert [(m.tier.memory, m.tier.backend) for m in model.memories] == [("lsh", "dense")] * 2
    assert wgpu_backend.why_not(model.memories[1].masks.shape[1], score_levels(model)[1][1], 6) is None
    got, want = evaluate(model, held_out, device="wgpu"), oracle.evaluate(held_out)
    assert got["examples"] == want["examples"] and got["accuracy"] == want["accuracy"]
    assert got["ce"] == pytest.approx(want["ce"], rel=1e-9)


def test_tiers_wider_than_32_bits_are_refused_clearly_and_scored_on_the_cpu(monkeypatch):
    rng = np.random.default_rng(3)
    exp = Experiment(name="wide", tiers="rest,2,33", context=6, negatives=3, dense_max_bits=4, sparse_max_bits=40)
    model, held_out = train(exp, zipf(rng, 200, 40), 40), zipf(rng, 50, 40)  # 6 bits per token x 6 = 36 inputs
    reason = wgpu_backend.why_not(model.memories[0].masks.shape[1], score_levels(model)[1][0], 33)
    assert reason.startswith("a 33-bit tier is wider than the wgpu kernel's 32-bit addresses")
    assert_same_scores(model, held_out)  # score() sends the tier to the CPU engine
    monkeypatch.setattr(wgpu_backend, "why_not", lambda *args: None)
    with pytest.raises(ValueError, match="33-bit tier is wider than the wgpu kernel's 32-bit"):
        score(model, held_out, device="wgpu")
