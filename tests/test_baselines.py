"""Count-model baselines: hand-computed values, normalisation, ordering, fitted on train only."""

import math

import numpy as np
import pytest

from ramsweep.engine.baselines import (
    BASELINES,
    FITS,
    baselines,
    kn_bigram_probabilities,
)
from ramsweep.errors import DataError

# Tiny corpus, V = 4 (token 3 never occurs in train).
TRAIN = np.array([0, 1, 2, 0, 1, 0], dtype=np.int32)
TEST = np.array([0, 1, 0, 2, 3, 1], dtype=np.int32)  # pairs (0,1) (1,0) (0,2) (2,3) (3,1)
VALID = np.array([2, 0, 1], dtype=np.int32)  # pairs (2,0) (0,1)
TEST_BYTES = np.array([1, 2, 3, 1, 4, 2])  # evaluated positions t >= 1: 2+3+1+4+2 = 12 bytes
VALID_BYTES = np.array([5, 3, 4])  # 3+4 = 7 bytes

# Unigram: c = (3, 2, 1, 0), N = 6, N + V = 10 -> p = (4, 3, 2, 1) / 10.
UNIGRAM = {0: 4 / 10, 1: 3 / 10, 2: 2 / 10, 3: 1 / 10}

# KN bigram. Bigrams of train: (0,1)x2 (1,2)x1 (2,0)x1 (1,0)x1 -> n1 = 3, n2 = 1, D = 3 / (3 + 2) = 0.6.
# c(v) as history: c(0) = 2, c(1) = 2, c(2) = 1, c(3) = 0.
# N1+(v •): 0 -> {1} = 1, 1 -> {2, 0} = 2, 2 -> {0} = 1.
# N1+(• w): 0 <- {2, 1} = 2, 1 <- {0} = 1, 2 <- {1} = 1, 3 <- {} = 0; N1+(• •) = 4; 3 words seen.
# p_cont(w) = max(N1+(• w) - 0.6, 0) / 4 + 0.6 * 3 / 4 / 4, the last term = 0.1125.
P_CONT = {0: 1.4 / 4 + 0.1125, 1: 0.4 / 4 + 0.1125, 2: 0.4 / 4 + 0.1125, 3: 0.1125}  # .4625 .2125 .2125 .1125
KN = {
    (0, 1): (2 - 0.6) / 2 + 0.6 * 1 / 2 * P_CONT[1],  # 0.7 + 0.06375 = 0.76375
    (1, 0): (1 - 0.6) / 2 + 0.6 * 2 / 2 * P_CONT[0],  # 0.2 + 0.2775 = 0.4775
    (0, 2): 0 + 0.6 * 1 / 2 * P_CONT[2],  # unseen pair: 0.06375
    (2, 3): 0 + 0.6 * 1 / 1 * P_CONT[3],  # unseen target: 0.0675
    (3, 1): P_CONT[1],  # unseen history: 0.2125
    (2, 0): (1 - 0.6) / 1 + 0.6 * 1 / 1 * P_CONT[0],  # 0.4 + 0.2775 = 0.6775
}


def expected(ps: list[float], nbytes: int) -> dict:
    ce = -sum(math.log(p) for p in ps) / len(ps)
    return {"examples": len(ps), "ce": ce, "ppl": math.exp(ce), "bpb": ce * len(ps) / math.log(2) / nbytes}


def assert_close(got: dict, want: dict):
    assert got["examples"] == want["examples"]
    for key in ("ce", "ppl", "bpb"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key


def test_tiny_corpus_matches_hand_computed_values():
    got = baselines(TRAIN, {"validation": VALID, "test": TEST}, 4, {"validation": VALID_BYTES, "test": TEST_BYTES})
    assert set(got) == set(BASELINES) and all(set(s) == {"validation", "test"} for s in got.values())
    # uniform: CE = ln 4 per position; bpb = 5 positions * 2 bits / 12 bytes.
    assert_close(got["uniform"]["test"], {"examples": 5, "ce": math.log(4), "ppl": 4.0, "bpb": 10 / 12})
    assert_close(got["uniform"]["validation"], {"examples": 2, "ce": math.log(4), "ppl": 4.0, "bpb": 4 / 7})
    test_pairs, valid_pairs = [(0, 1), (1, 0), (0, 2), (2, 3), (3, 1)], [(2, 0), (0, 1)]
    assert_close(got["unigram"]["test"], expected([UNIGRAM[w] for _, w in test_pairs], 12))
    assert_close(got["unigram"]["validation"], expected([UNIGRAM[w] for _, w in valid_pairs], 7))
    assert_close(got["kn_bigram"]["test"], expected([KN[pair] for pair in test_pairs], 12))
    assert_close(got["kn_bigram"]["validation"], expected([KN[pair] for pair in valid_pairs], 7))
    # The hand values written out, so the fixtures above cannot drift together with the code.
    assert [KN[pair] for pair in test_pairs] == pytest.approx([0.76375, 0.4775, 0.06375, 0.0675, 0.2125])
    assert kn_bigram_probabilities(TRAIN, 4).discount == pytest.approx(0.6)


def test_kn_discount_falls_back_without_doubletons():
    # Bigrams (0,1) (1,2) (2,3) each once: n2 = 0 -> D = 0.75.
    # N1+(• w) = (0, 1, 1, 1), N1+(• •) = 3, 3 words seen: p_cont(1) = 0.25 / 3 + 0.75 * 3 / 3 / 4.
    # p(1 | 0) = (1 - 0.75) / 1 + 0.75 * 1 / 1 * p_cont(1) = 0.25 + 0.75 * 0.2708333... = 0.453125.
    model = kn_bigram_probabilities(np.array([0, 1, 2, 3], dtype=np.int32), 4)
    assert model.discount == 0.75
    assert model(np.array([0]), np.array([1]))[0] == pytest.approx(0.453125)


def test_no_byte_lengths_gives_no_bpb_and_short_splits_give_no_metrics():
    got = baselines(TRAIN, {"test": TEST, "one": TEST[:1]}, 4)
    assert all(got[m]["test"]["bpb"] is None and got[m]["test"]["examples"] == 5 for m in BASELINES)
    assert all(got[m]["one"] == {"examples": 0, "ce": None, "ppl": None, "bpb": None} for m in BASELINES)


@pytest.mark.parametrize("model", BASELINES)
def test_probabilities_sum_to_one_for_every_history(model):
    rng = np.random.default_rng(0)
    V = 13
    train = rng.choice(V - 3, 200, p=np.arange(V - 3, 0, -1) / ((V - 3) * (V - 2) / 2)).astype(np.int32)
    p = FITS[model](train, V)
    everything = np.arange(V)
    for v in range(V):  # includes histories never seen (ids V-3 .. V-1) and the last token of train
        probs = p(np.full(V, v), everything)
        assert probs.min() > 0
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)


def markov_chain(rng, V: int, n: int) -> np.ndarray:
    """Zipf-like unigram frequencies, each token preferring a few successors."""
    zipf = 1.0 / np.arange(1, V + 1)
    transition = rng.dirichlet(np.full(V, 0.05), size=V) * 0.8 + 0.2 * zipf / zipf.sum()
    u, out = rng.random(n), np.empty(n, dtype=np.int32)
    cdf, out[0] = np.cumsum(transition, axis=1), 0
    for t in range(1, n):  # generating test data, not the code under test
        out[t] = min(np.searchsorted(cdf[out[t - 1]], u[t]), V - 1)
    return out


def test_kn_beats_unigram_beats_uniform_on_held_out_markov_text():
    rng = np.random.default_rng(1)
    text = markov_chain(rng, 200, 60_000)
    got = baselines(text[:50_000], {"validation": text[50_000:]}, 200)
    ce = {m: got[m]["validation"]["ce"] for m in BASELINES}
    assert ce["kn_bigram"] < ce["unigram"] - 0.3
    assert ce["unigram"] < ce["uniform"] - 0.1


def test_fitted_on_train_only():
    rng = np.random.default_rng(2)
    text = markov_chain(rng, 50, 12_000)
    train, a, b = text[:8_000], text[8_000:10_000], text[10_000:]
    alone = baselines(train, {"a": a}, 50)
    with_b = baselines(train, {"a": a, "b": b}, 50)
    with_train = baselines(train, {"a": a, "train": train}, 50)
    for m in BASELINES:
        # Adding or changing another evaluated split changes nothing about split a.
        assert with_b[m]["a"] == alone[m]["a"] == with_train[m]["a"]
        # And split a's numbers are those of the model fitted on train alone.
        want = -np.log(FITS[m](train, 50)(a[:-1], a[1:])).mean()
        assert alone[m]["a"]["ce"] == pytest.approx(want, rel=1e-12)
    # Evaluating on train itself is easier for the fitted models (they saw it), but the uniform does not care.
    assert with_train["kn_bigram"]["train"]["ce"] < with_b["kn_bigram"]["b"]["ce"]
    assert with_train["unigram"]["train"]["ce"] < with_b["unigram"]["b"]["ce"]
    assert with_train["uniform"]["train"]["ce"] == with_b["uniform"]["b"]["ce"]
    # The fitted probabilities for fixed pairs depend on train only: refitting on train plus b changes them.
    v, w = np.arange(50).repeat(50), np.tile(np.arange(50), 50)
    base = FITS["kn_bigram"](train, 50)(v, w)
    assert np.array_equal(base, FITS["kn_bigram"](train.copy(), 50)(v, w))
    assert not np.allclose(base, FITS["kn_bigram"](np.concatenate([train, b]), 50)(v, w))


def test_bad_inputs_are_data_errors():
    with pytest.raises(DataError, match="outside"):
        baselines(TRAIN, {"test": np.array([0, 4])}, 4)
    with pytest.raises(DataError, match="byte_lengths"):
        baselines(TRAIN, {"test": TEST}, 4, {"test": TEST_BYTES[:-1]})
    with pytest.raises(DataError, match="at least 2"):
        baselines(TRAIN[:1], {"test": TEST}, 4)
