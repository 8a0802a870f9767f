"""`ramsweep.report.report` called directly: ranking rules and every output format."""

import csv
import io

import orjson
import pytest
from conftest import baseline_record, experiment_record

from ramsweep.errors import ConfigError, StoreError
from ramsweep.report import report
from ramsweep.sweep.records import parse_record
from ramsweep.sweep.store import open_store


@pytest.fixture
def results(results_path):
    store = open_store(results_path)
    for r in (experiment_record("old_b", "kb", 9000.0, 8000.0), experiment_record("a", "ka", 7000.0, 9500.0),
              experiment_record("broken", "kc", 1.0, 1.0, status="failed"),
              experiment_record("b", "kb", 8000.0, 7500.0),  # a re-run of key kb: the latest counts
              baseline_record("kn_bigram", 90.0, 2.2), baseline_record("uniform", 13814.0, 4.0)):
        store.append(parse_record(r))
    return store.path


def test_ranked_by_test_ppl_latest_record_per_key_failures_left_out(results):
    rows = orjson.loads(report(results, "json"))
    assert [(r["rank"], r["name"]) for r in rows] == [(None, "kn_bigram"), (1, "a"), (2, "b"), (None, "uniform")]
    assert [r["kind"] for r in rows] == ["baseline", "experiment", "experiment", "baseline"]
    assert rows[1]["test_ppl_calibrated"] == 350.0 and rows[1]["temperature"] == 0.05 and rows[1]["test_bpb"] == 3.5


def test_rank_by_validation(results):
    rows = orjson.loads(report(results, "json", rank_by="validation"))
    assert [r["name"] for r in rows if r["kind"] == "experiment"] == ["b", "a"]


def test_table_markdown_and_csv_show_the_same_ranking(results):
    table = report(results, "table", top=1)
    assert table.index("kn_bigram (baseline)") < table.index(" a ") < table.index(" b ") < table.index("uniform (baseline)")
    assert "a — test PPL 7,000, per tier" in table
    assert "b — test PPL" not in table  # only the top 1 gets a breakdown
    md = report(results, "md")
    assert "| 1 | a | `100,15,20;rest,5,8` | 4 | 9,500 | 7,000 | 350 (0.05) | 3.500 | 12.50% | 5,000 |" in md
    assert "| | *kn_bigram (baseline, kjv/word fast)* | | | 90 | 90 | | 2.200 | | |" in md
    assert "| 0 | 100 | 15 | 20 | sparse | 46.5 | 7,000 | 25.00% | 50.00% | 25.00% |" in md
    rows = list(csv.DictReader(io.StringIO(report(results, "csv"))))
    assert [r["name"] for r in rows] == ["kn_bigram", "a", "b", "uniform"] and float(rows[1]["test_ppl"]) == 7000.0


def test_bad_options_and_missing_files_are_user_errors(results, tmp_path):
    with pytest.raises(ConfigError, match="--format"):
        report(results, "xml")
    with pytest.raises(ConfigError, match="--rank-by"):
        report(results, "json", rank_by="train")
    with pytest.raises(StoreError, match="no such results file"):
        report(tmp_path / "missing.json")
