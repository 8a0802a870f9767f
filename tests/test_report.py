"""`ramsweep.report.report` called directly: comparable groups, ranking by any metric in its
direction, filters, several files, failed experiments shown, and every output format."""

import csv
import functools
import io
import itertools

import orjson
import pytest
from conftest import DATA, baseline_record, experiment_record

from ramsweep.errors import ConfigError, StoreError
from ramsweep.report import report
from ramsweep.report.rows import Filters, load, metric
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.store import open_store
from ramsweep.text import pct

GPT2 = {**DATA, "tokenizer": "gpt2", "vocab_size": 50257, "fingerprint": "gp"}


def add(path, *rows):
    store = open_store(path)
    for row in rows:
        store.append(parse_record(row))
    return path


@pytest.fixture
def results(results_path):
    return add(results_path,
               experiment_record("old_b", "kb", 9000.0, 8000.0), experiment_record("a", "ka", 7000.0, 9500.0),
               experiment_record("broken", "kc", status="failed"),
               experiment_record("b", "kb", 8000.0, 7500.0),  # a re-run of key kb: the latest counts
               baseline_record("kn_bigram", 90.0, 2.2), baseline_record("uniform", 13814.0, 4.0))


def json_rows(*args, **kwargs):
    return orjson.loads(report(*args, format="json", **kwargs))


def test_ranked_by_validation_by_default_latest_record_per_key(results):
    rows = [r for r in json_rows(results) if r["status"] == "ok"]
    ranked = sorted((r for r in rows if r["kind"] == "experiment"), key=lambda r: r["rank"])
    assert [(r["rank"], r["name"], r["val_ppl"]) for r in ranked] == [(1, "b", 7500.0), (2, "a", 9500.0)]
    assert {r["name"] for r in rows if r["kind"] == "baseline"} == {"kn_bigram", "uniform"}
    table = report(results, "table")
    assert "ranked by val_ppl, lowest first" in table
    assert table.index("kn_bigram (baseline)") < table.index(" b ") < table.index(" a ") < table.index("uniform (base")


def test_failed_experiments_appear_with_their_error(results):
    table = report(results, "table")
    assert "Failed and interrupted" in table and "broken" in table and "RuntimeError: boom" in table
    md = report(results, "md")
    assert "| broken | failed | 2026-11-26T00:00:02+00:00 | RuntimeError: boom |" in md
    failed = [r for r in json_rows(results) if r["status"] == "failed"]
    assert [(r["name"], r["rank"], r["error"]) for r in failed] == [("broken", None, "RuntimeError: boom")]


@pytest.mark.parametrize("name, lower_is_better", [
    ("val_ppl", True), ("test_ppl", True), ("val_cal_ppl", True), ("test_bpb", True), ("val_ce", True),
    ("test_acc", False), ("val_acc", False), ("tier0.val_ppl", True), ("tier0.test_acc", False),
    ("tier0.val_empty", True), ("tier0.test_target_empty", True),
])
def test_every_metric_sorts_in_its_direction(tmp_path, name, lower_is_better):
    rows = []
    for i, value in enumerate([0.3, 0.1, 0.2]):
        row = experiment_record(f"e{i}", f"k{i}")
        for split in ("validation", "test"):
            s = row["metrics"][split] = {**row["metrics"][split]}
            s.update(ppl=100 + value, ce=value, accuracy=value, bpb=value, calibrated={"temperature": 0.1, "ppl": value})
            s["tiers"] = [{**s["tiers"][0], "ppl": value, "accuracy": value, "empty_rate": value,
                           "target_empty_rate": value}]
        rows.append(row)
    path = add(tmp_path / "r.jsonl", *rows)
    ranked = sorted((r for r in json_rows(path, sort_by=name)), key=lambda r: r["rank"])
    expected = ["e1", "e2", "e0"] if lower_is_better else ["e0", "e2", "e1"]
    assert [r["name"] for r in ranked] == expected
    assert metric(name).lower_is_better is lower_is_better


def test_two_data_groups_in_one_file_never_share_a_ranking(tmp_path):
    path = add(tmp_path / "r.json",
               experiment_record("word_good", "k1", val_ppl=5000.0), experiment_record("word_bad", "k2", val_ppl=6000.0),
               experiment_record("gpt2_only", "k3", val_ppl=20000.0, data=GPT2),
               baseline_record("uniform"), {**baseline_record("uniform", 50257.0), "key": "base-g", "data": GPT2})
    rows = json_rows(path)
    by_name = {r["name"] + r["group"][:8]: r for r in rows}
    assert by_name["word_goodkjv/word"]["rank"] == 1 and by_name["word_badkjv/word"]["rank"] == 2
    assert by_name["gpt2_onlykjv/gpt2"]["rank"] == 1  # first of its own group, not third of one ranking
    table = report(path, "table")
    word, gpt2 = table.index("kjv/word fast, 13,814 tokens"), table.index("kjv/gpt2 fast, 50,257 tokens")
    assert word < table.index("word_good") < table.index("word_bad") < gpt2 < table.index("gpt2_only")
    assert table[gpt2:].count("uniform (baseline)") == 1  # each group has its own baselines


def test_filters_keep_the_baselines(tmp_path):
    path = add(tmp_path / "r.json", experiment_record("tier0_a", "k1", set="quick"),
               experiment_record("tier0_b", "k2", set="grid", val_ppl=100.0), experiment_record("other", "k3", set="quick"),
               baseline_record("uniform"))
    names = lambda **f: [r.name for r in load([path]) if Filters(**f).keep(r)]  # noqa: E731
    assert names(set="quick") == ["tier0_a", "other", "uniform"]
    assert names(name="tier0_*") == ["tier0_a", "tier0_b", "uniform"]
    table = report(path, "table", filters=Filters(top=1))
    assert "tier0_b" in table and "tier0_a" not in table and "uniform (baseline)" in table


def test_several_files_are_read_as_one(tmp_path):
    one = add(tmp_path / "one.json", experiment_record("a", "ka", val_ppl=300.0))
    two = add(tmp_path / "two.jsonl", experiment_record("b", "kb", val_ppl=200.0), baseline_record())
    rows = json_rows([one, two])
    assert sorted((r["rank"], r["name"]) for r in rows if r["kind"] == "experiment") == [(1, "b"), (2, "a")]


def test_the_wide_csv_has_a_row_per_record_and_per_tier_columns(results):
    rows = list(csv.DictReader(io.StringIO(report(results, "csv"))))
    assert sorted(r["name"] for r in rows) == ["a", "b", "broken", "kn_bigram", "uniform"]
    a = next(r for r in rows if r["name"] == "a")
    assert a["key"] == "ka" and a["status"] == "ok" and a["seed"] == "0" and a["set"] == "s"
    assert a["group"].startswith("kjv/word fast") and a["started"] and a["finished"]
    assert float(a["tier0.test_ppl"]) == 7000.0 and a["tier0_bits"] == "20" and float(a["tier0.val_empty"]) == 0.5


def test_bad_options_and_missing_files_are_user_errors(results, tmp_path):
    with pytest.raises(ConfigError, match="--format"):
        report(results, "xml")
    with pytest.raises(ConfigError, match="--sort-by: 'train_ppl' is not a metric"):
        report(results, "json", sort_by="train_ppl")
    with pytest.raises(StoreError, match="no such results file"):
        report(tmp_path / "missing.json")


def seeded(name, context, seed, val_ppl):
    row = experiment_record(f"{name}.s{seed}", f"{name}-{seed}", val_ppl=val_ppl)
    row["spec"] = {**row["spec"], "name": f"{name}.s{seed}", "seed": seed, "context": context}
    return row


def test_seeds_give_mean_and_sample_sd_and_mark_differences_within_noise(tmp_path):
    from ramsweep.report.rows import by_seeds

    path = add(tmp_path / "r.json",
               *(seeded("a", 4, s, v) for s, v in enumerate([100.0, 110.0, 120.0])),  # 110 ± 10
               *(seeded("b", 5, s, v) for s, v in enumerate([105.0, 115.0, 125.0])),  # 115 ± 10: 5 from a
               *(seeded("c", 6, s, v) for s, v in enumerate([200.0, 201.0, 199.0])),  # 200 ± 1: 90 from a
               baseline_record("unigram", 150.0))
    records = load([path])
    found = {s.name: (x.mean, round(x.sd, 9), x.n, noise) for s, x, noise in by_seeds(records, metric("val_ppl"))}
    # two standard errors of a - b: 2 * sqrt(10²/3 + 10²/3) = 16.3 > 5; of a - c: 2 * sqrt(10²/3 + 1²/3) = 11.6 < 90
    assert found == {"a": (110.0, 10.0, 3, False), "b": (115.0, 10.0, 3, True), "c": (200.0, 1.0, 3, False)}
    against_c = {s.name: noise for s, _, noise in by_seeds(records, metric("val_ppl"), "c")}
    assert against_c == {"a": False, "b": False, "c": False}
    against_b = {s.name: noise for s, _, noise in by_seeds(records, metric("val_ppl"), "b")}
    assert against_b == {"a": True, "b": False, "c": False}
    against_unigram = {s.name: noise for s, _, noise in by_seeds(records, metric("val_ppl"), "unigram")}
    assert against_unigram == {"a": False, "b": False, "c": False}  # 150 is 40 from a: 2 * 10/sqrt(3) = 11.5
    with pytest.raises(ConfigError, match="--reference: no experiment or baseline 'nope'"):
        by_seeds(records, metric("val_ppl"), "nope")
    table = report(path, "table")
    assert "Over seeds" in table and "110 ± 10 (3 seeds)" in table and "≈ within noise" in table
    md = report(path, "md")
    assert "| b | 3 | 115 ± 10 (3 seeds) | +5 | ≈ |" in md and "| c | 3 | 200 ± 1 (3 seeds) | +90 |  |" in md


def test_compare_shows_what_differs_and_every_figure_side_by_side(tmp_path):
    from ramsweep.report import compare

    other = experiment_record("wide", "kw", 6000.0, 6500.0)
    other["spec"] = {**other["spec"], "name": "wide", "tiers": "100,15,22;rest,5,8", "context": 6}
    path = add(tmp_path / "r.jsonl", experiment_record("a", "ka", 7000.0, 9500.0), other,
               experiment_record("failed_one", "kf", status="failed"))
    records = compare.chosen([path], ["a", "wide"])[0]
    assert dict(compare.differences(records)) == {"tiers": ["100,15,20;rest,5,8", "100,15,22;rest,5,8"],
                                                  "context": ["4", "6"]}
    figures = dict(compare.figures(records))
    assert figures["validation PPL"] == ["9,500", "6,500"] and figures["tier 0 test PPL"] == ["7,000", "6,000"]
    assert figures["tier 0 empty-hit rate"] == ["50.00%", "50.00%"]
    with pytest.raises(ConfigError, match="no completed experiment 'failed_one'"):
        compare.chosen([path], ["a", "failed_one"])[0]
    with pytest.raises(ConfigError, match="name two or more"):
        compare.chosen([path], ["a"])[0]
    md = compare.markdown(records)
    assert "| | a | wide |" in md and "| context | 4 | 6 |" in md


def test_lineage_of_a_three_level_based_on_chain_and_cards(tmp_path):
    def child(name, key, val_ppl, based_on, **spec):
        row = experiment_record(name, key, val_ppl=val_ppl)
        row["spec"] = {**row["spec"], "name": name, "based_on": based_on, **spec}
        return row

    root = experiment_record("base", "k0", val_ppl=10000.0)
    root["spec"] = {**root["spec"], "description": "the week-5 starting point", "notes": "flat after 12 bits\nrerun"}
    path = add(tmp_path / "r.json", root, child("wider", "k1", 9000.0, "base", tiers="100,15,22;rest,5,8"),
               child("longer", "k2", 9900.0, "wider", tiers="100,15,22;rest,5,8", context=6),
               child("unrelated", "k3", 8000.0, None))
    md = report(path, "md", cards=10)
    tree = md[md.index("### Lineage"):md.index("### Experiment cards")]
    assert "- **base** (val PPL 10,000)" in tree
    assert "  - **wider**: tiers 100,15,20;rest,5,8 → 100,15,22;rest,5,8; val PPL 10,000 → 9,000 (-10.0%)" in tree
    assert "    - **longer**: context 4 → 6; val PPL 9,000 → 9,900 (+10.0%)" in tree
    assert "unrelated" not in tree  # no parent, no children: not part of any lineage
    cards = md[md.index("### Experiment cards"):]
    assert "### base" in cards and "*the week-5 starting point*" in cards and "> flat after 12 bits" in cards
    assert "- based on `wider`" in cards and "| validation | 9,900 |" in cards
    table = report(path, "table")
    assert "Lineage (based_on)" in table and "longer: context 4 → 6" in table


def test_the_grid_heatmap_cells_and_main_effects_match_the_records(tmp_path):
    from ramsweep.report.grid_view import grids

    def cell(bits):
        name = "grid_b" + "_".join(f"{b:02d}" for b in bits)
        row = experiment_record(name, name, val_ppl=1000.0 + 100 * bits[0] + 10 * bits[1] + bits[2])
        row["spec"] = {**row["spec"], "name": name, "tiers": ";".join(
            f"{c},{n},{b}" for c, n, b in zip(("100", "400", "rest"), (15, 10, 5), bits))}
        return row

    done = [bits for bits in itertools.product((8, 9), repeat=3) if bits != (8, 9, 8)]  # one cell not run yet
    path = add(tmp_path / "grid.jsonl", *(cell(b) for b in done), experiment_record("other_shape", "ko"))
    (grid,) = grids(load([path]), metric("val_ppl"))
    assert grid.levels == ((8, 9), (8, 9), (8, 9)) and len(grid.cells) == 7
    value = lambda b: 1000.0 + 100 * b[0] + 10 * b[1] + b[2]  # noqa: E731
    tier0 = grid.main_effects()[0]
    assert tier0[8] == sum(value(b) for b in done if b[0] == 8) / 3  # (8, 9, 8) is missing: three cells
    assert tier0[9] == sum(value(b) for b in done if b[0] == 9) / 4
    (_, at8), (_, at9) = grid.panels()
    assert at8 == [[value((8, 8, 8)), None], [value((9, 8, 8)), value((9, 9, 8))]]
    assert at9 == [[value((8, 8, 9)), value((8, 9, 9))], [value((9, 8, 9)), value((9, 9, 9))]]
    md = report(path, "md")
    assert "### Grid `100,15,B;400,10,B;rest,5,B, context 4, negatives 1000, empty value 0.0`: val_ppl, 7 of 8 cells" in md
    assert "| 8 | 1,888 | · |" in md  # tier 2 at 8 bits: (8, 8, 8) ran, (8, 9, 8) not yet
    assert "main effect" in report(path, "table", width=200)


def test_the_wide_csv_loads_in_pandas_as_it_is(results):
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(io.StringIO(report(results, "csv")))
    assert len(frame) == 5 and {"key", "seed", "set", "status", "device", "started", "group"} <= set(frame.columns)
    assert frame["tier0.test_ppl"].dtype.kind == "f" and frame.loc[frame["name"] == "a", "tier0.test_ppl"].item() == 7000.0
    assert frame.loc[frame["name"] == "broken", "error"].item() == "RuntimeError: boom"


def test_the_terminal_table_fits_80_columns_and_says_what_it_left_out(results):
    narrow = report(results, "table", width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    assert "left out at this width: bpb, s, device" in narrow and "ranked by val_ppl" in narrow
    wide = report(results, "table", width=140)
    assert "left out" not in wide and "device" in wide


@pytest.mark.parametrize("tiers", [1, 2, 5])
def test_grid_views_for_one_to_five_tiers(tmp_path, tiers):
    from ramsweep.report.grid_view import grids

    counts = ("100", "400", "2000", "6000", "rest")[-tiers:] if tiers > 1 else ("rest",)
    rows = []
    for bits in itertools.product((8, 9, 10) if tiers == 1 else (8, 9), repeat=tiers):
        name = "grid_b" + "_".join(f"{b:02d}" for b in bits)
        row = experiment_record(name, name, val_ppl=1000.0 + sum(10**i * b for i, b in enumerate(bits)))
        row["spec"] = {**row["spec"], "name": name, "tiers": ";".join(f"{c},5,{b}" for c, b in zip(counts, bits))}
        rows.append(row)
    path = add(tmp_path / "grid.jsonl", *rows)
    (grid,) = grids(load([path]), metric("val_ppl"))
    effects = grid.main_effects()
    assert len(effects) == tiers and all(e[9] - e[8] == 10**t for t, e in enumerate(effects))  # exact: 10^t per bit
    panels = grid.panels()
    assert len(panels) == (2 if tiers >= 3 else 1)
    if tiers == 5:  # a cell beyond tier 2 is the mean over the later tiers
        assert panels[0][1][0][0] == sum(1000.0 + 8 + 80 + 800 + 1000 * b3 + 10000 * b4
                                         for b3 in (8, 9) for b4 in (8, 9)) / 4
    assert "Main effect" in report(path, "md")


def test_a_search_shows_where_it_started_and_what_was_chosen(tmp_path):
    """The report puts a search's start (the drawn wiring) beside the wiring it chose, on the
    fitness slice, validation and test; the lineage names the search as what changed."""
    start = {"ppl": 9000.0, "accuracy": 0.1}
    search = {"strategy": "ga+ts", "fitness": "ce", "units": 2, "improved": 1, "evaluations": 3160, "search_s": 169.0,
              "stopped": None, "chosen": "final", "fitness_before": {"value": 9.34}, "fitness_after": {"value": 9.31},
              "before": {"validation": start, "test": {"ppl": 8800.0, "accuracy": 0.119}}}
    base = experiment_record(name="base", key="k1")
    searched = experiment_record(name="gats", key="k2", val_ppl=8500.0, test_ppl=8400.0, search=search,
                                 spec={"name": "gats", "tiers": "100,15,20;rest,5,8", "context": 4, "based_on": "base",
                                       "optimize": {"strategy": "ga+ts", "fitness": "ce"}})
    path = tmp_path / "results.json"
    path.write_bytes(orjson.dumps({"schema": 1, "results": [base, searched]}))
    md = report(path, format="md")
    assert "| gats | ga+ts CE, 1 of 2 units beat their start | 9.34 → 9.31 | 9,000 → 8,500 | 8,800 → 8,400 |" in md
    assert "gats**: optimize none → ga+ts CE" in md
    assert "Connectivity search" in report(path)  # the terminal table too


def test_the_findings_report_judges_each_finding_per_encoding_against_the_seed_spread(tmp_path):
    """Asymmetric beats uniform 20 clearly, loses to uniform 8 clearly, and EMPTY 0.0 against
    0.5 is within the spread; under another encoding the first finding reverses."""

    from ramsweep.report import report
    from ramsweep.report.findings import ASYMMETRIC, UNIFORM_8, UNIFORM_20

    def runs(config, tiers, empty, encoding, ppls):
        spec = {"tiers": tiers, "context": 4, "empty_value": empty}
        if encoding != "native":
            spec["encoding"] = encoding
        return [experiment_record(name=f"{config}.{encoding}.s{seed}", key=f"{config}-{encoding}-{seed}", test_ppl=p,
                                  spec={**spec, "name": f"{config}.{encoding}.s{seed}", "seed": seed})
                for seed, p in enumerate(ppls)]

    records = [baseline_record("unigram", 300.0)]
    records += runs("asym", ASYMMETRIC, 0.0, "native", [100, 102, 101])
    records += runs("u20", UNIFORM_20, 0.0, "native", [200, 201, 203])
    records += runs("u8", UNIFORM_8, 0.0, "native", [50, 52, 51])
    records += runs("half", ASYMMETRIC, 0.5, "native", [99, 104, 100])
    records += runs("asym", ASYMMETRIC, 0.0, "appearance", [300, 302, 301])
    records += runs("u20", UNIFORM_20, 0.0, "appearance", [200, 201, 203])
    path = tmp_path / "findings.json"
    path.write_bytes(orjson.dumps({"schema": 1, "results": records}))
    text = report(path, format="findings")
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in text.splitlines() if line.startswith("| ")}
    assert "**holds**" in rows[("asymmetric 20/12/8 beats uniform 20", "native")]
    assert "**reversed**" in rows[("asymmetric 20/12/8 beats uniform 20", "appearance")]
    assert "**reversed**" in rows[("asymmetric 20/12/8 beats uniform 8", "native")]
    assert "within seed noise" in rows[("EMPTY = 0.0 beats EMPTY = 0.5 (asymmetric)", "native")]
    assert ("asymmetric 20/12/8 beats uniform 8", "appearance") not in rows  # uniform 8 did not run there
    assert "101 ± 1 (3 seeds)" in rows[("asymmetric 20/12/8 beats uniform 20", "native")]
    assert "unigram 300" in text and "PPL floor" in text


def from_experiment(exp, key=None, val_ppl=9000.0):
    """A stored record of `exp` as the runner writes it: its whole dump as the spec, its key."""
    from ramsweep.sweep.plan import experiment_key

    return experiment_record(exp.name, key or experiment_key(exp, DATA["fingerprint"]), val_ppl=val_ppl,
                             spec=exp.model_dump(mode="json"))


@pytest.mark.parametrize("field, value, was, now", [
    ("encoding", "frequency", "native", "frequency"),
    ("gating", {"neurons": 5, "bits": 12}, "none", "5 gate neurons of 12 bits"),
    ("optimize", {"strategy": "ts", "fitness": "accuracy"}, "none", "ts ACCURACY"),
    ("gray", True, "False", "True"),
])
def test_compare_and_lineage_name_a_difference_in_any_key_field(tmp_path, field, value, was, now):
    """Two experiments whose keys differ by one field only: compare and the lineage name it."""
    from typer.testing import CliRunner

    from ramsweep.cli import app
    from ramsweep.config import Experiment
    from ramsweep.report import compare

    base = Experiment(name="base", tiers="100,15,20;rest,5,8")
    other = Experiment(name="other", tiers="100,15,20;rest,5,8", based_on="base", **{field: value})
    one, two = from_experiment(base), from_experiment(other, val_ppl=8000.0)
    assert one["key"] != two["key"]
    path = add(tmp_path / "r.jsonl", one, two)
    assert compare.differences(compare.chosen([path], ["base", "other"])[0]) == [(field, [was, now])]
    side = CliRunner().invoke(app, ["compare", "base", "other", "--results", str(path), "--format", "md"])
    assert side.exit_code == 0 and f"| {field} | {was} | {now} |" in side.stdout
    tree = report(path, "md")
    assert f"**other**: {field} {was} → {now}; val PPL 9,000 → 8,000" in tree and "same config" not in tree


def test_blocks_alike_in_brief_are_told_apart_by_their_entries_and_old_records_read_as_defaults(tmp_path):
    from ramsweep.config import Experiment
    from ramsweep.report import compare

    tiers = "100,15,20;rest,5,8"
    small = Experiment(name="small", tiers=tiers, optimize={"population": 10})
    large = Experiment(name="large", tiers=tiers, optimize={"population": 20})
    old = experiment_record("old", "ko")  # written before encoding, gating and gray existed: read at their defaults
    new = from_experiment(Experiment(name="new", tiers=tiers, negatives=1000))
    path = add(tmp_path / "r.jsonl", from_experiment(small), from_experiment(large), old, new)
    assert compare.differences(compare.chosen([path], ["small", "large"])[0]) == [
        ("optimize", ["ga+ts CE, population 10", "ga+ts CE, population 20"])]
    assert compare.differences(compare.chosen([path], ["old", "new"])[0]) == []


def test_a_field_added_in_one_place_is_in_the_key_compare_lineage_and_csv(tmp_path, monkeypatch):
    """The registry is the model: a field declared once with its Role reaches the key, sets'
    fixes, compare, the lineage, the seed groups and the csv, and leaves every older key as it was."""
    from typing import Annotated

    from pydantic import Field, StrictFloat

    from ramsweep import config
    from ramsweep.config import Experiment, Role
    from ramsweep.errors import ConfigError
    from ramsweep.report import compare
    from ramsweep.report.rows import seed_groups
    from ramsweep.sweep.plan import experiment_key

    class Wider(Experiment):
        dropout: Annotated[StrictFloat, Field(ge=0.0, le=1.0), Role("use a share from 0.0 to 1.0", column=True)] = 0.0

    monkeypatch.setattr(config, "Experiment", Wider)
    tiers, fp = "100,15,20;rest,5,8", DATA["fingerprint"]
    assert experiment_key(Wider(name="a", tiers=tiers), fp) == experiment_key(Experiment(name="a", tiers=tiers), fp)
    dropped = Wider(name="dropped", tiers=tiers, based_on="plain", dropout=0.25)
    assert dropped.spec()["dropout"] == 0.25
    assert experiment_key(dropped, fp) != experiment_key(Wider(name="a", tiers=tiers), fp)
    with pytest.raises(ConfigError, match="dropout: .*; use a share from 0.0 to 1.0"):
        Wider(name="a", tiers=tiers, dropout=2.0)

    plain = experiment_record("plain", experiment_key(Experiment(name="plain", tiers=tiers), fp), val_ppl=9000.0)
    path = add(tmp_path / "r.jsonl", plain, from_experiment(dropped, val_ppl=8000.0))
    assert compare.differences(compare.chosen([path], ["plain", "dropped"])[0]) == [("dropout", ["0.0", "0.25"])]
    assert "**dropped**: dropout 0.0 → 0.25; val PPL 9,000 → 8,000" in report(path, "md")
    assert len(seed_groups(load([path]))) == 2
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report(path, "csv")))}
    assert rows["dropped"]["dropout"] == "0.25" and rows["plain"]["dropout"] == "0.0"


# ---------------------------------------------------------------- bitwise and tiered records, run for real


@functools.cache
def bitwise_and_tiered() -> tuple[dict, dict]:
    """A bitwise and a tiered experiment run on one small corpus (600 tokens: the bands 100 /
    400 / rest are the tiered experiment's tiers), as the runner stores them."""
    from test_optimize import small_corpus

    from ramsweep.config import Experiment
    from ramsweep.sweep.experiment import Task, run_experiment

    corpus = small_corpus(vocab=600)  # 10 bit clusters
    bw = Experiment(name="bw", architecture="bitwise", context=2,
                    bitwise={"neurons": list(range(3, 13)), "bits": 6, "sample_rate": 0.5, "cell_mode": "quad_weighted"})
    tiered = Experiment(name="tiered", tiers="100,3,6;400,2,6;rest,2,5", context=2, negatives=10)
    records = [run_experiment(Task(exp, f"k{exp.name}", "s"), corpus) for exp in (bw, tiered)]
    assert all(r.ok for r in records), [r.error for r in records]
    return tuple(r.dump() for r in records)


def bitwise_file(path, *extra):
    bw, tiered = bitwise_and_tiered()
    base = baseline_record("uniform", 600.0)
    return add(path, bw, tiered, {**base, "data": bw["data"]}, *extra)


def test_bitwise_and_tiered_rank_together_and_each_shows_its_own_breakdown(tmp_path):
    """One leaderboard for both architectures (same data), the bitwise one without a PPL floor;
    the top experiments' breakdowns: per tier for the tiered one, per bit cluster and per band
    for the bitwise one, with the record's numbers, in the table, markdown and HTML."""
    path = bitwise_file(tmp_path / "r.jsonl")
    bw, tiered = (parse_record(r) for r in bitwise_and_tiered())
    rows = {r["name"]: r for r in json_rows(path)}
    assert len({r["group"] for r in rows.values()}) == 1
    ranked = sorted((rows[n] for n in ("bw", "tiered")), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranked] == [1, 2] and [r["val_ppl"] for r in ranked] == sorted(
        [bw.metrics.validation.ppl, tiered.metrics.validation.ppl])
    assert (rows["bw"]["architecture"], rows["tiered"]["architecture"]) == ("bitwise", "tiered")

    md = report(path, "md")
    assert md.count("ranked by val_ppl") == 1
    t = bw.metrics.test
    assert (f"| bw | `bitwise [3,4,5,6,7,8,9,10,11,12]x6 quad_weighted r=0.5` | 2 | {bw.metrics.validation.ppl:,.0f} "
            f"| {t.ppl:,.0f} |") in md
    assert f"| {pct(t.accuracy)} | — | cpu |" in md  # no PPL floor for a bitwise model (§3c)
    assert f"| {pct(tiered.metrics.test.accuracy)} | {tiered.metrics.test.ppl_floor:,.0f} | cpu |" in md
    assert "### tiered (test split, per tier)" in md and "### bw (test split, per tier)" not in md
    assert "### bw (test split, per bit cluster)" in md and "### bw (test split, per frequency band of the target)" in md
    b = t.bits[9]
    assert (f"| 9 | 12 | 6 | {pct(b.accuracy)} | {b.ce:.4f} | {b.mean_p:.3f} | {pct(b.empty)} | "
            f"{pct(b.undecided)} |") in md
    assert [(n.first, n.tokens) for n in t.bands] == [(0, 100), (100, 400), (500, 100)]
    for n, ranks in zip(t.bands, ("1–100", "101–500", "501–600")):
        assert (f"| {n.band} | {ranks} | {n.tokens} | {n.share:.1f} | {n.ppl:,.0f} | {n.ce:.4f} | "
                f"{n.calibrated_ce:.4f} | {pct(n.accuracy)} |") in md

    table = report(path, "table", width=160)
    assert "bitwise [3,4,5,6,7,8,9,10,11,12]x6" in table and "tiered — test PPL" in table
    assert f"bw — test PPL {t.ppl:,.0f}, per bit cluster" in table and "bw — test, per frequency band" in table
    assert f"PPL floor {tiered.metrics.test.ppl_floor:,.0f};" in table  # the tiered floor alone
    page = report(path, "html")
    assert "bw (test split, per bit cluster)" in page and "<td>501–600</td>" in page
    assert f"<td>{t.bands[2].calibrated_ce:.4f}</td>" in page


def test_a_bitwise_card_shows_its_bit_clusters_and_bands(tmp_path):
    path = bitwise_file(tmp_path / "r.jsonl")
    bw = parse_record(bitwise_and_tiered()[0])
    cards = report(path, "md", cards=5)
    cards = {c.split("\n")[0]: c for c in cards[cards.index("### Experiment cards"):].split("\n### ")}
    card, tiered_card = cards["bw"], cards["tiered"]
    assert "- config: `bitwise [3,4,5,6,7,8,9,10,11,12]x6 quad_weighted r=0.5` (architecture bitwise), context 2" in card
    assert "negatives" not in card and "| tier |" not in card
    assert "Per bit cluster, test split (memory: 10 dense):" in card and "Per frequency band of the target" in card
    b, n = bw.metrics.test.bits[0], bw.metrics.test.bands[0]
    assert f"| 0 | 3 | 6 | {pct(b.accuracy)} | {b.ce:.4f} |" in card
    assert f"| 0 | 1–100 | 100 | {n.share:.1f} | {n.ppl:,.0f} |" in card
    assert "negatives 10" in tiered_card and "| tier | clusters × neurons × bits |" in tiered_card


def test_csv_rows_carry_every_band_and_bit_cluster(tmp_path):
    path = bitwise_file(tmp_path / "r.jsonl")
    bw, tiered = (parse_record(r) for r in bitwise_and_tiered())
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report(path, "csv")))}
    one = rows["bw"]
    for short, split in (("val", bw.metrics.validation), ("test", bw.metrics.test)):
        for n in split.bands:
            p = f"band{n.band}"
            assert (one[f"{p}_first"], one[f"{p}_tokens"]) == (str(n.first), str(n.tokens))
            assert [float(one[f"{p}.{short}_{k}"]) for k in ("ppl", "ce", "cal_ce", "acc", "share")] == [
                n.ppl, n.ce, n.calibrated_ce, n.accuracy, n.share]
        for b in split.bits:
            p = f"bit{b.bit}"
            assert [float(one[f"{p}.{short}_{k}"]) for k in ("acc", "ce", "mean_p", "empty", "undecided")] == [
                b.accuracy, b.ce, b.mean_p, b.empty, b.undecided]
    assert (one["bit9_neurons"], one["bit9_bits"], one["bitwise_cell_mode"], one["bitwise_sample_rate"]) == (
        "12", "6", "quad_weighted", "0.5")
    assert one["tiers"] == "" and one["tier0.test_ppl"] == "" and one["test_ppl_floor"] == ""
    assert rows["tiered"]["band0.test_ppl"] == "" and float(rows["tiered"]["tier0.test_ppl"]) == \
        tiered.metrics.test.tiers[0].ppl
    assert float(rows["tiered"]["tier0.test_share"]) == float(one["band0.test_share"])  # the same examples
    by_band = sorted(json_rows(path, sort_by="band1.test_acc"), key=lambda r: r["rank"] or 99)
    assert by_band[0]["name"] == "bw" and metric("bit3.val_undecided").lower_is_better
    with pytest.raises(ConfigError, match="'band0.val_foo' is not a metric"):
        metric("band0.val_foo")


def test_compare_names_the_architectures_and_sets_bands_beside_the_tiers_they_match(tmp_path):
    """A tiered and a bitwise experiment: the shapes and architectures differ; each band sits
    beside the tier covering the same tokens (the same examples), per split; a tier no band
    matches has rows of its own."""
    from ramsweep.report import compare

    bw, tiered = bitwise_and_tiered()
    other = {**tiered, "name": "coarse", "key": "kc", "spec": {**tiered["spec"], "name": "coarse",
                                                            "tiers": "50,3,6;rest,2,5"}}
    other["metrics"] = {s: {**m, "tiers": [{**m["tiers"][0], "clusters": 50}, {**m["tiers"][2], "tier": 1,
                                                                              "clusters": 550}]}
                        for s, m in tiered["metrics"].items()}
    path = add(tmp_path / "r.jsonl", bw, tiered, other)
    records = compare.chosen([path], ["bw", "tiered"])[0]
    assert compare.differences(records) == [
        ("shape", ["bitwise [3,4,5,6,7,8,9,10,11,12]x6 quad_weighted r=0.5", "100,3,6;400,2,6;rest,2,5"]),
        ("negatives", ["—", "10"]), ("architecture", ["bitwise", "tiered"])]
    figures = dict(compare.figures(records))
    b, t = records[0].metrics, records[1].metrics
    for split in ("validation", "test"):
        for i, ranks in enumerate(("1–100", "101–500", "501–600")):
            label = f"band {i} / tier {i} (tokens {ranks}) {split}"
            band, tier = getattr(b, split).bands[i], getattr(t, split).tiers[i]
            assert figures[f"{label} PPL"] == [f"{band.ppl:,.0f}", f"{tier.ppl:,.0f}"]
            assert figures[f"{label} data %"] == [f"{band.share:.1f}"] * 2  # the same examples
            assert figures[f"{label} calibrated CE"] == [f"{band.calibrated_ce:.4f}", "—"]
    assert figures["band 0 / tier 0 (tokens 1–100) test empty-hit rate"] == ["—", pct(t.test.tiers[0].empty_rate)]
    assert figures["bit 9 shape"] == ["12 x 6 bits", "—"]
    assert figures["bit 9 test binary CE"] == [f"{b.test.bits[9].ce:.4f}", "—"]

    figures = dict(compare.figures(compare.chosen([path], ["bw", "coarse"])[0]))
    assert figures["tier 0 (tokens 1–50) test PPL"][0] == "—" and figures["band 0 (tokens 1–100) test PPL"][1] == "—"
    side = compare.markdown(records)
    assert "| shape | bitwise [3,4,5,6,7,8,9,10,11,12]x6 quad_weighted r=0.5 | 100,3,6;400,2,6;rest,2,5 |" in side
    assert "| architecture | bitwise | tiered |" in side


# ---------------------------------------------------------------- a search in phases (docs/design.md §5b)


@functools.cache
def searched_in_phases() -> dict:
    """A bitwise experiment searched in phases (grid, neurons GA+TS, bits TS) on a small corpus,
    as the runner stores it."""
    from test_optimize import small_corpus
    from test_phases import bitwise_searched

    from ramsweep.sweep.experiment import Task, run_experiment

    record = run_experiment(Task(bitwise_searched(), "kph", "s"), small_corpus())
    assert record.ok, record.error
    return record.dump()


def phase_figures(phase: dict) -> str:
    """A phase row's cells from its slice figure on (CE fitness), worked out from the record."""
    lines = phase["history"]
    if phase["search"] == "grid":
        best = min(lines, key=lambda h: h["ce"])
        on_slice = f"{best['ce']:.4f} at {best['neurons']}/{best['bits']}"
    else:
        on_slice = f"{lines[0]['best_ce']:.4f} → {min(h['best_ce'] for h in lines):.4f}"
    val = {c["label"]: c["validation_ce"] for c in phase["selection"]}
    label = phase["chosen_label"]
    moved = f"{val['start']:.4f} kept" if label == "start" else f"{val['start']:.4f} → {val[label]:.4f}"
    return f"{on_slice} | {moved} | {label} | {phase['evaluations']:,} | {phase['seconds']:.1f} |"


def test_a_search_in_phases_shows_a_row_a_phase_in_the_table_markdown_and_html(tmp_path):
    """A real search in phases: a row a phase with its kind, sizes, best on the slice, validation
    CE of start and choice, chosen label, evaluations and seconds, in the terminal (at 80 columns
    too), markdown and HTML; the connectivity table names it a search in phases, not a count of
    units that beat their start; the lineage names its block by its phases."""
    searched = searched_in_phases()
    s = searched["search"]
    grid, neurons, bits = s["phases"]
    base = {**searched, "name": "bw_plain", "key": "kplain", "search": None,
            "spec": {**searched["spec"], "name": "bw_plain", "optimize": None}}
    child = {**searched, "spec": {**searched["spec"], "based_on": "bw_plain"}}
    path = add(tmp_path / "r.jsonl", base, child)

    md = report(path, "md")
    assert "### bw_phases — search in phases, CE on 600 slice examples: 6×6/6 → " in md
    assert "| # | search | sizes: start → chosen | slice CE | val CE | chosen | evals | s |" in md
    n, b = grid["chosen"]["neurons"][0], grid["chosen"]["bits"][0]
    assert f"| 0 | grid | 6×6/6 → 6×{n}/{b} | {phase_figures(grid)}" in md
    assert f"| 1 | neurons GA+TS | 6×{n}/{b} → " in md and f"| {phase_figures(neurons)}" in md
    assert "| 2 | bits TS | " in md and f"| {phase_figures(bits)}" in md
    assert "| bw_phases | phases CE, 3 phases on 6 units |" in md and "beat their start" not in md
    assert "### Connectivity search and search in phases:" in md
    assert "**bw_phases**: optimize none → phases grid → neurons GA+TS → bits TS, CE;" in md

    table = report(path, width=160)
    assert "bw_phases — search in phases, CE on 600 slice examples" in table
    for phase, kind in zip(s["phases"], ("grid", "neurons GA+TS", "bits TS")):
        figures = [f.strip(" |") for f in phase_figures(phase).split(" | ")]
        row = next(line for line in table.splitlines() if line.startswith(f" {phase['phase']}  {kind} "))
        assert all(f in row for f in figures), (figures, row)
    narrow = report(path, width=80)
    assert max(map(len, narrow.splitlines())) <= 80
    assert "search in phases" in narrow and grid["chosen_label"] in narrow and "neurons" in narrow

    page = report(path, "html")
    assert "<th>slice CE</th>" in page and "<td>neurons GA+TS</td>" in page
    val = {c["label"]: c["validation_ce"] for c in neurons["selection"]}
    label = neurons["chosen_label"]
    cell = f"{val['start']:.4f} kept" if label == "start" else f"{val['start']:.4f} → {val[label]:.4f}"
    assert f"<td>{cell}</td>\n<td>{label}</td>\n<td>{neurons['evaluations']}</td>" in page


def synthetic_phases(fitness="ce", label="candidate 1", stopped=None, connections=False) -> dict:
    """A search in phases over 16 units, its figures chosen to tell every rule apart: the grid's
    best pair differs by CE and by accuracy, the GA's best is in its middle, the last phase keeps
    its start."""
    start, grid = {"neurons": [150] * 16, "bits": [18] * 16}, {"neurons": [200] * 16, "bits": [20] * 16}
    mixed = {"neurons": [200] * 10 + [150] * 6, "bits": [20] * 16}
    wide = {"neurons": list(range(100, 260, 10)), "bits": [20] * 8 + [22] * 8}
    pairs = [(150, 18, 6.0, 0.10), (150, 20, 5.9, 0.12), (200, 18, 5.8, 0.14), (200, 20, 5.7, 0.13)]
    ga = [{"stage": "ga", "step": i, "best_ce": 5.0 if i == 20 else 5.6 - 0.001 * i, "best_accuracy": 0.2 + 0.001 * i,
           "mean_ce": 5.9, "mean_accuracy": 0.15} for i in range(40)]
    ts = [{"stage": "ts", "step": i, "best_ce": 5.4 - 0.01 * i, "best_accuracy": 0.3, "mean_ce": 5.5,
           "mean_accuracy": 0.2} for i in range(3)]
    chosen = lambda sizes, ce, acc, lab: {"label": lab, **sizes, "validation_ce": ce,  # noqa: E731
                                          "validation_accuracy": acc}
    phases = [
        {"phase": 0, "search": "grid", "strategy": None, "start": start, "chosen": grid, "chosen_label": "candidate 1",
         "history": [{"step": i, "neurons": n, "bits": b, "ce": ce, "accuracy": a} for i, (n, b, ce, a) in
                     enumerate(pairs)],
         "selection": [chosen(start, 5.5, 0.2, "start"), chosen(grid, 5.3, 0.25, "candidate 1")],
         "evaluations": 4, "seconds": 12.0},
        {"phase": 1, "search": "neurons", "strategy": "ga", "start": grid, "chosen": mixed, "chosen_label": label,
         "history": ga, "selection": [chosen(grid, 5.3, 0.25, "start"), chosen(mixed, 5.25, 0.27, label)],
         "evaluations": 812, "seconds": 60.5},
        {"phase": 2, "search": "bits", "strategy": "ts", "start": mixed, "chosen": mixed, "chosen_label": "start",
         "history": ts, "selection": [chosen(mixed, 5.25, 0.27, "start"), chosen(wide, 5.26, 0.26, "candidate 1")],
         "evaluations": 9, "seconds": 3.0}]
    if connections:  # §5's search on the chosen sizes, its summary in its phase's entry
        history = [{"unit": u, "stage": stage, "step": i, "best": 5.3 - 0.01 * (u + i), "mean": 5.4, "evaluations": 30,
                    "elapsed_s": 1.0} for u in (0, 1) for stage in ("ga", "ts") for i in range(2)]
        inner = {"strategy": "ga+ts", "fitness": "ce", "units": 2, "improved": 1, "evaluations": 300, "search_s": 20.0,
                 "stopped": None, "fitness_before": {"value": 5.3, "ce": 5.3, "accuracy": 0.2},
                 "fitness_after": {"value": 5.2, "ce": 5.2, "accuracy": 0.21}, "chosen": "final", "history": history,
                 "selection": [{"label": "start", "validation_fitness": 5.25},
                               {"label": "final", "validation_fitness": 5.22}]}
        phases.append({"phase": 3, "search": "connections", "strategy": "ga+ts", "start": mixed, "chosen": mixed,
                       "chosen_label": "final", "evaluations": 300, "seconds": 20.0, "connections": inner})
    return {"strategy": "phases", "fitness": fitness, "units": 16, "improved": True, "evaluations": 825,
            "search_s": 95.1, "stopped": stopped, "chosen": "phases", "examples": {"search": 9000, "fitness": 1000},
            "fitness_before": {"value": 6.1, "ce": 6.1, "accuracy": 0.1},
            "fitness_after": {"value": 5.25, "ce": 5.25, "accuracy": 0.27},
            "sizes": {"start": start, "chosen": mixed}, "phases": phases,
            "before": {"validation": {"ppl": 300.0, "accuracy": 0.2}, "test": {"ppl": 310.0, "accuracy": 0.19}},
            "connectivity": None}


def test_phase_rows_write_sizes_compactly_and_follow_the_fitness(tmp_path):
    """16 units: one size as 16×n/b, a few as n/b ×count, many as ranges (a card lists each
    unit's); the slice's best is the grid's best pair and the GA's best step (not its last);
    under ACCURACY the figures are accuracies, the grid's best the most accurate pair; a long
    history is thinned in the card to its first, last and best lines and some between."""
    ce = experiment_record("ce16", "k1", search=synthetic_phases(stopped="time cap"))
    acc = experiment_record("acc16", "k2", search=synthetic_phases("accuracy"))
    path = add(tmp_path / "r.jsonl", ce, acc)
    md = report(path, "md", cards=2)
    assert ("### ce16 — search in phases, CE on 1,000 slice examples: 16×150/18 → 200/20 ×10, 150/20 ×6, "
            "825 evaluations, 95 s, stopped by the time cap") in md
    assert "| 0 | grid | 16×150/18 → 16×200/20 | 5.7000 at 200/20 | 5.5000 → 5.3000 | candidate 1 | 4 | 12.0 |" in md
    assert ("| 1 | neurons GA | 16×200/20 → 200/20 ×10, 150/20 ×6 | 5.6000 → 5.0000 | 5.3000 → 5.2500 | candidate 1 "
            "| 812 | 60.5 |") in md
    assert "| 2 | bits TS | 200/20 ×10, 150/20 ×6 kept | 5.4000 → 5.3800 | 5.2500 kept | start | 9 | 3.0 |" in md
    assert "| # | search | sizes: start → chosen | slice acc | val acc | chosen | evals | s |" in md
    assert "| 0 | grid | 16×150/18 → 16×200/20 | 14.00% at 200/18 | 20.00% → 25.00% | candidate 1 | 4 | 12.0 |" in md
    assert "| 1 | neurons GA | 16×200/20 → 200/20 ×10, 150/20 ×6 | 20.00% → 23.90% | 25.00% → 27.00% |" in md

    card = md[md.index("### Experiment cards"):].split("\n### ")[1]
    assert card.startswith("ce16") and "Search in phases, CE on 1,000 slice examples" in card
    assert ("Phase 1, neurons GA: chose candidate 1 (neurons 200 200 200 200 200 200 200 200 200 200 150 150 150 150 "
            "150 150, bits 20).") in card
    assert "| candidate 1 | 100/20 110/20 120/20 130/20 140/20 150/20 160/20 170/20 180/22 " in card  # > 3 sizes
    assert "| candidate 1 | 16×200/20 | 5.3000 | 25.00% | chosen |" in card
    assert "| 3 | 200 | 20 | 5.7000 | 13.00% | best |" in card  # the grid's best pair by CE
    assert "History on the fitness slice, 13 of its 40 lines:" in card
    history = card[card.index("History on the fitness slice, 13 of its 40 lines:"):].split("\n\n")[1]
    assert "| GA | 0 | 5.6000 |" in history and "| GA | 39 | 5.5610 |" in history
    assert "| GA | 20 | 5.0000 | 5.9000 | 22.00% | 15.00% | best |" in history
    assert history.count("\n| GA |") == 13

    table = report(path, width=80)
    assert max(map(len, table.splitlines())) <= 80 and "ce16 — search in phases" in table


def test_text_in_a_search_in_phases_is_never_markup(tmp_path):
    """A label or name from a results file is text in markdown, HTML and the terminal."""
    sneaky = experiment_record("x<script>alert(1)</script>", "k1",
                               search=synthetic_phases(label="<img src=x onerror=alert(1)> [bold]b[/bold]"))
    path = add(tmp_path / "r.jsonl", sneaky)
    page = report(path, "html")
    assert "<img" not in page and "<script>" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "[bold]b[/bold]" in report(path, width=200)  # rich markup shown as written


def test_a_connections_phase_shows_its_wiring_search(tmp_path):
    """A last connections phase (§5's search on the chosen sizes): its row has the fitness of the
    drawn wiring → the searched one on the slice and on validation; its card its candidates'
    validation fitness and §5's history, a line a generation or iteration of each unit."""
    path = add(tmp_path / "r.jsonl", experiment_record("wired", "k1", search=synthetic_phases(connections=True)))
    md = report(path, "md", cards=1)
    assert ("| 3 | connections GA+TS | 200/20 ×10, 150/20 ×6 kept | 5.3000 → 5.2000 | 5.2500 → 5.2200 | final | 300 "
            "| 20.0 |") in md
    card = md[md.index("### Experiment cards"):]
    assert "Phase 3, connections GA+TS: chose final (the wiring on neurons 200 200 " in card
    assert "| candidate | val CE |  |\n|---|---|---|\n| start | 5.2500 |  |\n| final | 5.2200 | chosen |" in card
    assert "| unit | stage | step | best CE | mean CE | evaluations |" in card and "| 1 | TS | 1 | 5.2800 | 5.4000 | 30 |" in card
    assert "| 0 | grid | 16×150/18 → 16×200/20 | 5.7000 at 200/20 |" in md  # the size phases as before
