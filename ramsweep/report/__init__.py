"""The report layer: leaderboards by comparable group, seeds, lineage, cards, grid views,
plots, and the table / md / csv / json / html formats."""

from ramsweep.report.formats import report

__all__ = ["report"]
