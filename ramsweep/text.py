"""How numbers are written for people (tables, logs, cards): one place, so a PPL or a rate
reads the same everywhere. A missing value is an em dash, never 0."""

MISSING = "—"


def num(x: float | None, spec: str = ",.0f") -> str:
    """`x` formatted by `spec`; PPLs by default (whole numbers with thousands separators)."""
    return MISSING if x is None else format(x, spec)


def ppl(x: float | None) -> str:
    return num(x, ",.0f")


def pct(x: float | None, digits: int = 2) -> str:
    """A share (0.0785) as a percentage ('7.85%')."""
    return MISSING if x is None else f"{100 * x:.{digits}f}%"
