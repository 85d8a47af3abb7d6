"""Steering and fine-tuning: ``train_steering_vectors``, ``run_steering``, ``run_finetune``,
and their results as :class:`~xlgap.results.Result` kinds ``steering`` and ``finetune`` (the
experiments' own classes stay reachable through them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from xlgap.api.common import PathLike, as_list, check_options
from xlgap.interventions.finetune import FinetuneOptions, FinetuneResult
from xlgap.interventions.finetune import run_finetune as finetune
from xlgap.interventions.steering import SteeringResult, SteerOptions
from xlgap.interventions.steering import run_steering as steer
from xlgap.interventions.steering import train_steering_vectors as train_vectors
from xlgap.results import Result


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
                   "ci_high": row.get("ci_high"), "p": _number(row.get("p")),
                   "n": _number(row.get("n"))}


def _number(value: Any) -> Any:
    return None if value is None or value != value else value  # NaN: no value


class SteeringRunResult(_Wrapped):
    """The steering experiment (:class:`~xlgap.interventions.steering.SteeringResult`)."""

    default_kind = "steering"

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: Path) -> Result:
        return cls(SteeringResult.load(path))


class FinetuneRunResult(_Wrapped):
    """The fine-tuning experiment (:class:`~xlgap.interventions.finetune.FinetuneResult`);
    an arm is the model: ``base`` or fine-tuned with the first N layers frozen."""

    default_kind = "finetune"
    _arm_columns = ("model",)
    _target_column = "group"

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: Path) -> Result:
        return cls(FinetuneResult.load(path))


def train_steering_vectors(backend: Any, data: Any, *, source: str,
                           targets: Sequence[str], pooling: str = "mean_no_bos") -> Any:
    """Steering vectors toward the shared space (a
    :class:`~xlgap.interventions.steering.SteeringVectors`: ``apply``, ``save``)."""
    return train_vectors(backend, data, source, as_list(targets), pooling=pooling)


def run_steering(backend: Any, data: Any, *, source: str, targets: Sequence[str],
                 out: PathLike | None = None, **options: Any) -> SteeringRunResult:
    """The steering experiment (``xlgap steer``): a layers x alphas sweep on dev, the best
    setting and a random-direction control on test. ``options`` are
    :class:`~xlgap.interventions.steering.SteerOptions` fields (``layers=[6]``,
    ``alphas=[1.0]``, ``n_boot``, ...). ``out`` gets ``steering.json`` and the vectors."""
    opts = check_options(SteerOptions, options, "run_steering", source=source,
                    targets=as_list(targets))
    where = Path(out) if out is not None else None
    found = steer(backend, data, opts,
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
    opts = check_options(FinetuneOptions, options, "run_finetune", source=source,
                    targets=as_list(targets))
    found = finetune(backend, data, opts, work_dir=out)
    if out is not None:
        found.save(out)
    return FinetuneRunResult(found)
