"""The tier-bits grid: its order, its defaults, limit/sample, errors, and the memory estimate."""

import itertools
import textwrap

import numpy as np
import pytest
from conftest import config_error

from ramsweep.config import Experiment
from ramsweep.engine.layout import Frequencies, estimate_memory_bytes, layout_of
from ramsweep.engine.train import train
from ramsweep.grid import GridSpec, bisection_order, grid_point
from ramsweep.grid import grid_set as grid_of_file
from ramsweep.sets import load_grid, load_set
from ramsweep.sweep.plan import experiment_key

BITS = range(8, 17)
DEFAULT_SHAPES = {  # what sets/grid.yaml states, per number of tiers
    1: ("rest",), 2: ("100", "rest"), 3: ("100", "400", "rest"),
    4: ("100", "400", "2000", "rest"), 5: ("100", "400", "2000", "6000", "rest"),
}
DEFAULT_NEURONS = {1: (5,), 2: (15, 5), 3: (15, 10, 5), 4: (15, 10, 7, 5), 5: (15, 10, 7, 5, 3)}


def grid_set(*args, **kwargs):
    """The grid of sets/grid.yaml (found like any set) with these arguments, as `ramsweep grid` builds it."""
    return grid_of_file(load_grid(), *args, **kwargs)


def tier_bits(exp: Experiment) -> tuple[int, ...]:
    return tuple(t.bits for t in exp.tiers.tiers)


@pytest.fixture(scope="module")
def grid3():
    return grid_set()


# ---------------------------------------------------------------- the order


def test_bisection_order_spreads_every_prefix():
    assert bisection_order(9) == [0, 8, 4, 2, 6, 1, 3, 5, 7]
    assert bisection_order(1) == [0] and bisection_order(2) == [0, 1]
    for levels in range(1, 70):
        order = bisection_order(levels)
        assert sorted(order) == list(range(levels)), levels
        if levels > 2:  # both ends, then the middle
            assert order[:3] == [0, levels - 1, (levels - 1) // 2]


@pytest.mark.parametrize("levels, tiers", [(1, 3), (2, 5), (3, 4), (4, 3), (6, 3), (8, 3), (9, 3), (10, 2), (9, 4)])
def test_grid_order_is_a_bijection_in_balanced_blocks(levels, tiers):
    points = [grid_point(i, levels, tiers) for i in range(levels**tiers)]
    assert sorted(points) == list(itertools.product(range(levels), repeat=tiers))
    assert points[:levels] == [(b,) * tiers for b in bisection_order(levels)]  # uniform first
    for start in range(0, len(points), levels):  # any aligned block: every level of every tier once
        for t in range(tiers):
            assert sorted(p[t] for p in points[start : start + levels]) == list(range(levels))


@pytest.mark.parametrize("levels", [3, 5, 7, 9, 11])
def test_first_levels_squared_hold_every_pair_for_three_tiers_and_odd_levels(levels):
    head = [grid_point(i, levels, 3) for i in range(levels**2)]
    for s, t in itertools.combinations(range(3), 2):
        assert len({(p[s], p[t]) for p in head}) == levels**2


def test_grid_has_729_distinct_experiments_with_distinct_keys(grid3):
    exps = grid3.experiments
    assert grid3.name == "grid" and len(exps) == 729
    assert len({experiment_key(e, "any-fingerprint") for e in exps}) == 729
    assert len({str(e.tiers) for e in exps}) == 729
    assert {tier_bits(e) for e in exps} == set(itertools.product(BITS, repeat=3))
    first = exps[9]
    assert first.name == "grid_b08_16_15" and str(first.tiers) == "100,15,8;400,10,16;rest,5,15"
    assert all((e.context, e.negatives) == (4, 1000) for e in exps)


def test_first_9_are_uniform_and_first_81_hold_every_pair(grid3):
    bits = [tier_bits(e) for e in grid3.experiments]
    assert [b[0] for b in bits[:9]] == [8, 16, 12, 10, 14, 9, 11, 13, 15]
    assert all(len(set(b)) == 1 for b in bits[:9])
    for t in range(3):
        assert sorted(b[t] for b in bits[:9]) == list(BITS)
        assert sorted(b[t] for b in bits[:81]) == sorted(list(BITS) * 9)
    for s, t in itertools.combinations(range(3), 2):
        assert {(b[s], b[t]) for b in bits[:81]} == set(itertools.product(BITS, repeat=2))


def test_load_set_grid_is_grid_set(grid3):
    loaded = load_set("grid")
    assert loaded.name == grid3.name and loaded.experiments == grid3.experiments
    assert [e.spec() for e in loaded.experiments] == [e.spec() for e in grid3.experiments]
    assert all(e.description for e in loaded.experiments)


@pytest.mark.parametrize("tiers", [1, 2, 4])
def test_other_tier_numbers_use_the_stated_defaults(tiers):
    got = grid_set(tiers)
    assert got.name == f"grid{tiers}" and len(got.experiments) == 9**tiers
    assert {tier_bits(e) for e in got.experiments} == set(itertools.product(BITS, repeat=tiers))
    for exp in got.experiments[:20]:
        assert tuple(str(t).split(",")[0] for t in exp.tiers.tiers) == DEFAULT_SHAPES[tiers]
        assert tuple(t.neurons for t in exp.tiers.tiers) == DEFAULT_NEURONS[tiers]
    assert got.experiments[0].name == "grid_b" + "_".join(["08"] * tiers)


@pytest.mark.parametrize("tiers", range(1, 6))
def test_default_shapes_fit_the_embedded_and_gpt2_vocabularies(tiers):
    exp = grid_set(tiers, limit=1).experiments[0]
    for vocab in (13_814, 50_257):
        exp.check_against_data(vocab)
    assert sum(int(c) for c in DEFAULT_SHAPES[tiers][:-1]) < 13_814


def test_arguments_override_the_file():
    got = grid_set(2, bits=(4, 6), counts=["7", "rest"], neurons=[3, 2], context=2, negatives=5)
    assert [e.name for e in got.experiments[:3]] == ["grid_b04_04", "grid_b06_06", "grid_b05_05"]
    assert len(got.experiments) == 9
    exp = got.experiments[4]
    assert (str(exp.tiers), exp.context, exp.negatives) == ("7,3,6;rest,2,5", 2, 5)
    assert grid_set(bits=(12, 12)).names() == ["grid_b12_12_12"]
    assert str(grid_set(6, counts=[1, 2, 3, 4, 5, "REST"], neurons=[1] * 6, bits=(8, 8)).experiments[0].tiers) \
        == "1,1,8;2,1,8;3,1,8;4,1,8;5,1,8;rest,1,8"


# ---------------------------------------------------------------- limit and sample


def test_limit_takes_the_head_of_the_order(grid3):
    assert grid_set(limit=81).experiments == grid3.experiments[:81]
    assert grid_set(limit=10_000).experiments == grid3.experiments


def test_sample_is_seeded_without_replacement_and_in_grid_order(grid3):
    position = {e.name: i for i, e in enumerate(grid3.experiments)}
    a, again, other = (grid_set(sample=50, seed=s).names() for s in (1, 1, 2))
    assert a == again and a != other
    assert len(set(a)) == 50 and all(n in position for n in a)
    assert [position[n] for n in a] == sorted(position[n] for n in a)
    assert grid_set(sample=50, seed=1, limit=5).names() == a[:5]  # sample, then limit
    assert grid_set(sample=729).experiments == grid3.experiments


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, fragments", [
    ({"tiers": 0}, ["grid: tiers: 0", "from 1 to 16"]),
    ({"tiers": 3, "counts": [100, "rest"]}, ["grid: counts: 2 values for 3 tier(s)", "one per tier"]),
    ({"tiers": 2, "neurons": [1, 2, 3]}, ["grid: neurons: 3 values for 2 tier(s)"]),
    ({"counts": ["rest", 100, 400]}, ["counts: only the last count may be rest"]),
    ({"counts": [100, "lots", "rest"]}, ["counts: count 2 'lots' is not a count"]),
    ({"neurons": [15, 0, 5]}, ["neurons: neurons 2 0 is not a number of neurons"]),
    ({"tiers": 6}, ["tiers: 6 has no default counts and neurons", "pass both"]),
    ({"bits": (16, 8)}, ["grid: bits: (16, 8) is not a range", "LOW <= HIGH"]),
    ({"bits": (0, 8)}, ["bits:", "1 <= LOW"]),
    ({"bits": (8, 65)}, ["bits:", "HIGH <= 64"]),
    ({"context": 0}, ["grid: context: 0", "1 to 16"]),
    ({"negatives": -1}, ["grid: negatives: -1"]),
    ({"sample": 730}, ["grid: sample: 730 is more than the grid's 729"]),
    ({"sample": 0}, ["grid: sample: 0"]),
    ({"limit": -3}, ["grid: limit: -3"]),
    ({"seed": -1}, ["grid: seed: -1"]),
    ({"tiers": 5, "bits": (1, 64)}, ["1,073,741,824 experiments", "limit or a sample"]),
])
def test_bad_arguments_are_one_line_config_errors(kwargs, fragments):
    config_error(lambda: grid_set(**kwargs), *fragments)


def test_a_huge_grid_can_still_be_sampled():
    got = grid_set(5, bits=(1, 64), sample=3, seed=7)
    assert len(got.experiments) == 3 and got.names() == grid_set(5, bits=(1, 64), sample=3, seed=7).names()


def write(tmp_path, body: str) -> str:
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return str(path)


GOOD = "tiers: 2\n  bits: [8, 9]\n  shapes: {2: {counts: [10, rest], neurons: [3, 2]}}"


@pytest.mark.parametrize("section, fragments", [
    (GOOD + "\n  seeds: 3", ["g.yaml: grid: unknown key 'seeds'", "allowed keys: tiers, bits"]),
    ("bits: [8, 9]\n  shapes: {2: {counts: [10, rest], neurons: [3, 2]}}", ["grid: tiers: missing"]),
    (GOOD.replace("[8, 9]", "[9, 8]"), ["grid: bits: [9, 8] is not a range"]),
    (GOOD.replace("[8, 9]", "8"), ["grid: bits: 8 is not a range"]),
    (GOOD.replace("tiers: 2", "tiers: 3"), ["grid: tiers: 3 has no entry under shapes", "use one of 2"]),
    (GOOD.replace("[3, 2]", "[3]"), ["grid: shapes.2.neurons: 1 values for 2 tier(s)"]),
    (GOOD.replace("neurons", "neuron"), ["grid: shapes.2: must be {counts: [...], neurons: [...]}"]),
    (GOOD.replace("{2:", "{two:"), ["grid: shapes: key 'two' is not a number of tiers"]),
    (GOOD + "\n  context: 17", ["grid: context: 17 is out of range", "1 to 16"]),
])
def test_bad_grid_sections_are_one_line_config_errors(tmp_path, section, fragments):
    config_error(lambda: load_set(write(tmp_path, f"grid:\n  {section}\n")), *fragments)


def test_a_grid_set_file_loads_and_refuses_listed_experiments(tmp_path):
    loaded = load_set(write(tmp_path, f"description: small\ngrid:\n  {GOOD}\n"))
    assert (loaded.name, loaded.description, loaded.names()) == (
        "g", "small", ["grid_b08_08", "grid_b09_09", "grid_b08_09", "grid_b09_08"])
    config_error(lambda: load_set(write(tmp_path, f"grid:\n  {GOOD}\nexperiments: [{{name: a, tiers: 'rest,1,1'}}]\n")),
                 "g.yaml: grid:", "cannot also have experiments")
    config_error(lambda: load_set(write(tmp_path, "grid:\n")), "g.yaml: grid: is empty")
    config_error(lambda: load_set(write(tmp_path, "grid: [8, 16]\n")), "g.yaml: grid: must be a mapping")
    assert GridSpec.model_validate({"tiers": 1, "bits": [3, 3], "shapes": {1: {"counts": ["rest"], "neurons": [1]}}}).size == 1


def test_grid_set_reads_a_local_grid_yaml_first_and_can_be_included(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sets").mkdir()
    (tmp_path / "sets" / "grid.yaml").write_text(f"description: local\ngrid:\n  {GOOD}\n", encoding="utf-8")
    local = grid_set()
    assert (local.name, local.description, len(local.experiments)) == ("grid", "local", 4)
    assert local.source == "sets/grid.yaml" and local.experiments == load_set("grid").experiments
    assert grid_set(context=3).description.startswith("Tier-bits grid: bits 8-9 in each of 2 tiers")
    mine = write(tmp_path, "include: [grid]\nexperiments: [{name: extra, based_on: grid_b09_09, context: 2}]\n")
    assert load_set(mine).names() == local.names() + ["extra"]
    assert str(load_set(mine).experiments[-1].tiers) == "10,3,9;rest,2,9"


# ---------------------------------------------------------------- memory estimate


@pytest.mark.parametrize("tiers, fields", [
    ("5,4,6;20,3,8;rest,2,4", {}),  # all DENSE: exact
    ("5,4,12;20,3,14;rest,2,9", {}),  # SPARSE tiers over a DENSE one
    ("3,2,20;rest,2,16", {}),  # bound by the writes, not 2**bits
    ("rest,3,6", {"dense_max_bits": 0}),  # SPARSE at 6 bits: bound by 2**bits on busy neurons
    ("4,2,40;rest,2,12", {"context": 8, "sparse_max_bits": 64}),  # 8-byte keys
    ("4,2,40;rest,2,12", {"context": 8, "lsh_bits": 9}),  # LSH: bound by 2**lsh_bits, keys of 4 bytes, hash words
    ("4,2,40;rest,2,12", {"context": 8, "lsh_bits": 9, "memory": "auto"}),  # LSH stored DENSE
])
def test_memory_estimate_is_an_upper_bound(tiers, fields):
    rng = np.random.default_rng(5)
    p = 1.0 / np.arange(1, 41)
    tokens = rng.choice(40, 3000, p=p / p.sum()).astype(np.int32)  # ids 40..47 never seen
    exp = Experiment(name="m", tiers=tiers, negatives=10, **{"memory": "bits", **fields})
    actual = sum(m.nbytes for m in train(exp, tokens, 48).memories)
    estimate = estimate_memory_bytes(layout_of(exp, Frequencies.of(tokens, 48)))
    assert actual <= estimate <= 4 * actual
    if all(exp.memory_kind(t.bits) == "dense" for t in exp.tiers.tiers):
        assert estimate == actual
