"""Read a results file and show it: ranked rich table, per-tier breakdown, md / csv / json.

`report()` is the library function behind `ramsweep report`: it returns the text of the
chosen format (the table format rendered as plain text), so it can be tested and piped.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import orjson
from rich import box
from rich.console import Console, Group
from rich.table import Table

from ramsweep.errors import ConfigError, StoreError
from ramsweep.sweep.records import BaselineRecord, Calibrated, ExperimentRecord, gc_paused
from ramsweep.sweep.store import open_store

Record = ExperimentRecord | BaselineRecord

FORMATS = ("table", "md", "csv", "json")
RANK_BY = ("test", "validation")
COLUMNS = ("rank", "kind", "name", "tiers", "context", "val_ppl", "test_ppl", "test_ppl_calibrated", "temperature",
           "test_bpb", "test_acc", "ppl_floor", "data", "device", "train_s", "eval_s")


def ranked(results: str | Path, rank_by: str = "test") -> list[Record]:
    """Completed records (experiments and count-model baselines), latest per key, best
    (lowest PPL on `rank_by`) first."""
    if rank_by not in RANK_BY:
        raise ConfigError(f"--rank-by: '{rank_by}' is not one of {', '.join(RANK_BY)}")
    path = Path(results)
    if not path.exists():
        raise StoreError(f"{path}: no such results file; run `ramsweep run --set quick` first or name another file")
    done = [r for r in open_store(path).latest().values() if r.ok]
    return sorted(done, key=lambda r: _nan_last(getattr(r.metrics, rank_by).ppl))


def is_baseline(record: Record) -> bool:
    return record.kind == "baseline"


def rows(records: list[Record]) -> list[dict]:
    """One flat row per record; experiments are ranked, baselines stand between them unranked."""
    out, rank = [], 0
    with gc_paused():  # many small dicts beside many records: see records.gc_paused
        for r in records:
            out.append(_row(r, rank := rank + (not is_baseline(r))))
    return out


def _row(r: Record, rank: int) -> dict:
    """A record's row: `rank` is its place among the experiments (baselines have none)."""
    v, t = r.metrics.validation, r.metrics.test
    row = {"rank": None, "kind": r.kind, "name": r.name, "tiers": None, "context": None,
           "val_ppl": v.ppl, "test_ppl": t.ppl, "test_ppl_calibrated": None, "temperature": None,
           "test_bpb": t.bpb, "test_acc": t.accuracy, "ppl_floor": t.ppl_floor, "data": r.data.group,
           "device": None, "train_s": None, "eval_s": None}
    if not is_baseline(r):
        calibrated = t.calibrated or Calibrated()
        row.update(rank=rank, tiers=r.spec.tiers, context=r.spec.context,
                   test_ppl_calibrated=calibrated.ppl, temperature=calibrated.temperature,
                   device=r.resources.device if r.resources else "cpu",
                   train_s=r.timing.train_s, eval_s=r.timing.eval_s)
    return row


def report(results: str | Path, format: str = "table", top: int = 3, rank_by: str = "test") -> str:
    if format not in FORMATS:
        raise ConfigError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")
    records = ranked(results, rank_by)
    if format == "json":
        return orjson.dumps(rows(records), option=orjson.OPT_INDENT_2).decode() + "\n"
    if format == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows(records))
        return buf.getvalue()
    if format == "md":
        return markdown(records, top, rank_by)
    console = Console(file=io.StringIO(), width=140, color_system=None)
    console.print(renderable(records, top, rank_by))
    return console.file.getvalue()


def renderable(records: list[Record], top: int = 3, rank_by: str = "test") -> Group:
    """The rich tables: the ranking (with the baselines in their place), then a per-tier
    breakdown (test split) of the `top` first experiments."""
    if not records:
        return Group("no completed experiments in this results file")
    floors = sorted({_ppl(r.metrics.test.ppl_floor) for r in records if not is_baseline(r)})
    ranking = Table(title=f"Experiments ranked by {rank_by} PPL (PPL floor {', '.join(floors) or '—'}; "
                          f"cal. = test PPL at the temperature fitted on validation)",
                    title_justify="left", box=box.SIMPLE_HEAD)
    ranking.add_column("#", justify="right", no_wrap=True)
    ranking.add_column("name", min_width=10, overflow="fold")
    ranking.add_column("tiers", min_width=10)  # wraps after each ';'
    for col in ("ctx", "val PPL", "test PPL", "cal.", "bpb", "acc", "s"):
        ranking.add_column(col, justify="right", no_wrap=True)
    ranking.add_column("device", no_wrap=True)
    for row in rows(records):
        if row["kind"] == "baseline":
            ranking.add_row("", f"{row['name']} (baseline)", row["data"], "", _ppl(row["val_ppl"]),
                            _ppl(row["test_ppl"]), "", _num(row["test_bpb"], ".3f"), "", "", "", style="dim")
            continue
        ranking.add_row(str(row["rank"]), row["name"], row["tiers"].replace(";", "; "), str(row["context"]),
                        _ppl(row["val_ppl"]), _ppl(row["test_ppl"]), _ppl(row["test_ppl_calibrated"]),
                        _num(row["test_bpb"], ".3f"), _pct(row["test_acc"], 1), _num((row["train_s"] or 0) + (row["eval_s"] or 0), ".0f"),
                        row["device"].split(":")[0])
    experiments = [r for r in records if not is_baseline(r)]
    return Group(ranking, *(tier_table(r) for r in experiments[:top]))


def tier_table(record: ExperimentRecord) -> Table:
    t = record.metrics.test
    table = Table(title=f"{record.name} — test PPL {_ppl(t.ppl)}, per tier", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("tier", "clusters", "neur", "bits", "memory", "data%", "PPL", "acc", "empty", "tgt empty"):
        table.add_column(col, justify="right", no_wrap=True)
    for tier in t.tiers:
        table.add_row(str(tier.tier), f"{tier.clusters:,}", str(tier.neurons), str(tier.bits),
                      tier.backend, _num(tier.share, ".1f"), _ppl(tier.ppl), _pct(tier.accuracy, 1),
                      _pct(tier.empty_rate, 1), _pct(tier.target_empty_rate, 1))
    return table


def markdown(records: list[Record], top: int, rank_by: str) -> str:
    lines = [f"## Experiments ranked by {rank_by} PPL", "",
             "| # | name | tiers | ctx | val PPL | test PPL | calibrated test PPL (T) | test bpb | test acc | PPL floor | device |",
             "|---|------|-------|-----|---------|----------|-------------------------|----------|----------|-----------|--------|"]
    for row in rows(records):
        if row["kind"] == "baseline":
            lines.append(f"| | *{row['name']} (baseline, {row['data']})* | | | {_ppl(row['val_ppl'])} | "
                         f"{_ppl(row['test_ppl'])} | | {_num(row['test_bpb'], '.3f')} | | | |")
            continue
        calibrated = f"{_ppl(row['test_ppl_calibrated'])} ({_num(row['temperature'], '.3g')})"
        lines.append(f"| {row['rank']} | {row['name']} | `{row['tiers']}` | {row['context']} | {_ppl(row['val_ppl'])} "
                     f"| {_ppl(row['test_ppl'])} | {calibrated} | {_num(row['test_bpb'], '.3f')} "
                     f"| {_pct(row['test_acc'])} | {_ppl(row['ppl_floor'])} | {row['device']} |")
    for r in [r for r in records if not is_baseline(r)][:top]:
        lines += ["", f"### {r.name} (test split, per tier)", "",
                  "| tier | clusters | neurons | bits | memory | data % | PPL | acc | empty % | target empty % |",
                  "|------|----------|---------|------|--------|--------|-----|-----|---------|----------------|"]
        for t in r.metrics.test.tiers:
            lines.append(f"| {t.tier} | {t.clusters:,} | {t.neurons} | {t.bits} | {t.backend} | "
                         f"{_num(t.share, '.1f')} | {_ppl(t.ppl)} | {_pct(t.accuracy)} | "
                         f"{_pct(t.empty_rate)} | {_pct(t.target_empty_rate)} |")
    return "\n".join(lines) + "\n"


def _nan_last(x) -> float:
    return math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _ppl(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _pct(x, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def _num(x, spec: str) -> str:
    return "—" if x is None else format(x, spec)
