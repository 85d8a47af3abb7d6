"""Bias or variance, and what helps: ``sample`` (a run), ``load_run``, ``diagnose`` and
``compare_strategies`` (prompt strategies against the baseline)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlgap.api.common import PathLike, as_list, check_options, out_dir
from xlgap.errors import ConfigError
from xlgap.interventions.experiment import run_interventions
from xlgap.interventions.strategies import StrategyOptions
from xlgap.io import write_text_atomic
from xlgap.report.plots.interventions import plot_interventions
from xlgap.report.text import interventions_markdown
from xlgap.results import Result, load_result, result_class
from xlgap.runs import Run
from xlgap.runs import load_run as read_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.bootstrap import DEFAULT_N_BOOT
from xlgap.stats.diagnose import diagnose as compute_diagnosis
from xlgap.stats.diagnose import write_diagnosis


def sample(backend: Any, data: Any, *, source: str, targets: Sequence[str],
           out: PathLike | None = None, progress: bool = False, judge: Any = None,
           embedder: Any = None, **options: Any) -> Any:
    """A run (``xlgap sample``): the model's answers in the source and every target,
    written to (or resumed from) ``out`` (default: a new temporary directory); returns
    the :class:`~xlgap.runs.Run`. ``options`` are :class:`~xlgap.sampling.SamplingOptions`
    fields: ``exact``, ``samples``, ``shots``, ``temperature``, ..."""
    opts = check_options(SamplingOptions, options, "sample")
    run_dir = make_run(backend, data, out_dir(out, "run"), source=source,
                       targets=as_list(targets), options=opts, progress=progress,
                       judge=judge, embedder=embedder)
    return read_run(run_dir)


def load_run(path: PathLike) -> Any:
    """A run directory (see ``docs/run-format.md``) as a :class:`~xlgap.runs.Run`."""
    return read_run(path)


def diagnose(run: Any, *, out: PathLike | None = None, n_boot: int | None = None,
             seed: int = 0, fit_model: bool = True, progress: bool = False) -> Result:
    """The diagnosis of a run (a :class:`~xlgap.runs.Run` or its directory): every pair
    metric with item-bootstrap CIs, pi, the verdict. ``out`` (a directory) gets
    ``diagnosis.json``, as ``xlgap diagnose`` writes it, and the result is then what that
    file holds."""
    loaded = run if isinstance(run, Run) else read_run(run)
    found = compute_diagnosis(loaded, n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot,
                              seed=seed, fit_model=fit_model, progress=progress)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_diagnosis(found, out)
        # what the file holds (numbers rounded to 6 digits, as the command writes them),
        # so the result in hand and the one load_result reads are equal
        return load_result(Path(out) / "diagnosis.json")
    return result_class("diagnosis")("diagnosis", found)


# -- what helps --------------------------------------------------------------------------


def compare_strategies(backend: Any, data: Any, strategies: Sequence[str] = ("baseline",),
                       *, source: str, targets: Sequence[str], out: PathLike | None = None,
                       n_boot: int | None = None, seed: int = 0, progress: bool = False,
                       config: Mapping[str, Any] | None = None, **options: Any) -> Result:
    """Prompt strategies against the baseline (``xlgap intervene``): one run per strategy
    under ``out/<strategy>/``, the comparison with paired tests, and (with ``out``)
    ``interventions.json``, ``.md`` and ``.png``. ``options`` are
    :class:`~xlgap.interventions.strategies.StrategyOptions` fields (``exact``, ``shots``,
    ``samples``, ``translation_langs`` as a list, ...)."""
    if isinstance(strategies, str):
        raise ConfigError(f"strategies must be a list, not the string {strategies!r}")
    if "translation_langs" in options:
        options = {**options, "translation_langs": tuple(options["translation_langs"])}
    opts = check_options(StrategyOptions, options, "compare_strategies", source=source, seed=seed)
    where = out_dir(out, "intervene")
    found = run_interventions(backend, data, where, strategies=list(strategies),
                              targets=as_list(targets), options=opts,
                              n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot, seed=seed,
                              progress=progress, config=config)
    found = result_class("interventions")("interventions", found)
    if out is not None:
        write_interventions(found, where)
    return found


def write_interventions(result: Mapping[str, Any], out: PathLike) -> None:
    """``interventions.json``, ``.md`` and ``.png`` in ``out`` (what ``xlgap intervene``
    writes)."""
    where = Path(out)
    result_class("interventions")("interventions", result).save(where / "interventions.json")
    write_text_atomic(where / "interventions.md", interventions_markdown(result))
    plot_interventions(result, where / "interventions.png")
