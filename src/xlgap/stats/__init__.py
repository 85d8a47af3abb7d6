"""Statistics of the cross-lingual gap.

* :mod:`xlgap.stats.metrics` -- per-item accuracy, agreement, ECLeKTic scores, distances;
* :mod:`xlgap.stats.pairs` -- the pair-metric registry and the one comparison pipeline:
  per-item parts -> pooled estimates -> item-bootstrap CIs -> paired tests;
* :mod:`xlgap.stats.bootstrap` -- the one bootstrap over items (seeds, missing pairs,
  percentile CIs, paired tests and their p-value floor, shuffled chance levels);
* :mod:`xlgap.stats.consistency` -- rank consistency and shared answers of candidate scores;
* :mod:`xlgap.stats.ensembling` -- source-target distance as answers are pooled;
* :mod:`xlgap.stats.mismatch` -- the mismatch heuristic for pi;
* :mod:`xlgap.stats.pi` (with :mod:`xlgap.stats.pi_particles`) -- the model fit of pi;
* :mod:`xlgap.stats.simulate` -- runs drawn from the bias/variance model;
* :mod:`xlgap.stats.diagnose` -- all of it for a run, as ``diagnosis.json`` and a summary.
* :mod:`xlgap.stats.planning`, :mod:`xlgap.stats.plan_study` -- items, samples and cost a
  study needs, from a pilot (``xlgap plan``);
* :mod:`xlgap.stats.sequential` -- sampling until a CI is narrow, with looks planned in
  advance (``xlgap sample --until-ci``).

Submodules are imported on use, so that ``import xlgap.stats.bootstrap`` stays light.
"""
