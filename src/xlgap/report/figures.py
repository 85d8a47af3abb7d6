"""Old home of :mod:`xlgap.report.plots.figures`, kept so that existing imports work."""

from xlgap.report.plots.figures import figure_svg, new_figure, save_figure

__all__ = ["figure_svg", "new_figure", "save_figure"]
