"""Lineage and experiment cards: what each experiment changed against the one it is
`based_on`, how its figures moved, and one card per experiment with everything known of it
(rationale, notes, parent, figures per split and per tier, or per bit cluster and per frequency
band for a bitwise experiment, model memory, time, device)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ramsweep.report import search_phases
from ramsweep.report.bitwise import BAND_COLUMNS, BIT_COLUMNS, band_cells, bit_cells, is_bitwise, md_table
from ramsweep.report.rows import config_differences, group_of
from ramsweep.sweep.records import ExperimentRecord
from ramsweep.text import calibrated as calibrated_text
from ramsweep.text import num, pct


@dataclass
class Node:
    record: ExperimentRecord
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (field, parent's, this one's)
    children: list[Node] = field(default_factory=list)


def lineage(records: list[ExperimentRecord]) -> list[Node]:
    """Trees of the ok experiments of one group by `based_on` (within each set), roots first in
    record order; experiments with neither parent nor children are left out."""
    done = [r for r in records if r.kind == "experiment" and r.ok]
    by_name = {(r.set, r.name): Node(r) for r in done}
    roots: list[Node] = []
    for (set_name, _), node in by_name.items():
        parent = by_name.get((set_name, getattr(node.record.spec, "based_on", None)))
        if parent is None:
            roots.append(node)
            continue
        node.changes = [(f, was, now) for f, (was, now) in config_differences([parent.record, node.record])]
        parent.children.append(node)
    return [root for root in roots if root.children]


def moved(child: ExperimentRecord, parent: ExperimentRecord) -> str:
    """How the figures moved from the parent: validation PPL and test accuracy."""
    v, pv = child.metrics.validation, parent.metrics.validation
    t, pt = child.metrics.test, parent.metrics.test
    parts = []
    if v.ppl is not None and pv.ppl is not None:
        parts.append(f"val PPL {pv.ppl:,.0f} → {v.ppl:,.0f} ({(v.ppl - pv.ppl) / pv.ppl:+.1%})")
    if t.accuracy is not None and pt.accuracy is not None:
        parts.append(f"test acc {100 * pt.accuracy:.2f}% → {100 * t.accuracy:.2f}%")
    return ", ".join(parts)


def tree_lines(roots: list[Node]) -> list[str]:
    """The trees as indented markdown list lines."""
    lines: list[str] = []

    def walk(node: Node, depth: int, parent: Node | None) -> None:
        r = node.record
        what = "; ".join(f"{f} {a} → {b}" for f, a, b in node.changes) or "same config"
        head = f"**{r.name}**" if parent is None else f"**{r.name}**: {what}; {moved(r, parent.record)}"
        if parent is None:
            head += f" (val PPL {num(r.metrics.validation.ppl)})"
        lines.append("  " * depth + "- " + head)
        for child in node.children:
            walk(child, depth + 1, node)

    for root in roots:
        walk(root, 0, None)
    return lines


def card(r: ExperimentRecord) -> list[str]:
    """One experiment's card as markdown lines."""
    spec, res = r.spec, r.resources
    lines = [f"### {r.name}", ""]
    description = getattr(spec, "description", "") or ""
    notes = getattr(spec, "notes", "") or ""
    if description:
        lines += [f"*{description}*", ""]
    lines += [_config_line(r), f"- set `{r.set}`, key `{r.key}`, status {r.status}, data {group_of(r.data)}"]
    if getattr(spec, "based_on", None):
        lines.append(f"- based on `{spec.based_on}`")
    if res and any(res.never_written):
        lines.append(f"- clusters never written in training, scored in closed form rather than looked up: "
                     f"{', '.join(f'{k:,}' for k in res.never_written)} by tier")
    lines.append(f"- model memory {num(res.memory_mb if res else None, ',.1f')} MiB, train "
                 f"{num(r.timing.train_s, ',.1f')} s, evaluation {num(r.timing.eval_s, ',.1f')} s, on "
                 f"{res.device if res else 'cpu'}; finished {r.finished}")
    lines += ["", "| split | PPL | calibrated PPL | bits per byte | accuracy |", "|---|---|---|---|---|"]
    for split in ("validation", "test"):
        m = getattr(r.metrics, split)
        lines.append(f"| {split} | {num(m.ppl)} | {calibrated_text(m.calibrated)} | "
                     f"{num(m.bpb, '.3f')} | {pct(m.accuracy)} |")
    phases = search_phases.card_lines(r) if search_phases.is_phased(r) else []
    if is_bitwise(r):
        return lines + _bitwise_lines(r) + phases + _notes(notes)
    lines += ["", "| tier | clusters × neurons × bits | memory | data % | test PPL | test acc | empty-hit | target empty-hit |",
              "|---|---|---|---|---|---|---|---|"]
    for t in r.metrics.test.tiers:
        lines.append(f"| {t.tier} | {t.clusters:,} × {t.neurons} × {t.bits} | {t.memory} | {num(t.share, '.1f')} | "
                     f"{num(t.ppl)} | {pct(t.accuracy)} | {pct(t.empty_rate)} | {pct(t.target_empty_rate)} |")
    test = r.metrics.test
    if test.ungated is not None:
        lines += ["", f"Gating: test CE {num(test.ungated.ce, '.4f')} with every gate open, {num(test.ce, '.4f')} "
                      f"with the gates; accuracy {pct(test.ungated.accuracy)} → {pct(test.accuracy)}.", "",
                  "| tier | clusters open per example | target's gate open | CE without → with gates | "
                  "accuracy without → with |", "|---|---|---|---|---|"]
        lines += [f"| {t.tier} | {pct(t.gate_open)} | {pct(t.gate_target_open)} | {num(t.ungated_ce, '.4f')} → "
                  f"{num(t.ce, '.4f')} | {pct(t.ungated_accuracy)} → {pct(t.accuracy)} |" for t in test.tiers]
    for i, use in enumerate(getattr(res, "lsh", ()) or ()):
        if use is not None:
            lines.append(f"\nTier {i}'s LSH memory (2^{use.lsh_bits} cells a neuron): on {use.neurons_counted} of its "
                         f"neurons, {use.addresses:,} distinct training addresses in {use.cells:,} cells, "
                         f"{use.collided:,} ({pct(use.collided_share)}) sharing a cell.")
    return lines + phases + _notes(notes)


def _config_line(r: ExperimentRecord) -> str:
    spec = r.spec
    if not is_bitwise(r):
        return (f"- config: `{spec.shape}`, context {spec.context}, negatives {spec.negatives}, empty value "
                f"{spec.empty_value}, seed {spec.seed}")
    block = getattr(spec, "bitwise", None) or {}
    empty = f", empty value {spec.empty_value}" if block.get("cell_mode", "ternary") == "ternary" else ""
    code = getattr(spec, "encoding", "native") + (", gray" if getattr(spec, "gray", False) else "")
    return f"- config: `{spec.shape}` (architecture bitwise), context {spec.context}, code {code}{empty}, seed {spec.seed}"


def _bitwise_lines(r: ExperimentRecord) -> list[str]:
    """A bitwise card's breakdowns (test split): its bit clusters, then the frequency bands of the
    target (the examples a tiered model's tiers of the same sizes score, so they compare)."""
    test = r.metrics.test
    memories = Counter(r.resources.memories if r.resources else ())
    kinds = ", ".join(f"{n} {kind}" for kind, n in memories.items())
    return ["", f"Per bit cluster, test split{f' (memory: {kinds})' if kinds else ''}:", "",
            *md_table(BIT_COLUMNS, [bit_cells(b) for b in test.bits]),
            "", "Per frequency band of the target, test split:", "",
            *md_table(BAND_COLUMNS, [band_cells(b) for b in test.bands])]


def _notes(notes: str) -> list[str]:
    if notes:
        return ["", "Notes:", "", *(f"> {line}" for line in notes.strip().splitlines()), ""]
    return [""]


