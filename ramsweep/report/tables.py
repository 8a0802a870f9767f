"""Results as tables: per comparable group a leaderboard (baselines in their place, the PPL
floor in the title), a per-tier breakdown of the best, and the failed and interrupted
experiments with their errors; as a rich table, markdown, a wide csv or json.

formats.report() chooses between these and the HTML report.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Group
from rich.table import Table
from rich.tree import Tree

from ramsweep.report import bitwise, grid_view, search_phases
from ramsweep.report.grid_view import grids
from ramsweep.report.lineage import Node, card, lineage, moved, tree_lines
from ramsweep.report.rows import (
    Filters,
    Metric,
    Record,
    by_seeds,
    groups,
    leaderboard,
    load,
    metric,
    not_ok,
    search_rows,
)
from ramsweep.sweep.records import ExperimentRecord
from ramsweep.text import calibrated as calibrated_text
from ramsweep.text import num, pct, ppl

DEFAULT_SORT = "val_ppl"  # choosing on validation; test is shown beside it, never chosen on
RANK_BY = {"validation": "val_ppl", "test": "test_ppl"}  # the older --rank-by


def read(results: str | Path | Sequence[str | Path], sort_by: str = DEFAULT_SORT) -> tuple[list[Record], Metric]:
    """The records of the files (the one standing for each key) and the metric to rank by."""
    by = metric(sort_by)  # a bad name is refused before any file is read
    return load([results] if isinstance(results, (str, Path)) else results), by


def renderable(records: list[Record], by: Metric, filters: Filters = Filters(), top: int = 3,
               reference: str | None = None, width: int = 140) -> Group:
    """Per group: the leaderboard, its configurations over their seeds (where any ran at more
    than one), the per-tier breakdown (test split) of its `top` first experiments (per bit
    cluster and per frequency band for a bitwise one), and its
    failed and interrupted experiments."""
    if not records:
        return Group("no records in this results file yet")
    parts: list = []
    for name, members in groups(records).items():
        ranked = leaderboard(members, by, filters)
        parts.append(ranking_table(name, ranked, by, width))
        spreads = by_seeds(ranked, by, reference)
        if any(x.n > 1 for _, x, _ in spreads):
            parts.append(seeds_table(spreads, by, reference))
        for r in [r for r in ranked if r.kind == "experiment"][:top]:
            parts += bitwise.rich_tables(r) if bitwise.is_bitwise(r) else [tier_table(r)]
        roots = lineage(ranked)
        if roots:
            parts.append(lineage_tree(roots))
        for grid in grids(ranked, by):
            parts += grid_view.rich_tables(grid, by, formatter(by))
        searches = search_rows(ranked)
        if searches:
            parts.append(search_table(searches))
        parts += [search_phases.rich_table(r) for r in ranked if search_phases.is_phased(r)]
        failed = not_ok(members, filters)
        if failed:
            parts.append(failed_table(failed))
    return Group(*parts)


SEARCH_COLUMNS = ("name", "search", "fitness (slice)", "val PPL", "test PPL", "test acc", "chosen", "candidates", "s")


def search_cells(row: dict) -> list[str]:
    """One search's cells: start → chosen for each figure (the table and the markdown share them)."""
    def moved_to(pair, fmt) -> str:
        return f"{fmt(pair[0])} → {fmt(pair[1])}"

    units = ""
    if row["strategy"] == "phases":  # `improved` says whether the sizes changed, not how many units
        units = f", {row['phases']:,} phases on {row['units']:,} units"
    elif row["units"] > 1:
        units = f", {row['units']:,} units" if row["improved"] is None else \
            f", {row['improved']:,} of {row['units']:,} units beat their start"
    stopped = f" ({row['stopped']})" if row["stopped"] else ""
    return [row["name"], f"{row['strategy']} {row['fitness']}{units}",
            f"{row['fitness_before']:.5g} → {row['fitness_after']:.5g}", moved_to(row["val_ppl"], ppl),
            moved_to(row["test_ppl"], ppl), moved_to(row["test_acc"], lambda x: pct(x, 2)), row["chosen"],
            f"{row['evaluations']:,}", f"{row['search_s']:.0f}{stopped}"]


SEARCH_TITLE = "Connectivity search: the drawn wiring → the wiring chosen on validation (test read once)"
PHASES_TITLE = ("Connectivity search and search in phases: the start (the drawn wiring, the set's sizes) → what was "
                "chosen on validation (test read once)")


def search_title(rows: list[dict]) -> str:
    return PHASES_TITLE if any(row["strategy"] == "phases" for row in rows) else SEARCH_TITLE


def search_table(rows: list[dict]) -> Table:
    table = Table(title=search_title(rows),
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in SEARCH_COLUMNS:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*search_cells(row))
    return table


# Ranking columns, most wanted first: at a narrow width the last ones are left out, and said so.
LEADERBOARD_COLUMNS = ("#", "name", "tiers", "val PPL", "test PPL", "acc", "ctx", "cal.", "bpb", "s", "device")
_NEEDED = {80: 8, 100: 9, 120: 11}  # at least this wide: the first N columns


def shown_columns(width: int) -> tuple[str, ...]:
    fitting = [n for w, n in sorted(_NEEDED.items()) if width >= w]
    return LEADERBOARD_COLUMNS[: fitting[-1] if fitting else 6]


def ranking_table(group: str, ranked: list[Record], by: Metric, width: int = 140) -> Table:
    floors = sorted({ppl(r.metrics.test.ppl_floor) for r in ranked
                     if r.kind == "experiment" and not bitwise.is_bitwise(r)})  # no floor for bitwise (§3c)
    direction = "lowest" if by.lower_is_better else "highest"
    columns = shown_columns(width)
    left_out = [c for c in LEADERBOARD_COLUMNS if c not in columns]
    caption = (f"left out at this width: {', '.join(left_out)} (widen the terminal, or use --format md, csv or html)"
               if left_out else None)
    table = Table(title=f"{group}: ranked by {by.name}, {direction} first (PPL floor {', '.join(floors) or '—'}"
                        f"{'; cal. = test PPL at the temperature fitted on validation' if 'cal.' in columns else ''})",
                  title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD)
    for col in columns:
        if col == "name":  # a name split mid-word reads as two: as wide as the longest (up to 28), then folded
            longest = max((len(r.name) for r in ranked), default=10)
            table.add_column(col, min_width=min(28, max(10, longest)), overflow="fold")
        elif col in ("tiers", "device"):
            table.add_column(col, min_width=10 if col == "tiers" else None, no_wrap=col == "device")  # tiers wrap at ';'
        else:
            table.add_column(col, justify="right", no_wrap=True)
    for cells in leaderboard_cells(ranked):
        if cells["#"] == "":
            table.add_row(*(cells.get(c, "") for c in columns), style="dim")
        else:
            table.add_row(*(cells[c] for c in columns))
    return table


def leaderboard_cells(ranked: list[Record]) -> list[dict[str, str]]:
    """Each ranked record's cells by column (LEADERBOARD_COLUMNS), as the terminal and the dashboard show
    them: experiments numbered in order, baselines unnumbered ("#" empty) in their place."""
    out, rank = [], 0
    for r in ranked:
        v, t = r.metrics.validation, r.metrics.test
        if r.kind == "baseline":
            out.append({"#": "", "name": f"{r.name} (baseline)", "val PPL": ppl(v.ppl), "test PPL": ppl(t.ppl),
                        "bpb": num(t.bpb, ".3f")})
            continue
        rank += 1
        out.append({"#": str(rank), "name": r.name, "tiers": r.spec.shape.replace(";", "; "), "ctx": str(r.spec.context),
                    "val PPL": ppl(v.ppl), "test PPL": ppl(t.ppl),
                    "cal.": calibrated_text(t.calibrated, temperature=False), "bpb": num(t.bpb, ".3f"),
                    "acc": pct(t.accuracy, 1), "s": f"{(r.timing.train_s or 0) + (r.timing.eval_s or 0):.0f}",
                    "device": _device(r)})
    return out


def seeds_table(spreads: list, by: Metric, reference: str | None) -> Table:
    against = reference or "the best"
    table = Table(title=f"Over seeds: {by.name} mean ± sample sd; ≈ marks a difference to {against} within two "
                        "standard errors (seed noise)", title_justify="left", box=box.SIMPLE_HEAD)
    for col, justify in (("config", "left"), ("seeds", "right"), (by.name, "right"), (f"Δ vs {against}", "right"),
                         ("", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    ref = next((x for s, x, _ in spreads if s.name == reference), spreads[0][1]) if spreads else None
    for seeds, x, noise in spreads:
        delta = "" if x is ref else _signed(x.mean - ref.mean, by)
        table.add_row(seeds.name, str(x.n), x.text(_digits(by)), delta, "≈ within noise" if noise else "")
    return table


def lineage_tree(roots: list[Node]) -> Tree:
    tree = Tree("Lineage (based_on): what each experiment changed, and how its figures moved")

    def add(branch: Tree, node: Node, parent: Node | None) -> None:
        r = node.record
        if parent is None:
            label = f"{r.name} (val PPL {ppl(r.metrics.validation.ppl)})"
        else:
            what = "; ".join(f"{f} {a} → {b}" for f, a, b in node.changes) or "same config"
            label = f"{r.name}: {what}; {moved(r, parent.record)}"
        child = branch.add(label)
        for grandchild in node.children:
            add(child, grandchild, node)

    for root in roots:
        add(tree, root, None)
    return tree


def tier_table(record: ExperimentRecord) -> Table:
    t = record.metrics.test
    table = Table(title=f"{record.name} — test PPL {ppl(t.ppl)}, per tier", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("tier", "clusters", "neur", "bits", "memory", "data%", "PPL", "acc", "empty", "tgt empty"):
        table.add_column(col, justify="right", no_wrap=True)
    for tier in t.tiers:
        table.add_row(str(tier.tier), f"{tier.clusters:,}", str(tier.neurons), str(tier.bits),
                      tier.memory, num(tier.share, ".1f"), ppl(tier.ppl), pct(tier.accuracy, 1),
                      pct(tier.empty_rate, 1), pct(tier.target_empty_rate, 1))
    return table


def failed_table(failed: list[Record]) -> Table:
    table = Table(title="Failed and interrupted (retried by the next run)", title_justify="left",
                  box=box.SIMPLE_HEAD)
    for col in ("name", "status", "finished", "error"):
        table.add_column(col, overflow="fold")
    for r in failed:
        table.add_row(r.name, r.status, r.finished or "", _first_line(r.error), style="red")
    return table


def markdown(records: list[Record], by: Metric, filters: Filters, top: int, reference: str | None = None,
             cards: int = 0) -> str:
    """The report as markdown: one section per comparable group (group_markdown)."""
    return "\n".join(group_markdown(name, members, by, filters, top, reference, cards)
                     for name, members in groups(records).items())


def group_markdown(name: str, members: list[Record], by: Metric, filters: Filters, top: int,
                   reference: str | None = None, cards: int = 0) -> str:
    """One group: leaderboard, seeds, per-tier breakdowns (per bit cluster and per band for a
    bitwise experiment), lineage, grids, the first `cards` experiment cards, failures."""
    ranked = leaderboard(members, by, filters)
    experiments = [r for r in ranked if r.kind == "experiment"]
    lines = _md_leaderboard(name, ranked, by) + _md_seeds(by_seeds(ranked, by, reference), by, reference)
    for r in experiments[:top]:
        if bitwise.is_bitwise(r):
            lines += bitwise.markdown_lines(r)
            continue
        lines += ["", f"### {r.name} (test split, per tier)", "",
                  "| tier | clusters | neurons | bits | memory | data % | PPL | acc | empty % | target empty % |",
                  "|------|----------|---------|------|--------|--------|-----|-----|---------|----------------|"]
        lines += [f"| {t.tier} | {t.clusters:,} | {t.neurons} | {t.bits} | {t.memory} | {num(t.share, '.1f')} | "
                  f"{ppl(t.ppl)} | {pct(t.accuracy)} | {pct(t.empty_rate)} | {pct(t.target_empty_rate)} |"
                  for t in r.metrics.test.tiers]
    roots = lineage(ranked)
    if roots:
        lines += ["", "### Lineage (based_on): what each experiment changed, and how its figures moved", "",
                  *tree_lines(roots)]
    for grid in grids(ranked, by):
        lines += ["", *grid_view.markdown_lines(grid, by, formatter(by))]
    searches = search_rows(ranked)
    if searches:
        lines += ["", f"### {search_title(searches)}", "", "| " + " | ".join(SEARCH_COLUMNS) + " |", "|" + "---|" * len(SEARCH_COLUMNS)]
        lines += ["| " + " | ".join(search_cells(row)) + " |" for row in searches]
    for r in ranked:
        if search_phases.is_phased(r):
            lines += search_phases.markdown_lines(r)
    if cards:
        lines += ["", "### Experiment cards", ""] + [line for r in experiments[:cards] for line in card(r)]
    failed = not_ok(members, filters)
    if failed:
        lines += ["", "### Failed and interrupted", "", "| name | status | finished | error |", "|---|---|---|---|"]
        lines += [f"| {r.name} | {r.status} | {r.finished or ''} | {_first_line(r.error)} |" for r in failed]
    return "\n".join(lines) + "\n"


def _md_leaderboard(name: str, ranked: list[Record], by: Metric) -> list[str]:
    direction = "lowest" if by.lower_is_better else "highest"
    lines = [f"## {name}: ranked by {by.name}, {direction} first", "",
             "| # | name | tiers | ctx | val PPL | test PPL | calibrated test PPL (T) | test bpb | test acc | PPL floor "
             "| device |",
             "|---|------|-------|-----|---------|----------|-------------------------|----------|----------|-----------"
             "|--------|"]
    rank = 0
    for r in ranked:
        v, t = r.metrics.validation, r.metrics.test
        if r.kind == "baseline":
            lines.append(f"| | *{r.name} (baseline)* | | | {ppl(v.ppl)} | {ppl(t.ppl)} | | {num(t.bpb, '.3f')} | | | |")
            continue
        rank += 1
        cal = t.calibrated
        calibrated = calibrated_text(cal)
        lines.append(f"| {rank} | {r.name} | `{r.spec.shape}` | {r.spec.context} | {ppl(v.ppl)} | {ppl(t.ppl)} "
                     f"| {calibrated} | {num(t.bpb, '.3f')} | {pct(t.accuracy)} | {ppl(t.ppl_floor)} "
                     f"| {r.resources.device if r.resources else 'cpu'} |")
    return lines


def _md_seeds(spreads: list, by: Metric, reference: str | None) -> list[str]:
    if not any(x.n > 1 for _, x, _ in spreads):
        return []
    against = reference or "the best"
    ref = next((x for s, x, _ in spreads if s.name == reference), spreads[0][1])
    return ["", f"### Over seeds ({by.name}: mean ± sample sd; ≈: within seed noise of {against})", "",
            "| config | seeds | mean ± sd | Δ | |", "|---|---|---|---|---|",
            *(f"| {s.name} | {x.n} | {x.text(_digits(by))} | {'' if x is ref else _signed(x.mean - ref.mean, by)} "
              f"| {'≈' if noise else ''} |" for s, x, noise in spreads)]


def formatter(by: Metric):
    """How a value of `by` is shown: PPLs as whole numbers, rates as percentages, else 4 digits."""
    if "ppl" in by.name:
        return ppl
    if by.name.endswith(("acc", "empty", "share")):
        return (lambda x: num(x, ".1f")) if by.name.endswith("share") else (lambda x: pct(x, 1))
    return lambda x: num(x, ".4f")


def _digits(by: Metric) -> str:
    return ",.0f" if "ppl" in by.name else ".4f"


def _signed(x: float, by: Metric) -> str:
    return "+" + format(x, _digits(by)) if x >= 0 else format(x, _digits(by))


def _device(r: ExperimentRecord) -> str:
    return (r.resources.device if r.resources else "cpu").split(":")[0]


def _first_line(text: str | None) -> str:
    return (text or "").splitlines()[0] if text else ""



