"""Representation analyses: ILO, cross-lingual similarity, rank consistency, extraction.

Everything here works on plain numpy arrays, one layer at a time, so a model is only
needed for :func:`extract_hidden_states`.

The one-layer ILO function is ``xlgap.representations.ilo.ilo``; it is not re-exported
here so that ``xlgap.representations.ilo`` keeps naming the module.
"""

from xlgap.representations.consistency import (
    consistency_matrix,
    rank_consistency,
    rankc,
    shared_rates,
)
from xlgap.representations.extract import HiddenStateSet, extract_hidden_states
from xlgap.representations.ilo import IloResult, ilo_by_layer, ilo_from_npz, knn_cosine
from xlgap.representations.similarity import (
    layerwise_similarity,
    linear_cka,
    parallel_cosine,
    retrieval_accuracy,
    retrieval_accuracy_directed,
)

__all__ = [
    "HiddenStateSet",
    "IloResult",
    "consistency_matrix",
    "extract_hidden_states",
    "ilo_by_layer",
    "ilo_from_npz",
    "knn_cosine",
    "layerwise_similarity",
    "linear_cka",
    "parallel_cosine",
    "rank_consistency",
    "rankc",
    "retrieval_accuracy",
    "retrieval_accuracy_directed",
    "shared_rates",
]
