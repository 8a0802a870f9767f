"""What the dashboard and its JSON API show, built by the report's own functions (leaderboards,
cells, grids, cards) and `status`, so a number reads the same in the terminal, the HTML report
and on a phone. Pure functions of a Feed's state: plain dicts, ready for JSON."""

from __future__ import annotations

import itertools
import time
from datetime import datetime

from markdown_it import MarkdownIt

from ramsweep.report import charts
from ramsweep.report.bitwise import is_bitwise
from ramsweep.report.grid_view import Grid, grids
from ramsweep.report.lineage import card
from ramsweep.report.rows import group_of, groups, leaderboard, metric, not_ok, search_rows
from ramsweep.report.tables import LEADERBOARD_COLUMNS, SEARCH_COLUMNS, formatter, leaderboard_cells, search_cells
from ramsweep.serve.feed import Feed
from ramsweep.sweep.claims import looks_live
from ramsweep.sweep.status import RUNNING, summary_line
from ramsweep.text import duration, pct, ppl

SHOWN_METRICS = ("val_ppl", "test_ppl", "val_cal_ppl", "test_cal_ppl", "val_acc", "test_acc", "val_bpb", "test_bpb")
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")  # a record's text is never markup


def status_view(feed: Feed) -> dict:
    """Per file: counts, time left, the runners (with their plans) and what each experiment in
    flight is doing."""
    now = time.time()
    files = []
    for f in feed.files:
        s = f.status
        entry = {"results": str(f.store.path), "error": f.error, "counts": None, "summary": None, "runners": [],
                 "running": []}
        if s is not None:
            entry.update(counts=s.counts, left=s.left, eta_s=s.eta_s, eta=duration(s.eta_s) if s.eta_s else None,
                         summary=summary_line(s), lock=s.lock)
            running = {r.key for r in s.rows if r.state == RUNNING}
            entry["runners"] = [{"label": r.label, "set": r.set, "planned": r.planned, "left": r.left, "jobs": r.jobs,
                                 "since": r.since, "heartbeat_age_s": round(max(0.0, now - r.heartbeat), 1)}
                                for r in s.live_runners if looks_live(r)]
            entry["running"] = [{"key": c.key, "name": c.name, "set": c.set, "runner": c.label, "since": c.since,
                                 "elapsed_s": _elapsed(c.since, now), "heartbeat_age_s": round(max(0.0, now - c.heartbeat), 1),
                                 "phase": c.phase, "fraction": c.fraction, "eta_s": c.eta_s,
                                 "eta": duration(c.eta_s) if c.eta_s is not None else None, "detail": c.detail}
                                for c in s.claims.values() if c.key in running]
        files.append(entry)
    return {"version": feed.version, "checked": feed.checked, "files": files}


def _elapsed(since: str, now: float) -> float | None:
    try:
        return round(now - datetime.fromisoformat(since).timestamp(), 1)
    except ValueError:
        return None


def record_row(r, path=None) -> dict:
    """One record as a line of the latest results (raw numbers and their text)."""
    m = r.metrics
    v, t = (m.validation, m.test) if m is not None else (None, None)
    row = {"key": r.key, "name": r.name, "kind": r.kind, "set": r.set, "status": r.status, "group": group_of(r.data),
           "tiers": r.spec.shape if r.spec else None, "finished": r.finished, "error": r.error,
           "val_ppl": v.ppl if v else None, "test_ppl": t.ppl if t else None,
           "test_acc": t.accuracy if t else None, "seconds": r.timing.total_s if r.ok else r.timing.elapsed_s,
           "text": {"val_ppl": ppl(v.ppl if v else None), "test_ppl": ppl(t.ppl if t else None),
                    "test_acc": pct(t.accuracy if t else None, 1)}}
    if path is not None:
        row["results"] = str(path)
    return row


def records_view(feed: Feed, limit: int = 20) -> dict:
    """The latest results as they landed, newest first, and the failed and interrupted ones."""
    newest = [record_row(s, path) for path, s in feed.newest(limit) if s.kind == "experiment"]
    failed = [record_row(s) for s in not_ok([s for s in feed.summaries() if s.kind == "experiment"])]
    return {"version": feed.version, "latest": newest, "failed": failed[:limit], "failed_total": len(failed)}


def leaderboard_view(feed: Feed, sort_by: str, top: int = 20) -> dict:
    """Per data group, its leaderboard (baselines in their place) as the report ranks it."""
    by, out = metric(sort_by), []
    for name, members in groups(feed.summaries()).items():
        ranked = leaderboard(members, by)
        experiments = [r for r in ranked if r.kind == "experiment"]
        kept = {id(r) for r in experiments[:top]}
        shown = [r for r in ranked if r.kind == "baseline" or id(r) in kept]
        cells = leaderboard_cells(shown)
        rows = [{"key": r.key, "baseline": r.kind == "baseline", "cells": c} for r, c in zip(shown, cells)]
        floors = sorted({ppl(r.metrics.test.ppl_floor) for r in experiments if not is_bitwise(r)})  # none: §3c
        out.append({"group": name, "experiments": len(experiments), "ppl_floor": floors, "rows": rows})
    return {"version": feed.version, "sort_by": by.name, "lower_is_better": by.lower_is_better,
            "columns": list(LEADERBOARD_COLUMNS), "groups": out}


def night_view(feed: Feed, sort_by: str) -> dict:
    """Per data group (the newest first), its best result so far over the night as an inline SVG."""
    by, out = metric(sort_by), []
    for name, members in groups(feed.summaries()).items():
        svg = charts.best_so_far(members, by, f"{name}: best {by.name} so far")
        if svg is not None:
            out.append({"group": name, "svg": svg})
    return {"version": feed.version, "sort_by": by.name, "groups": out}


def searches_view(feed: Feed) -> dict:
    """Every finished search (connectivity or in phases), the newest first: the report's table."""
    found = sorted((s for s in feed.summaries() if s.kind == "experiment" and s.ok and s.search is not None),
                   key=lambda s: s.finished or "", reverse=True)
    return {"version": feed.version, "columns": list(SEARCH_COLUMNS),
            "rows": [{"key": s.key, "cells": cells} for s, row in zip(found, search_rows(found))
                     for cells in [search_cells(row)]]}


def grids_view(feed: Feed, sort_by: str) -> dict:
    """Each grid of each group: its heatmap panels and main effects, in the metric `sort_by`."""
    by = metric(sort_by)
    fmt = formatter(by)
    out = []
    for name, members in groups(feed.summaries()).items():
        for grid in grids(leaderboard(members, by), by):
            out.append({"group": name, **grid_json(grid, fmt)})
    return {"version": feed.version, "sort_by": by.name, "lower_is_better": by.lower_is_better, "grids": out}


def grid_json(grid: Grid, fmt) -> dict:
    total = len(list(itertools.product(*grid.levels)))
    panels = [{"title": title, "rows": [{"bits": b0, "values": row, "text": ["·" if v is None else fmt(v) for v in row]}
                                         for b0, row in zip(grid.levels[0], rows)]}
              for title, rows in grid.panels()]
    effects = [{"tier": t, "values": {str(b): v for b, v in e.items()},
                "text": {str(b): fmt(v) for b, v in e.items()}} for t, e in enumerate(grid.main_effects())]
    return {"shape": grid.shape, "done": len(grid.cells), "total": total, "levels": [list(x) for x in grid.levels],
            "columns": list(grid.levels[1]) if grid.tiers > 1 else [""], "panels": panels, "main_effects": effects}


def experiment_view(feed: Feed, key: str) -> dict | None:
    """One experiment's whole record and its card (the report's, as HTML)."""
    record = feed.record(key)
    if record is None:
        return None
    ok = record.kind == "experiment" and record.ok
    shown = _markdown.render("\n".join(card(record))) if ok else ""
    pictures = ([charts.search_history(record)] + charts.unit_bars(record)) if ok else []
    return {"record": record.dump(), "card_html": shown, "charts": [svg for svg in pictures if svg]}
