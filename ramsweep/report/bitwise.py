"""A bitwise record's breakdowns (docs/design.md §3c "Metrics beyond the tiered ones"): per bit
cluster and per frequency band of the target, as cells the terminal, markdown, the cards, the
HTML report and the dashboard share, so a figure reads the same on each."""

from __future__ import annotations

from rich import box
from rich.table import Table

from ramsweep.sweep.records import BandMetrics, BitMetrics, ExperimentRecord, TierMetrics
from ramsweep.text import num, pct, ppl

BIT_COLUMNS = ("bit", "neurons", "bits", "accuracy", "binary CE", "mean P", "empty", "undecided")
BAND_COLUMNS = ("band", "frequency ranks", "tokens", "data %", "PPL", "CE", "calibrated CE", "acc")


def is_bitwise(r) -> bool:
    """An experiment of the bitwise architecture: its shape is its bitwise block, it has no tiers
    (a record or a Summary)."""
    return r.kind == "experiment" and r.spec is not None and r.spec.tiers is None


def ranks(first: int, count: int) -> str:
    """Positions in the training frequency order, counted from 1: '1–100', '501–13,814'."""
    return f"{first + 1:,}–{first + count:,}"


def bit_cells(b: BitMetrics) -> list[str]:
    return [str(b.bit), str(b.neurons), str(b.bits), pct(b.accuracy), num(b.ce, ".4f"), num(b.mean_p, ".3f"),
            pct(b.empty), pct(b.undecided)]


def band_cells(b: BandMetrics) -> list[str]:
    return [str(b.band), ranks(b.first, b.tokens), f"{b.tokens:,}", num(b.share, ".1f"), ppl(b.ppl),
            num(b.ce, ".4f"), num(b.calibrated_ce, ".4f"), pct(b.accuracy)]


def md_table(columns: tuple[str, ...], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *("| " + " | ".join(r) + " |" for r in rows)]


def markdown_lines(r: ExperimentRecord, split: str = "test") -> list[str]:
    """The per-bit and per-band tables of one split, each under its heading."""
    m = getattr(r.metrics, split)
    return ["", f"### {r.name} ({split} split, per bit cluster)", "",
            *md_table(BIT_COLUMNS, [bit_cells(b) for b in m.bits]),
            "", f"### {r.name} ({split} split, per frequency band of the target)", "",
            *md_table(BAND_COLUMNS, [band_cells(b) for b in m.bands])]


def rich_tables(r: ExperimentRecord, split: str = "test") -> list[Table]:
    m = getattr(r.metrics, split)
    return [_rich(f"{r.name} — {split} PPL {ppl(m.ppl)}, per bit cluster", BIT_COLUMNS, [bit_cells(b) for b in m.bits]),
            _rich(f"{r.name} — {split}, per frequency band of the target", BAND_COLUMNS,
                  [band_cells(b) for b in m.bands])]


def _rich(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in columns:
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def frequency_ranges(r: ExperimentRecord, split: str) -> list[tuple[int, int, str, TierMetrics | BandMetrics]]:
    """(first, count, name, figures) of each part of the vocabulary a record reports on, in
    training frequency order: a tiered record's tiers, a bitwise record's bands. A tier and a band
    of the same (first, count) cover the same examples, so they compare figure for figure."""
    m = getattr(r.metrics, split)
    if m.bands:
        return [(b.first, b.tokens, f"band {b.band}", b) for b in m.bands]
    out, first = [], 0
    for t in m.tiers:
        out.append((first, t.clusters, f"tier {t.tier}", t))
        first += t.clusters
    return out
