"""The time left that `status` (and the dashboard, through the runners) gives: made from
comparable finished work, saying how, never from another data group's or another kind's."""

import re

import orjson
import pytest
from test_cli import invoke

from ramsweep.sweep.estimate import Work, estimate

TWO = """
description: a plain experiment and a search
experiments:
  - {name: plain, tiers: "30,2,6;rest,1,4", context: 2, negatives: 20}
  - {name: plain2, tiers: "30,2,7;rest,1,4", context: 2, negatives: 20}
  - name: searched
    tiers: "30,2,6;rest,1,4"
    context: 2
    negatives: 20
    optimize: {strategy: GA, population: 4, generations: 2}
"""


def test_an_estimate_counts_each_kind_at_its_own_rate_and_says_what_it_leaves_out():
    work = {"a": Work("tiered", 100), "b": Work("tiered", 300), "c": Work("tiered search", 100),
            "d": Work("tiered", 200)}
    guess = estimate(work, {"a": 10.0}, ["b", "c", "d"], {"d": (5.0, None)}, slots=1)
    assert guess.seconds == pytest.approx(30.0 + (20.0 - 5.0))  # b at 0.1 s a lookup; d's 20 s less its 5 s
    assert "1 tiered at 100 s per 1,000 neurons" in guess.how and "not counted" in guess.how
    assert "1 tiered search" in guess.how
    own = estimate(work, {"a": 10.0}, ["b", "d"], {"d": (5.0, 2.0)}, slots=2)  # the runner's own figure first
    assert own.seconds == pytest.approx((30.0 + 2.0) / 2)
    nothing = estimate(work, {"a": 10.0}, ["c"], {}, slots=1)
    assert nothing.seconds is None and "(nothing of their kind finished yet): 1 tiered search" in nothing.how


def left_line(result) -> str:
    assert result.exit_code == 0, result.output
    return " ".join(result.stdout.split())


@pytest.mark.slow
def test_status_estimates_full_data_from_full_data_runs_and_a_search_from_searches(tmp_path):
    sets = tmp_path / "two.yaml"
    sets.write_text(TWO)
    results = tmp_path / "results.jsonl"
    assert invoke("run", "--set", sets, "--results", results, "--experiments", "plain").exit_code == 0  # fast mode
    # fast records say nothing of full-data runs: before, "about 1s left at the median 1s per experiment"
    full = left_line(invoke("status", results, "--set", sets, "--full-data"))
    assert "3 pending; no estimate of the time left" in full and "not counted" in full
    assert "2 tiered, 1 tiered search" in full
    fast = left_line(invoke("status", results, "--set", sets))
    assert re.search(r"2 pending; about \d+s left, by comparable finished work \(this set, this data\): 1 tiered "
                     r"at .*, the median of 1 finished; not counted \(nothing of their kind finished yet\): 1 tiered "
                     r"search", fast), fast
    assert invoke("run", "--set", sets, "--results", results, "--experiments", "plain,plain2",
                  "--full-data").exit_code == 0
    full = left_line(invoke("status", results, "--set", sets, "--full-data"))
    assert re.search(r"1 pending; no estimate of the time left: not counted .*: 1 tiered search", full), full
    # an interrupted run is left to run, at its kind's rate: before, "about 2 s left" from the median of all
    lines = results.read_bytes().splitlines()
    record = orjson.loads(lines[-1])
    assert record["name"] == "plain2" and record["data"]["full_data"]
    record.update(status="interrupted", metrics=None, error="stopped by signal", timing={"elapsed_s": 1.0})
    results.write_bytes(b"\n".join(lines[:-1] + [orjson.dumps(record)]) + b"\n")
    full = left_line(invoke("status", results, "--set", sets, "--full-data"))
    assert re.search(r"1 interrupted, 0 running, 1 pending; about \d+s left, by comparable finished work \(this "
                     r"set, this data\): 1 tiered at .*, the median of 1 finished; not counted .*: 1 tiered search",
                     full), full


@pytest.mark.slow
def test_an_estimate_made_half_way_holds_the_time_the_rest_takes_within_3x(tmp_path):
    """The quick set in two halves: the estimate after the first holds the second's measured time
    (the experiments' own seconds, as the estimate counts them) within a factor of 3."""
    results = tmp_path / "results.jsonl"
    first = invoke("run", "--set", "quick", "--results", results, "--experiments", "tier0_16bit,context_6_sparse")
    assert first.exit_code == 0, first.output
    at_start = left_line(invoke("status", results, "--set", "quick"))
    said = re.search(r"about (\d+)s left, by comparable finished work \(this set, this data\): 2 tiered at", at_start)
    assert said, at_start
    assert invoke("run", "--set", "quick", "--results", results).exit_code == 0
    rest = [orjson.loads(line) for line in results.read_bytes().splitlines()]
    took = sum(r["timing"]["total_s"] for r in rest if r.get("name") in ("balanced_14bit", "neurons_20_tier0"))
    assert took / 3 <= float(said.group(1)) <= 3 * took, (said.group(0), took)
    assert "nothing left to run" in left_line(invoke("status", results, "--set", "quick"))
