"""Statistics of the cross-lingual gap.

* :mod:`xlgap.stats.metrics` -- per-item accuracy, agreement, ECLeKTic scores, distances;
* :mod:`xlgap.stats.bootstrap` -- percentile CIs over items and a paired bootstrap test;
* :mod:`xlgap.stats.ensembling` -- source-target distance as answers are pooled;
* :mod:`xlgap.stats.pi` -- the variance share pi: mismatch heuristic and model fit;
* :mod:`xlgap.stats.simulate` -- runs drawn from the bias/variance model;
* :mod:`xlgap.stats.diagnose` -- all of it for a run, as ``diagnosis.json`` and a summary.

Submodules are imported on use, so that ``import xlgap.stats.bootstrap`` stays light.
"""
