"""A search in phases (docs/design.md §5b) as the report shows it: a row a phase (its search,
the sizes it started from and chose, its best fitness on the fitness slice, the validation
figure of its start and of its choice, its evaluations and seconds), and per phase its
candidates and its history. The cells are shared by the terminal, markdown, the cards (so the
HTML report and the dashboard), so a figure reads the same on each.

Sizes are written neurons/bits: `16×150/18` is 16 units of 150 neurons and 18 bits; a few
distinct sizes as `200/20 ×10, 150/20 ×6`; more as their ranges, `16×7–11/5` (a card lists every unit's)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from ramsweep.text import MISSING, pct

SHOWN_PAIRS = 3  # distinct (neurons, bits) written out; more are summarised by their ranges
HISTORY_LINES = 12  # a phase's history in a card: at most about this many lines (the rest thinned)


def is_phased(r) -> bool:
    """An ok experiment whose record holds a search in phases with at least one phase done."""
    s = getattr(r, "search", None)
    return (r.kind == "experiment" and r.ok and isinstance(s, Mapping) and s.get("strategy") == "phases"
            and bool(s.get("phases")))


def figure(search: Mapping) -> str:
    """The figure a search's fitness is shown in: accuracy under ACCURACY, else CE (HARMONIC's)."""
    return "accuracy" if str(search.get("fitness", "")).lower() == "accuracy" else "ce"


def figure_name(kind: str) -> str:
    return "acc" if kind == "accuracy" else "CE"


def fmt(x: float | None, kind: str) -> str:
    if x is None:
        return MISSING
    return pct(x, 2) if kind == "accuracy" else f"{x:.4f}"


def _better(a: float, b: float, kind: str) -> bool:
    return a > b if kind == "accuracy" else a < b


def phase_kind(phase: Mapping) -> str:
    """'grid', 'neurons GA+TS', 'bits TS', 'connections GA' (a record's phase, or a spec's: whose
    grid carries the block's default strategy, which it does not use)."""
    strategy = phase.get("strategy") if phase.get("search") != "grid" else None
    return str(phase.get("search")) + (f" {str(strategy).upper()}" if strategy else "")


def sizes_text(sizes: Mapping | None) -> str:
    """A genome's sizes ({"neurons": [...], "bits": [...]}, one a unit), compactly."""
    if not sizes:
        return MISSING
    pairs = list(zip(sizes.get("neurons") or (), sizes.get("bits") or ()))
    if not pairs:
        return MISSING
    counts = Counter(pairs)  # first-seen order among equal counts
    if len(counts) == 1:
        (n, b), = counts
        return f"{len(pairs)}×{n}/{b}"
    if len(counts) <= SHOWN_PAIRS:
        return ", ".join(f"{n}/{b} ×{c}" for (n, b), c in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(pairs)}×{_span([n for n, _ in pairs])}/{_span([b for _, b in pairs])}"


def _span(values: Sequence[int]) -> str:
    lo, hi = min(values), max(values)
    return str(lo) if lo == hi else f"{lo}–{hi}"


def per_unit(sizes: Mapping | None) -> str:
    """Every unit's sizes, in unit order: 'neurons 10 11 7, bits 5' where the bits are all alike
    (or the neurons), else '10/5 11/4 7/5'."""
    if not sizes:
        return MISSING
    neurons, bits = list(sizes.get("neurons") or ()), list(sizes.get("bits") or ())
    if len(set(neurons)) <= 1 or len(set(bits)) <= 1:
        if len(set(neurons)) <= 1 and len(set(bits)) <= 1:
            return sizes_text(sizes)
        return f"neurons {' '.join(map(str, neurons)) if len(set(neurons)) > 1 else neurons[0]}, " \
               f"bits {' '.join(map(str, bits)) if len(set(bits)) > 1 else bits[0]}"
    return " ".join(f"{n}/{b}" for n, b in zip(neurons, bits))


def moved(start: Mapping | None, chosen: Mapping | None) -> str:
    """Start → chosen sizes; 'kept' where the phase chose its start."""
    if start == chosen:
        return f"{sizes_text(start)} kept"
    return f"{sizes_text(start)} → {sizes_text(chosen)}"


def line_value(line: Mapping, kind: str) -> float | None:
    """A history line's figure: a grid pair's own, a generation's or iteration's best (a size
    phase's in CE and accuracy, a connections phase's in its fitness)."""
    if "best" in line:
        return line.get("best")
    return line.get(kind) if "best_ce" not in line else line.get(f"best_{kind}")


def best_line(history: Sequence[Mapping], kind: str) -> int | None:
    """The index of the history line with the best figure (the first of equals)."""
    best = None
    for i, line in enumerate(history):
        x = line_value(line, kind)
        if x is not None and (best is None or _better(x, line_value(history[best], kind), kind)):
            best = i
    return best


def _connections(phase: Mapping) -> Mapping | None:
    """A connections phase's §5 search summary (its fitness before and after, selection, history)."""
    inner = phase.get("connections")
    return inner if isinstance(inner, Mapping) else None


def slice_text(phase: Mapping, kind: str) -> str:
    """The phase's best fitness on the fitness slice: a grid's best pair, with its sizes; a GA or
    TS phase's first step's best → its best over every step (the last, where it only improves); a
    connections phase's fitness of the drawn wiring → of the wiring it ended with."""
    inner = _connections(phase)
    if inner is not None:
        before, after = inner.get("fitness_before") or {}, inner.get("fitness_after") or {}
        return f"{fmt(before.get(kind), kind)} → {fmt(after.get(kind), kind)}"
    history = phase.get("history") or []
    best = best_line(history, kind)
    if best is None:
        return MISSING
    line = history[best]
    if phase.get("search") == "grid":
        return f"{fmt(line_value(line, kind), kind)} at {line.get('neurons')}/{line.get('bits')}"
    return f"{fmt(line_value(history[0], kind), kind)} → {fmt(line_value(line, kind), kind)}"


def _selection(phase: Mapping) -> Sequence[Mapping]:
    inner = _connections(phase)
    return phase.get("selection") or (inner.get("selection") if inner is not None else None) or ()


def _candidate(phase: Mapping, label: str | None) -> Mapping | None:
    return next((c for c in _selection(phase) if c.get("label") == label), None)


def _on_validation(candidate: Mapping, kind: str) -> float | None:
    """A candidate's validation figure: a size phase's CE or accuracy, a connections phase's fitness."""
    return candidate.get(f"validation_{kind}", candidate.get("validation_fitness"))


def validation_text(phase: Mapping, kind: str) -> str:
    """The validation figure of the phase's start → of its choice (the same where it kept its start)."""
    start, chosen = _candidate(phase, "start"), _candidate(phase, phase.get("chosen_label"))
    a = fmt(_on_validation(start, kind), kind) if start else MISSING
    if chosen is None or chosen is start:
        return f"{a} kept" if start else MISSING
    return f"{a} → {fmt(_on_validation(chosen, kind), kind)}"


def columns(search: Mapping) -> tuple[str, ...]:
    f = figure_name(figure(search))
    return ("#", "search", "sizes: start → chosen", f"slice {f}", f"val {f}", "chosen", "evals", "s")


def phase_cells(phase: Mapping, kind: str) -> list[str]:
    seconds = phase.get("seconds")
    return [str(phase.get("phase", "")), phase_kind(phase), moved(phase.get("start"), phase.get("chosen")),
            slice_text(phase, kind), validation_text(phase, kind), str(phase.get("chosen_label") or MISSING),
            f"{phase.get('evaluations', 0):,}", MISSING if seconds is None else f"{seconds:,.1f}"]


def rows(search: Mapping) -> list[list[str]]:
    kind = figure(search)
    return [phase_cells(p, kind) for p in search.get("phases") or ()]


def title(name: str, search: Mapping) -> str:
    """What the table is of: the fitness, the slice, the whole search's sizes, evaluations, time."""
    return f"{name} — search in phases, {summary(search)}"


def summary(search: Mapping) -> str:
    examples = (search.get("examples") or {}).get("fitness")
    on = f" on {examples:,} slice examples" if isinstance(examples, int) else " on the fitness slice"
    stopped = f", stopped by the {search['stopped']}" if search.get("stopped") else ""
    sizes = search.get("sizes") or {}
    seconds = search.get("search_s")
    took = f", {seconds:,.0f} s" if isinstance(seconds, (int, float)) else ""
    return (f"{str(search.get('fitness', '')).upper()}{on}: "
            f"{moved(sizes.get('start'), sizes.get('chosen'))}, {search.get('evaluations', 0):,} evaluations"
            f"{took}{stopped}")


NOTE = ("Each phase's candidates compared on validation (test read once); slice: a grid's best pair, a GA or "
        "TS phase's first step's best → its best, a connections phase's drawn → searched wiring; sizes "
        "neurons/bits, ×: units")


def rich_table(r) -> Table:
    search = r.search
    table = Table(title=escape(title(r.name, search)), title_justify="left", caption=NOTE + ".", caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in columns(search):
        table.add_column(col, justify="left" if col in ("search", "sizes: start → chosen", "chosen") else "right",
                         overflow="fold")
    for cells in rows(search):
        table.add_row(*map(escape, cells))
    return table


def md_table(cols: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols),
            *("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |" for cells in body)]


def markdown_lines(r) -> list[str]:
    """The phase table under its heading (the report's groups)."""
    return ["", f"### {title(r.name, r.search)}", "", f"*{NOTE}.*", "", *md_table(columns(r.search), rows(r.search))]


# ---------------------------------------------------------------- a card's detail: candidates, history


def thinned(history: Sequence[Mapping], kind: str, limit: int = HISTORY_LINES) -> list[int]:
    """Which history lines a card shows: all of a short history; of a longer one the first and
    last, the best, the first and last of each stage or unit (unless they alone are too many),
    and lines evenly between."""
    n = len(history)
    if n <= limit:
        return list(range(n))
    keep = {0, n - 1, best_line(history, kind) or 0}
    bounds = set()
    for i in range(1, n):
        if (history[i].get("stage"), history[i].get("unit")) != (history[i - 1].get("stage"), history[i - 1].get("unit")):
            bounds |= {i - 1, i}
    if len(bounds) <= limit:
        keep |= bounds
    keep |= {round(j * (n - 1) / (limit - 1)) for j in range(limit)}
    return sorted(keep)


def history_rows(phase: Mapping, kind: str, limit: int = HISTORY_LINES) -> tuple[tuple[str, ...], list[list[str]]]:
    """A phase's history as (columns, rows): a grid's pairs, or a GA or TS phase's best and mean
    per generation or iteration; the best line marked."""
    inner = _connections(phase)
    if inner is not None:
        return _connections_history(inner, kind, limit)
    history = phase.get("history") or []
    best = best_line(history, kind)
    mark = lambda i: "best" if i == best else ""  # noqa: E731
    shown = thinned(history, kind, limit)
    if phase.get("search") == "grid":
        cols = ("step", "neurons", "bits", "slice CE", "slice acc", "")
        return cols, [[str(h.get("step", "")), str(h.get("neurons", "")), str(h.get("bits", "")),
                       fmt(h.get("ce"), "ce"), fmt(h.get("accuracy"), "accuracy"), mark(i)]
                      for i in shown for h in [history[i]]]
    cols = ("stage", "step", "best CE", "mean CE", "best acc", "mean acc", "")
    return cols, [[str(h.get("stage", "")).upper(), str(h.get("step", "")), fmt(h.get("best_ce"), "ce"),
                   fmt(h.get("mean_ce"), "ce"), fmt(h.get("best_accuracy"), "accuracy"),
                   fmt(h.get("mean_accuracy"), "accuracy"), mark(i)] for i in shown for h in [history[i]]]


def _connections_history(inner: Mapping, kind: str, limit: int) -> tuple[tuple[str, ...], list[list[str]]]:
    """A connections phase's §5 history: its best and mean fitness per generation or iteration of
    each unit, or (a long per-cluster search) a line a tier."""
    history = inner.get("history") or []
    f = figure_name(kind)
    if history and "first" in history[0]:
        return ("tier", "units", f"first {f}", f"last {f}", "s"), [
            [str(h.get("tier", "")), str(h.get("units", "")), fmt(h.get("first"), kind), fmt(h.get("last"), kind),
             f"{h.get('elapsed_s', 0):,.1f}"] for h in history]
    shown = thinned(history, kind, limit)
    return ("unit", "stage", "step", f"best {f}", f"mean {f}", "evaluations"), [
        [str(h.get("unit", "")), str(h.get("stage", "")).upper(), str(h.get("step", "")), fmt(h.get("best"), kind),
         fmt(h.get("mean"), kind), f"{h.get('evaluations', 0):,}"] for i in shown for h in [history[i]]]


def selection_rows(phase: Mapping, kind: str) -> tuple[tuple[str, ...], list[list[str]]]:
    """A phase's candidates on validation, the chosen one marked: their sizes, or (a connections
    phase, its sizes fixed) their wirings' fitness."""
    chosen = phase.get("chosen_label")
    mark = lambda c: "chosen" if c.get("label") == chosen else ""  # noqa: E731
    if _connections(phase) is not None:
        return ("candidate", f"val {figure_name(kind)}", ""), [
            [str(c.get("label", "")), fmt(_on_validation(c, kind), kind), mark(c)] for c in _selection(phase)]
    return ("candidate", "sizes", "val CE", "val acc", ""), [
        [str(c.get("label", "")), per_unit(c), fmt(c.get("validation_ce"), "ce"),
         fmt(c.get("validation_accuracy"), "accuracy"), mark(c)] for c in _selection(phase)]


def card_lines(r) -> list[str]:
    """A card's section: the phase table, then per phase its chosen sizes per unit, its candidates
    on validation and its history on the fitness slice."""
    search = r.search
    kind = figure(search)
    lines = ["", f"Search in phases, {summary(search)}.", "", f"*{NOTE}.*", "",
             *md_table(columns(search), rows(search))]
    for phase in search.get("phases") or ():
        inner = _connections(phase)
        history = (inner if inner is not None else phase).get("history") or []
        cols, body = history_rows(phase, kind)
        thin = f", {len(body)} of its {len(history)} lines" if len(body) < len(history) else ""
        what = "the wiring on" if inner is not None else ""
        lines += ["", f"Phase {phase.get('phase', '')}, {phase_kind(phase)}: chose {phase.get('chosen_label')} "
                      f"({what + ' ' if what else ''}{per_unit(phase.get('chosen'))}).", "",
                  *md_table(*selection_rows(phase, kind)),
                  "", f"History on the fitness slice{thin}:", "", *md_table(cols, body)]
    return lines


def brief(block: Mapping) -> str:
    """An optimize block with phases, in a few words: 'phases grid → neurons GA+TS → bits TS, CE'."""
    phases = " → ".join(phase_kind(p) for p in block.get("phases") or ())
    return f"phases {phases}, {str(block.get('fitness', '')).upper()}".strip(", ")
