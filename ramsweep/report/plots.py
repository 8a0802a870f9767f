"""Plots of one group of comparable results (the `plot` extra: matplotlib): a metric against
each tier's bits, the empty-hit rate against bits, accuracy against PPL (the trade-off the
research notes describe), and a grid's heatmap panels. Each plot is a matplotlib figure,
written as SVG (inline in the HTML report) or PNG/SVG files.
"""

from __future__ import annotations

import io
from pathlib import Path

from ramsweep.errors import ConfigError
from ramsweep.report.grid_view import Grid, grids
from ramsweep.report.rows import Metric, groups, leaderboard
from ramsweep.sweep.records import ExperimentRecord

# no creation date or RDF block: the same results give the same files, and the HTML names no URL
NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def pyplot():
    """matplotlib's pyplot without a display, or a one-line error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'ramsweep[plot]'") from None
    matplotlib.use("Agg")  # files only: no display on a server or in cron
    import matplotlib.pyplot as plt

    return plt


def _experiments(records) -> list[ExperimentRecord]:
    return [r for r in records if r.kind == "experiment" and r.ok]


def metric_vs_bits(records, by: Metric):
    """One panel per tier: `by` of every experiment against that tier's bits."""
    plt = pyplot()
    done = _experiments(records)
    tiers = max((len(r.metrics.test.tiers) for r in done), default=0)
    fig, axes = plt.subplots(1, max(1, tiers), figsize=(3.2 * max(1, tiers), 2.8), squeeze=False, sharey=True)
    for t, ax in enumerate(axes[0]):
        points = [(r.metrics.test.tiers[t].bits, by.value(r)) for r in done if t < len(r.metrics.test.tiers)]
        points = [(b, v) for b, v in points if v is not None]
        ax.scatter([b for b, _ in points], [v for _, v in points], s=14, alpha=0.7)
        ax.set_xlabel(f"tier {t} bits")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(by.name)
    fig.suptitle(f"{by.name} against each tier's bits", fontsize=10)
    fig.tight_layout()
    return fig


def empty_vs_bits(records, split: str = "test"):
    """Empty-hit rate of each tier against its bits: why rare tiers need fewer bits."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    done = _experiments(records)
    tiers = max((len(r.metrics.test.tiers) for r in done), default=0)
    for t in range(tiers):
        points = [(getattr(r.metrics, split).tiers[t].bits, getattr(r.metrics, split).tiers[t].empty_rate)
                  for r in done if t < len(getattr(r.metrics, split).tiers)]
        points = sorted((b, 100 * e) for b, e in points if e is not None)
        ax.scatter([b for b, _ in points], [e for _, e in points], s=14, label=f"tier {t}", alpha=0.7)
    ax.set_xlabel("bits")
    ax.set_ylabel(f"empty-hit rate, {split} (%)")
    ax.grid(alpha=0.3)
    if tiers:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_vs_ppl(records):
    """Test accuracy against validation PPL: the two do not move together."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    done = [r for r in _experiments(records) if r.metrics.validation.ppl and r.metrics.test.accuracy is not None]
    ax.scatter([r.metrics.validation.ppl for r in done], [100 * r.metrics.test.accuracy for r in done], s=14, alpha=0.7)
    ax.set_xlabel("validation PPL")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def grid_heatmap(grid: Grid, by: Metric):
    """The grid's panels as heatmaps (tier 0 bits down, tier 1 bits across); cells not run are blank."""
    plt = pyplot()
    import numpy as np

    panels = grid.panels()
    across = min(3, len(panels))  # three panels a row: a row of nine shrinks each to a stamp on a page
    down = -(-len(panels) // across)
    fig, axes = plt.subplots(down, across, figsize=(3.2 * across + 1.2, 3.0 * down), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    values = [v for _, rows in panels for row in rows for v in row if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    cmap = "viridis_r" if by.lower_is_better else "viridis"
    columns = grid.levels[1] if grid.tiers > 1 else ("",)
    for index, (ax, (title, rows)) in enumerate(zip(axes.flat, panels)):
        data = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
        image = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
        ax.set_xticks(range(len(columns)), [str(c) for c in columns], fontsize=7)
        ax.set_yticks(range(len(grid.levels[0])), [str(b) for b in grid.levels[0]], fontsize=7)
        ax.set_xlabel("tier 1 bits" if grid.tiers > 1 else "", fontsize=8)
        if index % across == 0:
            ax.set_ylabel("tier 0 bits", fontsize=8)
        ax.set_title(title or by.name, fontsize=8)
    fig.colorbar(image, ax=axes.ravel().tolist(), label=by.name)
    return fig


def svg(fig) -> str:
    """A figure as an inline SVG element (no XML prolog), then closed."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata=NO_METADATA)
    pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def save_all(records, by: Metric, filters, folder: Path) -> list[Path]:
    """Every plot of every group as SVG and PNG files in `folder`: GROUP-NAME.svg/.png."""
    written = []
    for index, (_, members) in enumerate(groups(records).items(), 1):
        ranked = leaderboard(members, by, filters)
        if not _experiments(ranked):
            continue
        figures = {"metric-vs-bits": metric_vs_bits(ranked, by), "empty-vs-bits": empty_vs_bits(ranked),
                   "accuracy-vs-ppl": accuracy_vs_ppl(ranked)}
        figures |= {f"grid{g}-heatmap": grid_heatmap(grid, by) for g, grid in enumerate(grids(ranked, by), 1)}
        for name, fig in figures.items():
            written += save(fig, folder, f"group{index}-{name}")
    return written


def plots_folder(folder: Path) -> Path:
    """`--plots DIR` made ready before any report is printed: matplotlib there, DIR a folder
    (created if missing); a one-line ConfigError otherwise."""
    pyplot()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--plots {folder}: cannot be a folder of plots ({e.strerror}); name a folder") from None
    return folder


def save(fig, folder: Path, name: str) -> list[Path]:
    """A figure as NAME.svg and NAME.png in `folder`."""
    paths = [folder / f"{name}.svg", folder / f"{name}.png"]
    try:
        for path in paths:
            fig.savefig(path, dpi=120, metadata=NO_METADATA if path.suffix == ".svg" else {"Software": None})
    except OSError as e:
        raise ConfigError(f"--plots {folder}: cannot write {path.name} ({e.strerror}); name a folder you can "
                          "write to") from None
    finally:
        pyplot().close(fig)
    return paths
