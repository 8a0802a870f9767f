"""`ramsweep compare A B [C ...]`: experiments side by side: what differs in their configs,
then every figure (per split, then per tier; with a bitwise experiment among them, per tier or
frequency band by the tokens they cover, then per bit cluster), one column per experiment."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Group
from rich.table import Table

from ramsweep.errors import ConfigError
from ramsweep.report.bitwise import frequency_ranges, is_bitwise, ranks
from ramsweep.report.rows import config_differences, group_of, load
from ramsweep.sweep.records import BandMetrics, ExperimentRecord, TierMetrics
from ramsweep.text import calibrated as calibrated_text
from ramsweep.text import num, pct


def chosen(results: Sequence[str | Path], names: Sequence[str], group: str | None = None
           ) -> tuple[list[ExperimentRecord], str]:
    """The completed experiment of each name, all of one data group (rows.group_of; the newest ok
    record of a name within it), and a line saying which group and what else there is. `group`:
    any part of the group's label ('full', 'fast', 'kjv/gpt2', a fingerprint's start); by default
    the group of the newest record among those that hold every name."""
    if len(names) < 2:
        raise ConfigError("compare: name two or more experiments, e.g. `ramsweep compare tier0_16bit tier0_20bit`")
    done = [r for r in load(results) if r.kind == "experiment" and r.ok]
    where = ", ".join(map(str, results))
    for name in names:
        if not any(r.name == name for r in done):
            known = ", ".join(sorted({r.name for r in done})[:12]) or "none yet"
            raise ConfigError(f"compare: no completed experiment '{name}' in {where}; completed: {known}")
    by_group: dict[str, dict[str, ExperimentRecord]] = {}
    for r in sorted(done, key=lambda r: r.finished or ""):
        by_group.setdefault(group_of(r.data), {})[r.name] = r  # the newest of a name in a group last
    if group is not None:
        matching = [g for g in by_group if group in g]
        if not matching:
            raise ConfigError(f"compare: --group '{group}' matches none of the data groups in {where}: "
                              f"{'; '.join(by_group)}")
        candidates = [g for g in matching if all(n in by_group[g] for n in names)]
        if not candidates:
            g = matching[-1]
            missing = [n for n in names if n not in by_group[g]]
            raise ConfigError(f"compare: in '{g}' no completed {', '.join(missing)}; "
                              f"{missing[0]} is done in: {'; '.join(k for k in by_group if missing[0] in by_group[k])}")
    else:
        candidates = [g for g in by_group if all(n in by_group[g] for n in names)]
        if not candidates:
            spread = "; ".join(f"{n} in {' / '.join(g for g in by_group if n in by_group[g])}" for n in names)
            raise ConfigError(f"compare: no data group holds all of {', '.join(names)} completed ({spread}); "
                              f"records of different data are not comparable: run them on one, or pick with --group")
    newest = max(candidates, key=lambda g: max(by_group[g][n].finished or "" for n in names))
    others = [g for g in candidates if g != newest]
    note = f"data: {newest}" + (f" (also all done in: {'; '.join(others)}; --group chooses)" if others else "")
    return [by_group[newest][n] for n in names], note


def differences(records: list[ExperimentRecord]) -> list[tuple[str, list[str]]]:
    """(field, value per experiment) of the compared fields (config.Role) that differ: their data
    is one (chosen takes them from one group)."""
    return config_differences(records)


def figures(records: list[ExperimentRecord]) -> list[tuple[str, list[str]]]:
    """Every figure as (label, value per experiment): per split, then per tier (with a bitwise
    experiment: by_frequency and by_bit)."""
    rows: list[tuple[str, list[str]]] = []
    for split in ("validation", "test"):
        ms = [getattr(r.metrics, split) for r in records]
        rows += [(f"{split} PPL", [num(m.ppl, ",.0f") for m in ms]),
                 (f"{split} calibrated PPL", [calibrated_text(m.calibrated, temperature=False) for m in ms]),
                 (f"{split} bits per byte", [num(m.bpb, ".3f") for m in ms]),
                 (f"{split} accuracy", [pct(m.accuracy) for m in ms])]
    rows += [("model memory MiB", [num(r.resources.memory_mb if r.resources else None, ",.1f") for r in records]),
             ("train + eval s", [num((r.timing.train_s or 0) + (r.timing.eval_s or 0), ",.1f") for r in records]),
             ("device", [r.resources.device if r.resources else "cpu" for r in records])]
    if any(is_bitwise(r) for r in records):
        return rows + by_frequency(records) + by_bit(records)
    for i in range(max(len(r.metrics.test.tiers) for r in records)):
        tiers = [r.metrics.test.tiers[i] if i < len(r.metrics.test.tiers) else None for r in records]
        rows += [(f"tier {i} shape", [f"{t.clusters:,} x {t.neurons} x {t.bits} bits" if t else "—" for t in tiers]),
                 (f"tier {i} test PPL", [num(t.ppl if t else None, ",.0f") for t in tiers]),
                 (f"tier {i} test accuracy", [pct(t.accuracy if t else None) for t in tiers]),
                 (f"tier {i} empty-hit rate", [pct(t.empty_rate if t else None) for t in tiers]),
                 (f"tier {i} target empty-hit rate", [pct(t.target_empty_rate if t else None) for t in tiers])]
    return rows


def by_frequency(records: list[ExperimentRecord]) -> list[tuple[str, list[str]]]:
    """Tiers and bands by the tokens they cover (positions in the training frequency order): a
    tiered model's tier and a bitwise model's band over the same tokens score the same examples,
    so they share rows, per split; a range only some experiments cover is "—" for the others."""
    rows: list[tuple[str, list[str]]] = []
    for split in ("validation", "test"):
        parts = [{(first, count): (name, m) for first, count, name, m in frequency_ranges(r, split)} for r in records]
        for first, count in sorted({k for p in parts for k in p}):
            held = [p.get((first, count), (None, None)) for p in parts]
            names = " / ".join(dict.fromkeys(name for name, _ in held if name))
            label = f"{names} (tokens {ranks(first, count)}) {split}"
            ms = [m for _, m in held]
            tiers = [m if isinstance(m, TierMetrics) else None for m in ms]
            if split == "test" and any(tiers):
                rows.append((f"{label[:-len(split) - 1]} tier shape", [
                    f"{t.clusters:,} x {t.neurons} x {t.bits} bits" if t else "—" for t in tiers]))
            rows += [(f"{label} data %", [num(getattr(m, "share", None), ".1f") for m in ms]),
                     (f"{label} PPL", [num(getattr(m, "ppl", None), ",.0f") for m in ms]),
                     (f"{label} CE", [num(getattr(m, "ce", None), ".4f") for m in ms])]
            if any(isinstance(m, BandMetrics) for m in ms):
                rows.append((f"{label} calibrated CE", [num(getattr(m, "calibrated_ce", None), ".4f") for m in ms]))
            rows.append((f"{label} accuracy", [pct(getattr(m, "accuracy", None)) for m in ms]))
            if split == "test" and any(tiers):
                rows += [(f"{label} empty-hit rate", [pct(t.empty_rate if t else None) for t in tiers]),
                         (f"{label} target empty-hit rate", [pct(t.target_empty_rate if t else None) for t in tiers])]
    return rows


def by_bit(records: list[ExperimentRecord]) -> list[tuple[str, list[str]]]:
    """Each bit cluster's figures (test split), for the bitwise experiments ("—" for a tiered one)."""
    rows: list[tuple[str, list[str]]] = []
    for i in range(max(len(r.metrics.test.bits) for r in records)):
        bits = [r.metrics.test.bits[i] if i < len(r.metrics.test.bits) else None for r in records]
        rows += [(f"bit {i} shape", [f"{b.neurons} x {b.bits} bits" if b else "—" for b in bits]),
                 (f"bit {i} test accuracy", [pct(b.accuracy if b else None) for b in bits]),
                 (f"bit {i} test binary CE", [num(b.ce if b else None, ".4f") for b in bits]),
                 (f"bit {i} test mean P", [num(b.mean_p if b else None, ".3f") for b in bits]),
                 (f"bit {i} test empty", [pct(b.empty if b else None) for b in bits]),
                 (f"bit {i} test undecided", [pct(b.undecided if b else None) for b in bits])]
    return rows


def renderable(records: list[ExperimentRecord]) -> Group:
    names = [r.name for r in records]
    parts = []
    diff = differences(records)
    if diff:
        parts.append(_table("What differs", names, diff))
    else:
        parts.append("The configs are the same (another device aside).")
    parts.append(_table("Figures", names, figures(records)))
    return Group(*parts)


def markdown(records: list[ExperimentRecord]) -> str:
    names = [r.name for r in records]
    lines = []
    for title, rows in (("What differs", differences(records)), ("Figures", figures(records))):
        lines += [f"## {title}", "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
        lines.append("")
    return "\n".join(lines)


def _table(title: str, names: list[str], rows: list[tuple[str, list[str]]]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right", overflow="fold")
    for label, values in rows:  # a tier string may wrap after its ';', never inside a tier
        table.add_row(label, *(v.replace(";", "; ") if label == "tiers" else v for v in values))
    return table


