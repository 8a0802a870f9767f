"""The report layer: ranked tables, per-tier breakdowns, md / csv / json export."""

from ramsweep.report.tables import report

__all__ = ["report"]
