"""The night in pictures (inline SVG, report/svg.py): the best result so far over the night of
each data group, a search's history, and an experiment's figures per tier or bit cluster. The
dashboard shows them; each is a pure function of records (or their Summaries)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from ramsweep.report import search_phases
from ramsweep.report.bitwise import is_bitwise
from ramsweep.report.rows import Metric
from ramsweep.report.svg import COLOURS, Series, bars, chart

MAX_DOTS = 1500  # results drawn as dots on the night's chart at most (the page stays light on a phone)


def _when(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def best_so_far(members: Sequence, by: Metric, title: str) -> str | None:
    """Each finished experiment of one group as a dot at the hour it finished (at most MAX_DOTS:
    evenly spaced ones and every new best), and the best of `by` so far as a step line: how the
    night went. None without two finished experiments."""
    found = sorted((t, v) for r in members if r.kind == "experiment" and r.ok and r.metrics is not None
                   for t, v in [(_when(r.finished), by.value(r))] if t is not None and v is not None)
    if len(found) < 2:
        return None
    start = found[0][0]
    points = [((t - start) / 3600, v) for t, v in found]
    best, line = None, []
    for x, v in points:  # the step line's corners: each new best
        if best is None or (v < best if by.lower_is_better else v > best):
            best = v
            line.append((x, best))
    line.append((points[-1][0], best))
    if len(points) > MAX_DOTS:  # a big grid's night: evenly spaced dots and every new best, not 59,049
        keep = set(np.linspace(0, len(points) - 1, MAX_DOTS).round().astype(int)) | {points.index(p) for p in line[:-1]}
        points = [points[k] for k in sorted(keep)]
    clock = datetime.fromtimestamp(start).strftime("%H:%M")
    return chart([Series("each result", points, "dots", COLOURS[0]), Series("best so far", line, "step", COLOURS[1])],
                 title=title, x_label=f"hours since the first result ({clock})", y_label=by.name)


def search_history(r) -> str | None:
    """A search's fitness on the fitness slice step by step: each generation's or iteration's
    best (a grid's each pair) and mean, over every unit and phase in order, a phase's start marked.
    None for an experiment without a search's history."""
    s = getattr(r, "search", None)
    if not s:
        return None
    kind = search_phases.figure(s)
    if s.get("strategy") == "phases":
        parts = [(f"{p.get('phase', k + 1)} {search_phases.phase_kind(p)}",
                  (p.get("connections") or {}).get("history") if p.get("connections") else p.get("history"))
                 for k, p in enumerate(s.get("phases") or ())]
    else:
        parts = [("", s.get("history"))]
    best, mean, marks, x = [], [], [], 0
    for label, history in parts:
        if label:
            marks.append((x, label))
        for line in history or ():
            value = search_phases.line_value(line, kind) if "first" not in line else line.get("last")
            if value is not None:
                best.append((x, value))
            m = line.get("mean", line.get(f"mean_{kind}"))
            if m is not None:
                mean.append((x, m))
            x += 1
    if not best:
        return None
    name = search_phases.figure_name(kind)
    series = [Series(f"best {name}", best, "line", COLOURS[1])]
    if mean:
        series.append(Series(f"mean {name}", mean, "line", COLOURS[0], dashed=True))
    return chart(series, title=f"{r.name}: the search's {name} on the fitness slice", marks=marks,
                 x_label="generation or iteration, in order", y_label=name)


def unit_bars(r) -> list[str]:
    """The test split's accuracy and CE per tier (or per bit cluster of a bitwise model): where
    the model is good and where it is not."""
    if r.metrics is None:
        return []
    test = r.metrics.test
    if is_bitwise(r):
        parts, labels, what = test.bits, [str(b.bit) for b in test.bits], "bit cluster"
    else:
        parts, labels, what = test.tiers, [str(t.tier) for t in test.tiers], "tier"
    if not parts:
        return []
    return [bars(labels, [None if p.accuracy is None else 100 * p.accuracy for p in parts],
                 title=f"{r.name}: test accuracy per {what}", y_label="accuracy %", fmt=lambda v: f"{v:.1f}%"),
            bars(labels, [p.ce for p in parts], title=f"{r.name}: test CE per {what}", y_label="CE, nats",
                 fmt=lambda v: f"{v:.3f}")]
