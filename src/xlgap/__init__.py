"""xlgap: measure, explain and reduce the cross-lingual gap of language models.

A whole study needs this one import::

    import xlgap
    backend = xlgap.load_backend("embedded", cache=True)
    data = xlgap.load_dataset("builtin").subset(12)
    run = xlgap.sample(backend, data, source="en", targets=["es"], exact=True, out="study/run")
    diagnosis = xlgap.diagnose(run, n_boot=200)

The names load lazily (PEP 562): ``import xlgap`` imports no torch, transformers or pandas;
each name imports its module on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it (attribute of the same name unless "module:attr")
_LAZY: dict[str, str] = {
    "load_backend": "xlgap.api.backends",
    "load_dataset": "xlgap.api.backends",
    "sample": "xlgap.api.runs",
    "load_run": "xlgap.api.runs",
    "diagnose": "xlgap.api.runs",
    "compare_strategies": "xlgap.api.runs",
    "train_steering_vectors": "xlgap.api.experiments",
    "run_steering": "xlgap.api.experiments",
    "run_finetune": "xlgap.api.experiments",
    "look_inside": "xlgap.api.inside",
    "hidden_states": "xlgap.api.inside",
    "plan": "xlgap.stats.plan_study",
    "load_result": "xlgap.results",
    "write_report": "xlgap.api.report",
    "Result": "xlgap.results",
    "COLUMNS": "xlgap.results",
    "Run": "xlgap.runs",
    "ParallelDataset": "xlgap.data.items",
    "SamplingOptions": "xlgap.sampling",
    "SteeringVectors": "xlgap.interventions.steering.vectors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> object:  # no typing import: it is most of the cost
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'xlgap' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
