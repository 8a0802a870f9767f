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


def calibrated(cal, temperature: bool = True) -> str:
    """A calibrated PPL (records.Calibrated) with its temperature, or what the fit found instead:
    at the highest temperature searched no temperature beats uniform guessing, and at the lowest
    the number is the search's bound, not a fitted value."""
    if cal is None or cal.ppl is None:
        return MISSING
    if cal.bound == "highest":
        return "no temperature beats uniform"
    if cal.temperature is None or not temperature:  # a record written without it (by hand, or older)
        return ppl(cal.ppl)
    if cal.bound == "lowest":
        return f"{ppl(cal.ppl)} (T at the search's lowest, {cal.temperature:.3g})"
    return f"{ppl(cal.ppl)} (T={cal.temperature:.3g})"


def duration(seconds: float) -> str:
    """'42s', '17 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def count(n: int, noun: str) -> str:
    """'1 experiment', '2 experiments', '1,024 experiments'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
