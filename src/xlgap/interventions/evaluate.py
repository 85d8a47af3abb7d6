"""Run strategies into run directories and compare them (the paper's Table 1).

Each strategy writes a standard run directory (sample mode, its R final answers per
(item, language) as the samples; see ``docs/run-format.md``), so ``xlgap diagnose``
works on it. Rows of ``samples.jsonl`` carry two extra fields that the run format
allows: ``failed`` (the final answer could not be parsed; it is mapped to OTHER) and
``raw`` (the model output behind it); the row of sample 0 also carries the pair's
``intermediate`` texts (translations, English answers).

Metrics follow ECLeKTic, counted per (item, target, replicate r): the response is correct
in a language when its answer is the gold candidate; *overall success* is the share of
(item, target, r) correct in both the source and the target, *transfer* the share correct
in the target among those correct in the source (replicate r of the source is paired
with replicate r of the target). Both are pooled over items and targets; their 95% CIs
resample items. The paired test against ``baseline`` resamples items too, on per-item
values (see :func:`per_item_values`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from xlgap.data.items import Item, ParallelDataset
from xlgap.errors import ConfigError, DataError
from xlgap.interventions.strategies import PairResult, Strategy
from xlgap.io import finite
from xlgap.runs import SAMPLES_FILE, Run, RunWriter, done_keys, load_run, read_meta
from xlgap.sampling import item_rows
from xlgap.stats.bootstrap import nan_mean

FORMAT = "xlgap-interventions/1"
# Options that change a strategy's answers: a run directory made with other values is
# refused instead of being resumed into a mix of two runs.
_RESUME_KEYS = ("strategy", "fingerprint", "temperature", "shots", "seed", "translations",
                "other_scripts", "translation_langs")


# -- making runs -----------------------------------------------------------------------


def _check_resumable(run_dir: Path, meta: dict[str, Any]) -> None:
    if not (run_dir / "run.json").exists():
        return
    old = read_meta(run_dir)
    old_flat = {**old.get("options", {}), **old}
    new_flat = {**meta.get("options", {}), **meta}
    for key in _RESUME_KEYS:
        if key in old_flat and old_flat.get(key) != new_flat.get(key):
            raise ConfigError(f"{run_dir} holds a run made with {key}={old_flat.get(key)!r}, "
                              f"not {new_flat.get(key)!r}; use another --out directory")


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


def pending_pairs(items: Sequence[Item], languages: Sequence[str],
                  done: set[tuple[str, str]]) -> list[tuple[Item, str]]:
    """(item, language) pairs with candidates that the run directory does not hold yet."""
    return [(it, lang) for it in items for lang in languages
            if it.has(lang) and it[lang].candidates and (it.id, lang) not in done]


def run_strategy(strategy: Strategy, dataset: ParallelDataset, run_dir: str | Path, *,
                 source: str, targets: Sequence[str], meta: dict[str, Any] | None = None,
                 chunk: int = 64, progress: bool = True) -> Path:
    """Answer every (item, language) of ``dataset`` in ``[source, *targets]`` with
    ``strategy`` into the run directory ``run_dir`` (created, or resumed: pairs already
    complete there are skipped, so a complete directory costs no model call).

    ``dataset`` may hold more languages than the run (translation languages); only the
    run's languages are answered. Pairs go to the strategy ``chunk`` at a time (each
    strategy step is one backend call per chunk) and are written after each chunk.
    """
    run_dir = Path(run_dir)
    languages = [source, *[t for t in targets if t != source]]
    opts = strategy.options
    options = {**asdict(opts), "strategy": strategy.name,
               "translation_langs": list(opts.translation_langs)}
    run_meta = {"model": getattr(strategy.backend, "name", strategy.backend.fingerprint),
                "fingerprint": strategy.backend.fingerprint, "source": source,
                "languages": languages, "targets": languages[1:], "mode": "sample",
                "samples": opts.samples, "data": dataset.source_path or dataset.name,
                "strategy": strategy.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "options": options, **strategy.describe(), **(meta or {})}
    _check_resumable(run_dir, run_meta)
    items = run_items(dataset.items, languages)
    pairs = pending_pairs(items, languages, done_keys(run_dir)
                          if (run_dir / "run.json").exists() else set())
    writer = RunWriter(run_dir, run_meta)
    writer.add_items(item_rows(items, languages))
    if not pairs:
        return run_dir
    strategy.check(pairs)
    bar = tqdm(total=len(pairs), desc=strategy.name, unit="q", disable=not progress)
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        results = strategy.run(part)
        writer.add_samples([row for res in results for row in sample_rows(res)])
        bar.update(len(part))
    bar.close()
    return run_dir


# -- reading failures back ---------------------------------------------------------------


def parse_failures(run_dir: str | Path, item_ids: Sequence[str] | None = None
                   ) -> dict[str, int]:
    """Failed parses per language, read from ``samples.jsonl`` (over ``item_ids`` when
    given; the last write of a sample wins, as in :func:`xlgap.runs.load_run`; rows
    without the field count as parsed)."""
    path = Path(run_dir) / SAMPLES_FILE
    keep = None if item_ids is None else set(item_ids)
    flags: dict[tuple[str, str, int], bool] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line; load_run ignores it too
            key = (str(row.get("item")), str(row.get("lang")), int(row.get("sample", -1)))
            if keep is None or key[0] in keep:
                flags[key] = bool(row.get("failed", False))
    out: dict[str, int] = {}
    for (_, lang, _), failed in flags.items():
        out[lang] = out.get(lang, 0) + int(failed)
    return out


# -- metrics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Correctness:
    """Per-replicate correctness of one run, aligned on its items.

    ``source`` is ``(Q, R)``; ``target`` is ``(T, Q, R)``; ``valid`` ``(T, Q)`` marks the
    (item, target) pairs with a gold answer and complete data in the source and the target.
    """

    item_ids: tuple[str, ...]
    targets: tuple[str, ...]
    source: np.ndarray
    target: np.ndarray
    valid: np.ndarray


def correctness(run: Run) -> Correctness:
    """Which replicates answer gold, per language (sample-mode runs only)."""
    if run.mode != "sample":
        raise DataError(f"{run.path}: intervention metrics need a sample-mode run")
    gold = run.gold[:, None]
    has_gold = run.gold >= 0
    src = run.samples[run.source] == gold
    tgt = np.stack([run.samples[t] == gold for t in run.targets]) if run.targets else \
        np.zeros((0, *src.shape), dtype=bool)
    valid = np.stack([run.pair_mask(t) & has_gold for t in run.targets]) if run.targets \
        else np.zeros((0, len(gold)), dtype=bool)
    return Correctness(tuple(run.item_ids), tuple(run.targets), src, tgt, valid)


def item_counts(c: Correctness) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per item, summed over valid targets and replicates: (correct in both, correct in
    source, all), each ``(Q,)``."""
    both = (c.source[None] & c.target).sum(2)  # (T, Q)
    src = np.broadcast_to(c.source.sum(1)[None], both.shape)
    n = np.full(both.shape, c.source.shape[1])
    v = c.valid
    return (both * v).sum(0), (src * v).sum(0), (n * v).sum(0)


def pooled_ratio(num: np.ndarray, den: np.ndarray) -> float:
    """sum(num) / sum(den), NaN when the denominator is 0."""
    total = float(np.sum(den))
    return float(np.sum(num)) / total if total > 0 else math.nan


def per_item_values(c: Correctness) -> dict[str, np.ndarray]:
    """Per-item overall success and transfer (NaN where undefined) for the paired tests.

    Overall success of item i: its share of (target, replicate) correct in both; transfer
    of item i: correct in both / correct in source (NaN when never correct in source).
    """
    both, src, n = item_counts(c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"overall_success": np.where(n > 0, both / np.maximum(n, 1), np.nan),
                "transfer": np.where(src > 0, both / np.maximum(src, 1), np.nan)}


def language_accuracy(run: Run, lang: str) -> np.ndarray:
    """Per item: share of replicates that answer gold (NaN where no data or no gold)."""
    ok = run.present[lang] & (run.gold >= 0)
    acc = (run.samples[lang] == run.gold[:, None]).mean(1)
    return np.where(ok, acc, np.nan)


def chi_square_items(run: Run, target: str) -> np.ndarray:
    """Per item chi-square distance between the source and target answer distributions
    ("other" as one more option); NaN where either language is missing."""
    from xlgap.stats.metrics import chi2_per_item

    chi = chi2_per_item(run.probs[run.source], run.probs[target])
    return np.where(run.pair_mask(target), chi, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """Pooled ratio with its item-bootstrap CI, as ``{"estimate", "ci"}``."""
    from xlgap.stats.bootstrap import ratio_ci, summary

    return summary(pooled_ratio(num, den), ratio_ci(num, den, n_boot=n_boot, seed=seed))


def _mean(values: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """NaN-aware mean of per-item values with its item-bootstrap CI."""
    from xlgap.stats.bootstrap import mean_with_ci

    return mean_with_ci(values, n_boot=n_boot, seed=seed)


def _paired_p(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> float | None:
    """Paired item-bootstrap p-value (items where either value is NaN are left out)."""
    from xlgap.stats.bootstrap import paired_bootstrap_pvalue

    if int(np.sum(np.isfinite(a) & np.isfinite(b))) < 2:
        return None
    return finite(paired_bootstrap_pvalue(a, b, n_boot=n_boot, seed=seed))


def strategy_metrics(run: Run, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Transfer, overall success (with CIs), chi-square, per-language and per-target
    figures for one strategy's run."""
    c = correctness(run)
    both, src, n = item_counts(c)
    keep = n > 0
    # (T, Q) chi-square per target; per item, the mean over its targets
    chi = np.array([chi_square_items(run, t) for t in run.targets]).reshape(
        len(run.targets), run.n_items)
    per_target = {}
    for t_idx, t in enumerate(run.targets):
        v = c.valid[t_idx]
        b_t = (c.source & c.target[t_idx]).sum(1) * v
        s_t = c.source.sum(1) * v
        n_t = np.full(run.n_items, c.source.shape[1]) * v
        per_target[t] = {"transfer": finite(pooled_ratio(b_t, s_t)),
                         "overall_success": finite(pooled_ratio(b_t, n_t)),
                         "chi2": finite(nan_mean(chi[t_idx]))}
    return {
        "transfer": _ratio(both[keep], src[keep], n_boot, seed),
        "overall_success": _ratio(both[keep], n[keep], n_boot, seed),
        "chi2": _mean(chi.T, n_boot, seed),
        "accuracy": {lang: _mean(language_accuracy(run, lang), n_boot, seed)
                     for lang in run.languages},
        "per_target": per_target,
        "n_pairs": int(n.sum() // max(c.source.shape[1], 1)),
        "samples": run.k,
    }


def compare_runs(runs: dict[str, Run], *, baseline: str = "baseline", n_boot: int = 1000,
                 seed: int = 0, failures: dict[str, dict[str, int]] | None = None
                 ) -> dict[str, Any]:
    """The intervention table as a dict (see ``docs/interventions.md`` for the shape).

    Every run must have the same source, targets and items (in the same order); the
    paired tests compare each strategy's per-item values with ``baseline``'s.
    """
    if not runs:
        raise ConfigError("no strategy runs to compare")
    first = next(iter(runs.values()))
    for name, run in runs.items():
        if (run.source, run.targets, run.item_ids) != (first.source, first.targets,
                                                       first.item_ids):
            raise DataError(f"strategy {name!r}: its run has other items, source or "
                            f"targets than {next(iter(runs))!r}; cannot compare them")
    per_item = {name: per_item_values(correctness(run)) for name, run in runs.items()}
    table: dict[str, Any] = {}
    for name, run in runs.items():
        m = strategy_metrics(run, n_boot=n_boot, seed=seed)
        fails = (failures or {}).get(name, {})
        m["parse_failures"] = {"total": int(sum(fails.values())),
                               "by_language": {lang: int(fails.get(lang, 0))
                                               for lang in run.languages}}
        if name == baseline or baseline not in runs:
            m["p_vs_baseline"] = None
            m["p_vs_baseline_overall_success"] = None
        else:
            ref = per_item[baseline]
            m["p_vs_baseline"] = _paired_p(per_item[name]["transfer"], ref["transfer"],
                                           n_boot, seed)
            m["p_vs_baseline_overall_success"] = _paired_p(
                per_item[name]["overall_success"], ref["overall_success"], n_boot, seed)
        table[name] = m
    return {"format": FORMAT, "source": first.source, "targets": list(first.targets),
            "languages": list(first.languages), "n_items": first.n_items,
            "samples": first.k, "baseline": baseline if baseline in runs else None,
            "n_boot": n_boot, "seed": seed, "strategies": table}


def restrict_run(run: Run, item_ids: Sequence[str]) -> Run:
    """``run`` limited to ``item_ids``, in that order (a directory may hold more items
    than the command that reads it, e.g. after an earlier run with a larger ``--limit``)."""
    index = {item_id: i for i, item_id in enumerate(run.item_ids)}
    missing = [i for i in item_ids if i not in index]
    if missing:
        raise DataError(f"{run.path}: the run has no item(s) {missing[:5]}; rerun the "
                        "command to complete it")
    rows = np.asarray([index[i] for i in item_ids], dtype=np.int64)
    if list(item_ids) == list(run.item_ids):
        return run

    def take(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        return None if d is None else {k: v[rows] for k, v in d.items()}

    present = take(run.present) or {}
    return replace(run, item_ids=list(item_ids), n_options=run.n_options[rows],
                   gold=run.gold[rows], counts=take(run.counts),
                   samples=take(run.samples) or {}, probs=take(run.probs) or {},
                   present=present,
                   missing={lang: int(len(rows) - p.sum()) for lang, p in present.items()})


def evaluate_dirs(out_dir: str | Path, strategies: Sequence[str], *, n_boot: int = 1000,
                  seed: int = 0, item_ids: Sequence[str] | None = None) -> dict[str, Any]:
    """:func:`compare_runs` over ``out_dir/<strategy>/`` run directories, on ``item_ids``
    (default: the items of the first strategy's run)."""
    out_dir = Path(out_dir)
    runs = {name: load_run(out_dir / name) for name in strategies}
    ids = list(item_ids) if item_ids is not None else next(iter(runs.values())).item_ids
    runs = {name: restrict_run(run, ids) for name, run in runs.items()}
    failures = {name: parse_failures(out_dir / name, ids) for name in strategies}
    return compare_runs(runs, n_boot=n_boot, seed=seed, failures=failures)
