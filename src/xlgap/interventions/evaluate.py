"""Run strategies into run directories and compare them (the paper's Table 1).

Each strategy writes a standard run directory (sample mode, its R final answers per
(item, language) as the samples; see ``docs/run-format.md``), so ``xlgap diagnose``
works on it. Rows of ``samples.jsonl`` carry two extra fields that the run format
allows: ``failed`` (the final answer could not be parsed; it is mapped to OTHER) and
``raw`` (the model output behind it); the row of sample 0 also carries the pair's
``intermediate`` texts (translations, English answers).

Metrics are the pair metrics of the registry that ``diagnose`` reports, under the same
names and definitions (:mod:`xlgap.stats.pairs`). The per-response ones lead: of one
final answer in the source and one in the target, ``response_transfer`` is the share of
answer pairs right in the target among those right in the source, ``response_success``
the share right in both, ``response_agreement`` the share that agree (over the R x R
answer pairs when sampled, exact expectations with ``--exact``). The ensembled ones read
the modes: a language answers an item correctly when the mode of its R final answers is
gold (ties split evenly), and ECLeKTic *overall success* and *transfer* are taken over
(item, target) pairs, pooled over items and targets; every other registered metric
(chi-square, js, ...) comes along. Their 95% CIs
resample items; the paired test against ``baseline`` resamples items once for both
strategies and recomputes the pooled statistic the table reports
(:func:`xlgap.stats.pairs.paired_test`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.data.items import Item, ParallelDataset
from xlgap.errors import ConfigError, DataError
from xlgap.interventions.strategies import PairResult, Strategy
from xlgap.interventions.strategies.vote import EXACT_NOT_APPLICABLE
from xlgap.provenance import FORMAT_VERSION
from xlgap.runs import Run, load_run, parse_failures, restrict_run
from xlgap.sampling import fill_run
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, mean_with_ci
from xlgap.stats.diagnose import distribution
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.multiple import adjust_holm_map
from xlgap.stats.pairs import (
    PAIR_METRICS,
    REFERENCE_TRANSFER,
    Part,
    describe_metrics,
    ensembling_recovers,
    pair_parts,
    paired_test,
    reference_transfer_parts,
    select_target,
    source_differs,
    stack_parts,
    summarise,
)

FORMAT = "interventions"  # the format tag of interventions.json
# Options that change a strategy's answers: a run directory made with other values is
# refused instead of being resumed into a mix of two runs.
_RESUME_KEYS = ("strategy", "fingerprint", "temperature", "shots", "seed", "translations",
                "other_scripts", "translation_langs")


# -- making runs -----------------------------------------------------------------------


def sample_rows(result: PairResult) -> list[dict[str, Any]]:
    """The ``samples.jsonl`` rows of one pair's result."""
    rows = []
    for r, (text, answer, failed, raw) in enumerate(zip(
            result.texts, result.answers, result.failed, result.raw, strict=True)):
        row: dict[str, Any] = {"item": result.item, "lang": result.lang, "sample": r,
                               "answer": answer, "text": text, "failed": failed, "raw": raw}
        if r == 0 and result.intermediate:
            row["intermediate"] = result.intermediate
        rows.append(row)
    return rows


def run_items(items: Sequence[Item], languages: Sequence[str]) -> list[Item]:
    """The items a run over ``languages`` holds: those with at least one of them."""
    return [it for it in items if any(it.has(lang) for lang in languages)]


def run_strategy(strategy: Strategy, dataset: ParallelDataset, run_dir: str | Path, *,
                 source: str, targets: Sequence[str], meta: dict[str, Any] | None = None,
                 chunk: int = 64, progress: bool = True) -> Path:
    """Answer every (item, language) of ``dataset`` in ``[source, *targets]`` with
    ``strategy`` into the run directory ``run_dir`` through the one run loop
    (:func:`xlgap.sampling.fill_run`: created, or resumed with the same checks as
    ``sample``; pairs already complete there are skipped, so a complete directory costs
    no model call).

    ``dataset`` may hold more languages than the run (translation languages); only the
    run's languages are answered. Pairs go to the strategy ``chunk`` at a time (each
    strategy step is one backend call per chunk) and are written after each chunk.
    """
    opts = strategy.options
    options = {**asdict(opts), "strategy": strategy.name,
               "translation_langs": list(opts.translation_langs)}
    def answer(part: list[tuple[Item, str]]) -> list[dict[str, Any]]:
        strategy.check(part)  # a clear error before this chunk's model calls
        if opts.exact:
            return [{"item": it.id, "lang": lang, "probs": probs}
                    for (it, lang), probs in zip(part, strategy.score(part), strict=True)]
        return [row for res in strategy.run(part) for row in sample_rows(res)]

    if opts.exact and not strategy.backend.can_score:
        raise ConfigError(f"intervene --exact needs a backend that can score continuations; "
                          f"{strategy.backend.kind!r} cannot. Drop --exact to sample.")
    run_meta = {"model": getattr(strategy.backend, "name", strategy.backend.fingerprint),
                "fingerprint": strategy.backend.fingerprint,
                "mode": "exact" if opts.exact else "sample",
                "samples": None if opts.exact else opts.samples,  # exact: no samples
                "strategy": strategy.name, "options": options,
                "answer_options": {k: v for k, v in options.items() if k != "source"},
                **strategy.describe(), **(meta or {})}
    return fill_run(run_dir, dataset, source=source, targets=targets, meta=run_meta,
                    answer=answer, chunk=chunk, progress=progress, desc=strategy.name)


# -- reading failures back ---------------------------------------------------------------


# -- metrics -----------------------------------------------------------------------------


def strategy_pairs(run: Run) -> dict[str, Part | None]:
    """Per-item parts of every registered pair metric of one strategy's run, ``(Q, T)``
    each (:func:`xlgap.stats.pairs.pair_parts`, the definitions ``diagnose`` uses); metrics
    that need answer embeddings are None (free-text strategy answers have none)."""
    src = distribution(run, run.source)
    if not run.targets:
        return {name: Part.mean(np.zeros((run.n_items, 0))) for name in PAIR_METRICS}
    return stack_parts([pair_parts(src, distribution(run, t), run.gold) for t in run.targets])


def strategy_metrics(run: Run, *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0
                     ) -> dict[str, Any]:
    """Every pair metric of the registry (transfer, overall success, agreement,
    chi-square, js, ...: the same statistics, under the same names, as ``diagnose``
    reports, see docs/diagnosis.md) with CIs, pooled over targets and per target, and
    accuracy per language, for one strategy's run."""
    per = strategy_pairs(run)
    overall = {k: v for k, v in summarise(per, n_boot, seed).items() if v is not None}
    per_target = {t: {k: v for k, v in summarise(select_target(per, i), n_boot, seed).items()
                      if v is not None} for i, t in enumerate(run.targets)}
    transfer = per["transfer"]
    return {
        **overall,
        # ensembled minus per-response transfer, paired: what ensembling can recover
        "ensembling_recovers": ensembling_recovers(per, n_boot, seed),
        "accuracy": {lang: mean_with_ci(accuracy_per_item(distribution(run, lang), run.gold),
                                        n_boot=n_boot, seed=seed)
                     for lang in run.languages},
        "per_target": per_target,
        "n_pairs": 0 if transfer is None else int(np.isfinite(transfer.den).sum()),
        "samples": run.k if run.mode == "sample" else None,  # exact: distributions
    }


def not_applicable(run: Run) -> dict[str, Any] | None:
    """The metrics a strategy's run cannot move by construction, with the reason (exact
    vote-k keeps the baseline's modes), from ``run.json``. An exact vote-k run gets the
    current definition whatever its ``run.json`` says (runs written before the key
    existed, or with an older reason that predates the per-response metrics)."""
    if run.mode == "exact" and str(run.meta.get("strategy", "")).startswith("vote-"):
        return dict(EXACT_NOT_APPLICABLE)
    na = run.meta.get("not_applicable")
    return dict(na) if na else None


def compare_runs(runs: dict[str, Run], *, baseline: str = "baseline",
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                 failures: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The intervention table as a dict (see ``docs/interventions.md`` for the shape).

    Every run must have the same source, targets and items (in the same order). Each
    strategy other than ``baseline`` gets ``vs_baseline``: per pair metric the paired test
    against ``baseline`` on the same items (:func:`xlgap.stats.pairs.paired_test`:
    ``{"estimate" (the difference), "ci", "p", "p_floor", "n", "a", "b"}``), ``p_holm``:
    those p's Holm-adjusted over the strategies compared with baseline (the family a
    best is picked from), ``source_differs`` (its source-language answers are not the
    baseline's) and ``on_baseline_source_correct``: transfer with the baseline's
    denominator (:data:`xlgap.stats.pairs.REFERENCE_TRANSFER`), with its paired test.
    """
    if not runs:
        raise ConfigError("no strategy runs to compare")
    first = next(iter(runs.values()))
    for name, run in runs.items():
        if (run.source, run.targets, run.item_ids) != (first.source, first.targets,
                                                       first.item_ids):
            raise DataError(f"strategy {name!r}: its run has other items, source or "
                            f"targets than {next(iter(runs))!r}; cannot compare them")
    per_item = {name: strategy_pairs(run) for name, run in runs.items()}
    reference = runs.get(baseline)
    fixed = ({} if reference is None else
             {name: reference_parts(reference, run) for name, run in runs.items()})
    table: dict[str, Any] = {}
    for name, run in runs.items():
        m = strategy_metrics(run, n_boot=n_boot, seed=seed)
        fails = (failures or {}).get(name, {})
        m["parse_failures"] = {"total": int(sum(fails.values())),
                               "by_language": {lang: int(fails.get(lang, 0))
                                               for lang in run.languages}}
        na = not_applicable(run)
        if na is not None:
            m["not_applicable"] = na
        # no test of a difference that is zero by construction (exact vote-k's modes)
        moot = set(na["metrics"]) if na is not None else set()
        if reference is not None:
            m["source_differs"] = source_differs(distribution(reference, reference.source),
                                                 distribution(run, run.source))
            m["on_baseline_source_correct"] = {
                "definition": REFERENCE_TRANSFER,
                **{k: v for k, v in summarise(fixed[name], n_boot, seed).items()
                   if v is not None},
                "vs_baseline": None if name == baseline else
                {k: v for k, v in paired_test(fixed[name], fixed[baseline], n_boot,
                                              seed).items() if v is not None and k not in moot}}
        if name == baseline or reference is None:
            m["vs_baseline"] = None
        else:
            # each test is on the pooled statistic the table reports, on the same items
            tests = paired_test(per_item[name], per_item[baseline], n_boot, seed)
            m["vs_baseline"] = {k: v for k, v in tests.items()
                                if v is not None and k not in moot}
        table[name] = m
    _add_holm(table)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "source": first.source,
            "targets": list(first.targets), "languages": list(first.languages),
            "n_items": first.n_items, "mode": first.mode,
            # R answers per pair when sampled; null for exact distributions (no samples)
            "samples": first.k if first.mode == "sample" else None,
            "baseline": baseline if reference is not None else None,
            "n_boot": n_boot, "seed": seed, "metrics": describe_metrics(),
            "strategies": table}


def reference_parts(reference: Run, run: Run) -> dict[str, Part]:
    """``(Q, T)`` parts of transfer on ``reference``'s source-correct items for ``run``'s
    targets, per response (``response_transfer``) and ensembled (``transfer``)
    (:func:`xlgap.stats.pairs.reference_transfer_parts`)."""
    src = distribution(reference, reference.source)
    out: dict[str, Part] = {}
    for key, ensembled in (("response_transfer", False), ("transfer", True)):
        parts = [reference_transfer_parts(src, distribution(run, t), run.gold,
                                          ensembled=ensembled) for t in run.targets]
        out[key] = (Part(np.stack([p.num for p in parts], axis=1),
                         np.stack([p.den for p in parts], axis=1)) if parts else
                    Part.mean(np.zeros((run.n_items, 0))))
    return out


def _add_holm(table: dict[str, Any]) -> None:
    """``p_holm`` per strategy: its p against baseline per metric, Holm-adjusted over the
    strategies compared with baseline (:func:`xlgap.stats.multiple.adjust_holm_map`),
    so that a best picked among them is read at the adjusted level; the same, over the
    same family, for the tests on the baseline's source-correct items
    (``on_baseline_source_correct.p_holm``)."""
    for scope in (lambda m: m, lambda m: m.get("on_baseline_source_correct")):
        arms = {name: scope(m) for name, m in table.items() if scope(m) is not None}
        compared = [name for name, arm in arms.items() if arm.get("vs_baseline")]
        metrics = {k for name in compared for k in arms[name]["vs_baseline"]}
        for name, arm in arms.items():
            arm["p_holm"] = None if name not in compared else {}
        for metric in sorted(metrics):
            family = {name: (arms[name]["vs_baseline"].get(metric) or {}).get("p")
                      for name in compared}
            for name, p in adjust_holm_map(family).items():
                if p is not None:
                    arms[name]["p_holm"][metric] = p


def evaluate_dirs(out_dir: str | Path, strategies: Sequence[str], *,
                  n_boot: int = DEFAULT_N_BOOT,
                  seed: int = 0, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`compare_runs` over ``out_dir/<strategy>/`` run directories, on ``item_ids``
    (default: the items of the first strategy's run)."""
    out_dir = Path(out_dir)
    runs = {name: load_run(out_dir / name) for name in strategies}
    ids = list(item_ids) if item_ids is not None else next(iter(runs.values())).item_ids
    runs = {name: restrict_run(run, ids) for name, run in runs.items()}
    failures = {name: parse_failures(out_dir / name, ids) for name in strategies}
    return compare_runs(runs, n_boot=n_boot, seed=seed, failures=failures)
