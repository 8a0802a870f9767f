"""The `ramsweep` command through typer's CliRunner: same behaviour as the library, one-line errors."""

import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from ramsweep.cli import app

runner = CliRunner()
README = Path(__file__).resolve().parent.parent / "README.md"
TINY = """
description: tiny cli set
experiments:
  - {name: alpha, tiers: "30,2,6;rest,1,4", context: 2, negatives: 20}
  - {name: beta, tiers: "30,2,11;rest,1,5", context: 3, negatives: 20}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_run_then_rerun_then_report(tmp_path, tiny):
    results = tmp_path / "out" / "results.json"
    first = invoke("run", "--set", tiny, "--results", results)
    assert first.exit_code == 0, first.output
    records = orjson.loads(results.read_bytes())["results"]
    assert [(r["name"], r["status"]) for r in records] == [("alpha", "ok"), ("beta", "ok")]
    assert "2 ran, 0 skipped" in first.stderr

    second = invoke("run", "--set", tiny, "--results", results)
    assert second.exit_code == 0
    assert "nothing to run" in second.stderr and "0 ran, 2 skipped" in second.stderr
    assert orjson.loads(results.read_bytes())["results"] == records

    table = invoke("report", results)
    assert table.exit_code == 0
    assert "ranked by test PPL" in table.stdout and "alpha" in table.stdout and "per tier" in table.stdout
    best = min(records, key=lambda r: r["metrics"]["test"]["ppl"])
    md = invoke("report", results, "--format", "md").stdout
    assert md.splitlines()[4].startswith(f"| 1 | {best['name']} |")
    csv_lines = invoke("report", results, "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("rank,name,tiers") and len(csv_lines) == 3
    rows = orjson.loads(invoke("report", results, "--format", "json").stdout)
    assert rows[0]["test_ppl"] == best["metrics"]["test"]["ppl"]
    by_val = orjson.loads(invoke("report", results, "-f", "json", "--rank-by", "validation").stdout)
    assert by_val[0]["val_ppl"] == min(r["metrics"]["validation"]["ppl"] for r in records)


def test_run_a_chosen_experiment_only(tmp_path, tiny):
    results = tmp_path / "results.json"
    assert invoke("run", "--set", tiny, "--results", results, "--experiments", "beta").exit_code == 0
    assert [r["name"] for r in orjson.loads(results.read_bytes())["results"]] == ["beta"]


BAD = {
    "bad tier string": ('tiers: "100,15"', "experiment 'x'.*tiers"),
    "rest not last": ('tiers: "rest,5,8;100,15,20"', "experiment 'x'.*tiers.*rest"),
    "zero neurons": ('tiers: "100,0,8;rest,5,8"', "experiment 'x'.*tiers.*neurons"),
    "bits > input width": ('tiers: "rest,5,30"\n    context: 2', "experiment 'x'.*tiers.*30 bits"),
    "counts exceed vocabulary": ('tiers: "20000,5,8"', "experiment 'x'.*tiers.*13,814"),
    "unknown key": ('tiers: "rest,5,8"\n    neuron: 3', "experiment 'x'.*neuron"),
}


@pytest.mark.parametrize("case", BAD)
def test_config_errors_are_one_line_exit_2_and_write_nothing(tmp_path, case):
    body, pattern = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(f"experiments:\n  - name: x\n    {body}\n")
    results = tmp_path / "results.json"
    result = invoke("run", "--set", path, "--results", results)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert re.search(pattern, lines[0]), lines[0]
    assert not results.exists()


def test_duplicate_names_and_unknown_sets_are_one_line_errors(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text('experiments:\n  - {name: x, tiers: "rest,5,8"}\n  - {name: x, tiers: "rest,4,8"}\n')
    dup = invoke("run", "--set", path)
    assert dup.exit_code == 2 and "'x'" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1
    missing = invoke("run", "--set", "no_such_set")
    assert missing.exit_code == 2 and "quick" in missing.stderr


def test_report_on_a_corrupt_or_missing_file_is_a_clear_error(tmp_path):
    corrupt = tmp_path / "results.json"
    corrupt.write_text('{"schema": 1, "results": [')
    result = invoke("report", corrupt)
    assert result.exit_code == 3 and "not valid JSON" in result.stderr
    assert corrupt.read_text() == '{"schema": 1, "results": ['
    assert invoke("report", tmp_path / "none.json").exit_code == 3


def test_sets_lists_every_packaged_set_with_its_count():
    result = invoke("sets")
    assert result.exit_code == 0
    for name, count in {"quick": 4, "standard": 6, "extended": 10}.items():
        assert re.search(rf"{name}\s+│\s+{count}\b", result.stdout), result.stdout


def test_every_command_has_help_and_is_in_the_readme():
    readme = README.read_text()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert set(commands) >= {"run", "report", "sets"}
    for name in commands:
        result = invoke(name, "--help")
        assert result.exit_code == 0 and len(result.stdout) > 100
        assert f"ramsweep {name}" in readme, name
