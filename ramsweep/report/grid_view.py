"""The grid view: experiments that differ only in their tiers' bits (a tier-bits grid) as
heatmaps of a metric (tier 0 bits x tier 1 bits, one panel per tier 2 value, the cells not yet
run shown as such) and the main effect of each tier's bits: the mean metric at each of its
values over every finished cell, read straight from the grid, no model fitted.

With more than three tiers a panel's cell is the mean over the tiers beyond tier 2.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from rich import box
from rich.table import Table

from ramsweep.config import TierConfig
from ramsweep.errors import ConfigError
from ramsweep.report.rows import Metric
from ramsweep.sweep.records import ExperimentRecord


@dataclass(frozen=True)
class Grid:
    """One shape's finished cells: each tier's bits -> the metric there."""

    shape: str  # the tiers with their bits as B, e.g. "100,15,B;400,10,B;rest,5,B", plus context
    levels: tuple[tuple[int, ...], ...]  # per tier: its bit values, from the lowest to the highest seen
    cells: dict[tuple[int, ...], float]

    @property
    def tiers(self) -> int:
        return len(self.levels)

    def main_effects(self) -> list[dict[int, float | None]]:
        """Per tier: bits -> mean over the finished cells with that tier at those bits."""
        effects = []
        for t, levels in enumerate(self.levels):
            at = {b: [v for k, v in self.cells.items() if k[t] == b] for b in levels}
            effects.append({b: sum(vs) / len(vs) if vs else None for b, vs in at.items()})
        return effects

    def panels(self) -> list[tuple[str, list[list[float | None]]]]:
        """(title, rows of tier 0 x columns of tier 1) per tier-2 value; a cell is None when not run.
        One tier: a single row; beyond three, the mean over the tiers after tier 2."""
        t0 = self.levels[0]
        t1 = self.levels[1] if self.tiers > 1 else (None,)
        t2 = self.levels[2] if self.tiers > 2 else (None,)
        out = []
        for b2 in t2:
            rows = []
            for b0 in t0:
                row = []
                for b1 in t1:
                    values = [v for k, v in self.cells.items() if k[0] == b0 and (b1 is None or k[1] == b1)
                              and (b2 is None or k[2] == b2)]
                    row.append(sum(values) / len(values) if values else None)
                rows.append(row)
            title = "" if b2 is None else f"tier 2 at {b2} bits" + (" (mean over the later tiers)" if self.tiers > 3 else "")
            out.append((title, rows))
        return out


GRID_NAME = re.compile(r"grid_b(\d\d(?:_\d\d)*)")  # a tier-bits grid's experiment (grid.py): its bits


def grids(records: list[ExperimentRecord], by: Metric, smallest: int = 3) -> list[Grid]:
    """The tier-bits grids among one group's ok experiments: those a grid made (named for their
    bits, `grid_b08_12_16`: experiments that merely differ in bits are no grid), sharing every
    tier's count and neurons, context, negatives and empty value, with at least `smallest`
    distinct bit combinations."""
    shapes: dict[str, dict[tuple[int, ...], list[float]]] = {}
    for r in records:
        if r.kind != "experiment" or not r.ok or (value := by.value(r)) is None:
            continue
        if r.spec.tiers is None or not (named := GRID_NAME.fullmatch(r.name)):  # bitwise, or not a grid's
            continue
        try:
            tiers = TierConfig.parse(r.spec.tiers).tiers
        except ConfigError:  # a record edited or written by another version: shown, but in no grid
            continue
        if tuple(int(b) for b in named.group(1).split("_")) != tuple(t.bits for t in tiers):
            continue  # a name that only looks like a grid's
        shape = ";".join(f"{'rest' if t.count is None else t.count},{t.neurons},B" for t in tiers)
        shape += f", context {r.spec.context}, negatives {r.spec.negatives}, empty value {r.spec.empty_value}"
        shapes.setdefault(shape, {}).setdefault(tuple(t.bits for t in tiers), []).append(value)
    found = []
    for shape, cells in shapes.items():
        if len(cells) < smallest:
            continue
        keys = list(cells)
        levels = tuple(tuple(range(min(k[t] for k in keys), max(k[t] for k in keys) + 1)) for t in range(len(keys[0])))
        found.append(Grid(shape, levels, {k: sum(v) / len(v) for k, v in cells.items()}))  # seeds: their mean
    return found


def markdown_lines(grid: Grid, by: Metric, fmt) -> list[str]:
    """A grid as markdown: its main effects, then its heatmap panels (· = not run yet)."""
    total = len(list(itertools.product(*grid.levels)))
    lines = [f"### Grid `{grid.shape}`: {by.name}, {len(grid.cells)} of {total} cells done", "",
             "Main effect of each tier's bits (mean over the finished cells):", "",
             "| tier | " + " | ".join(f"{b} bits" for b in grid.levels[0]) + " |",
             "|---|" + "---|" * len(grid.levels[0])]
    for t, effect in enumerate(grid.main_effects()):
        cells = [fmt(effect.get(b)) for b in grid.levels[0]] if grid.levels[t] == grid.levels[0] else \
            [f"{b}: {fmt(v)}" for b, v in effect.items()]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    columns = grid.levels[1] if grid.tiers > 1 else ("",)
    for title, rows in grid.panels():
        lines += ["", f"{title or 'Tier 0 bits (rows) x tier 1 bits (columns)'}:", "",
                  "| tier 0 \\ tier 1 | " + " | ".join(str(c) for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]
        lines += [f"| {b0} | " + " | ".join("·" if v is None else fmt(v) for v in row) + " |"
                  for b0, row in zip(grid.levels[0], rows)]
    return lines + [""]


def rich_tables(grid: Grid, by: Metric, fmt) -> list[Table]:
    """The same as markdown_lines, as rich tables for the terminal."""
    total = len(list(itertools.product(*grid.levels)))
    effects = Table(title=f"Grid {grid.shape}: {by.name}, {len(grid.cells)} of {total} cells done; main effect of "
                          "each tier's bits (mean over the finished cells)", title_justify="left", box=box.SIMPLE_HEAD)
    effects.add_column("tier")
    bits = sorted({b for levels in grid.levels for b in levels})
    for b in bits:
        effects.add_column(f"{b}", justify="right")
    for t, effect in enumerate(grid.main_effects()):
        effects.add_row(str(t), *(fmt(effect[b]) if b in effect else "" for b in bits))
    out = [effects]
    columns = grid.levels[1] if grid.tiers > 1 else ("",)
    for title, rows in grid.panels():
        panel = Table(title=f"{by.name}: tier 0 bits (rows) x tier 1 bits (columns){', ' + title if title else ''}; "
                            "· not run yet", title_justify="left", box=box.SIMPLE_HEAD)
        panel.add_column("")
        for c in columns:
            panel.add_column(str(c), justify="right")
        for b0, row in zip(grid.levels[0], rows):
            panel.add_row(str(b0), *("·" if v is None else fmt(v) for v in row))
        out.append(panel)
    return out
