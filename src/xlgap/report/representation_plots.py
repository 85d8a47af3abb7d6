"""Old home of :mod:`xlgap.report.plots.representations`, kept so that existing imports
work."""

from xlgap.report.plots.representations import (
    plot_ilo_by_layer,
    plot_logit_lens,
    plot_pair_heatmap,
    plot_similarity_by_layer,
)

__all__ = ["plot_ilo_by_layer", "plot_logit_lens", "plot_pair_heatmap",
           "plot_similarity_by_layer"]
