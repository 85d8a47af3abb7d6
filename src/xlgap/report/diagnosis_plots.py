"""Old home of :mod:`xlgap.report.plots.diagnosis`, kept so that existing imports work."""

from xlgap.report.plots.diagnosis import (
    plot_accuracy,
    plot_confidence,
    plot_ensembling,
    plot_pi,
    write_plots,
)

__all__ = ["plot_accuracy", "plot_confidence", "plot_ensembling", "plot_pi", "write_plots"]
