"""The `ramsweep` command through typer's CliRunner: same behaviour as the library, one-line errors."""

import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from ramsweep.cli import app
from ramsweep.data import load_corpus
from ramsweep.sets import load_set
from ramsweep.sweep.plan import experiment_key
from ramsweep.sweep.records import Claim
from ramsweep.sweep.store import open_store

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


def experiment_records(results):
    """The experiments' records as jq would read the file (a journal's lines, a document's results)."""
    if results.suffix == ".jsonl":
        found = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    else:
        found = orjson.loads(results.read_bytes())["results"]
    return [r for r in found if r.get("kind") != "baseline"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_run_then_rerun_then_report(tmp_path, tiny):
    results = tmp_path / "out" / "results.json"
    first = invoke("run", "--set", tiny, "--results", results)
    assert first.exit_code == 0, first.output
    records = experiment_records(results)
    assert [(r["name"], r["status"]) for r in records] == [("alpha", "ok"), ("beta", "ok")]
    assert "2 ran, 0 skipped" in first.stderr

    second = invoke("run", "--set", tiny, "--results", results)
    assert second.exit_code == 0
    assert "nothing to run" in second.stderr and "0 ran, 2 skipped" in second.stderr
    assert experiment_records(results) == records

    table = invoke("report", results)
    assert table.exit_code == 0
    assert "ranked by val_ppl" in table.stdout and "alpha" in table.stdout and "per tier" in table.stdout
    best = min(records, key=lambda r: r["metrics"]["validation"]["ppl"])
    md = invoke("report", results, "--format", "md").stdout
    assert f"| 1 | {best['name']} |" in md and "| | *kn_bigram (baseline)* |" in md
    csv_lines = invoke("report", results, "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("group,rank,kind,name,key") and len(csv_lines) == 1 + 2 + 3  # 3 baselines
    rows = orjson.loads(invoke("report", results, "--format", "json").stdout)
    assert next(r for r in rows if r["rank"] == 1)["val_ppl"] == best["metrics"]["validation"]["ppl"]
    assert {r["name"] for r in rows if r["kind"] == "baseline"} == {"uniform", "unigram", "kn_bigram"}
    by_test = orjson.loads(invoke("report", results, "-f", "json", "--sort-by", "test_ppl").stdout)
    assert next(r for r in by_test if r["rank"] == 1)["test_ppl"] == min(r["metrics"]["test"]["ppl"] for r in records)
    old_option = orjson.loads(invoke("report", results, "-f", "json", "--rank-by", "test").stdout)
    assert old_option == by_test  # the older --rank-by still works in old cron lines
    bad = invoke("report", results, "--sort-by", "nope")
    assert bad.exit_code == 2 and bad.stderr.startswith("ramsweep: error: --sort-by: 'nope' is not a metric")


def test_run_a_chosen_experiment_only(tmp_path, tiny):
    results = tmp_path / "results.json"
    assert invoke("run", "--set", tiny, "--results", results, "--experiments", "beta").exit_code == 0
    assert [r["name"] for r in experiment_records(results)] == ["beta"]


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


@pytest.mark.parametrize("name, content, says", [
    ("results.json", b'{"schema": 1, "results": [{"key": "x"', "results.json: not valid JSON"),
    ("results.jsonl", b'{"key": "x", "status": "ok"}\n', "results.jsonl: line 1: "),
])
def test_a_corrupt_results_file_stops_the_run_and_is_left_unchanged(tmp_path, tiny, name, content, says):
    corrupt = tmp_path / name
    corrupt.write_bytes(content)
    result = invoke("run", "--set", tiny, "--results", corrupt)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
    assert "move it aside" in result.stderr or "repair that record" in result.stderr
    assert corrupt.read_bytes() == content


def filling_the_disk(results):
    """Where an fsync fails when the disk fills: a document's temporary copy, or a journal itself."""
    if results.suffix == ".jsonl":
        return lambda path: path == str(results)
    return lambda path: os.path.basename(path).startswith(".results.json.") and ".claims." not in path


@pytest.mark.parametrize("name, says", [
    ("results.json", "could not write (No space left on device); the previous file is intact"),
    ("results.jsonl", "could not append (No space left on device); the file is as it was before"),
])
@pytest.mark.slow
def test_a_disk_full_mid_write_keeps_the_previous_file_and_exits_with_one_line(tmp_path, tiny, monkeypatch, name,
                                                                               says):
    results = tmp_path / name
    assert invoke("run", "--set", tiny, "--results", results, "--experiments", "alpha").exit_code == 0
    before = results.read_bytes()
    real_fsync, full = os.fsync, filling_the_disk(results)

    def fsync(fd):
        if full(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = invoke("run", "--set", tiny, "--results", results)
    assert result.exit_code == 3
    assert result.stderr.splitlines()[-1] == f"ramsweep: error: {results}: {says}"
    assert results.read_bytes() == before  # a half-written copy or line is gone again
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the next run records beta
    assert invoke("run", "--set", tiny, "--results", results).exit_code == 0
    assert [r["name"] for r in experiment_records(results)] == ["alpha", "beta"]


def test_status_shows_done_failed_and_pending_with_a_time_estimate(tmp_path, tiny):
    results = tmp_path / "results.json"
    invoke("run", "--set", tiny, "--results", results, "--experiments", "alpha")
    result = invoke("status", results, "--set", tiny)
    assert result.exit_code == 0
    assert re.search(r"alpha\s+done\s+val PPL", result.stdout) and re.search(r"beta\s+pending", result.stdout)
    assert "1 done, 0 failed, 0 interrupted, 0 running, 1 pending; about" in result.stdout
    assert "no runner running now" in result.stdout
    assert "beta" not in invoke("status", results).stdout  # without --set: what the file holds


def test_run_dry_run_says_what_would_run_and_writes_nothing(tmp_path, tiny):
    fresh = tmp_path / "fresh" / "results.jsonl"
    first = invoke("run", "--set", tiny, "--results", fresh, "--dry-run")
    assert first.exit_code == 0, first.output
    assert re.search(r"1\s+alpha\s+30,2,6;rest,1,4\s+[\d.]+ MiB\s+would run$", first.stdout, re.M)
    assert "2 experiments in set tiny (2 would run)" in first.stdout and "nothing was run" in first.stdout
    assert not fresh.exists() and not fresh.with_name(fresh.name + ".claims").exists()

    results = tmp_path / "results.json"
    invoke("run", "--set", tiny, "--results", results, "--experiments", "alpha")
    before = results.read_bytes()
    plan = invoke("run", "--set", tiny, "--results", results, "-n")
    assert re.search(r"alpha .* done$", plan.stdout, re.M) and re.search(r"beta .* would run$", plan.stdout, re.M)

    # another runner (alive: this very process, under another owner) holds beta
    beta_key = experiment_key(load_set(str(tiny)).select(["beta"]).experiments[0], load_corpus("kjv").fingerprint)
    store = open_store(results)
    with store.locked():
        store.write_claims_locked({beta_key: Claim(key=beta_key, name="beta", set="tiny", owner="other",
                                                   host=socket.gethostname(), pid=os.getpid(), heartbeat=time.time(),
                                                   since="2026-11-26T00:00:00+00:00")})
    claims = store.claims_path.read_bytes()
    plan = invoke("run", "--set", tiny, "--results", results, "--dry-run")
    assert re.search(rf"beta .* claimed by {socket.gethostname()}:{os.getpid()}$", plan.stdout, re.M), plan.stdout
    assert "(1 done, 1 claimed)" in plan.stdout
    assert results.read_bytes() == before and store.claims_path.read_bytes() == claims


def test_status_summarises_a_big_sweep_and_lists_it_on_request(tmp_path):
    results = tmp_path / "grid.jsonl"
    summary = invoke("status", results, "--set", "grid")
    assert summary.exit_code == 0, summary.output
    assert "(not listed: 729 pending; add --list" in summary.stdout
    assert "0 done, 0 failed, 0 interrupted, 0 running, 729 pending" in summary.stdout
    assert "grid_b" not in summary.stdout
    listed = invoke("status", results, "--set", "grid", "--list")
    assert listed.stdout.count("pending") == 730 and "grid_b08_08_08" in listed.stdout
    assert not results.exists()


def test_version_short_help_and_flags_shown_as_flags():
    import ramsweep

    version = invoke("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"ramsweep {ramsweep.__version__}"
    assert invoke("-h").stdout == invoke("--help").stdout
    help_text = invoke("run", "-h").stdout
    assert re.search(r"^\s+--full-data\s+Use whole", help_text, re.M), help_text
    assert "<bool>" not in help_text and "--no-retry-failed" in help_text


def test_grid_dry_run_counts_and_runs_nothing(tmp_path):
    results = tmp_path / "results.json"
    result = invoke("grid", "--tiers", "3", "--dry-run", "--results", results)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 731 and lines[-1].startswith("729 experiments in set grid")
    assert lines[-2].startswith("time: no estimate yet")  # nothing of the grid has run in this file
    assert re.match(r"\s+1\s+grid_b08_08_08\s+100,15,8;400,10,8;rest,5,8\s+[\d.]+ MiB", lines[0])
    assert not results.exists()
    few = invoke("grid", "--tiers", "2", "--bits", "8-10", "--sample", "4", "--seed", "3", "--dry-run")
    assert few.stdout.splitlines()[-1].startswith("4 experiments in set grid2")
    bad = invoke("grid", "--bits", "8-x")
    assert bad.exit_code == 2 and bad.stderr.startswith("ramsweep: error: --bits:")


@pytest.mark.slow
def test_grid_runs_its_configs_as_ordinary_experiments(tmp_path):
    results = tmp_path / "results.json"
    args = ("grid", "--tiers", "1", "--bits", "4-5", "--context", "1", "--negatives", "5", "--results", results)
    assert invoke(*args).exit_code == 0
    assert [r["name"] for r in experiment_records(results)] == ["grid_b04", "grid_b05"]
    again = invoke(*args)
    assert again.exit_code == 0 and "0 ran, 2 skipped" in again.stderr


def cron_lines() -> list[str]:
    """The crontab lines of README's cron recipe, without their schedules."""
    lines = README.read_text().splitlines()
    start = lines.index("<!-- cron-recipe -->") + 1
    return [line.split(None, 5)[5] for line in lines[start:start + 2]]


@pytest.mark.slow
def test_the_readme_cron_recipe_works_and_two_overlapping_jobs_share_the_set(tmp_path):
    home = tmp_path / "home"
    install = home / "ramsweep"
    (install / ".venv" / "bin").mkdir(parents=True)
    (install / "experiments").mkdir()
    (install / ".venv" / "bin" / "ramsweep").symlink_to(Path(sys.executable).parent / "ramsweep")
    (install / "tiny.yaml").write_text("experiments:\n" + "".join(
        f'  - {{name: e{b}, tiers: "rest,1,{b}", context: 1, negatives: 5}}\n' for b in range(4, 6)))
    night, morning = cron_lines()
    assert "--full-data" in night  # fast mode is for trying sets out
    night = night.replace("--set extended", "--set tiny.yaml")
    cron_env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "root"}
    first = subprocess.Popen(["/bin/sh", "-c", night], env=cron_env)
    time.sleep(1.0)  # last night's job is still running when tonight's starts
    second = subprocess.Popen(["/bin/sh", "-c", night], env=cron_env)
    assert (first.wait(), second.wait()) == (0, 0)
    log = (install / "experiments" / "sweep.log").read_text()
    assert "\x1b[" not in log  # no colours or progress bars in a log file
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ", line) for line in log.splitlines()), log
    assert log.count(" done e") == 2 and log.count(" end: ") == 2 and "full mode" in log
    runners = {line.split()[1] for line in log.splitlines()}  # each line names its runner, host:pid
    assert len(runners) == 2 and all(r.startswith(socket.gethostname() + ":") for r in runners), runners
    records = experiment_records(install / "experiments" / "results.json")
    assert sorted(r["name"] for r in records) == ["e4", "e5"]
    # cron runs a line through sh with % escaped: unescape it as cron does
    assert subprocess.run(["/bin/sh", "-c", morning.replace("\\%", "%")], env=cron_env).returncode == 0
    (report,) = (install / "experiments").glob("report-*.html")
    assert report.read_text().startswith("<!doctype html>") and "e4" in report.read_text()


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wikitext"


def test_a_hugging_face_wikitext_download_runs_with_one_option(tmp_path, tiny):
    # As a new user has it: the dataset repo's folder, configs as subfolders of parquet files.
    download = tmp_path / "wikitext"
    shutil.copytree(FIXTURES / "hf", download)
    results = tmp_path / "results.json"
    first = invoke("run", "--set", tiny, "--results", results, "--data", "wikitext2", "--data-path", download)
    assert first.exit_code == 0, first.output
    records = experiment_records(results)
    assert [r["status"] for r in records] == ["ok", "ok"]
    data = records[0]["data"]
    assert (data["corpus"], data["tokenizer"], data["vocab_size"]) == ("wikitext2", "gpt2", 50_257)
    assert data["variant"] == "raw: hugging face parquet wikitext-2-raw-v1"
    assert all(r["metrics"]["test"]["bpb"] > 0 for r in records)
    assert "wikitext2/gpt2" in invoke("report", results).stdout
    # the tokens were cached beside the results: a second night reads them, runs nothing new
    assert list((tmp_path / ".ramsweep-cache").glob("wikitext2-gpt2-*.npz"))
    again = invoke("run", "--set", tiny, "--results", results, "--data", "wikitext2", "--data-path", download)
    assert again.exit_code == 0 and "0 ran, 2 skipped" in again.stderr


def test_a_set_file_names_its_data_and_options_override_it(tmp_path):
    shutil.copytree(FIXTURES / "classic" / "wikitext-2-raw", tmp_path / "data" / "wiki")
    (tmp_path / "sets").mkdir()
    set_path = tmp_path / "sets" / "wiki.yaml"
    set_path.write_text(TINY.replace("experiments:", "data: {corpus: wikitext2, path: ../data/wiki}\nexperiments:")
                        .replace("  - {name: beta", "  # - {name: beta"))
    results = tmp_path / "results.json"
    # the path is the set file's, whatever folder the run starts in
    assert invoke("run", "--set", set_path, "--results", results).exit_code == 0
    assert experiment_records(results)[0]["data"]["corpus"] == "wikitext2"
    word = invoke("run", "--set", set_path, "--results", results, "--tokenizer", "word")
    assert word.exit_code == 0, word.output
    kjv = invoke("run", "--set", set_path, "--results", results, "--data", "kjv")
    assert kjv.exit_code == 0, kjv.output
    assert [(r["data"]["corpus"], r["data"]["tokenizer"]) for r in experiment_records(results)] == [
        ("wikitext2", "gpt2"), ("wikitext2", "word"), ("kjv", "word")]


@pytest.mark.parametrize("data, args, pattern", [
    ("{corpus: wikitext2}", [], r"data: --data wikitext2 needs --data-path|data: corpus wikitext2 needs path"),
    ("{corpus: wikitext2, path: nowhere}", [], r"--data-path .*nowhere does not exist"),
    ("{corpus: wiki}", [], r"data: unknown corpus 'wiki'; choose one of: kjv, text, wikitext2"),
    ("{corpus: kjv, tokeniser: gpt2}", [], r"data: unknown key 'tokeniser'; allowed keys: corpus, path"),
    (None, ["--data", "wikitext2", "--data-path", "nowhere"], r"--data-path .*nowhere does not exist"),
    (None, ["--tokenizer", "bpe"], r"unknown --tokenizer 'bpe'; choose one of: gpt2, word"),
    (None, ["--data", "kjv", "--data-path", "x"], r"--data-path is only for --data wikitext2 or text"),
])
def test_bad_data_is_one_line_exit_2_and_writes_nothing(tmp_path, data, args, pattern):
    set_path = tmp_path / "bad.yaml"
    set_path.write_text(TINY if data is None else TINY.replace("experiments:", f"data: {data}\nexperiments:"))
    assert_refused_before_any_work(set_path, tmp_path / "results.json", args, pattern)


NO_CUDA = pytest.mark.skipif(__import__("ramsweep.engine.devices", fromlist=["x"]).cuda_available(),
                             reason="this machine has a CUDA GPU")


def assert_refused_before_any_work(set_path, results, args, pattern):
    """`ramsweep run` exits 2 with one line matching `pattern`, no traceback, no results file."""
    result = invoke("run", "--set", set_path, "--results", results, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert re.search(pattern, lines[0]), lines[0]
    assert not results.exists()


@pytest.mark.parametrize("set_text, args, pattern", [
    (TINY, ["--device", "gpu"], r"^ramsweep: error: device: 'gpu' is not a device; use one of auto, cpu, cuda"),
    pytest.param(TINY, ["--device", "cuda"], r"device: cuda needs an NVIDIA GPU .*use --device auto or cpu",
                 marks=NO_CUDA),
    (TINY.replace("negatives: 20}", "negatives: 20, device: tpu}", 1),
     [], r"experiment 'alpha': device: .*use auto, cpu, cuda, metal, wgpu or hybrid"),
    # 13,814 clusters x 3,000 neurons, each negative neuron filling ~100 k of its 2^30 cells
    ('experiments:\n  - {name: huge, tiers: "rest,3000,30", context: 4, negatives: 1000}\n', [],
     r"^ramsweep: error: experiment 'huge': needs about [\d,.]+ GiB of memory, more than this machine's"),
])
def test_a_device_that_is_not_here_or_a_model_that_cannot_fit_is_refused_before_any_work(
        tmp_path, set_text, args, pattern):
    set_path = tmp_path / "set.yaml"
    set_path.write_text(set_text)
    assert_refused_before_any_work(set_path, tmp_path / "results.json", args, pattern)


def test_report_shows_the_device_that_ran(tmp_path, tiny):
    results = tmp_path / "results.json"
    assert invoke("run", "--set", tiny, "--results", results, "--device", "cpu").exit_code == 0
    assert {r["resources"]["device"] for r in experiment_records(results)} == {"cpu"}
    table = invoke("report", results).stdout
    header = next(line for line in table.splitlines() if " name " in line)
    assert header.split()[-1] == "device", table
    ranked = [line for line in table.splitlines() if re.match(r"\s*\d+\s+(alpha|beta)\s", line)]
    assert len(ranked) == 2 and all(line.split()[-1] == "cpu" for line in ranked), table
    assert "| cpu |" in invoke("report", results, "--format", "md").stdout


def test_report_filters_compare_and_html_through_the_cli(tmp_path, tiny):
    results = tmp_path / "results.jsonl"
    assert invoke("run", "--set", tiny, "--results", results).exit_code == 0
    only_beta = orjson.loads(invoke("report", results, "-f", "json", "--name", "b*").stdout)
    assert {r["name"] for r in only_beta if r["kind"] == "experiment"} == {"beta"}
    none_failed = invoke("report", results, "-f", "json", "--status", "failed")  # as grep: nothing, exit 1
    assert none_failed.exit_code == 1 and none_failed.stdout == "" and "matches --status failed" in none_failed.stderr
    assert invoke("report", results, "--status", "done").exit_code == 2
    side = invoke("compare", "alpha", "beta", "--results", results)
    assert side.exit_code == 0 and "What differs" in side.stdout and "tier 1 empty-hit rate" in side.stdout
    assert invoke("compare", "alpha", "--results", results).exit_code == 2
    page = invoke("report", results, "-f", "html").stdout
    assert page.startswith("<!doctype html>") and "<svg" in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "").replace('xmlns:xlink="http://www.w3.org/1999/xlink"', "")


# ---------------------------------------------------------------- hostile paths and options: one line, nothing touched

def results_path_cases(tmp_path) -> dict[str, Path]:
    """Results paths no command can use, each of which once gave a traceback."""
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "afile").write_text("a file, not a folder")
    return {"a loop of symbolic links": tmp_path / "loop",
            "a part of the path is a file, not a folder": tmp_path / "afile" / "r.jsonl",
            "its name is 305 bytes long": tmp_path / ("a" * 300 + ".json")}


def path_commands(results: Path, tiny: Path, other: Path) -> list[list]:
    return [["run", "--set", tiny, "--results", results], ["run", "--set", tiny, "--results", results, "-n"],
            ["grid", "--limit", "1", "--results", results], ["status", results], ["report", results],
            ["compare", "alpha", "beta", "--results", results], ["convert", results, other],
            ["convert", other, results]]


def test_an_unusable_results_path_is_one_line_for_every_command(tmp_path, tiny):
    other = tmp_path / "other.json"
    assert invoke("run", "--set", tiny, "--results", other).exit_code == 0
    before = other.read_bytes()
    for why, results in results_path_cases(tmp_path).items():
        for args in path_commands(results, tiny, other):
            result = invoke(*args)
            assert result.exit_code == 3, (args, result.exit_code, result.output)
            assert result.stderr.count("\n") == 1 and why in result.stderr, (args, result.stderr)
    assert other.read_bytes() == before


def as_another_user() -> list[str]:
    """A command prefix under which folder permissions hold: root ignores them, an unprivileged
    user namespace (unshare --user: uid nobody) does not."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("running as root, and no user namespace to drop the privilege in")
    return ["unshare", "--user"]


def test_a_results_folder_without_search_permission_is_one_line_for_every_command(tmp_path_factory):
    prefix = as_another_user()
    top = tmp_path_factory.mktemp("perm")
    top.chmod(0o755)  # pytest's own folders are private: the other user must reach `top`
    top.parent.chmod(0o755), top.parent.parent.chmod(0o755)
    (top / "tiny.yaml").write_text(TINY)
    (top / "tiny.yaml").chmod(0o644)
    locked = top / "locked"
    locked.mkdir(mode=0o600)  # readable, not searchable
    try:
        for args in path_commands(locked / "r.json", top / "tiny.yaml", top / "other.json"):
            done = subprocess.run([*prefix, sys.executable, "-m", "ramsweep", *map(str, args)], capture_output=True,
                                  text=True, timeout=120, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
            assert done.returncode in (2, 3), (args, done.returncode, done.stderr)
            assert done.stderr.count("\n") == 1 and "no permission to reach or read it" in done.stderr, (args, done.stderr)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("args, says", [
    (["--seeds", ""], "--seeds: '' is not a comma-separated list of whole numbers"),
    (["--seeds", " , "], "--seeds: ' , ' is not a comma-separated list of whole numbers"),
    (["--experiments", ""], "--experiments: '' names no experiment"),
])
def test_an_empty_list_option_is_an_error_not_ignored(tmp_path, tiny, args, says):
    results = tmp_path / "results.json"
    result = invoke("run", "--set", tiny, "--results", results, *args)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.output
    assert not results.exists()


@pytest.mark.parametrize("plots", ["a-file", "/dev/null", "a-file/below"])
def test_report_plots_somewhere_unusable_is_one_line_before_any_report(tmp_path, tiny, plots):
    results = tmp_path / "results.json"
    assert invoke("run", "--set", tiny, "--results", results).exit_code == 0
    (tmp_path / "a-file").write_text("keep me")
    target = plots if plots.startswith("/") else tmp_path / plots
    result = invoke("report", results, "--plots", target)
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "--plots" in result.stderr, result.output
    assert (tmp_path / "a-file").read_text() == "keep me"


@pytest.mark.parametrize("source", ["/dev/zero", "fifo"])
def test_a_data_path_that_never_ends_is_one_line_not_a_hang_or_a_flood(tmp_path, tiny, source):
    if source == "fifo":
        os.mkfifo(tmp_path / "corpus.txt")
        source = tmp_path / "corpus.txt"
    results = tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "ramsweep", "run", "--set", str(tiny), "--results", str(results),
                           "--data", "text", "--data-path", str(source)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, (done.returncode, done.stderr[-500:])
    assert "--data-path" in done.stderr and "is a FIFO, device or socket" in done.stderr
    assert not results.exists()
