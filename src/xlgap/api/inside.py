"""Inside the model: ``look_inside`` (ILO, similarity, the logit lens and consistency in one
call) and ``hidden_states``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xlgap.api.common import PathLike, as_list
from xlgap.representations.layerwise import hidden_states as states
from xlgap.representations.layerwise import look_inside as look
from xlgap.results import Result


def look_inside(backend: Any, data: Any, *, source: str, targets: Sequence[str],
                out: PathLike | None = None, **options: Any) -> Result:
    """ILO, similarity, the logit lens and consistency in one call (``xlgap inside``); see
    :func:`xlgap.representations.layerwise.look_inside` for the ``options``
    (``analyses``, ``preset``, ``pooling``, ``k``, ``n_boot``, ...)."""
    return look(backend, data, source=source, targets=as_list(targets), out=out, **options)


def hidden_states(backend: Any, data: Any, *, languages: Sequence[str],
                  out: PathLike | None = None, pooling: str = "mean_no_bos",
                  batch_size: int = 16, progress: bool = False) -> Any:
    """Pooled hidden states of the parallel texts, every layer (a
    :class:`~xlgap.representations.extract.HiddenStateSet`), kept in ``out/hidden/``."""
    return states(backend, data, as_list(languages), out, pooling=pooling,
                  batch_size=batch_size, progress=progress)
