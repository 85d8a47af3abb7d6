"""``run_interventions``: the Python API behind ``xlgap intervene``.

Each strategy answers every (item, language) into its own run directory under ``out``
(``out/<strategy>/``, resumable, cached per request), then the strategies are compared with
the baseline on the same items: estimates, item-bootstrap CIs and paired tests of every
registered pair metric.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlgap.data.items import ParallelDataset
from xlgap.errors import ConfigError
from xlgap.interventions.evaluate import evaluate_dirs, run_items, run_strategy
from xlgap.interventions.strategies import StrategyOptions, get_strategy
from xlgap.models.base import Backend
from xlgap.provenance import data_hash, provenance
from xlgap.results import Result
from xlgap.stats.bootstrap import DEFAULT_N_BOOT


def run_interventions(backend: Backend, dataset: ParallelDataset, out: str | os.PathLike[str],
                      *, strategies: Sequence[str], targets: Sequence[str],
                      options: StrategyOptions | None = None, n_boot: int = DEFAULT_N_BOOT,
                      seed: int = 0, progress: bool = False,
                      config: Mapping[str, Any] | None = None) -> Result:
    """Run ``strategies`` (``baseline`` is added first when missing) on ``dataset`` from
    ``options.source`` into ``targets`` and compare them; returns the ``interventions``
    result (also what ``interventions.json`` holds once saved)."""
    options = options or StrategyOptions()
    if not targets:
        raise ConfigError("interventions need at least one target language")
    if not dataset.has_candidates:
        raise ConfigError(f"data set {dataset.name} has no answer candidates; interventions "
                          "need items with candidates (e.g. BMLAMA or the built-in set)")
    names = ["baseline", *[n for n in strategies if n != "baseline"]]
    out = Path(out)
    source = options.source
    meta = {"config": dict(config or {})}
    for name in names:
        strategy = get_strategy(name, backend, dataset, options)
        run_strategy(strategy, dataset, out / strategy.name, source=source, targets=targets,
                     meta=meta, progress=progress)
    item_ids = [it.id for it in run_items(dataset.items, [source, *targets])]
    result = Result("interventions", evaluate_dirs(out, names, n_boot=n_boot, seed=seed,
                                                   item_ids=item_ids))
    data = dataset.source_path or dataset.name
    result.update({"model": getattr(backend, "name", None), "data": data,
                   "config": dict(config or {}),
                   "provenance": provenance(dict(config or {}), data=data,
                                            data_hash=data_hash(dataset.items,
                                                                dataset.languages))})
    return result
