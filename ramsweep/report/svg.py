"""Small inline SVG charts: what the dashboard draws and the HTML report can embed, with no
script, no style attribute and no request (presentation attributes only, every text escaped),
so the strict Content-Security-Policy of both holds and nothing loads from anywhere.

A chart is a viewBox the page scales to its width: the same markup on a desktop and a phone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 46, 40  # the plot's margins: tick labels left and below, title and legend above
INK, GRID, MUTED = "#444", "#ddd", "#888"
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


@dataclass(frozen=True)
class Series:
    name: str
    points: Sequence[tuple[float, float]]
    kind: str = "line"  # line, step (a best-so-far: flat until the next point) or dots
    colour: str = COLOURS[0]
    dashed: bool = False


def nice_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, at most `most` + 1 of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        lo, hi = lo - 0.5 if lo == 0 else lo * 0.99, hi + 0.5 if hi == 0 else hi * 1.01
        lo, hi = min(lo, hi), max(lo, hi)
    raw = (hi - lo) / most
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    return [round(first + k * step, 12) for k in range(int(math.ceil((hi - first) / step - 1e-9)) + 1)]


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _open(title: str, width: int, height: int) -> list[str]:
    t = escape(title)
    return [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="{t}" '
            f'class="chart" font-family="sans-serif" font-size="12">',
            f"<title>{t}</title>", f'<text x="{LEFT}" y="16" fill="{INK}" font-weight="bold">{t}</text>']


def chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
          x_text: Callable[[float], str] = _number, marks: Sequence[tuple[float, str]] = (),
          width: int = WIDTH, height: int = HEIGHT) -> str:
    """Lines, steps and dots on shared axes, `marks` as labelled vertical rules (a phase's
    start). Ticks are round numbers; x values are shown through x_text."""
    xs = [x for s in series for x, _ in s.points] + [x for x, _ in marks]
    ys = [y for s in series for _, y in s.points if math.isfinite(y)]
    out = _open(title, width, height)
    if not xs or not ys:
        return "".join(out + [f'<text x="{LEFT}" y="{height / 2}" fill="{MUTED}">nothing to draw yet</text></svg>'])
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    w, h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - x0) / ((x1 - x0) or 1) * w, 1)

    def py(y: float) -> float:
        return round(TOP + h - (y - y0) / ((y1 - y0) or 1) * h, 1)

    for y in y_ticks:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{py(y)}" y2="{py(y)}" stroke="{GRID}"/>'
                   f'<text x="{LEFT - 6}" y="{py(y) + 4}" text-anchor="end" fill="{INK}">{escape(_number(y))}</text>')
    for x in x_ticks:
        out.append(f'<text x="{px(x)}" y="{TOP + h + 16}" text-anchor="middle" fill="{INK}">{escape(x_text(x))}</text>')
    for x, label in marks:
        out.append(f'<line x1="{px(x)}" x2="{px(x)}" y1="{TOP}" y2="{TOP + h}" stroke="{MUTED}" stroke-dasharray="3 3"/>'
                   f'<text class="mark" x="{px(x) + 3}" y="{TOP + 10}" fill="{MUTED}" font-size="10">{escape(label)}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + h}" stroke="{INK}"/>'
               f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{TOP + h}" y2="{TOP + h}" stroke="{INK}"/>'
               f'<text x="{LEFT + w}" y="{height - 6}" text-anchor="end" fill="{INK}">{escape(x_label)}</text>'
               f'<text x="12" y="{TOP + h / 2}" text-anchor="middle" fill="{INK}" '
               f'transform="rotate(-90 12 {TOP + h / 2})">{escape(y_label)}</text>')
    for s in series:
        points = [(px(x), py(y)) for x, y in s.points if math.isfinite(y)]
        name = escape(s.name)
        if s.kind == "dots":
            out.append(f'<g class="dots" fill="{s.colour}" fill-opacity="0.55"><title>{name}</title>'
                       + "".join(f'<circle cx="{x}" cy="{y}" r="4"/>' for x, y in points) + "</g>")
            continue
        if s.kind == "step":  # flat until the next point, then straight down (or up) to it
            points = [p for a, b in zip(points, points[1:] + [None]) for p in ([a] if b is None else [a, (b[0], a[1])])]
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        path = " ".join(f"{x},{y}" for x, y in points)
        out.append(f'<polyline class="{escape(s.kind)}" points="{path}" fill="none" stroke="{s.colour}" '
                   f'stroke-width="2"{dash}><title>{name}</title></polyline>')
    x = LEFT  # the legend: a line under the title
    for s in series:
        if s.name:
            out.append(f'<rect x="{x}" y="25" width="10" height="10" fill="{s.colour}"/>'
                       f'<text x="{x + 14}" y="34" fill="{INK}">{escape(s.name)}</text>')
            x += 24 + 7 * len(s.name)
    return "".join(out + ["</svg>"])


def bars(labels: Sequence[str], values: Sequence[float | None], *, title: str, y_label: str,
         fmt: Callable[[float], str] = _number, width: int = WIDTH, height: int = HEIGHT) -> str:
    """One bar a label (a missing value: no bar), its value written above it."""
    out = _open(title, width, height)
    shown = [v for v in values if v is not None and math.isfinite(v)]
    if not shown:
        return "".join(out + [f'<text x="{LEFT}" y="{height / 2}" fill="{MUTED}">nothing to draw yet</text></svg>'])
    ticks = nice_ticks(min(0.0, min(shown)), max(shown))
    top = max(ticks[-1], max(shown))
    w, h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = w / len(labels)
    for y in ticks:
        py = round(TOP + h - y / (top or 1) * h, 1)
        out.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{py}" y2="{py}" stroke="{GRID}"/>'
                   f'<text x="{LEFT - 6}" y="{py + 4}" text-anchor="end" fill="{INK}">{escape(_number(y))}</text>')
    small = len(labels) > 12
    size = ' font-size="10"' if small else ""
    for k, (label, v) in enumerate(zip(labels, values)):
        x = round(LEFT + k * slot + slot * 0.15, 1)
        out.append(f'<text x="{round(x + slot * 0.35, 1)}" y="{TOP + h + 16}" text-anchor="middle" fill="{INK}"'
                   f'{size}>{escape(label)}</text>')
        if v is None or not math.isfinite(v):
            continue
        bar_h = round(max(v, 0) / (top or 1) * h, 1)
        out.append(f'<rect class="bar" x="{x}" y="{round(TOP + h - bar_h, 1)}" width="{round(slot * 0.7, 1)}" '
                   f'height="{bar_h}" fill="{COLOURS[0]}"><title>{escape(label)}: {escape(fmt(v))}</title></rect>')
        if not small:
            out.append(f'<text x="{round(x + slot * 0.35, 1)}" y="{round(TOP + h - bar_h - 4, 1)}" '
                       f'text-anchor="middle" fill="{INK}" font-size="10">{escape(fmt(v))}</text>')
    out.append(f'<line x1="{LEFT}" x2="{LEFT + w}" y1="{TOP + h}" y2="{TOP + h}" stroke="{INK}"/>'
               f'<text x="12" y="{TOP + h / 2}" text-anchor="middle" fill="{INK}" '
               f'transform="rotate(-90 12 {TOP + h / 2})">{escape(y_label)}</text>')
    return "".join(out + ["</svg>"])
