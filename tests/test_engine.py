"""The numba engine against the numpy oracle (docs/design.md §3 is normative)."""

import math

import numpy as np
import pytest

from ramsweep.config import Experiment
from ramsweep.engine.connectivity import draw_connectivity
from ramsweep.engine.evaluate import ce_at, evaluate, fit_temperature, metrics, ppl_floor, score
from ramsweep.engine.layout import build_layout
from ramsweep.engine.reference import ReferenceModel, connectivity
from ramsweep.engine.train import LSH_SAMPLE, cells, cells_per_neuron, train

V = 48  # 6 bits per token


def zipf_tokens(rng, n, vocab=V, seen=None):
    """Zipf-like ids; with `seen`, only the first `seen` ids occur (the rest are never trained)."""
    k = seen or vocab
    p = 1.0 / np.arange(1, k + 1)
    return rng.choice(k, n, p=p / p.sum()).astype(np.int32)


def assert_metrics_equal(got: dict, want: dict):
    for key in ("examples", "accuracy"):
        assert got[key] == want[key], key
    assert math.isclose(got["ce"], want["ce"], rel_tol=1e-9)
    assert math.isclose(got["ppl"], want["ppl"], rel_tol=1e-9)
    assert len(got["tiers"]) == len(want["tiers"])
    for g, w in zip(got["tiers"], want["tiers"]):
        for key, value in w.items():
            if value is None or isinstance(value, int):
                assert g[key] == value, key
            else:
                assert math.isclose(g[key], value, rel_tol=1e-9, abs_tol=1e-12), key


def random_experiment(rng, context: int, empty_value: float, **overrides) -> Experiment:
    width = context * 6
    n_tiers = int(rng.integers(1, 4))
    counts = sorted(rng.choice(np.arange(1, 20), n_tiers - 1, replace=False)) if n_tiers > 1 else []
    parts = [f"{c},{rng.integers(1, 5)},{rng.integers(1, min(width, 16) + 1)}" for c in counts]
    parts.append(f"rest,{rng.integers(1, 4)},{rng.integers(1, min(width, 12) + 1)}")
    return Experiment(name="random", tiers=";".join(parts), context=context, empty_value=empty_value,
                      negatives=int(rng.integers(0, 30)), seed=int(rng.integers(0, 1000)), **overrides)


@pytest.mark.parametrize("context", range(1, 9))
@pytest.mark.parametrize("empty_value", [0.0, 0.5])
def test_engine_matches_oracle(context, empty_value):
    rng = np.random.default_rng(100 * context + int(10 * empty_value))
    exp = random_experiment(rng, context, empty_value, dense_max_bits=int(rng.integers(4, 11)), memory="bits")
    train_tokens = zipf_tokens(rng, 300, seen=40)  # ids 40..47 never trained: unseen clusters
    valid = zipf_tokens(rng, 60)
    model = train(exp, train_tokens, V)
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    assert_metrics_equal(evaluate(model, valid), oracle.evaluate(valid))


@pytest.mark.parametrize("tiers,context", [
    ("6,3,11;rest,2,14", 4),  # sparse neurons, scratch dedupe (scan and sorted-touched paths)
    ("4,2,26;rest,2,9", 5),  # > 24 bits: dedupe by sorting
    ("3,2,40;rest,1,64", 11),  # 64-bit addresses: signed keys must still order consistently
])
def test_sparse_tiers_match_oracle(tiers, context):
    rng = np.random.default_rng(7)
    exp = Experiment(name="sparse", tiers=tiers, context=context, negatives=10, seed=5,
                     dense_max_bits=1, memory="bits", sparse_max_bits=64)
    train_tokens, valid = zipf_tokens(rng, 400), zipf_tokens(rng, 50)
    model = train(exp, train_tokens, V)
    assert {m.tier.storage for m in model.memories} == {"sparse"}
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    assert_metrics_equal(evaluate(model, valid), oracle.evaluate(valid))


@pytest.mark.parametrize("empty_value", [0.0, 0.5])
def test_dense_and_sparse_give_identical_metrics(empty_value):
    rng = np.random.default_rng(11)
    train_tokens, valid = zipf_tokens(rng, 3000), zipf_tokens(rng, 400)
    spec = dict(name="x", tiers="5,4,10;15,3,8;rest,2,6", context=3, negatives=25, empty_value=empty_value)
    dense = train(Experiment(**spec, dense_max_bits=10, memory="bits"), train_tokens, V)
    sparse = train(Experiment(**spec, dense_max_bits=1, memory="bits"), train_tokens, V)
    assert [m.tier.storage for m in dense.memories] == ["dense"] * 3
    assert [m.tier.storage for m in sparse.memories] == ["sparse"] * 3
    assert cells(dense) == cells(sparse)
    got, want = evaluate(sparse, valid), evaluate(dense, valid)
    for tier in got["tiers"]:
        tier["backend"] = "dense"  # the one field allowed to differ (the memory kind)
    assert got == want


def test_memory_auto_chooses_each_tier_by_fill_and_changes_no_number(monkeypatch):
    """A tier of negatives fills most of its 12-bit space: DENSE, though 12 bits is above
    dense_max_bits. A 20-bit tier of rare targets fills almost nothing: SPARSE, unless the
    whole tier is small enough to be DENSE anyway. The cells and metrics never change."""
    from ramsweep.engine import layout as layout_module

    rng = np.random.default_rng(2)
    train_tokens, valid = zipf_tokens(rng, 3000), zipf_tokens(rng, 300)
    spec = dict(name="x", tiers="4,3,12;rest,2,20", context=4, negatives=4)
    by_bits = train(Experiment(**spec, memory="bits"), train_tokens, V)
    small_always_dense = train(Experiment(**spec), train_tokens, V)
    monkeypatch.setattr(layout_module, "DENSE_ALWAYS_BYTES", 0)
    by_fill = train(Experiment(**spec), train_tokens, V)
    assert [m.tier.storage for m in by_bits.memories] == ["sparse", "sparse"]
    assert [m.tier.storage for m in by_fill.memories] == ["dense", "sparse"]
    assert [m.tier.storage for m in small_always_dense.memories] == ["dense", "dense"]
    want = evaluate(by_bits, valid)
    for model in (by_fill, small_always_dense):
        assert cells(model) == cells(by_bits)
        got = evaluate(model, valid)
        for g, w in zip(got["tiers"], want["tiers"]):
            g["backend"] = w["backend"]  # the one field allowed to differ (the memory kind)
        assert got == want


@pytest.mark.parametrize("dense_max_bits", [10, 1])
def test_training_order_does_not_change_memory(dense_max_bits):
    rng = np.random.default_rng(3)
    tokens = zipf_tokens(rng, 2000)
    exp = Experiment(name="x", tiers="8,3,9;rest,2,7", context=4, negatives=20, dense_max_bits=dense_max_bits, memory="bits")
    in_order = cells(train(exp, tokens, V))
    shuffled = rng.permutation(np.arange(exp.context, tokens.shape[0], dtype=np.int64))
    assert cells(train(exp, tokens, V, examples=shuffled)) == in_order
    assert len(in_order) > 0


def test_oracle_memory_is_order_independent_too():
    rng = np.random.default_rng(4)
    tokens = zipf_tokens(rng, 200)
    exp = Experiment(name="x", tiers="5,2,5;rest,1,4", context=2, negatives=8)
    order = rng.permutation(np.arange(2, 200)).tolist()
    assert ReferenceModel(exp, tokens, V, order=order).cells == ReferenceModel(exp, tokens, V).cells


def test_connectivity_matches_reference_generator_and_is_distinct():
    conn = draw_connectivity(42, 1, 50, 20, 56)
    for n in range(50):
        assert conn[n].tolist() == connectivity(42, 1, n, 20, 56)
        assert len(set(conn[n].tolist())) == 20
    assert not np.array_equal(conn, draw_connectivity(43, 1, 50, 20, 56))  # the seed matters


def test_connectivity_covers_input_positions_uniformly():
    conn = draw_connectivity(0, 0, 20000, 1, 8)
    counts = np.bincount(conn.ravel(), minlength=8)
    assert counts.min() > 2300 and counts.max() < 2700  # 2500 expected per position


def test_cluster_order_is_frequency_then_id_with_unseen_last():
    tokens = np.array([3, 3, 1, 1, 5, 0], dtype=np.int32)  # 1 and 3 tie; 2 and 4 unseen
    exp = Experiment(name="x", tiers="2,1,1;rest,1,1", context=1, negatives=100)
    layout = build_layout(exp, tokens, 6)
    assert layout.order.tolist() == [1, 3, 0, 5, 2, 4]
    assert layout.n_negatives == 4  # only tokens seen in training are negatives
    assert [(t.first, t.clusters) for t in layout.tiers] == [(0, 2), (2, 4)]


def test_same_seed_same_numbers_other_seed_other_numbers():
    rng = np.random.default_rng(5)
    tokens, valid = zipf_tokens(rng, 1500), zipf_tokens(rng, 300)
    exp = Experiment(name="x", tiers="5,3,8;rest,2,6", context=3, negatives=20, seed=1)
    first = evaluate(train(exp, tokens, V), valid)
    assert evaluate(train(exp, tokens, V), valid) == first
    other = evaluate(train(exp.model_copy(update={"seed": 2}), tokens, V), valid)
    assert other["ce"] != first["ce"]


def test_ppl_floor():
    assert math.isclose(ppl_floor(50257), 18489.4, rel_tol=1e-4)


@pytest.mark.parametrize("empty_value", [0.0, 0.5])
def test_metrics_of_a_case_worked_by_hand(empty_value):
    """V=4 (2 bits a token), context 1, one 2-bit neuron per cluster: every neuron reads the
    whole context, so each context token has its own cell. Train 0 1 0 1 0 2, negatives = {0}:
      0->1: cluster 1 TRUE, cluster 0 FALSE      1->0: cluster 0 TRUE (no negative but itself)
      0->2: cluster 2 TRUE, cluster 0 FALSE
    Scores after context 0: [0, 1, 1, e]; after context 1: [1, e, e, e] (e = empty_value)."""
    tokens = np.array([0, 1, 0, 1, 0, 2], dtype=np.int32)
    exp = Experiment(name="x", tiers="rest,1,2", context=1, negatives=1, empty_value=empty_value)
    metrics = evaluate(train(exp, tokens, 4), tokens)
    ev = math.exp(empty_value)
    after0 = 1 + 2 * math.e + ev  # softmax denominators
    after1 = math.e + 3 * ev
    # targets after context 0: 1, 1, 2 (each e/after0); after context 1: 0, 0 (each e/after1)
    ce = (3 * math.log(after0 / math.e) + 2 * math.log(after1 / math.e)) / 5
    assert metrics["examples"] == 5
    assert math.isclose(metrics["ce"], ce, rel_tol=1e-12)
    assert math.isclose(metrics["ppl"], math.exp(ce), rel_tol=1e-12)
    assert metrics["accuracy"] == pytest.approx(4 / 5)  # 0->2 loses the tie to cluster 1
    assert metrics["ppl_floor"] == pytest.approx((math.e + 3) / math.e)
    assert metrics["ppl_floor"] <= metrics["ppl"]
    # bits per byte: the 5 predicted tokens (positions 1..5) stand for 2+3+2+3+4 bytes of text
    byte_lengths = np.array([1, 2, 3, 2, 3, 4])
    with_bytes = evaluate(train(exp, tokens, 4), tokens, byte_lengths=byte_lengths)
    assert math.isclose(with_bytes["bpb"], 5 * ce / math.log(2) / 14, rel_tol=1e-12)


@pytest.mark.parametrize("empty_value", [0.0, 0.5, 0.3])
def test_ce_at_any_temperature_matches_the_oracles_softmax(empty_value):
    rng = np.random.default_rng(int(10 * empty_value) + 3)
    exp = random_experiment(rng, 3, empty_value, dense_max_bits=8, memory="bits")
    train_tokens, valid = zipf_tokens(rng, 400, seen=40), zipf_tokens(rng, 80)
    scores = score(train(exp, train_tokens, V), valid)
    oracle = ReferenceModel(exp, train_tokens, V)
    assert np.allclose(ce_at(scores, 1.0), scores.ce, rtol=1e-12)
    for temperature in (0.25, 0.7, 3.0):
        assert math.isclose(float(ce_at(scores, temperature).mean()), oracle.ce_at(valid, temperature), rel_tol=1e-9)


def test_the_fitted_temperature_minimises_validation_ce():
    rng = np.random.default_rng(8)
    exp = Experiment(name="x", tiers="6,4,10;rest,3,8", context=3, negatives=15, empty_value=0.5)
    train_tokens, valid = zipf_tokens(rng, 3000, seen=44), zipf_tokens(rng, 600)
    scores = score(train(exp, train_tokens, V), valid)
    best = fit_temperature(scores)
    ce = lambda t: float(ce_at(scores, t).mean())  # noqa: E731
    assert best != 1.0
    assert ce(best) <= min(ce(best * 1.02), ce(best / 1.02), ce(1.0))
    calibrated = metrics(scores, temperature=best)["calibrated"]
    assert calibrated["temperature"] == best and calibrated["ce"] == pytest.approx(ce(best))
    assert calibrated["ce"] <= metrics(scores)["ce"]


def test_temperature_fit_survives_rows_whose_best_level_is_far_below_the_top():
    """Levels 0, 0.2 and 1: a row with clusters at 0 and 0.2 only, whose target is its best,
    meets exp(1000 x 0.8) = inf at the largest beta searched. Every target is its row's
    unique best, so CE falls all the way: the fit must end at the smallest temperature
    searched, with finite CE there (a regression: 0 x inf = nan steered the bisection)."""
    from ramsweep.engine.evaluate import BETA_RANGE, Scores

    levels = np.array([0.0, 0.2, 1.0])
    hist = np.array([[5, 0, 1], [5, 1, 0]], dtype=np.int32)
    target = np.array([1.0, 0.2])
    s = Scores(None, [], np.arange(2), np.zeros(2), np.ones(2, bool), np.zeros(2), target, levels, hist, [])
    with np.errstate(invalid="raise", over="raise"):
        assert fit_temperature(s) == 1 / BETA_RANGE[1]
        assert np.all(np.isfinite(ce_at(s, 1 / BETA_RANGE[1])))


FALLBACK_SCRIPT = """
import json, sys
import numpy as np
from ramsweep.config import Experiment
from ramsweep.engine.backends import cpu
from ramsweep.engine.evaluate import evaluate
from ramsweep.engine.train import cells, train
rng = np.random.default_rng(9)
p = 1.0 / np.arange(1, 49)
tokens = rng.choice(48, 1500, p=p / p.sum()).astype(np.int32)
exp = Experiment(name="x", tiers="4,3,30;10,2,13;rest,2,7", context=6, negatives=12, sparse_max_bits=30, memory="bits")
model = train(exp, tokens, 48)
json.dump({"pext": cpu.USE_PEXT, "cells": sorted([list(k) + [v] for k, v in cells(model).items()]),
           "metrics": evaluate(model, tokens[:300])}, sys.stdout)
"""


def test_pext_and_bit_loop_addresses_agree():
    """CPUs without a fast pext walk the sorted connections instead: same cells, same metrics."""
    import json
    import os
    import subprocess
    import sys

    from ramsweep.engine.backends import cpu

    if not cpu.USE_PEXT:
        pytest.skip("this CPU has no fast pext: both runs would take the bit loop")
    runs = []
    for cpu_name in (None, "generic"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
        if cpu_name:
            env["NUMBA_CPU_NAME"] = cpu_name
        out = subprocess.run([sys.executable, "-c", FALLBACK_SCRIPT], env=env, capture_output=True, text=True,
                             check=True).stdout
        runs.append(json.loads(out))
    assert runs[1]["pext"] is False  # the generic target never emits BMI2
    assert runs[0]["cells"] == runs[1]["cells"] and len(runs[0]["cells"]) > 0
    assert runs[0]["metrics"] == runs[1]["metrics"]


@pytest.mark.parametrize("tiers,context,sparse_max_bits,lsh_bits,memory", [
    ("3,2,40;rest,1,64", 11, 30, 6, "bits"),  # 40 and 64 bits hashed into 64 cells, stored SPARSE
    ("6,3,11;rest,2,14", 4, 10, 5, "bits"),  # any width when asked: sparse_max_bits below the tiers
    ("6,3,11;rest,2,14", 4, 10, 9, "auto"),  # a small tier: the hashed cells stored DENSE
])
def test_lsh_tiers_match_oracle(tiers, context, sparse_max_bits, lsh_bits, memory):
    rng = np.random.default_rng(17)
    spec = dict(name="lsh", tiers=tiers, context=context, negatives=10, seed=9, dense_max_bits=1, memory=memory)
    exp = Experiment(**spec, sparse_max_bits=sparse_max_bits, lsh_bits=lsh_bits)
    train_tokens, valid = zipf_tokens(rng, 400), zipf_tokens(rng, 50)
    model = train(exp, train_tokens, V)
    assert [m.tier.memory for m in model.memories] == ["lsh", "lsh"]
    assert {m.tier.storage for m in model.memories} == ({"sparse"} if memory == "bits" else {"dense"})
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    assert max(a for _, _, a in oracle.cells) < 2**lsh_bits
    assert_metrics_equal(evaluate(model, valid), oracle.evaluate(valid))
    # the price of the hash, on a sample of neurons: the distinct addresses written are the cells
    # an unhashed model stores there
    plain = train(Experiment(**spec, sparse_max_bits=64), train_tokens, V)
    for hashed, unhashed in zip(model.memories, plain.memories):
        neurons, addresses, stored = hashed.lsh_sample
        sample = np.unique(np.linspace(0, hashed.tier.n_neurons - 1, min(LSH_SAMPLE, hashed.tier.n_neurons)).astype(int))
        assert neurons == len(sample) == min(LSH_SAMPLE, hashed.tier.n_neurons)
        assert addresses == cells_per_neuron(unhashed)[sample].sum() > stored == cells_per_neuron(hashed)[sample].sum()


def test_lsh_bits_is_part_of_the_key_only_where_a_tier_is_hashed():
    plain = dict(name="x", tiers="100,15,20;rest,5,8")
    assert Experiment(**plain).spec() == Experiment(**plain, lsh_bits=12).spec()
    assert "lsh_bits" not in Experiment(**plain).spec()
    wide = dict(name="x", tiers="100,15,40;rest,5,8")
    assert Experiment(**wide).spec() != Experiment(**wide, lsh_bits=12).spec()
    assert Experiment(**wide).spec()["lsh_bits"] == 20


@pytest.mark.parametrize("gating,fields", [
    ({"neurons": 3, "bits": 5}, {"dense_max_bits": 6, "memory": "bits"}),  # dense gates, need 2 of 3
    ({"neurons": 4, "bits": 9}, {"dense_max_bits": 6, "memory": "bits", "empty_value": 0.5}),  # sparse gates
])
def test_gated_models_match_oracle(gating, fields):
    rng = np.random.default_rng(23)
    exp = Experiment(name="gated", tiers="4,3,7;rest,2,5", context=3, negatives=12, seed=3, gating=gating, **fields)
    train_tokens, valid = zipf_tokens(rng, 500, seen=40), zipf_tokens(rng, 60)
    model = train(exp, train_tokens, V)
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    gate_cells = {(g.tier.index, n, a): code for g, conn in zip(model.gates, oracle.gate_conn)
                  for n, a, code in engine_cells(g, conn, model.layout)}
    assert gate_cells == oracle.gate_cells
    got, want = evaluate(model, valid), oracle.evaluate(valid)
    assert_metrics_equal(got, want)
    for key in ("ce", "accuracy"):
        assert math.isclose(got["ungated"][key], want["ungated"][key], rel_tol=1e-9)
    # the gates matter here: some clusters closed, and the scores differ from the ungated model's
    assert any(t["gate_open"] < 1 for t in got["tiers"]) and got["ce"] != got["ungated"]["ce"]
    plain = evaluate(train(exp.model_copy(update={"gating": None}), train_tokens, V), valid)
    assert math.isclose(plain["ce"], got["ungated"]["ce"], rel_tol=1e-12)


def engine_cells(mem, conn, layout):
    """(neuron, address in connection order, code) of one memory: cells() for gate memories."""
    from ramsweep.engine.train import stored_cells, wire

    _, _, perm = wire(np.asarray(conn, dtype=np.int32), layout)
    for n, a, code in stored_cells(mem):
        bits = [(a >> (mem.tier.bits - 1 - i)) & 1 for i in range(mem.tier.bits)]
        yield n, sum(b << (mem.tier.bits - 1 - int(perm[n, i])) for i, b in enumerate(bits)), code


@pytest.mark.parametrize("fields", [
    {"empty_value": 0.0},
    {"empty_value": 0.5},  # a never-written cluster scores 0.5: it can be the argmax
    {"empty_value": 0.5, "gating": {"neurons": 3, "bits": 6}},  # behind a gate it scores 0
    {"dense_max_bits": 1, "memory": "bits"},  # SPARSE tiers
])
@pytest.mark.parametrize("seen,looked", [(20, [5, 10, 5]), (15, [5, 10, 0])])  # the rest: partly, or never written
def test_skipping_never_written_clusters_changes_no_number(monkeypatch, fields, seen, looked):
    from ramsweep.engine import evaluate as evaluate_module
    from ramsweep.engine.evaluate import looked_up

    rng = np.random.default_rng(31)
    exp = Experiment(name="skip", tiers="5,3,7;10,2,6;rest,2,5", context=3, negatives=6, **fields)
    train_tokens, valid = zipf_tokens(rng, 400, seen=seen), zipf_tokens(rng, 120)  # ids seen.. never trained
    model = train(exp, train_tokens, V)
    assert [looked_up(t, model.layout) for t in model.layout.tiers] == looked
    skipped = score(model, valid)
    monkeypatch.setattr(evaluate_module, "SKIP_NEVER_WRITTEN", False)
    full = score(model, valid)
    for name in ("ce", "correct", "target_score", "hist"):
        assert np.array_equal(getattr(skipped, name), getattr(full, name)), name
    for a, b in zip(skipped.empties + skipped.gates, full.empties + full.gates):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert (~skipped.correct).any() and skipped.correct.any()


@pytest.mark.parametrize("encoding", ["native", "frequency", "appearance"])
@pytest.mark.parametrize("gray", [False, True])
def test_every_encoding_matches_oracle(encoding, gray):
    rng = np.random.default_rng(41)
    exp = Experiment(name="enc", tiers="4,3,9;rest,2,7", context=3, negatives=10, seed=2, dense_max_bits=8,
                     memory="bits", encoding=encoding, gray=gray)
    train_tokens, valid = zipf_tokens(rng, 400, seen=40), zipf_tokens(rng, 80)
    model = train(exp, train_tokens, V)
    oracle = ReferenceModel(exp, train_tokens, V)
    assert cells(model) == oracle.cells
    assert_metrics_equal(evaluate(model, valid), oracle.evaluate(valid))


def test_an_encoding_changes_the_model_and_its_key_but_native_keeps_old_keys():
    rng = np.random.default_rng(42)
    train_tokens, valid = zipf_tokens(rng, 600), zipf_tokens(rng, 100)
    base = dict(name="enc", tiers="4,3,9;rest,2,7", context=3, negatives=10)
    results = {(e, g): evaluate(train(Experiment(**base, encoding=e, gray=g), train_tokens, V), valid)["ce"]
               for e in ("native", "frequency", "appearance") for g in (False, True)}
    assert len(set(results.values())) == 6  # the id bits a neuron reads are part of the model
    assert Experiment(**base, encoding="sorted").spec() == Experiment(**base).spec()  # sorted is the words' native
    assert "encoding" not in Experiment(**base).spec() and "gray" not in Experiment(**base).spec()
    assert Experiment(**base, encoding="frequency").spec()["encoding"] == "frequency"
