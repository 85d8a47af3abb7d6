"""Old home of :mod:`xlgap.report.text` (tables) and
:mod:`xlgap.report.plots.interventions` (the figure), kept so that existing imports work."""

from xlgap.report.plots.interventions import plot_interventions
from xlgap.report.text import format_interventions_table, interventions_markdown, table_rows

__all__ = ["format_interventions_table", "interventions_markdown", "plot_interventions",
           "table_rows"]
