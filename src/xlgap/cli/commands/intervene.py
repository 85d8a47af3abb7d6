"""``xlgap intervene``: run prompt strategies and compare them with the baseline.

A thin wrapper over :func:`xlgap.compare_strategies` (``xlgap.api``). Writes, under
``--out DIR``, one run directory per strategy (``DIR/<strategy>/``, so ``xlgap diagnose
DIR/tta-1`` works) and the comparison ``DIR/interventions.json``, ``DIR/interventions.md``
and ``DIR/interventions.png``. ``--source item`` (data that records each item's own source
language) does that once per source group, in ``DIR/source-<lang>/``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlgap.api.runs import compare_strategies
from xlgap.cli import workspace
from xlgap.cli.config import RunConfig, config_to_dict, from_options, opt, options_from
from xlgap.cli.registry import command
from xlgap.data.languages import check_known
from xlgap.errors import XlgapError
from xlgap.interventions.strategies import StrategyOptions, parse_strategy_list
from xlgap.report.text import format_interventions_table
from xlgap.sampling import ITEM_SOURCE, source_run_dir
from xlgap.stats.bootstrap import DEFAULT_N_BOOT

DEFAULT_STRATEGIES = "baseline,tren-1,tren-3,tta-1,tea,vote-5"


@dataclass
class InterveneConfig(RunConfig):
    source: str = opt("en", "source language (BCP 47), or 'item': each item asked from its "
                      "own source language where the data records one, one comparison per "
                      "source in OUT/source-<lang>/")
    strategies: str = opt(DEFAULT_STRATEGIES, "comma-separated strategies: baseline, tren-K "
                          "(question + K translations), tta-K (translate into K languages, "
                          "then answer), tea (translate, answer in English, translate back), "
                          "vote-K (majority of K samples); baseline is always added")
    # declared once, on StrategyOptions (the keywords of xlgap.compare_strategies)
    samples: int = from_options(StrategyOptions, "samples")
    temperature: float = from_options(StrategyOptions, "temperature")
    shots: int = from_options(StrategyOptions, "shots")
    translations: str = from_options(StrategyOptions, "translations")
    other_scripts: bool = from_options(StrategyOptions, "other_scripts")
    translation_langs: str = from_options(StrategyOptions, "translation_langs")
    max_new_tokens: int = from_options(StrategyOptions, "max_new_tokens")
    exact: bool = from_options(StrategyOptions, "exact")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals and p-values")


def strategy_names(cfg: InterveneConfig) -> list[str]:
    """``--strategies`` parsed, with ``baseline`` first (added when missing)."""
    names = parse_strategy_list(cfg.strategies)
    return ["baseline", *[n for n in names if n != "baseline"]]


def _translation_langs(cfg: InterveneConfig, known: list[str]) -> tuple[str, ...]:
    codes = [c.strip() for c in cfg.translation_langs.split(",") if c.strip()]
    return tuple(check_known(codes, known, "the data set (--translation-langs)"))


@command("intervene", InterveneConfig, analysis=True)
def cmd_intervene(cfg: InterveneConfig, backend: Any = None) -> int:
    """``xlgap intervene`` (``backend``: one already open, e.g. the demo's)."""
    started = time.time()
    names = strategy_names(cfg)
    if cfg.source == ITEM_SOURCE:
        # each item from its own source language: one comparison per source group
        full, _, targets = workspace.open_dataset(cfg, item_source=True)
        groups = [(src, group, [t for t in targets if t != src])
                  for src, group in full.by_source().items()]
    else:
        # Translations may use any language of the data set, not only the run's.
        full, source, targets = workspace.open_dataset(cfg, all_languages=True)
        groups = [(source, full, targets)]
    if not full.has_candidates:  # before the model is opened: say it at once
        raise XlgapError(f"data set {full.name} has no answer candidates; interventions need "
                         "items with candidates (open questions such as ECLeKTic's are for "
                         "`xlgap sample`)")
    out = Path(cfg.out) if cfg.out else workspace.default_out("intervene")
    backend = backend if backend is not None else workspace.open_backend(cfg)
    for source, data, group_targets in groups:
        if not group_targets:
            print(f"[xlgap] {len(data)} item(s) from {source} left out: no target language "
                  "but their source", file=sys.stderr)
            continue
        where = out if cfg.source != ITEM_SOURCE else source_run_dir(out, source)
        _compare(cfg, names, backend, data, source, group_targets, where)
    print(f"[xlgap] done in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


def _compare(cfg: InterveneConfig, names: list[str], backend: Any, data: Any, source: str,
             targets: list[str], out: Path) -> None:
    """The strategies on ``data`` from ``source``, compared, written to ``out``."""
    print(f"[xlgap] intervene: {len(data)} items, {source} -> {', '.join(targets)}, "
          f"strategies {', '.join(names)}, "
          f"{'exact distributions' if cfg.exact else f'R={cfg.samples}'}; results in {out}",
          file=sys.stderr)
    options = options_from(StrategyOptions, cfg, source=source,
                           translation_langs=_translation_langs(cfg, data.languages))
    result = compare_strategies(
        backend, data, names, source=source, targets=targets, out=out, n_boot=cfg.n_boot,
        seed=cfg.seed, progress=cfg.show_progress(), config=config_to_dict(cfg),
        **{k: getattr(options, k) for k in StrategyOptions.__dataclass_fields__
           if k not in ("source", "seed")})
    print()
    print(format_interventions_table(result))
    print(f"\n[xlgap] wrote {out / 'interventions.json'}, {out / 'interventions.md'} and "
          f"{out / 'interventions.png'}", file=sys.stderr)
