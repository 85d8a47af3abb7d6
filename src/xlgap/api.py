"""The Python API: one call per step of a study, all reachable as ``xlgap.<name>``.

One calling convention: ``f(backend, data, *, source, targets, out=None, **options)``, where
``options`` are the fields of the step's options dataclass (the same ones the command's
flags are built from), lists are lists (never comma strings), and every analysis returns
a :class:`~xlgap.results.Result` (one tidy ``to_frame()`` schema for all of them). ``out``
writes the files the command writes, so the report and ``load_result`` read them.

Heavy packages (torch, transformers, pandas) are imported when a function runs, never when
this module is imported: ``import xlgap`` stays light.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlgap.errors import ConfigError
from xlgap.results import Result, load_result, register_kind, result_class

PathLike = str | os.PathLike[str]


def _options(cls: type, options: Mapping[str, Any], where: str, **fixed: Any) -> Any:
    """``cls(**options, **fixed)``, naming the keywords ``where`` does not take."""
    names = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(sorted(set(names) - set(fixed)))}")
    return cls(**{**options, **fixed})


def _out_dir(out: PathLike | None, prefix: str) -> Path:
    """``out``, or a new temporary directory where the step must write somewhere."""
    return Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"xlgap-{prefix}-"))


def _targets(targets: Sequence[str] | str) -> list[str]:
    if isinstance(targets, str):
        raise ConfigError(f"targets must be a list of language codes, not the string "
                          f"{targets!r} (write [{', '.join(repr(t) for t in targets.split(','))}])")
    return list(targets)


# -- backends and data -------------------------------------------------------------------


def load_backend(model: Any = "embedded", tokenizer: Any = None, *,
                 cache: bool | PathLike = False, name: str | None = None,
                 model_args: Mapping[str, Any] | None = None, **options: Any) -> Any:
    """A backend: a ``--model`` value ("embedded", a Hugging Face id or path,
    "openai:NAME", "vllm:...") or your own Hugging Face ``model`` with its ``tokenizer``.

    ``cache`` keeps every model call in the result store, so a rerun computes nothing twice
    (True: the store under ``$XLGAP_CACHE``, as the CLI uses; a path: a store there).
    ``options`` are the backend's options (``device``, ``dtype``, ``batch_size``, ...)."""
    from xlgap import models
    from xlgap.models.cached import CachedBackend
    from xlgap.paths import cache_root
    from xlgap.store import Store

    if isinstance(model, str):
        backend = models.load_backend(model, model_args=model_args, **options)
        label = name or model
    else:
        if tokenizer is None:
            raise ConfigError("load_backend(model, tokenizer): an in-memory model needs its "
                              "tokenizer")
        from xlgap.models.hf import HFBackend

        label = name or getattr(getattr(model, "config", None), "_name_or_path", None) \
            or type(model).__name__
        backend = HFBackend(model, tokenizer, name=label, **options)
    backend.name = label
    if cache is False or cache is None or backend.caches_itself:
        return backend
    root = cache_root() / "store" if cache is True else Path(cache)
    cached = CachedBackend(backend, Store(root))
    cached.name = label  # type: ignore[attr-defined]
    return cached


def load_dataset(name: PathLike | None = "builtin", **options: Any) -> Any:
    """A parallel data set by catalogue name or path (see ``docs/data.md``); ``options``:
    ``on_missing``, ``on_error``, ``data_map``."""
    from xlgap.data import load_dataset as load

    return load(name, **options)


# -- bias or variance --------------------------------------------------------------------


def sample(backend: Any, data: Any, *, source: str, targets: Sequence[str],
           out: PathLike | None = None, progress: bool = False, judge: Any = None,
           embedder: Any = None, **options: Any) -> Any:
    """A run (``xlgap sample``): the model's answers in the source and every target,
    written to (or resumed from) ``out`` (default: a new temporary directory); returns
    the :class:`~xlgap.runs.Run`. ``options`` are :class:`~xlgap.sampling.SamplingOptions`
    fields: ``exact``, ``samples``, ``shots``, ``temperature``, ..."""
    from xlgap.runs import load_run as read
    from xlgap.sampling import SamplingOptions, make_run

    opts = _options(SamplingOptions, options, "sample")
    run_dir = make_run(backend, data, _out_dir(out, "run"), source=source,
                       targets=_targets(targets), options=opts, progress=progress,
                       judge=judge, embedder=embedder)
    return read(run_dir)


def load_run(path: PathLike) -> Any:
    """A run directory (see ``docs/run-format.md``) as a :class:`~xlgap.runs.Run`."""
    from xlgap.runs import load_run as read

    return read(path)


def diagnose(run: Any, *, out: PathLike | None = None, n_boot: int | None = None,
             seed: int = 0, fit_model: bool = True, progress: bool = False) -> Result:
    """The diagnosis of a run (a :class:`~xlgap.runs.Run` or its directory): every pair
    metric with item-bootstrap CIs, pi, the verdict. ``out`` (a directory) gets
    ``diagnosis.json``, as ``xlgap diagnose`` writes it."""
    from xlgap.runs import Run
    from xlgap.runs import load_run as read
    from xlgap.stats.bootstrap import DEFAULT_N_BOOT
    from xlgap.stats.diagnose import diagnose as compute
    from xlgap.stats.diagnose import write_diagnosis

    loaded = run if isinstance(run, Run) else read(run)
    found = compute(loaded, n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot, seed=seed,
                    fit_model=fit_model, progress=progress)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        write_diagnosis(found, out)
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
    from xlgap.interventions.experiment import run_interventions
    from xlgap.interventions.strategies import StrategyOptions
    from xlgap.stats.bootstrap import DEFAULT_N_BOOT

    if isinstance(strategies, str):
        raise ConfigError(f"strategies must be a list, not the string {strategies!r}")
    if "translation_langs" in options:
        options = {**options, "translation_langs": tuple(options["translation_langs"])}
    opts = _options(StrategyOptions, options, "compare_strategies", source=source, seed=seed)
    where = _out_dir(out, "intervene")
    found = run_interventions(backend, data, where, strategies=list(strategies),
                              targets=_targets(targets), options=opts,
                              n_boot=DEFAULT_N_BOOT if n_boot is None else n_boot, seed=seed,
                              progress=progress, config=config)
    found = result_class("interventions")("interventions", found)
    if out is not None:
        write_interventions(found, where)
    return found


def write_interventions(result: Mapping[str, Any], out: PathLike) -> None:
    """``interventions.json``, ``.md`` and ``.png`` in ``out`` (what ``xlgap intervene``
    writes)."""
    from xlgap.io import write_text_atomic
    from xlgap.report.plots.interventions import plot_interventions
    from xlgap.report.text import interventions_markdown

    where = Path(out)
    result_class("interventions")("interventions", result).save(where / "interventions.json")
    write_text_atomic(where / "interventions.md", interventions_markdown(result))
    plot_interventions(result, where / "interventions.png")


# -- steering and fine-tuning ------------------------------------------------------------


class _Wrapped(Result):
    """A result whose experiment keeps its own class (its fields and methods stay
    reachable: ``result.best``, ``result.steering_vectors``); the tidy frame is built from
    that class's own table."""

    _arm_columns: tuple[str, ...] = ("arm",)
    _target_column = "target"

    def __init__(self, obj: Any) -> None:
        super().__init__(self.default_kind, obj.to_dict())
        self.obj = obj

    def __getattr__(self, name: str) -> Any:
        obj = self.__dict__.get("obj")
        if obj is None:
            raise AttributeError(name)
        return getattr(obj, name)

    def save(self, path: PathLike) -> Path:
        return self.obj.save(path)

    def estimates(self) -> Any:
        for row in self.obj.to_frame().to_dict("records"):
            arms = [row.get(c) for c in self._arm_columns]
            arm = " ".join(str(a) for a in arms if a is not None and a == a)
            yield {"kind": self.kind, "arm": arm or None,
                   "target": row.get(self._target_column), "metric": row.get("metric"),
                   "estimate": row.get("estimate"), "ci_low": row.get("ci_low"),
                   "ci_high": row.get("ci_high"), "p": _number(row.get("p_value")),
                   "n": _number(row.get("n"))}


def _number(value: Any) -> Any:
    return None if value is None or value != value else value  # NaN: no value


@register_kind("steering")
class SteeringRunResult(_Wrapped):
    """The steering experiment (:class:`~xlgap.interventions.steering.SteeringResult`)."""

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: Path) -> Result:
        from xlgap.interventions.steering import SteeringResult

        return cls(SteeringResult.load(path))


@register_kind("finetune")
class FinetuneRunResult(_Wrapped):
    """The fine-tuning experiment (:class:`~xlgap.interventions.finetune.FinetuneResult`);
    an arm is the model: ``base`` or fine-tuned with the first N layers frozen."""

    _arm_columns = ("model",)
    _target_column = "group"

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: Path) -> Result:
        from xlgap.interventions.finetune import FinetuneResult

        return cls(FinetuneResult.load(path))


def train_steering_vectors(backend: Any, data: Any, *, source: str,
                           targets: Sequence[str], pooling: str = "mean_no_bos") -> Any:
    """Steering vectors toward the shared space (a
    :class:`~xlgap.interventions.steering.SteeringVectors`: ``apply``, ``save``)."""
    from xlgap.interventions.steering import train_steering_vectors as train

    return train(backend, data, source, _targets(targets), pooling=pooling)


def run_steering(backend: Any, data: Any, *, source: str, targets: Sequence[str],
                 out: PathLike | None = None, **options: Any) -> SteeringRunResult:
    """The steering experiment (``xlgap steer``): a layers x alphas sweep on dev, the best
    setting and a random-direction control on test. ``options`` are
    :class:`~xlgap.interventions.steering.SteerOptions` fields (``layers=[6]``,
    ``alphas=[1.0]``, ``n_boot``, ...). ``out`` gets ``steering.json`` and the vectors."""
    from xlgap.interventions.steering import SteerOptions
    from xlgap.interventions.steering import run_steering as run

    opts = _options(SteerOptions, options, "run_steering", source=source,
                    targets=_targets(targets))
    where = Path(out) if out is not None else None
    found = run(backend, data, opts,
                vectors_file=where / "vectors.safetensors" if where is not None else None)
    if where is not None:
        found.save(where)
    return SteeringRunResult(found)


def run_finetune(backend: Any, data: Any, *, source: str, targets: Sequence[str],
                 out: PathLike | None = None, **options: Any) -> FinetuneRunResult:
    """The fine-tuning experiment (``xlgap finetune``): train on one language with the
    first N layers frozen (``freeze_first=[0, 9]``), evaluate every language. ``options``
    are :class:`~xlgap.interventions.finetune.FinetuneOptions` fields. ``out`` keeps the
    checkpoints and gets ``finetune.json``."""
    from xlgap.interventions.finetune import FinetuneOptions
    from xlgap.interventions.finetune import run_finetune as run

    opts = _options(FinetuneOptions, options, "run_finetune", source=source,
                    targets=_targets(targets))
    found = run(backend, data, opts, work_dir=out)
    if out is not None:
        found.save(out)
    return FinetuneRunResult(found)


# -- inside the model --------------------------------------------------------------------


def look_inside(backend: Any, data: Any, *, source: str, targets: Sequence[str],
                out: PathLike | None = None, **options: Any) -> Result:
    """ILO, similarity, the logit lens and consistency in one call (``xlgap inside``); see
    :func:`xlgap.representations.layerwise.look_inside` for the ``options``
    (``analyses``, ``preset``, ``pooling``, ``k``, ``n_boot``, ...)."""
    from xlgap.representations.layerwise import look_inside as look

    return look(backend, data, source=source, targets=_targets(targets), out=out, **options)


def hidden_states(backend: Any, data: Any, *, languages: Sequence[str],
                  out: PathLike | None = None, pooling: str = "mean_no_bos",
                  batch_size: int = 16, progress: bool = False) -> Any:
    """Pooled hidden states of the parallel texts, every layer (a
    :class:`~xlgap.representations.extract.HiddenStateSet`), kept in ``out/hidden/``."""
    from xlgap.representations.layerwise import hidden_states as states

    return states(backend, data, _targets(languages), out, pooling=pooling,
                  batch_size=batch_size, progress=progress)


# -- results and the report --------------------------------------------------------------


def load_any_result(path: PathLike) -> Result:
    """Any result file, by its format tag (a directory of the analyses of ``look_inside``
    loads as one result)."""
    from xlgap.representations.layerwise import ANALYSES, InsideResult

    where = Path(path)
    if where.is_dir() and sum((where / f"{a}.json").exists() for a in ANALYSES) > 1:
        return InsideResult.load_dir(where)
    return load_result(where)


def write_report(paths: PathLike | Sequence[PathLike], out: PathLike = "report.html",
                 title: str | None = None) -> Path:
    """One self-contained HTML page over every result under ``paths`` (a path or a list
    of them); returns its path."""
    from xlgap.report.html import write_report as write

    return write(paths, Path(out), title)
