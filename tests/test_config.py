"""Tests for ramsweep.config: tier strings, experiments, YAML sets and their error messages."""

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from conftest import config_error
from pydantic import ValidationError

import ramsweep
from ramsweep import sets as sets_module
from ramsweep.config import Experiment, ExperimentSet, TierConfig, TierSpec, bits_per_token
from ramsweep.sets import available_sets, load_set, sets_dirs

REPO_SETS = Path(ramsweep.__file__).parent.parent / "sets"
PACKAGED = ["asymmetric", "baseline", "bitwise", "extended", "findings", "gating", "grid", "phases", "quick", "search",
            "standard"]
# Designed for GPT-2's vocabulary: their explicit counts (20,500) exceed 13,000 tokens.
NEEDS_LARGE_VOCAB = {"five_tier_gradient", "five_tier_best_week5"}


def write_set(folder: Path, name: str, body: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


# ---------------------------------------------------------------- bits_per_token


@pytest.mark.parametrize(
    "vocab, bits",
    [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (256, 8), (257, 9), (13_000, 14), (50_257, 16),
     (65_536, 16), (65_537, 17), (2**53 + 1, 54)],
)
def test_bits_per_token_is_exact_ceil_log2(vocab: int, bits: int) -> None:
    assert bits_per_token(vocab) == bits


def test_bits_per_token_rejects_empty_vocabulary() -> None:
    with pytest.raises(ValueError):
        bits_per_token(0)


# ---------------------------------------------------------------- tier strings


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("100,15,20;400,10,12;rest,5,8", "100,15,20;400,10,12;rest,5,8"),
        (" 100 , 15 , 20 ; 400,10,12 ;\tREST, 5 ,8 ", "100,15,20;400,10,12;rest,5,8"),
        ("Rest,3,11", "rest,3,11"),
        ("500,15,16", "500,15,16"),
        ("50,37,22;50,31,20;400,11,12;20000,7,10;rest,3,11",
         "50,37,22;50,31,20;400,11,12;20000,7,10;rest,3,11"),
        ("+7,1,64;rest,1,1", "7,1,64;rest,1,1"),
    ],
)
def test_parse_gives_canonical_string_and_round_trips(text: str, canonical: str) -> None:
    config = TierConfig.parse(text)
    assert str(config) == canonical
    assert TierConfig.parse(str(config)) == config


def test_parse_builds_the_tier_specs() -> None:
    config = TierConfig.parse("100,15,20;rest,5,8")
    assert config.tiers == (
        TierSpec(count=100, neurons=15, bits=20),
        TierSpec(count=None, neurons=5, bits=8),
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("100,15,20;", "tier 2 is empty"),
        ("100,15;rest,5,8", 'tier 1 "100,15" has 2 field(s), needs 3'),
        ("100,15,20,1;rest,5,8", "has 4 field(s)"),
        ("100,15,x;rest,5,8", "bits 'x' is not a whole number"),
        ("100,15,8.5;rest,5,8", "bits '8.5' is not a whole number"),
        ("1e2,15,8;rest,5,8", "count '1e2' is not a whole number"),
        ("100,,8;rest,5,8", "neurons '' is not a whole number"),
        ("rest,5,8;100,15,20", "'rest' must be the last tier; move it to the end"),
        ("100,1,1;rest,5,8;rest,5,8", "'rest' appears 2 times"),
        ("100,0,8;rest,5,8", "neurons must be from 1 to 65,536 (got 0)"),
        ("100,-3,8;rest,5,8", "neurons must be from 1 to 65,536 (got -3)"),
        ("0,5,8;rest,5,8", "count must be from 1 to 2,147,483,647 (got 0)"),
        ("99999999999999999999999,5,8;rest,5,8", "count must be from 1 to 2,147,483,647 (got 99999999999999999999999)"),
        ("10,70000,8;rest,5,8", "neurons must be from 1 to 65,536 (got 70000)"),
        ("100,5,0;rest,5,8", "bits must be from 1 to 64 (got 0)"),
        ("100,5,65;rest,5,8", "bits must be from 1 to 64 (got 65)"),
    ],
)
def test_bad_tier_strings_name_experiment_field_and_problem(text: str, fragment: str) -> None:
    config_error(lambda: TierConfig.parse(text), fragment)
    config_error(lambda: Experiment(name="exp1", tiers=text), "experiment 'exp1'", "tiers:", fragment)


def test_tiers_must_be_a_string_in_experiments() -> None:
    config_error(
        lambda: Experiment(name="exp1", tiers=[100, 15, 20]),
        "experiment 'exp1'", "tiers: must be a quoted string", "e.g.",
    )


def test_direct_tier_models_validate_too() -> None:
    config_error(lambda: TierSpec(count=1, neurons=0, bits=8), "neurons", "got 0")
    config_error(lambda: TierSpec(count=1, neurons=1, bits=65), "bits", "got 65")
    rest_first = (TierSpec(count=None, neurons=1, bits=1), TierSpec(count=5, neurons=1, bits=1))
    config_error(lambda: TierConfig(tiers=rest_first), "'rest' must be the last tier")
    config_error(lambda: TierConfig(tiers=()), "tiers")


def test_cluster_counts_give_rest_the_remainder() -> None:
    config = TierConfig.parse("100,15,20;400,10,12;rest,5,8")
    assert config.cluster_counts(50_257) == [100, 400, 49_757]
    assert config.total_neurons(50_257) == 100 * 15 + 400 * 10 + 49_757 * 5
    assert TierConfig.parse("10,2,3;5,1,1").cluster_counts(15) == [10, 5]


@pytest.mark.parametrize(
    "text, vocab, fragment",
    [
        ("100,15,20;400,10,12;rest,5,8", 499, "sum to 500 but the vocabulary has only 499"),
        ("100,15,20;400,10,12;rest,5,8", 500, "'rest' would get 0 clusters"),
        ("100,15,20;400,10,12", 501, "cover 500 of 501 clusters and there is no 'rest' tier"),
        ("10,2,3;5,1,1", 14, "sum to 15 but the vocabulary has only 14"),
    ],
)
def test_cluster_counts_reject_configs_that_do_not_fit(text: str, vocab: int, fragment: str) -> None:
    config_error(lambda: TierConfig.parse(text).cluster_counts(vocab), fragment)


# ---------------------------------------------------------------- experiments


def test_experiment_defaults_and_string_serialisation() -> None:
    exp = Experiment(name="a", tiers=" 100,15,20 ; rest,5,8")
    assert (exp.context, exp.negatives, exp.empty_value, exp.seed) == (4, 1000, 0.0, 0)
    assert (exp.dense_max_bits, exp.sparse_max_bits, exp.based_on, exp.description) == (10, 30, None, "")
    dumped = exp.model_dump(mode="json")
    assert dumped["tiers"] == "100,15,20;rest,5,8"
    assert Experiment.model_validate(dumped) == exp
    assert Experiment.model_validate_json(exp.model_dump_json()) == exp


def test_experiment_is_frozen() -> None:
    exp = Experiment(name="a", tiers="rest,5,8")
    with pytest.raises(ValidationError):
        exp.context = 8  # type: ignore[misc]


def test_spec_is_what_is_computed_and_ignores_labels() -> None:
    one = Experiment(name="a", tiers="100,15,20;rest,5,8", description="x", based_on="b")
    two = Experiment(name="renamed", tiers="100, 15, 20; REST, 5, 8")
    assert one.spec() == two.spec()
    assert set(one.spec()) == {
        "tiers", "context", "negatives", "empty_value", "seed", "dense_max_bits", "sparse_max_bits"
    }
    assert one.spec()["tiers"] == "100,15,20;rest,5,8"
    assert orjson.loads(orjson.dumps(one.spec())) == one.spec()
    assert Experiment(name="a", tiers="100,15,20;rest,5,8", context=5).spec() != one.spec()
    assert Experiment(name="a", tiers="100,15,20;rest,5,8", empty_value=0.5).spec() != one.spec()


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("context", 0, "greater than or equal to 1"),
        ("context", 17, "less than or equal to 16"),
        ("context", "4", "valid integer"),
        ("context", True, "valid integer"),
        ("negatives", -1, "greater than or equal to 0"),
        ("empty_value", 1.5, "less than or equal to 1"),
        ("empty_value", -0.1, "greater than or equal to 0"),
        ("seed", -1, "greater than or equal to 0"),
        ("dense_max_bits", 65, "less than or equal to 64"),
        ("name", "bad name", "must match pattern"),
        ("name", "", "must match pattern"),
        ("description", 5, "valid string"),
    ],
)
def test_bad_field_values_give_one_line_with_field_and_fix(field: str, value, fragment: str) -> None:
    fields = {"name": "exp1", "tiers": "rest,5,8", field: value}
    message = config_error(lambda: Experiment(**fields), f"{field}:", fragment, "; ")
    assert message.startswith("experiment ")
    assert "use " in message  # every field has a fix hint


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    config_error(
        lambda: Experiment(name="exp1", tiers="rest,5,8", contxt=6),
        "experiment 'exp1'", "unknown key 'contxt'", "allowed keys: name, tiers, context",
    )


def test_missing_name_and_tiers_are_named() -> None:
    config_error(lambda: Experiment(tiers="rest,5,8"), "experiment (no name)", "name: missing")
    config_error(lambda: Experiment(name="exp1"), "experiment 'exp1'", "tiers: missing")


def test_dense_threshold_must_not_exceed_sparse_threshold() -> None:
    config_error(
        lambda: Experiment(name="exp1", tiers="rest,5,8", dense_max_bits=12, sparse_max_bits=11),
        "experiment 'exp1'", "dense_max_bits:", "sparse_max_bits",
    )


def test_memory_kind_follows_the_thresholds() -> None:
    exp = Experiment(name="a", tiers="rest,5,8")
    assert [exp.memory_kind(b) for b in (1, 10, 11, 30, 31, 64)] == [
        "dense", "dense", "sparse", "sparse", "lsh", "lsh"
    ]
    narrow = Experiment(name="a", tiers="rest,5,8", dense_max_bits=0, sparse_max_bits=64)
    assert {narrow.memory_kind(b) for b in (1, 40, 64)} == {"sparse"}


def test_check_against_data_accepts_fitting_configs() -> None:
    exp = Experiment(name="a", tiers="100,15,64;rest,5,8", context=4)
    assert exp.input_bits(50_257) == 64
    exp.check_against_data(50_257)  # 64 bits == the input width is allowed
    Experiment(name="a", tiers="10,2,3;5,1,1").check_against_data(15)  # exact cover, no rest


@pytest.mark.parametrize(
    "tiers, context, vocab, fragments",
    [
        ("100,15,20;rest,5,8", 1, 50_257,
         ("tier 1 \"100,15,20\" has 20 bits", "only 16 bits wide", "raise context")),
        ("100,15,8;rest,5,57", 4, 13_000, ("tier 2", "only 56 bits wide")),
        ("100,15,20;400,10,12;rest,5,8", 4, 300, ("sum to 500", "only 300 tokens")),
        ("100,15,20;400,10,12", 4, 13_000, ("no 'rest' tier",)),
        ("100,15,20;400,10,12;rest,5,8", 4, 500, ("'rest' would get 0 clusters",)),
    ],
)
def test_check_against_data_errors(tiers: str, context: int, vocab: int, fragments) -> None:
    exp = Experiment(name="exp1", tiers=tiers, context=context)
    config_error(lambda: exp.check_against_data(vocab), "experiment 'exp1'", "tiers:", *fragments)


def test_gates_wider_than_the_input_are_a_config_error_not_a_crash(tmp_path) -> None:
    """Their wiring cannot be drawn (it once crashed the process in the kernel that draws it)."""
    exp = Experiment(name="exp1", tiers="10,2,4;rest,1,4", context=1, gating={"neurons": 2, "bits": 20})
    config_error(lambda: exp.check_against_data(13_000), "experiment 'exp1'", "gating: bits 20",
                 "the input's 14 bits", "at most 14")
    (tmp_path / "s.yaml").write_text('experiments:\n  - {name: g, tiers: "10,2,4;rest,1,4", context: 1, '
                                     "gating: {neurons: 2, bits: 20}}\n")
    done = subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", str(tmp_path / "s.yaml"), "--results",
                           str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "gating: bits 20" in done.stderr, done.stderr
    assert not (tmp_path / "r.json").exists()


BW = {"neurons": 200, "bits": 20, "sample_rate": 0.25, "cell_mode": "quad_weighted"}


@pytest.mark.parametrize("fields, vocab, fragments", [
    ({"bitwise": {**BW, "neurons": [200, 100]}}, 13_814, ("bitwise: neurons: 2 values for 14 bit clusters", "give 14")),
    ({"bitwise": {**BW, "bits": 60}}, 13_814, ("bits: cluster 0 has 60 bits", "only 56 bits wide", "raise context")),
    ({"bitwise": {**BW, "sample_rate": 0}}, None, ("bitwise: sample_rate: must be greater than 0", "at most 1")),
    ({"bitwise": {**BW, "sample_rate": 1.5}}, None, ("bitwise: sample_rate:", "at most 1")),
    ({"bitwise": {**BW, "cell_mode": "quad"}}, None, ("bitwise: cell_mode:", "quad_weighted")),
    ({"bitwise": {**BW, "neurons": "many"}}, None, ("bitwise: neurons:", "a list of one per cluster")),
    ({"bitwise": BW, "tiers": "rest,5,8"}, None, ("tiers: is for the tiered architecture",)),
    ({"bitwise": BW, "negatives": 10}, None, ("negatives: is a tiered experiment's field",)),
    ({"bitwise": BW, "gating": {"neurons": 3, "bits": 8}}, None, ("gating: is a tiered experiment's field",)),
    ({}, None, ("bitwise: missing", "neurons: 200")),
])
def test_every_bad_bitwise_value_is_one_line_naming_the_field_and_the_fix(fields, vocab, fragments) -> None:
    make = lambda: Experiment(name="exp1", architecture="bitwise", **fields)  # noqa: E731
    config_error((lambda: make().check_against_data(vocab)) if vocab else make, "experiment 'exp1'", *fragments)


def test_a_bitwise_block_needs_architecture_bitwise() -> None:
    config_error(lambda: Experiment(name="exp1", tiers="rest,5,8", bitwise=BW), "bitwise: goes with architecture: bitwise")


# ---------------------------------------------------------------- set files


def test_load_set_by_path_with_defaults_and_description(tmp_path: Path) -> None:
    path = write_set(tmp_path, "mine", """
        description: My set
        defaults: {context: 6, seed: 3}
        experiments:
          - name: a
            tiers: "100,15,20;rest,5,8"
          - name: b
            tiers: "rest,5,8"
            context: 2
    """)
    loaded = load_set(str(path))
    assert isinstance(loaded, ExperimentSet)
    assert (loaded.name, loaded.description, loaded.names()) == ("mine", "My set", ["a", "b"])
    assert [(e.context, e.seed) for e in loaded.experiments] == [(6, 3), (2, 3)]
    assert loaded.source.endswith("mine.yaml")


def test_based_on_starts_from_the_other_experiment(tmp_path: Path) -> None:
    path = write_set(tmp_path, "mine", """
        experiments:
          - name: child
            based_on: base
            context: 6
          - name: base
            tiers: "100,11,8;rest,5,8"
            seed: 7
            empty_value: 0.5
            description: the base
          - name: grandchild
            based_on: child
            tiers: "rest,3,8"
    """)
    base, child, grandchild = (load_set(str(path)).select([n]).experiments[0]
                               for n in ("base", "child", "grandchild"))
    assert (str(child.tiers), child.context, child.seed, child.empty_value) == (
        "100,11,8;rest,5,8", 6, 7, 0.5)
    assert child.based_on == "base" and child.description == ""  # notes are not inherited
    assert (str(grandchild.tiers), grandchild.context, grandchild.seed) == ("rest,3,8", 6, 7)
    assert base.context == 4 and base.based_on is None


def test_based_on_can_use_an_included_experiment(tmp_path: Path) -> None:
    write_set(tmp_path, "parent", """
        experiments:
          - {name: p, tiers: "100,9,9;rest,5,8", context: 7}
    """)
    path = write_set(tmp_path, "child", """
        include: [parent]
        experiments:
          - {name: c, based_on: p, seed: 1}
    """)
    loaded = load_set(str(path))
    assert loaded.names() == ["p", "c"]
    child = loaded.experiments[1]
    assert (str(child.tiers), child.context, child.seed) == ("100,9,9;rest,5,8", 7, 1)


def test_includes_come_first_and_a_diamond_counts_once(tmp_path: Path) -> None:
    write_set(tmp_path, "root", "experiments: [{name: r, tiers: 'rest,1,1'}]")
    write_set(tmp_path, "left", "include: [root]\nexperiments: [{name: l, tiers: 'rest,1,2'}]")
    write_set(tmp_path, "right", "include: root\nexperiments: [{name: r2, tiers: 'rest,1,3'}]")
    path = write_set(tmp_path, "top", "include: [left, right]\nexperiments: [{name: t, tiers: 'rest,1,4'}]")
    assert load_set(str(path)).names() == ["r", "l", "r2", "t"]


def test_include_only_set(tmp_path: Path) -> None:
    write_set(tmp_path, "base", "experiments: [{name: a, tiers: 'rest,1,1'}]")
    path = write_set(tmp_path, "alias", "description: same as base\ninclude: [base]")
    assert load_set(str(path)).names() == ["a"]


SET_ERRORS = [
    # (file body, fragments the one-line message must contain)
    ("experiments:\n  - name: a\n    tiers: 'rest,5,8;100,1,1'\n",
     ["experiment 'a'", "tiers: 'rest' must be the last tier", "e.g."]),
    ("experiments:\n  - name: a\n    tiers: '100,15;rest,5,8'\n",
     ["experiment 'a'", "tiers:", "has 2 field(s), needs 3"]),
    ("experiments:\n  - name: a\n    tiers: '100,0,8;rest,5,8'\n",
     ["experiment 'a'", "tiers:", "neurons must be from 1"]),
    ("experiments:\n  - name: a\n    tiers: '100,9,99;rest,5,8'\n",
     ["experiment 'a'", "tiers:", "bits must be from 1 to 64"]),
    ("experiments:\n  - name: a\n    tiers: 'rest,5,8'\n    contxt: 5\n",
     ["experiment 'a'", "unknown key 'contxt'", "allowed keys:"]),
    ("experiments:\n  - name: a\n    tiers: 'rest,5,8'\n    context: 40\n",
     ["experiment 'a'", "context:", "16"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8'}\n  - {name: a, tiers: 'rest,5,9'}\n",
     ["experiment 'a'", "name: duplicate", "unique name"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8'}\n  - {tiers: 'rest,5,9'}\n",
     ["experiment #2 (no name)", "name: missing"]),
    ("experiments:\n  - {name: a, based_on: nope}\n",
     ["experiment 'a'", "based_on: no experiment 'nope'", "use one of: a"]),
    ("experiments:\n  - {name: a, based_on: b}\n  - {name: b, based_on: a}\n",
     ["experiment 'a'", "based_on: cycle a -> b -> a"]),
    ("experiments:\n  - {name: a, based_on: a}\n",
     ["experiment 'a'", "based_on: cycle a -> a"]),
    ("experimnts: []\n", ["unknown key 'experimnts'", "allowed keys: description, include"]),
    ("defaults: {contxt: 4}\nexperiments: [{name: a, tiers: 'rest,5,8'}]\n",
     ["defaults: unknown key 'contxt'", "allowed keys:"]),
    ("experiments: {name: a}\n", ["experiments: must be a list"]),
    ("experiments:\n  - just_a_string\n", ["experiment #1", "must be a mapping"]),
    ("description: nothing here\n", ["experiments:", "no experiments"]),
    ("- a\n- b\n", ["top level must be a mapping"]),
    ("include: [no_such_set_here]\n", ["include: unknown set 'no_such_set_here'", "available sets:"]),
    ("experiments:\n  - name: a\n    tiers: 'rest,5,8'\n  context: 4\n", ["YAML syntax error at line"]),
    ("experiments:\n  - name: a\n    tiers: 'rest,5,8'\n    name: b\n",
     ["line 4", "key 'name' appears twice"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8', gating: {neurons: 0, bits: 12}}\n",
     ["experiment 'a'", "gating: neurons:", "from 1 to 65,536"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8', gating: {neurons: 8}}\n",
     ["experiment 'a'", "gating: bits: missing"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8', gating: {neurons: 8, bits: 40}}\n",
     ["experiment 'a'", "gating: bits: 40 is above sparse_max_bits 30", "use at most 30"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,8', lsh_bits: 40}\n",
     ["experiment 'a'", "lsh_bits:", "from 1 to 32"]),
    ("experiments:\n  - {name: a, tiers: 'rest,5,40', optimize: {strategy: GA}}\n",
     ["experiment 'a'", "optimize: tier 1", "LSH memory", "raise sparse_max_bits to 40"]),
]


@pytest.mark.parametrize("body, fragments", SET_ERRORS)
def test_set_file_errors_are_one_line_and_name_the_file(tmp_path: Path, body: str, fragments) -> None:
    path = write_set(tmp_path, "bad", body)
    message = config_error(lambda: load_set(str(path)), *fragments)
    assert message.startswith(str(path)) or message.startswith("bad.yaml")


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write_set(tmp_path, "bad", "description: x\nexperiments:\n  - name: [a\n")
    message = config_error(lambda: load_set(str(path)), "bad.yaml", "YAML syntax error at line ")
    assert "line 4" in message or "line 3" in message


def test_duplicate_name_across_an_include(tmp_path: Path) -> None:
    write_set(tmp_path, "base", "experiments: [{name: a, tiers: 'rest,1,1'}]")
    path = write_set(tmp_path, "top", "include: [base]\nexperiments: [{name: a, tiers: 'rest,1,2'}]")
    config_error(lambda: load_set(str(path)), "top.yaml", "experiment 'a'", "included set")


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    write_set(tmp_path, "one", "include: [two]\nexperiments: [{name: a, tiers: 'rest,1,1'}]")
    write_set(tmp_path, "two", "include: [one]\nexperiments: [{name: b, tiers: 'rest,1,1'}]")
    config_error(lambda: load_set(str(tmp_path / "one.yaml")), "include cycle one -> two -> one")
    write_set(tmp_path, "self", "include: [self]\nexperiments: [{name: a, tiers: 'rest,1,1'}]")
    config_error(lambda: load_set(str(tmp_path / "self.yaml")), "include cycle self -> self")


def test_error_in_an_included_file_names_that_file(tmp_path: Path) -> None:
    write_set(tmp_path, "inner", "experiments: [{name: a, tiers: 'rest,0,1'}]")
    path = write_set(tmp_path, "outer", "include: [inner]\nexperiments: [{name: b, tiers: 'rest,1,1'}]")
    message = config_error(lambda: load_set(str(path)), "inner.yaml", "experiment 'a'", "neurons")
    assert "outer.yaml" not in message


def test_missing_set_file_and_unknown_set_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config_error(lambda: load_set(str(tmp_path / "nope.yaml")), "nope.yaml", "not found")
    message = config_error(lambda: load_set("nope"), "unknown set 'nope'", "available sets:")
    for name in PACKAGED:
        assert name in message


def test_select_keeps_order_and_rejects_unknown_names() -> None:
    quick = load_set("quick")
    assert quick.select(["context_6_sparse", "tier0_16bit"]).names() == ["tier0_16bit", "context_6_sparse"]
    config_error(lambda: quick.select(["nope"]), "no experiment 'nope'", "tier0_16bit")


def test_a_name_without_its_seed_selects_every_seed_of_it() -> None:
    findings = load_set("findings")  # seeds: 3
    assert findings.select(["uniform_8.native"]).names() == [f"uniform_8.native.s{k}" for k in range(3)]
    assert findings.select(["uniform_8.native.s1"]).names() == ["uniform_8.native.s1"]
    message = config_error(lambda: findings.select(["uniform_9"]), "no experiment 'uniform_9'", "uniform_8.native")
    assert "uniform_8.native.s0" not in message  # the seeds are not listed one by one


# ---------------------------------------------------------------- lookup order


def test_sets_dirs_puts_the_current_folder_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert [d.resolve() for d in sets_dirs()] == [REPO_SETS.resolve()]  # no ./sets here
    (tmp_path / "sets").mkdir()
    assert [d.resolve() for d in sets_dirs()] == [(tmp_path / "sets").resolve(), REPO_SETS.resolve()]


def test_sets_dirs_prefers_sets_inside_an_installed_package(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "site" / "ramsweep"
    (package / "sets").mkdir(parents=True)  # the wheel's force-included copy of sets/
    monkeypatch.setattr(sets_module, "PACKAGE_DIR", package)
    monkeypatch.chdir(tmp_path)
    assert [d.resolve() for d in sets_dirs()] == [(package / "sets").resolve()]


def test_a_sets_folder_beside_an_installed_package_is_not_taken_for_the_packaged_sets(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "ramsweep"  # installed without its sets/ (or an old wheel)
    package.mkdir(parents=True)
    (tmp_path / "site-packages" / "sets").mkdir()  # somebody else's folder next to it
    (tmp_path / "site-packages" / "sets" / "quick.yaml").write_text("experiments: [{name: theirs, tiers: 'rest,1,1'}]\n")
    monkeypatch.setattr(sets_module, "PACKAGE_DIR", package)
    monkeypatch.chdir(tmp_path)
    assert sets_dirs() == []
    (tmp_path / "site-packages" / "pyproject.toml").write_text('[project]\nname = "ramsweep"\n')  # our source tree
    assert [d.resolve() for d in sets_dirs()] == [(tmp_path / "site-packages" / "sets").resolve()]


def test_a_set_in_the_current_folder_shadows_the_packaged_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sets").mkdir()
    write_set(tmp_path / "sets", "quick", "experiments: [{name: mine, tiers: 'rest,1,1'}]")
    write_set(tmp_path / "sets", "mine", "include: [standard]\nexperiments: [{name: x, tiers: 'rest,1,1'}]")
    assert load_set("quick").names() == ["mine"]
    # includes resolve beside the including file first: the packaged standard keeps the
    # packaged quick, so a local quick.yaml cannot silently change what `standard` means
    assert load_set("mine").names() == load_set("standard").names() + ["x"]
    assert load_set("standard").names()[0] == "tier0_16bit"
    assert ("quick", 1, "") in available_sets()


# ---------------------------------------------------------------- packaged sets


def test_available_sets_lists_the_packaged_sets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./sets: only the packaged ones
    found = available_sets()
    assert [name for name, _, _ in found] == PACKAGED
    counts = {name: count for name, count, _ in found}
    assert counts == {"quick": 4, "standard": 6, "extended": 10, "baseline": 9, "asymmetric": 6, "grid": 729,
                      "search": 6, "gating": 18, "findings": 48, "bitwise": 87, "phases": 9}
    assert all(description for _, _, description in found)


def test_standard_and_extended_build_on_quick() -> None:
    quick, standard, extended = (load_set(n).names() for n in ("quick", "standard", "extended"))
    assert quick == ["tier0_16bit", "balanced_14bit", "neurons_20_tier0", "context_6_sparse"]
    assert standard == quick + ["tier0_18bit", "neurons_25_gradient"]
    assert extended == standard + ["tier0_20bit", "all_sparse_16bit", "context_8_high_cap", "extreme_tier0"]


# The seeds' tables, as (tiers, context): the sets must say exactly this.
SEED_CONFIGS = {
    "tier0_16bit": ("100,15,16;400,10,10;rest,5,8", 4),
    "balanced_14bit": ("100,12,14;400,8,12;rest,5,10", 4),
    "neurons_20_tier0": ("100,20,12;400,12,10;rest,7,8", 4),
    "context_6_sparse": ("100,12,14;400,8,10;rest,5,8", 6),
    "tier0_18bit": ("100,15,18;400,10,12;rest,5,8", 4),
    "neurons_25_gradient": ("100,25,14;400,15,10;rest,7,8", 4),
    "tier0_20bit": ("100,15,20;400,10,12;rest,5,8", 4),
    "all_sparse_16bit": ("100,15,16;400,12,16;rest,8,16", 4),
    "context_8_high_cap": ("100,15,12;400,10,10;rest,7,8", 8),
    "extreme_tier0": ("100,30,16;400,12,12;rest,5,8", 5),
    "asymmetric_extreme_t0": ("100,25,24;400,8,10;rest,5,8", 8),
    "asymmetric_expanded_t0": ("200,25,20;300,8,10;rest,4,8", 8),
    "two_tier_simple": ("500,15,16;rest,4,6", 8),
    "five_tier_gradient": ("50,37,22;50,31,20;400,11,12;20000,7,10;rest,3,11", 8),
    "uniform_20bit_ctx8": ("100,15,20;400,10,20;rest,5,20", 8),
    "five_tier_best_week5": ("50,15,20;50,13,18;400,9,10;20000,7,9;rest,5,8", 4),
    "baseline_8bit": ("100,11,8;400,7,8;rest,5,8", 4),
    "context_5": ("100,11,8;400,7,8;rest,5,8", 5),
    "context_6": ("100,11,8;400,7,8;rest,5,8", 6),
    "neurons_3_uniform": ("100,3,8;400,3,8;rest,3,8", 4),
    "neurons_11_uniform": ("100,11,8;400,11,8;rest,11,8", 4),
    "bits_12_uniform": ("100,11,12;400,7,12;rest,5,12", 4),
}


def test_packaged_sets_match_the_seed_tables() -> None:
    found = {e.name: e for name in PACKAGED for e in load_set(name).experiments}
    for name, (tiers, context) in SEED_CONFIGS.items():
        assert (str(found[name].tiers), found[name].context) == (tiers, context), name
    # EMPTY = 0.0 everywhere but in the findings set's deliberate test of the research's older 0.5
    assert all((e.empty_value == 0.0) != ("empty_half" in e.name) and e.description for e in found.values())


@pytest.mark.parametrize("set_name", PACKAGED)
def test_packaged_sets_fit_gpt2_and_word_vocabularies(set_name: str) -> None:
    for exp in load_set(set_name).experiments:
        exp.check_against_data(50_257)
        if exp.name in NEEDS_LARGE_VOCAB:
            config_error(lambda: exp.check_against_data(13_000), exp.name, "sum to 20,500")
        else:
            exp.check_against_data(13_000)


def test_seeds_run_an_experiment_once_per_seed(tmp_path: Path) -> None:
    path = tmp_path / "seeds.yaml"
    path.write_text(textwrap.dedent("""\
        defaults: {seeds: 2}
        experiments:
          - {name: a, tiers: "rest,5,8", seed: 10}
          - {name: b, tiers: "rest,5,8", seeds: [7, 3]}
          - {name: c, based_on: a, context: 3, seeds: 1}
        """))
    loaded = load_set(str(path))
    assert [(e.name, e.seed) for e in loaded.experiments] == [
        ("a.s10", 10), ("a.s11", 11), ("b.s7", 7), ("b.s3", 3), ("c.s10", 10)]
    assert loaded.experiments[4].context == 3
    reseeded = loaded.with_seeds([0, 1])
    assert [(e.name, e.seed) for e in reseeded.experiments] == [
        ("a.s0", 0), ("a.s1", 1), ("b.s0", 0), ("b.s1", 1), ("c.s0", 0), ("c.s1", 1)]
    assert [e.name for e in load_set("quick").with_seeds([0, 1, 2]).experiments][:3] == [
        "tier0_16bit.s0", "tier0_16bit.s1", "tier0_16bit.s2"]


@pytest.mark.parametrize("seeds, fragment", [
    ("0", "seeds: 0 is not from 1 to 100"), ("[1, 1]", "is not a number of seeds or a list"),
    ("[-1]", "is not a number of seeds"), ("'three'", "is not a number of seeds"),
])
def test_bad_seeds_are_one_line_errors(tmp_path: Path, seeds: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f'experiments:\n  - {{name: a, tiers: "rest,5,8", seeds: {seeds}}}\n')
    config_error(lambda: load_set(str(path)), "bad.yaml", "experiment 'a'", fragment)


def test_every_experiment_field_declares_its_roles_once() -> None:
    """config.roles is the registry: the key holds the fields it says, only where they are set
    (lsh_bits only where a tier is hashed), and a field without a Role cannot be declared."""
    from typing import Annotated

    from ramsweep.config import FIXES, Role, roles

    found = roles()
    assert list(found) == list(Experiment.model_fields)
    assert all(FIXES[name] == role.fix for name, role in found.items())
    assert {n for n, r in found.items() if r.key == "never"} == {"name", "based_on", "description", "notes", "device",
                                                                 "memory"}
    every = Experiment(name="a", tiers="100,15,40;rest,5,8", optimize=None, gating={"neurons": 3, "bits": 8},
                       encoding="appearance", gray=True)
    # a tiered experiment: architecture at its default and no bitwise block, out of the key (older keys stay)
    assert set(every.spec()) == {n for n, r in found.items() if r.key != "never"} - {"optimize", "architecture",
                                                                                     "bitwise"}
    bitwise = Experiment(name="b", architecture="bitwise", bitwise={"neurons": 3, "bits": 8}, empty_value=0.5)
    assert set(bitwise.spec()) == {"architecture", "bitwise", "context", "empty_value", "seed"}  # no tiered field
    assert "lsh_bits" not in Experiment(name="a", tiers="100,15,20;rest,5,8", lsh_bits=12).spec()

    class Unsure(Experiment):
        extra: Annotated[int, "no role"] = 0

    with pytest.raises(TypeError, match="Unsure.extra has no Role"):
        roles(Unsure)
    assert Role("fix").shown and not Role("fix", key="never").shown and Role("fix", key="never", compared=True).shown
