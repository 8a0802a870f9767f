"""The morning check tells the truth (issue 30): comparisons within one data group, through the
CLI on real results files that hold several (fast runs, then the cron recipe's --full-data runs)."""

import re

import pytest
from test_cli import experiment_records, invoke


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """alpha and beta in fast mode, then alpha alone with --full-data: two data groups, one file."""
    folder = tmp_path_factory.mktemp("mixed")
    sets = folder / "tiny.yaml"
    from test_cli import TINY

    sets.write_text(TINY)
    results = folder / "results.jsonl"
    assert invoke("run", "--set", sets, "--results", results).exit_code == 0
    assert invoke("run", "--set", sets, "--results", results, "--experiments", "alpha", "--full-data").exit_code == 0
    return results


@pytest.mark.slow
def test_compare_takes_every_experiment_from_one_data_group_and_says_which(mixed):
    # before: alpha's newest record (full data) beside beta's (fast), with a "data" row between them
    both = invoke("compare", "alpha", "beta", "--results", mixed)
    assert both.exit_code == 0, both.output
    text = " ".join(both.stdout.split())
    fast, full = ({r["data"]["full_data"]: r for r in experiment_records(mixed) if r["name"] == "alpha"}[k]
                  for k in (False, True))
    assert text.startswith("data: kjv/word fast") and "also all done in" not in text
    assert f"{fast['metrics']['validation']['ppl']:,.0f}" in text
    assert f"{full['metrics']['validation']['ppl']:,.0f}" not in text
    md = invoke("compare", "alpha", "beta", "--results", mixed, "--format", "md").stdout
    assert md.startswith("data: kjv/word fast") and "| data |" not in md
    refused = invoke("compare", "alpha", "beta", "--results", mixed, "--group", "full")
    assert refused.exit_code == 2 and "in 'kjv/word full" in refused.stderr and "beta is done in: kjv/word fast" \
        in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert "matches none of the data groups" in invoke("compare", "alpha", "beta", "--results", mixed, "--group",
                                                       "gpt2").stderr


LOOKALIKE = """
description: three experiments that differ only in tier 0's bits (the extended set's tier0_16/18/20bit)
experiments:
  - {name: tier0_6bit, tiers: "30,2,6;rest,1,4", context: 2, negatives: 20}
  - {name: tier0_7bit, tiers: "30,2,7;rest,1,4", context: 2, negatives: 20}
  - {name: tier0_8bit, tiers: "30,2,8;rest,1,4", context: 2, negatives: 20}
"""


@pytest.mark.slow
def test_only_a_grid_makes_a_grid_view_and_the_newest_data_group_comes_first(tmp_path):
    results = tmp_path / "results.jsonl"
    looks = tmp_path / "lookalike.yaml"
    looks.write_text(LOOKALIKE)
    grid = ["grid", "--tiers", "2", "--bits", "6-7", "--counts", "30,rest", "--neurons", "2,1", "--context", "2",
            "--negatives", "20", "--results", results]
    assert invoke(*grid).exit_code == 0
    assert invoke("run", "--set", looks, "--results", results).exit_code == 0
    report = invoke("report", results, "--format", "md").stdout
    # before: the look-alike set made "Grid 30,2,B;rest,1,B ...: 3 of 3 cells done" too
    assert report.count("### Grid `") == 1 and "### Grid `30,2,B;rest,1,B, context 2" in report
    assert "4 of 4 cells done" in report
    assert invoke("report", results).stdout.count("Grid ") == 1  # the terminal's table too
    # the night's full-data run above the week's fast ones (before: in the order the groups first appeared)
    assert invoke("run", "--set", looks, "--results", results, "--experiments", "tier0_6bit",
                  "--full-data").exit_code == 0
    report = invoke("report", results, "--format", "md").stdout
    assert report.index("kjv/word full") < report.index("kjv/word fast")


@pytest.mark.slow
@pytest.mark.parametrize("asked, said", [
    (["--set", "nosuchset"], "--set nosuchset: no experiment of that set in"),
    (["--status", "failed"], "no experiment matches --status failed in"),
    (["--name", "zz*"], "no experiment matches --name zz* in"),
    (["--format", "findings"], "--format findings: no finding has both its configurations in these results"),
])
def test_a_report_that_selects_nothing_says_so_and_exits_1(mixed, asked, said):
    # before: the headings and the baselines, exit 0
    result = invoke("report", mixed, *asked)
    assert result.exit_code == 1 and result.stdout == ""
    assert said in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert invoke("report", mixed, "--status", "ok").exit_code == 0


@pytest.mark.slow
def test_plots_that_cannot_be_made_fail_before_the_report_and_the_html_says_why(mixed, tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):  # the README's install: no plot extra
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    result = invoke("report", mixed, "--plots", tmp_path / "plots")
    assert result.exit_code == 2 and result.stdout == "" and "pip install 'ramsweep[plot]'" in result.stderr
    html = invoke("report", mixed, "--format", "html").stdout
    assert "<svg" not in html and "pip install" in html and "matplotlib" in html


def test_a_set_that_needs_gpt2s_vocabulary_says_so_in_its_refusal_and_in_the_list_of_sets():
    refused = invoke("run", "--set", "asymmetric", "--dry-run")
    assert refused.exit_code == 2 and "five_tier_gradient" in refused.stderr
    assert "or run on a vocabulary of over 20,500 tokens (`--tokenizer gpt2`: 50,257)" in refused.stderr
    listed = " ".join(invoke("sets").stdout.split())
    assert "run with --tokenizer gpt2" in listed.replace("│ ", "")


@pytest.mark.slow
def test_a_big_sweeps_status_says_what_it_does_not_list_and_runs_count_in_words(tmp_path):
    results = tmp_path / "grid.jsonl"
    ran = invoke("run", "--set", "grid", "--results", results, "--experiments", "grid_b08_08_08")
    assert ran.exit_code == 0 and "set grid: 1 experiment, 0 done or skipped, 1 to run" in ran.stderr  # "1 experiments"
    again = invoke("run", "--set", "grid", "--results", results, "--experiments", "grid_b08_08_08")
    assert "nothing to run: the 1 experiment of set grid is done in" in again.stderr
    summary = " ".join(invoke("status", results, "--set", "grid").stdout.split())
    assert "(not listed: 1 done and 728 pending; add --list" in summary  # before: "729 more not listed"


@pytest.mark.slow
def test_the_dry_run_gives_the_time_once_comparable_work_has_run_and_says_why_not_before(tmp_path):
    results = tmp_path / "results.jsonl"
    sets = tmp_path / "looks.yaml"
    sets.write_text(LOOKALIKE)
    before = " ".join(invoke("run", "--set", sets, "--results", results, "--dry-run").stdout.split())
    assert "time: no estimate yet, not counted (nothing of their kind finished yet): 3 tiered" in before
    assert invoke("run", "--set", sets, "--results", results, "--experiments", "tier0_6bit").exit_code == 0
    after = " ".join(invoke("run", "--set", sets, "--results", results, "--dry-run").stdout.split())
    assert "time: about" in after and "2 tiered at" in after and "the median of 1 finished" in after


@pytest.mark.slow
def test_the_terminal_shows_what_the_experiment_in_flight_is_doing(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from ramsweep import cli

    screen = io.StringIO()  # a terminal: the progress bar draws there (before: only a clock moved)
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=160))
    sets = tmp_path / "looks.yaml"
    sets.write_text(LOOKALIKE)
    assert invoke("run", "--set", sets, "--results", tmp_path / "r.jsonl", "--full-data",
                  "--experiments", "tier0_8bit").exit_code == 0
    drawn = screen.getvalue()
    assert re.search(r"tier0_8bit: (training|validation|calibration|test) \d+%", drawn), drawn[-2000:]


LONG_NAMES = """
description: names and tiers that must not be split
experiments:
  - {name: asymmetric_expanded_tier0_a, tiers: "30,2,6;300,1,5;rest,1,4", context: 2, negatives: 20}
  - {name: asymmetric_expanded_tier0_b, tiers: "30,2,7;300,1,6;rest,1,4", context: 2, negatives: 20}
"""


@pytest.mark.slow
def test_80_columns_and_pipes_keep_names_and_tiers_whole(tmp_path):
    import os
    import subprocess
    import sys

    sets, results = tmp_path / "long.yaml", tmp_path / "r.jsonl"
    sets.write_text(LONG_NAMES)
    assert invoke("run", "--set", sets, "--results", results).exit_code == 0
    env = {**os.environ, "COLUMNS": "80"}

    def piped(*args) -> str:  # before: 200 wide whatever COLUMNS said, names folded mid-word at 80
        done = subprocess.run([sys.executable, "-m", "ramsweep", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, done.stdout
        return done.stdout

    board = piped("report", results)
    assert "asymmetric_expanded_tier0_a" in board and "asymmetric_expanded_tier0_b" in board
    side = piped("compare", "asymmetric_expanded_tier0_a", "asymmetric_expanded_tier0_b", "--results", results)
    for tier in ("30,2,6;", "300,1,5;", "30,2,7;", "300,1,6;"):
        assert tier in side, side  # each tier whole on its line: wrapped after a ';' only


def test_help_and_hints_say_what_is_meant(tmp_path):
    for command in ("run", "grid", "status", "report", "compare", "convert", "serve", "worker"):
        shown = invoke(command, "-h").stdout
        assert not re.search(r"<(str|int|list\[Path\]|Path|float)>", shown), (command, shown)  # before: <str>
    seeds = invoke("run", "--set", "quick", "--seeds", "a,b", "--dry-run")
    assert seeds.exit_code == 2 and "e.g. 0,1,2" in seeds.stderr  # before: "e.g. 15,10,5"
    folder = tmp_path / "dir"
    folder.mkdir()
    source = tmp_path / "r.jsonl"
    source.write_bytes(b"")
    into = invoke("convert", source, folder)
    assert into.exit_code != 0 and "--results" not in into.stderr and "name a results file instead" in into.stderr


def a_night() -> list[str]:
    """README's "A night, start to finish" commands, without their comments."""
    from test_cli import README

    lines = README.read_text().splitlines()
    start = lines.index("<!-- a-night -->") + 1
    out = []
    for line in lines[start:]:
        if not line.startswith("    "):
            break
        out.append(line.split("#")[0].strip())
    return out


@pytest.mark.slow
def test_the_readmes_night_runs_as_written(tmp_path):
    import shlex
    import subprocess
    import sys
    import urllib.request

    night = a_night()
    assert [c.split()[1] for c in night] == ["run", "serve", "status", "report", "report", "compare"]
    (tmp_path / "experiments").mkdir()
    (tmp_path / "tiny.yaml").write_text("experiments:\n" + "".join(  # the extended set's two names, tiny
        f'  - {{name: {n}, tiers: "rest,1,{b}", context: 1, negatives: 5}}\n'
        for n, b in (("tier0_16bit", 4), ("tier0_20bit", 5))))

    def argv(command: str) -> list[str]:
        words = shlex.split(command.replace("--set extended", "--set tiny.yaml"))
        return [sys.executable, "-m", "ramsweep", *words[1:]]

    def run(command: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv(command), cwd=tmp_path, capture_output=True, text=True, timeout=600)

    evening = run(night[0])
    assert evening.returncode == 0 and "2 would run" in evening.stdout and "time: no estimate yet" in evening.stdout
    cron = subprocess.run(argv("ramsweep run --set extended --full-data"), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)  # the cron line's run (tests/test_cli.py runs the line itself)
    assert cron.returncode == 0, cron.stderr
    served = subprocess.Popen(argv(night[1]) + ["--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        url = next(line for line in served.stdout if "http://" in line).split()[2]
        host, rest = url.removeprefix("http://").split("/", 1)
        asked = urllib.request.Request(f"http://127.0.0.1:{host.split(':')[1]}/api/status{rest.lstrip('/')}",
                                       headers={"Host": host})
        status = urllib.request.urlopen(asked, timeout=30).read().decode()
        assert '"counts"' in status and "results.json" in status
    finally:
        served.terminate()
        served.wait(timeout=30)
    morning = run(night[2])
    assert morning.returncode == 0 and "2 done" in morning.stdout and "nothing left to run" in morning.stdout
    failed = run(night[3])
    assert failed.returncode == 1 and "no experiment matches --status failed" in failed.stderr
    board = run(night[4])
    assert board.returncode == 0 and "tier0_16bit" in board.stdout and "kjv/word full" in board.stdout
    side = run(night[5])
    assert side.returncode == 0 and side.stdout.startswith("data: kjv/word full")


def test_a_grids_nine_heatmap_panels_come_three_a_row():
    pytest.importorskip("matplotlib")
    from ramsweep.report import plots
    from ramsweep.report.grid_view import Grid
    from ramsweep.report.rows import metric

    levels = (tuple(range(8, 12)), tuple(range(8, 12)), tuple(range(8, 17)))
    cells = {bits: float(sum(bits)) for bits in __import__("itertools").product(*levels)}
    fig = plots.grid_heatmap(Grid("100,15,B;400,10,B;rest,5,B", levels, cells), metric("val_ppl"))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.images]
    width, height = fig.get_size_inches()
    rows = {round(ax.get_position().y0, 2) for ax in panels}
    assert len(panels) == 9 and len(rows) == 3 and width < 12  # before: nine in one 26-inch row
