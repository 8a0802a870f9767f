"""The bitwise model's oracle (ramsweep/engine/bitwise_reference.py) on cases checked by hand,
and its O(B) closed forms against the enumeration of every token (docs/design.md §3c)."""

import math

import numpy as np
import pytest

from ramsweep.config import Experiment, bits_per_token
from ramsweep.engine import bitwise_reference as bw
from ramsweep.engine import evaluate, reference
from ramsweep.engine.connectivity import draw_bit_connectivity
from ramsweep.engine.layout import Frequencies, input_codes


def one_bit_model(tokens, cell_mode, empty_value=0.0, sample_rate=1.0):
    """V = 2, context 1, one neuron of one bit: the address is the previous token, y the target."""
    return bw.train(tokens, 2, codes=np.arange(2), context=1, neurons=1, bits=1, seed=0,
                    sample_rate=sample_rate, cell_mode=cell_mode, empty_value=empty_value)


def hand_model(vocab_size, position=None, gray=False):
    """A model with no cells, one neuron of one bit per cluster: for metrics on given P."""
    n_bits = bits_per_token(vocab_size)
    k = np.arange(vocab_size)
    return bw.BitwiseModel(vocab_size, 1, k ^ (k >> 1) if gray else k,
                           np.arange(vocab_size) if position is None else np.asarray(position),
                           bw.TERNARY, 0.0, [np.zeros((1, 1), dtype=np.int64)] * n_bits, [{}] * n_bits)


# ---- codes and wiring ------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["native", "frequency", "appearance"])
@pytest.mark.parametrize("gray", [False, True])
def test_codes_are_the_input_codes(encoding, gray):
    tokens = np.array([5, 3, 3, 9, 0, 5, 3, 11, 2, 2, 2], dtype=np.int32)
    engine = input_codes(Experiment(name="x", tiers="rest,1,1", encoding=encoding, gray=gray), Frequencies.of(tokens, 13))
    assert bw.token_codes(tokens, 13, encoding, gray).tolist() == (list(range(13)) if engine is None else engine.tolist())


def test_real_codes_under_gray_are_not_0_to_v():
    assert bw.real_codes(5, False).tolist() == [0, 1, 2, 3, 4]
    assert bw.real_codes(5, True).tolist() == [0, 1, 2, 3, 6]  # Gray images of 0..4: 6 is real, 4 is not
    rng = np.random.default_rng(0)
    for encoding in ("native", "frequency", "appearance"):  # the set does not depend on the encoding
        codes = bw.token_codes(rng.integers(0, 37, 200), 37, encoding, gray=True)
        assert np.sort(codes).tolist() == bw.real_codes(37, True).tolist()


def test_bit_streams_are_their_own_and_the_engine_draws_them():
    conn = [bw.bit_connectivity(42, 3, n, 20, 56) for n in range(40)]
    assert all(len(set(c)) == 20 and 0 <= min(c) and max(c) < 56 for c in conn)
    assert conn[7] == bw.bit_connectivity(42, 3, 7, 20, 56)  # a neuron's own stream
    assert conn[0] != reference.connectivity(42, 3, 0, 20, 56)  # not the tier's stream
    assert conn[0] != reference.connectivity(42, 3, 0, 20, 56, gate=True)  # nor the gate's
    assert draw_bit_connectivity(42, 3, 40, 20, 56).tolist() == conn
    assert bw.bit_connectivity(42, 3, 7, 5, 40) == [12, 28, 7, 27, 35]  # pinned: design.md's definition


# ---- sampling --------------------------------------------------------------------------------------

def test_the_sampling_hash_is_pinned():
    """The test vectors docs/design.md §3c gives, so every backend can check its own."""
    assert bw.stream_state(0, bw.SAMPLE_SALT, 0, 0) == 0x364577391C4DE70E
    assert bw.sample_hash(0, 0, 0, 0) == 0x12EB30BDE6D430D5
    assert bw.sample_hash(42, 3, 7, 1000) == 0xFD8291805254C2BA
    assert bw.sample_threshold(0.25) == 2**51 and bw.sample_threshold(1.0) == 2**53
    assert bw.kept(0, 0, 0, 0, 0.08) and not bw.kept(0, 0, 0, 0, 0.07)  # top 53 bits / 2^53 = 0.0739…
    assert [e for e in range(20) if bw.kept(42, 3, 7, e, 0.25)] == [1, 5, 8, 16, 17, 18]


def test_sampling_keeps_a_fixed_subset_at_the_rate():
    examples = list(range(50_000))
    subset = {e for e in examples if bw.kept(9, 2, 5, e, 0.25)}
    shuffled = np.random.default_rng(1).permutation(examples)
    assert {int(e) for e in shuffled if bw.kept(9, 2, 5, int(e), 0.25)} == subset  # whatever the order
    assert abs(len(subset) / 50_000 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 50_000)
    assert subset < {e for e in examples if bw.kept(9, 2, 5, e, 0.5)}  # a lower rate keeps a subset
    assert all(bw.kept(9, 2, 5, e, 1.0) for e in range(1000))
    other = {e for e in examples if bw.kept(9, 2, 6, e, 0.25)}  # another neuron draws its own
    assert abs(len(subset & other) / 50_000 - 0.0625) < 0.01
    for rate in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="sample_rate"):
            bw.sample_threshold(rate)


def test_sampled_training_is_training_on_the_kept_examples():
    """Cells rebuilt by hand from the kept (neuron, example) pairs, taken in a shuffled order
    (ternary is order-free)."""
    rng = np.random.default_rng(3)
    V, ctx, tokens = 11, 2, rng.integers(0, 11, 300)
    model = bw.train(tokens, V, codes=np.arange(V), context=ctx, neurons=[3, 1, 2, 4], bits=3, seed=5,
                     sample_rate=0.3, cell_mode=bw.TERNARY)
    for i, conn in enumerate(model.conn):
        cells = {}
        for t in rng.permutation(np.arange(ctx, len(tokens))):
            x = bw.input_bits(model, tokens[t - ctx : t])
            for n in range(conn.shape[0]):
                if bw.kept(5, i, n, int(t), 0.3):
                    key = (n, bw.address(x, conn[n]))
                    cells[key] = cells.get(key, 0) + (1 if (tokens[t] >> (3 - i)) & 1 else -1)
        assert cells == model.cells[i]
    full = bw.train(tokens, V, codes=np.arange(V), context=ctx, neurons=[3, 1, 2, 4], bits=3, seed=5)
    assert model.cells != full.cells  # sampling changed something


# ---- cells -----------------------------------------------------------------------------------------

def test_a_ternary_tie_stays_empty():
    # examples (context → target): 0→1, 1→0, 0→0: address 0 gets a 1 and a 0, address 1 a 0
    model = one_bit_model([0, 1, 0, 0], bw.TERNARY, empty_value=0.5)
    assert model.cells == [{(0, 0): 0, (0, 1): -1}]
    assert bw.read(model, 0, (0, 0)) == (None, True)  # the tie: EMPTY
    assert bw.read(model, 0, (0, 1)) == (0.0, False)
    assert bw.bit_probabilities(model, [0])[0].tolist() == [0.5]  # empty_value
    assert bw.bit_probabilities(model, [1])[0].tolist() == [bw.P_MIN]  # FALSE, clamped
    row = bw.evaluate(model, [0, 1, 0, 0])["bits"][0]  # the lookups: address 0, 1, 0
    assert row["empty"] == pytest.approx(2 / 3) and row["undecided"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("mode", [bw.QUAD_BINARY, bw.QUAD_WEIGHTED])
def test_a_quad_counter_saturates_and_follows_the_example_order(mode):
    # address 0 (previous token 0) gets y = 1, 1, 1, 0: c = 1 → 2 → 3 → 3 (saturated) → 2
    first = one_bit_model([0, 1, 0, 1, 0, 1, 0, 0], mode)
    assert first.cells == [{(0, 0): 2, (0, 1): 0}]  # address 1 gets 0, 0, 0: 1 → 0 → 0 → 0
    # the same writes to address 0 in the order 0, 1, 1, 1: c = 1 → 0 → 1 → 2 → 3
    second = one_bit_model([0, 0, 1, 0, 1, 0, 1], mode)
    assert second.cells == [{(0, 0): 3, (0, 1): 0}]
    p_first, p_second = (bw.bit_probabilities(m, [0])[0][0] for m in (first, second))
    if mode == bw.QUAD_WEIGHTED:
        assert (p_first, p_second) == (0.75, 1 - bw.P_MIN)
    else:
        assert p_first == p_second == 1 - bw.P_MIN  # c >= 2 reads 1 either way
    never = bw.bit_probabilities(one_bit_model([1, 0], mode), [0])  # address 0 never written: c = 1
    assert never[0][0] == (0.25 if mode == bw.QUAD_WEIGHTED else bw.P_MIN) and never[1][0] == 1
    assert one_bit_model([0, 0, 1, 0, 1, 0, 1], bw.TERNARY).cells == [{(0, 0): 2, (0, 1): -2}]  # ternary: order-free


def test_quad_weighted_means_and_never_written_cells():
    """Two neurons on the whole input: cells 3 and never written (1) read 1 and 0.25."""
    model = bw.train([0, 1, 0, 1], 2, codes=[0, 1], context=1, neurons=2, bits=1, seed=0, cell_mode=bw.QUAD_WEIGHTED)
    model.cells[0] = {(0, 0): 3}
    p, empty = bw.bit_probabilities(model, [0])
    assert p.tolist() == [(1.0 + 0.25) / 2] and empty.tolist() == [1]


def test_bad_parameters_are_refused():
    tokens = [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="neurons: 2 values for 3"):
        bw.train(tokens, 5, codes=np.arange(5), context=1, neurons=[1, 2], bits=1, seed=0)
    with pytest.raises(ValueError, match="bits must be"):
        bw.train(tokens, 5, codes=np.arange(5), context=1, neurons=1, bits=4, seed=0)  # input is 3 bits
    with pytest.raises(ValueError, match="cell_mode"):
        bw.train(tokens, 5, codes=np.arange(5), context=1, neurons=1, bits=1, seed=0, cell_mode="quad")


# ---- token probabilities ---------------------------------------------------------------------------

def test_codes_at_or_above_v_are_never_outcomes():
    """V = 5 (B = 3): every bit wants 1, so unrestricted code 7 would win; the real tokens are
    0..4 and their probabilities sum to 1."""
    model = hand_model(5)
    sc = bw.scored(model, [0.9, 0.9, 0.9], [0, 0, 0], [1], [4])
    p = np.exp(-np.array([bw.scored(model, [0.9, 0.9, 0.9], [0, 0, 0], [1], [t]).ce()[0] for t in range(5)]))
    assert p.sum() == pytest.approx(1.0, abs=1e-15)
    assert p[3] == pytest.approx(0.1 * 0.81 / (0.1 * 0.81 + 0.9 * 0.01 + 0.1 * 0.09 * 2 + 0.1 * 0.01))
    assert bw.correct(model, sc).tolist() == [False]  # target 4 = 100 loses to 3 = 011
    assert bw.best_code(sc.p, 5).tolist() == [3]
    assert bw.log_normaliser(sc.p, 5)[0] == pytest.approx(math.log(0.109), abs=1e-12)  # not 1: codes 5..7 left out


def test_gray_output_codes():
    """V = 3 under gray: tokens 0, 1, 2 have codes 00, 01, 11; the target's bits are its code's."""
    tokens = [0, 2, 1, 2, 0, 2]
    codes = bw.token_codes(tokens, 3, "native", gray=True)
    assert codes.tolist() == [0, 1, 3]
    model = bw.train(tokens, 3, codes=codes, context=1, neurons=1, bits=2, seed=0)
    sc = bw.scored(model, [0.8, 0.7], [0, 0], [1], [2])
    assert sc.s[0].tolist() == pytest.approx([math.log(0.2 * 0.3), math.log(0.2 * 0.7), math.log(0.8 * 0.7)])
    assert sc.ce()[0] == pytest.approx(-math.log(0.56 / (0.06 + 0.14 + 0.56)))  # code 10 is not an outcome
    assert bw.best_code(sc.p, 3, gray=True).tolist() == [3] and bw.correct(model, sc).tolist() == [True]
    assert bw.log_normaliser(sc.p, 3, gray=True)[0] == pytest.approx(math.log(0.76))
    # examples (context code → target code): 00→11, 11→01, 01→11, 11→00, 00→11. Address 0 (context
    # 00) gets target 2's code 11 twice: +2 in both clusters (its native code 10 would write bit 1 = 0)
    assert model.cells[0][(0, 0)] == 2 and model.cells[0][(0, 3)] == -2
    assert model.cells[1][(0, 0)] == 2 and model.cells[1][(0, 3)] == 0  # 01 then 00: a tie, EMPTY


def test_a_temperature():
    """One bit, P = 0.8: at T = 2, p(1) = √.8 / (√.8 + √.2) = 2/3; a validation set where 2/3 of
    the targets are 1 fits T = 2 (4^(1/T) = 2)."""
    model = hand_model(2)
    sc = bw.scored(model, [0.8, 0.8, 0.8], [0, 0, 0], [1, 2, 3], [1, 1, 0])
    assert sc.ce(2.0).tolist() == pytest.approx([math.log(1.5), math.log(1.5), math.log(3)])
    assert bw.fit_temperature(sc) == pytest.approx(2.0, rel=1e-9)
    assert bw.log_normaliser(sc.p, 2, temperature=2.0) == pytest.approx(np.log(np.sqrt(0.8) + np.sqrt(0.2)))
    assert bw.fit_temperature(bw.scored(model, [0.8], [0], [1], [1])) == 1e-3  # always right: T → 0
    assert bw.fit_temperature(bw.scored(model, [0.8, 0.8], [0, 0], [1, 2], [1, 0])) == 1e3  # no better than uniform
    assert bw.temperature_bound(1e3) == "highest" and bw.temperature_bound(2.0) is None
    assert bw.BETA_RANGE == evaluate.BETA_RANGE


# ---- closed forms ----------------------------------------------------------------------------------

def random_p(rng, n, n_bits):
    """Random bit probabilities with ties (rows and bits at exactly 0.5) and clamped extremes."""
    p = rng.uniform(0, 1, (n, n_bits))
    p[1], p[2, ::2], p[3, 1::3] = 0.5, 0.5, 1.0
    return np.clip(p, bw.P_MIN, 1 - bw.P_MIN)


@pytest.mark.parametrize("gray", [False, True])
def test_closed_forms_equal_the_enumeration(gray):
    rng = np.random.default_rng(11)
    for V in [*range(1, 301), 512, 1024, 4096, 50_257]:
        p = random_p(rng, 6 if V < 1000 else 4, bits_per_token(V))
        real = bw.real_codes(V, gray)
        s = bw.token_scores(p, real)
        assert bw.best_code(p, V, gray).tolist() == real[np.argmax(s, axis=1)].tolist(), V  # ties: lowest code
        for T in (1.0, 0.37, 2.5):
            expected = np.logaddexp.reduce(s / T, axis=1)
            assert np.abs(bw.log_normaliser(p, V, gray, T) - expected).max() <= 1e-12 * max(1.0, np.abs(expected).max()), (V, T)


@pytest.mark.parametrize("mode", bw.CELL_MODES)
def test_a_trained_model_through_the_closed_forms(mode):
    """What an engine computes (closed forms on P) is what the oracle enumerates, on a trained
    model with sampling and Gray frequency codes; probabilities sum to 1 over the V tokens."""
    rng = np.random.default_rng(5)
    V, tokens = 37, rng.integers(0, 37, 500)
    codes = bw.token_codes(tokens[:350], V, "frequency", gray=True)
    model = bw.train(tokens[:350], V, codes=codes, context=2, neurons=[3, 4, 5, 2, 3, 2], bits=4, seed=7,
                     sample_rate=0.5, cell_mode=mode, empty_value=0.5)
    sc = bw.score(model, tokens[350:])
    target_s = sc.s[np.arange(len(sc.s)), sc.targets]
    for T in (1.0, 3.0):
        assert np.abs(bw.log_normaliser(sc.p, V, True, T) - target_s / T - sc.ce(T)).max() < 1e-12
        assert np.exp(sc.s / T - bw.log_normaliser(sc.p, V, True, T)[:, None]).sum(axis=1) == pytest.approx(1.0)
    assert ((bw.best_code(sc.p, V, True) == codes[sc.targets]) == bw.correct(model, sc)).all()


# ---- metrics ---------------------------------------------------------------------------------------

def test_bit_and_band_metrics_by_hand():
    """V = 4, B = 2. Examples: P = (.5, .5), target 0: p = 1/4, right (the tie goes to code 0);
    P = (.9, .2), target 2 = 10: p = .72, right; the same P, target 3 = 11: p = .18, wrong.
    Frequency positions: token 3 first, then 2, 0, 1; bands (1, 2, rest) = {3}, {2, 0}, {1}."""
    model = hand_model(4, position=[2, 3, 1, 0])
    sc = bw.scored(model, [[0.5, 0.5], [0.9, 0.2], [0.9, 0.2]], [[1, 0], [0, 0], [0, 1]], [1, 2, 3], [0, 2, 3])
    out = bw.metrics(model, sc, temperature=1.0, bands=(1, 2, "rest"), byte_lengths=np.array([0, 1, 2, 1]))
    ce = [math.log(4), -math.log(0.72), -math.log(0.18)]
    assert out["ce"] == pytest.approx(sum(ce) / 3) and out["accuracy"] == pytest.approx(2 / 3)
    assert out["bpb"] == pytest.approx(sum(ce) / math.log(2) / 4)
    assert out["calibrated"]["ce"] == pytest.approx(out["ce"])
    bit0, bit1 = out["bits"]  # targets' bits: bit 0 = 0, 1, 1; bit 1 = 0, 0, 1
    assert bit0["accuracy"] == 1.0 and bit1["accuracy"] == pytest.approx(2 / 3)
    assert bit0["ce"] == pytest.approx(-(math.log(0.5) + 2 * math.log(0.9)) / 3)
    assert bit1["ce"] == pytest.approx(-(math.log(0.5) + math.log(0.8) + math.log(0.2)) / 3)
    assert (bit0["mean_p"], bit1["mean_p"]) == pytest.approx((2.3 / 3, 0.3))
    assert bit0["undecided"] == bit1["undecided"] == pytest.approx(1 / 3)
    assert (bit0["empty"], bit1["empty"]) == pytest.approx((1 / 3, 1 / 3))  # one neuron per cluster
    band0, band1, band2 = out["bands"]
    assert (band0["tokens"], band1["tokens"], band2["tokens"]) == (1, 2, 1)
    assert band0["examples"] == 1 and band0["ce"] == pytest.approx(ce[2]) and band0["accuracy"] == 0.0
    assert band1["examples"] == 2 and band1["ce"] == pytest.approx((ce[0] + ce[1]) / 2) and band1["accuracy"] == 1.0
    assert band2["examples"] == 0 and band2["ce"] is None and band2["calibrated_ce"] is None
    assert band1["share"] == pytest.approx(200 / 3)


def test_bands_must_cover_the_vocabulary():
    assert bw.band_of_position(5, (2, 3)).tolist() == [0, 0, 1, 1, 1]
    for bands in [(2, 2), (4, 3), ("rest", 2), (5, "rest")]:
        with pytest.raises(ValueError, match="bands"):
            bw.band_of_position(5, bands)


def test_bands_follow_the_training_frequency_order():
    tokens = [2, 2, 2, 0, 0, 1, 3]  # counts 2, 1, 3, 1: order 2, 0, 1, 3
    assert bw.frequency_positions(tokens, 5).tolist() == [1, 2, 0, 3, 4]


@pytest.mark.parametrize("gray", [False, True])
def test_the_expected_score_equals_the_enumeration(gray):
    """E_T[s] over the real tokens (a temperature fit's slope) in closed form."""
    rng = np.random.default_rng(12)
    for V in [*range(1, 120), 256, 50_257]:
        p = random_p(rng, 6 if V < 1000 else 4, bits_per_token(V))
        s = bw.token_scores(p, bw.real_codes(V, gray))
        for T in (1.0, 0.37, 2.5):
            w = np.exp(s / T - np.logaddexp.reduce(s / T, axis=1, keepdims=True))
            assert bw.expected_score(p, V, gray, T) == pytest.approx((w * s).sum(axis=1), rel=1e-11, abs=1e-11), (V, T)
