"""The morning check tells the truth (issue 30): comparisons within one data group, through the
CLI on real results files that hold several (fast runs, then the cron recipe's --full-data runs)."""

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
