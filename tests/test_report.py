"""`ramsweep.report.report` called directly: ranking rules and every output format."""

import csv
import io

import orjson
import pytest

from ramsweep.report import report
from ramsweep.errors import ConfigError, StoreError
from ramsweep.sweep.store import ResultsStore


def record(name, key, test_ppl, val_ppl, status="ok"):
    tiers = [{"tier": 0, "clusters": 100, "neurons": 15, "bits": 20, "backend": "sparse", "examples": 10,
              "ce": 10.0, "ppl": test_ppl, "accuracy": 0.25, "share": 46.5, "empty_rate": 0.5,
              "target_empty_rate": 0.25}]
    split = lambda ppl: {"examples": 20, "ce": 10.0, "ppl": ppl, "accuracy": 0.125, "ppl_floor": 5000.0,
                         "bpb": 3.5, "calibrated": {"temperature": 0.05, "ce": 6.0, "ppl": ppl / 20, "bpb": 2.1},
                         "tiers": tiers}
    return {"name": name, "key": key, "status": status, "spec": {"tiers": "100,15,20;rest,5,8", "context": 4},
            "metrics": {"validation": split(val_ppl), "test": split(test_ppl)},
            "timing": {"train_s": 1.0, "validation_s": 0.5, "test_s": 0.5, "total_s": 2.0}}


@pytest.fixture
def results(tmp_path):
    store = ResultsStore(tmp_path / "results.json")
    store.append(record("old_b", "kb", 9000.0, 8000.0))
    store.append(record("a", "ka", 7000.0, 9500.0))
    store.append(record("broken", "kc", 1.0, 1.0, status="failed"))
    store.append(record("b", "kb", 8000.0, 7500.0))  # a re-run of key kb: the latest counts
    store.append(baseline("kn_bigram", 90.0, 2.2))
    store.append(baseline("uniform", 13814.0, 4.0))
    return store.path


def baseline(name, ppl, bpb):
    split = {"examples": 19, "ce": 1.0, "ppl": ppl, "bpb": bpb}
    return {"kind": "baseline", "name": name, "key": f"base-{name}", "status": "ok",
            "data": {"corpus": "kjv", "tokenizer": "word", "full_data": False},
            "metrics": {"validation": split, "test": split}}


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
