"""The research's findings, judged on a run of `sets/findings.yaml` (`ramsweep report --format findings`):
per data group and input encoding, does each finding hold beyond the spread over seeds?

A RAM neuron reads the bits of token ids, so how ids are numbered is part of the model: a finding
that holds under one numbering and not under another is a finding about the numbering. Each
finding compares two configurations run at the same seeds, on test PPL and on calibrated test PPL
(the temperature fitted on validation). It holds when the first's mean is lower by more than two
standard errors of the difference, is reversed when higher by as much, and is within seed noise
otherwise (rows.Spread.within_noise_of).
"""

from __future__ import annotations

from ramsweep.errors import NothingMatches
from ramsweep.report.rows import Record, Seeds, Spread, groups, metric, seed_groups
from ramsweep.text import ppl

ASYMMETRIC = "100,15,20;400,10,12;rest,5,8"
UNIFORM_20 = "100,15,20;400,10,20;rest,5,20"
UNIFORM_8 = "100,15,8;400,10,8;rest,5,8"
FINDINGS = (  # (finding, the configuration said to be better, the one it is said to beat): (tiers, empty_value)
    ("asymmetric 20/12/8 beats uniform 20", (ASYMMETRIC, 0.0), (UNIFORM_20, 0.0)),
    ("asymmetric 20/12/8 beats uniform 8", (ASYMMETRIC, 0.0), (UNIFORM_8, 0.0)),
    ("EMPTY = 0.0 beats EMPTY = 0.5 (asymmetric)", (ASYMMETRIC, 0.0), (ASYMMETRIC, 0.5)),
)
METRICS = (("test PPL", metric("test_ppl")), ("calibrated test PPL", metric("test_cal_ppl")))


def encoding_of(seeds: Seeds) -> str:
    spec = seeds.records[0].spec
    name = getattr(spec, "encoding", None) or "native"
    return f"{name} + gray" if getattr(spec, "gray", False) else name


def verdict(better: Spread, worse: Spread) -> str:
    if better.within_noise_of(worse):
        return "within seed noise"
    return "**holds**" if better.mean < worse.mean else "**reversed**"


def findings_markdown(records: list[Record]) -> str:
    """One section per data group: its baselines and PPL floor, then each finding under each
    encoding that ran both of its configurations."""
    lines = ["## The research's findings, by input encoding", "",
             "Each finding compares two configurations at the same seeds: \"first\" is said to beat \"second\". "
             "A value is the mean over seeds ± their sample standard deviation; a finding **holds** (or is "
             "**reversed**) when the means differ by more than two standard errors of the difference, and is "
             "within seed noise otherwise. Calibrated: test PPL at the temperature fitted on validation.", ""]
    for group, members in groups(records).items():
        by_config: dict[tuple[str, str, float], Seeds] = {}
        for seeds in seed_groups(members):
            spec = seeds.records[0].spec
            if spec.tiers is not None:  # the findings compare tiered configurations
                by_config[(encoding_of(seeds), spec.tiers.replace(" ", ""), float(spec.empty_value))] = seeds
        rows = []
        for finding, a, b in FINDINGS:
            for encoding in dict.fromkeys(e for e, _, _ in by_config):
                better, worse = by_config.get((encoding, *a)), by_config.get((encoding, *b))
                if better is None or worse is None:
                    continue
                cells = []
                for _, m in METRICS:
                    x, y = better.spread(m), worse.spread(m)
                    cells += [x.text() if x else "—", y.text() if y else "—", verdict(x, y) if x and y else "—"]
                rows.append(f"| {finding} | {encoding} | " + " | ".join(cells) + " |")
        if not rows:
            continue
        experiments = [r for r in members if r.kind == "experiment" and r.metrics is not None]
        floor = next((r.metrics.test.ppl_floor for r in experiments if r.metrics.test.ppl_floor is not None), None)
        baselines = ", ".join(f"{r.name} {ppl(r.metrics.test.ppl)}" for r in members if r.kind == "baseline" and r.ok)
        lines += [f"### {group}", "",
                  f"Test PPL of the baselines: {baselines or '—'}; the PPL floor (scores in [0, 1]): {ppl(floor)}.", "",
                  "| finding | encoding | test PPL, first | test PPL, second | verdict | calibrated, first | "
                  "calibrated, second | verdict |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    if not any(line.startswith("### ") for line in lines):
        raise NothingMatches("--format findings: no finding has both its configurations in these results; it "
                             "reads a run of the findings set: `ramsweep run --set findings`")
    return "\n".join(lines) + "\n"

