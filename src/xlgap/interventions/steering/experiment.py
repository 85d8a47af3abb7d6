"""The steering experiment as a Python API (the body of ``xlgap steer``).

:func:`run_steering` splits the items into disjoint train / dev / test sets, makes the
vectors on train, sweeps directions x layer settings x alpha on dev, and reports on test:
no steering, the best setting, and a norm-matched random-direction control, each with the
same metrics (95% item-bootstrap CIs, paired tests), plus ILO and similarity by layer
before and after (CIs, chance levels, paired differences). It returns a
:class:`SteeringResult`, which saves, reloads and turns into a DataFrame::

    result = run_steering(backend, dataset, SteerOptions(targets=["fr"], layers=[6]))
    result.save("runs/steer")          # steering.json and vectors.safetensors
    result.to_frame()                  # one row per arm, target group and metric
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.data.splits import SPLITS
from xlgap.errors import ConfigError
from xlgap.interventions import arms
from xlgap.interventions.arms import resolve_languages, usable_items
from xlgap.interventions.steering import control as ctl
from xlgap.interventions.steering.control import (
    CONTROL_KINDS,
    covariance_basis,
    draw_seed,
    random_direction,
)
from xlgap.interventions.steering.hooks import parse_layers, setting_scores, steering
from xlgap.interventions.steering.vectors import (
    DIRECTIONS,
    SteeringVectors,
    train_steering_vectors,
)
from xlgap.io import dump_json
from xlgap.models.layers import hook_point, white_box
from xlgap.progress import progress_bar
from xlgap.prompting.scoring import (
    candidate_scores,
    distributions,
    parallel_texts,
    scoring_progress,
)
from xlgap.provenance import provenance, tagged
from xlgap.representations.extract import hidden_by_language
from xlgap.representations.ilo import ilo_difference
from xlgap.representations.layerwise import cosine_difference, inside_summary
from xlgap.sampling import default_shots, option
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES, mean_with_ci
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.multiple import HOLM_LABEL, adjust_holm

DEFAULT_DRAWS = 20
RESULT_FILE = "steering.json"
VECTORS_FILE = "vectors.safetensors"
SELECT = ("accuracy", "agreement", "transfer", "rankc")


@dataclass(frozen=True)
class Setting:
    """One point of the sweep: which vectors, at which layers, how strong (in total)."""

    direction: str
    layers: tuple[int, ...]
    alpha: float

    @property
    def layer_label(self) -> str:
        return "+".join(str(x) for x in self.layers)

    def as_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "layers": list(self.layers), "alpha": self.alpha}


def _items(value: str | Sequence[Any]) -> list[Any]:
    return [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) \
        else list(value)


def parse_sweep(directions: str | Sequence[str], layers: str | Sequence[Any],
                alphas: str | Sequence[float]) -> list[Setting]:
    """The grid directions x layer entries x alphas. A layer entry is one layer (``6``),
    layers steered together (``4+8``, a list) or a range (``4-8``); entries are
    comma-separated in a string."""
    dirs = _items(directions)
    bad = [d for d in dirs if d not in DIRECTIONS]
    if not dirs or bad:
        raise ConfigError(f"--directions: choose from {', '.join(DIRECTIONS)}; got {directions!r}")
    entries = [tuple(parse_layers([e] if isinstance(e, int) else e)) for e in _items(layers)]
    try:
        strengths = [float(a) for a in _items(alphas)]
    except ValueError as exc:
        raise ConfigError(f"--alphas {alphas!r}: give numbers, e.g. 1,2,4") from exc
    if not entries or not strengths:
        raise ConfigError("the sweep needs at least one layer entry and one alpha")
    return [Setting(d, e, a) for d in dirs for e in entries for a in strengths]


@dataclass
class SteerOptions:
    """What :func:`run_steering` does (the options of ``xlgap steer``)."""

    source: str | None = None  # default: the data set's first language
    targets: Sequence[str] | None = None  # default: every other language
    # lists in Python; ``xlgap steer`` takes them comma-separated (one declaration: the
    # command's flags, defaults and help are built from these fields)
    directions: str | Sequence[str] = option(
        ("shared",), "vectors to sweep: shared (toward the mean of all languages) and/or "
        "source (toward the source)", text_list=True)
    layers: str | Sequence[Any] = option(
        (3, 6, 9, 12), "layer settings to sweep: a layer (6), layers steered together (4+8, "
        "or 4-8 for 4 to 8 at once); 0 = the input of the first block", text_list=True)
    alphas: str | Sequence[float] = option(
        (0.5, 1, 2), "steering strengths to sweep: the total strength, split evenly over a "
        "setting's layers (with one layer, 1 moves a target's mean state onto the mean it is "
        "steered toward; with several, each adds 1/n of its vector and the shifts add up "
        "along the residual stream to about that)", text_list=True)
    pooling: str = option("mean_no_bos", "pooling of the states the vectors are made from: "
                          "mean, mean_no_bos or last", choices=("mean", "mean_no_bos", "last"))
    split: str | Sequence[float] = option(
        (0.4, 0.2, 0.4), "train,dev,test fractions of the items (train: vectors; dev: sweep; "
        "test: report)", text_list=True)
    select: str = option("accuracy", "dev metric that picks the best setting",
                         choices=("accuracy", "agreement", "transfer", "rankc"))
    shots: int | None = option(None, "few-shot examples in scoring prompts (default: 0 for "
                               "cloze items, else 3)")
    k: int = option(5, "ILO: nearest neighbours per point")
    n_boot: int = option(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals and "
                         "p-values")
    n_shuffles: int = option(DEFAULT_N_SHUFFLES, "shuffles averaged for the chance levels of "
                             "ILO and similarity")
    seed: int = 0
    progress: bool = False
    control_draws: int = option(DEFAULT_DRAWS, "random directions of the control: the "
                                "steered effect is reported as a percentile among theirs")
    control_kind: str = option("isotropic", "random directions: isotropic, or covariance "
                               "(drawn from the training states' covariance at the steered "
                               "layer)", choices=CONTROL_KINDS)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("targets", "directions", "layers", "alphas", "split"):
            if not isinstance(out[key], str | None):
                out[key] = list(out[key])
        return out


# -- the result ---------------------------------------------------------------------------------


@dataclass
class SteeringResult:
    """What :func:`run_steering` found; ``steering.json`` is :meth:`to_dict`."""

    model: str | None
    fingerprint: str
    data: str
    source: str
    targets: list[str]
    shots: int
    pooling: str
    select: str
    split: dict[str, Any]
    vectors: dict[str, Any]
    source_accuracy: dict[str, Any]
    baseline: dict[str, Any]
    best: dict[str, Any]
    control: dict[str, Any]
    sweep: list[dict[str, Any]]
    inside: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    provenance: dict[str, Any] | None = None
    #: the vectors themselves (saved as vectors.safetensors beside steering.json)
    steering_vectors: SteeringVectors | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "steering_vectors"}

    def save(self, path: str | Path) -> Path:
        """Write ``steering.json`` (``path`` is the file or its directory), tagged and with
        a provenance block, and the vectors (with the best setting) beside it."""
        target = Path(path)
        if target.suffix != ".json":
            target = target / RESULT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.steering_vectors is not None:
            # The vectors file remembers the best setting: ``--steer FILE:LANG`` needs no more.
            self.steering_vectors.meta["best"] = {k: self.best[k] for k in
                                                  ("direction", "layers", "alpha")}
            self.steering_vectors.save(target.parent / VECTORS_FILE)
        body = self.to_dict()
        if body["provenance"] is None:
            body["provenance"] = provenance(self.config, data=self.data)
        return dump_json(tagged("steering", body), target)

    @classmethod
    def load(cls, path: str | Path) -> SteeringResult:
        """A saved result (``steering.json`` or its directory), with its vectors if the
        vectors file lies beside it."""
        p = Path(path)
        if p.is_dir():
            p = p / RESULT_FILE
        raw = json.loads(p.read_text(encoding="utf-8"))
        raw.setdefault("control", {})  # files written before the control arm
        names = {f.name for f in dataclasses.fields(cls)}
        result = cls(**{k: v for k, v in raw.items() if k in names})
        if (p.parent / VECTORS_FILE).is_file():
            result.steering_vectors = SteeringVectors.load(p.parent / VECTORS_FILE)
        return result

    def to_frame(self) -> Any:
        """A pandas DataFrame, one row per arm (no steering, best, control), target group
        (``all`` or a target) and metric on the test split: estimate, CI and p-value
        against no steering."""
        import pandas as pd

        rows = []
        for arm, block in (("no steering", self.baseline["test"]), ("best", self.best["test"]),
                           ("control", self.control.get("test"))):
            if not block:
                continue
            groups = {"all": block["all"], **block["per_target"]}
            for group, stats in groups.items():
                for metric, stat in stats.items():
                    if not stat:
                        continue
                    ci = stat.get("ci") or [None, None]
                    rows.append({"arm": arm, "target": group, "metric": metric,
                                 "estimate": stat.get("estimate"), "ci_low": ci[0],
                                 "ci_high": ci[1],
                                 "p": (stat.get(arms.VS_BASE) or {}).get("p"),
                                 "n": stat.get("n")})
        return pd.DataFrame(rows)


# -- the experiment ------------------------------------------------------------------------------


def _vectors_for(backend: Any, train: Any, source: str, targets: list[str], pooling: str,
                 vectors_file: str | Path | None) -> SteeringVectors:
    """The vectors from the train split, reused from ``vectors_file`` when they were made
    from the same model, pooling, languages and items (and written there otherwise)."""
    wanted = {"fingerprint": white_box(backend).fingerprint, "pooling": pooling,
              "source": source, "targets": targets, "languages": [source, *targets],
              "item_ids": [it.id for it in train.items]}
    path = Path(vectors_file) if vectors_file else None
    if path is not None and path.exists():
        old = SteeringVectors.load(path)
        if all(old.meta.get(k) == v for k, v in wanted.items()):
            return old
    vectors = train_steering_vectors(backend, train, source, targets, pooling=pooling)
    if path is not None:
        vectors.save(path)
    return vectors


def control_vectors(vectors: SteeringVectors, setting: Setting, targets: Sequence[str],
                    seed: int, draw: int = 0, basis: Any = None) -> dict[str, Any]:
    """Per target, draw ``draw`` of the random control: one direction shared by the
    setting's layers, with the chosen vector's per-layer profile and total push (see
    :mod:`~xlgap.interventions.steering.control`)."""
    return {t: random_direction(vectors.vectors[f"{setting.direction}.{t}"], setting.layers,
                                draw_seed(seed, draw, j), basis)
            for j, t in enumerate(targets)}


def holm_block(block: Mapping[str, Any]) -> dict[str, Any]:
    """Holm-adjusted p's of every test of the best setting against no steering on the test
    items (each metric, pooled and per target): the family the report prints from. The
    setting itself was picked on dev, other items, so the pick adds no test here."""
    groups = {"all": block["all"], **block["per_target"]}
    keys = [(g, m) for g, stats in groups.items() for m, stat in stats.items()
            if stat and (stat.get(arms.VS_BASE) or {}).get("p") is not None]
    adjusted = adjust_holm([groups[g][m][arms.VS_BASE]["p"] for g, m in keys])
    out: dict[str, dict[str, float | None]] = {g: {} for g in groups}
    for (g, m), p in zip(keys, adjusted, strict=True):
        out[g][m] = p
    return {"label": HOLM_LABEL.format(k=len(keys)), "family": len(keys),
            "tests": "each metric, pooled and per target, best against no steering (test)",
            "p": out}


def run_steering(backend: Any, dataset: Any, options: SteerOptions | None = None, *,
                 vectors_file: str | Path | None = None) -> SteeringResult:
    """Run the steering experiment on a white-box ``backend`` (best behind the result
    store, so reruns compute nothing twice) and ``dataset`` (items with candidates)."""
    opts = options or SteerOptions()
    started = time.time()
    if opts.select not in SELECT:
        raise ConfigError(f"select must be one of {', '.join(SELECT)}, got {opts.select!r}")
    if opts.control_kind not in CONTROL_KINDS:
        raise ConfigError(f"control_kind must be one of {', '.join(CONTROL_KINDS)}, got "
                          f"{opts.control_kind!r}")
    if opts.control_draws < 1:
        raise ConfigError(f"control_draws must be at least 1, got {opts.control_draws}")
    settings = parse_sweep(opts.directions, opts.layers, opts.alphas)
    inner = white_box(backend)
    source, targets = resolve_languages(dataset, opts.source, opts.targets)
    data = usable_items(dataset, [source, *targets], "steering")
    for s in settings:  # fail before any work on a layer the model does not have
        for layer in s.layers:
            hook_point(inner.model, layer)
    split = data.split(opts.split, opts.seed, SPLITS)
    train, dev, test = (data.only(split[name]) for name in SPLITS)
    shots = opts.shots if opts.shots is not None else default_shots(data, exact=True)
    vectors = _vectors_for(backend, train, source, targets, opts.pooling, vectors_file)
    progress, n_boot, seed = opts.progress, opts.n_boot, opts.seed

    def scores_of(ds: Any, chosen: Mapping[str, Any] | None, setting: Setting | None
                  ) -> dict[str, np.ndarray]:
        return setting_scores(backend, ds, targets, shots, chosen,
                                 setting.layers if setting else (),
                                 setting.alpha if setting else 0.0)

    def by_target(setting: Setting) -> dict[str, Any]:
        return {t: vectors.vectors[f"{setting.direction}.{t}"] for t in targets}

    def source_scores(ds: Any) -> tuple[np.ndarray, np.ndarray]:
        scores, gold = candidate_scores(backend, ds, [source], shots)
        return scores[source], gold[source]

    with scoring_progress(backend, len(dev.items) * (1 + len(targets)), "dev, no steering",
                             progress):
        dev_src, dev_gold = source_scores(dev)
        dev_base = arms.parts_for(dev_src, scores_of(dev, None, None), dev_gold)
    sweep = []
    bar = progress_bar(total=len(settings), desc="sweep (dev)", unit="setting",
                       enabled=progress)
    for setting in settings:
        parts = arms.parts_for(dev_src, scores_of(dev, by_target(setting), setting), dev_gold)
        point = arms.point_estimates(arms.stacked(parts))
        point["per_target_accuracy"] = {t: arms.point_estimates(p)["accuracy"]
                                        for t, p in parts.items()}
        sweep.append({**setting.as_dict(), "dev": point})
        bar.update(1)
    bar.close()
    baseline_dev = arms.point_estimates(arms.stacked(dev_base))

    def score_of(row: dict[str, Any]) -> float:
        value = row["dev"][opts.select]
        return float("-inf") if value != value else value  # NaN never wins

    best_row = max(sweep, key=score_of)
    best = Setting(best_row["direction"], tuple(best_row["layers"]), best_row["alpha"])
    basis = None
    if opts.control_kind == "covariance":
        train_states = hidden_by_language(backend, parallel_texts(train, [source, *targets]),
                                          opts.pooling)
        basis = covariance_basis(train_states, min(best.layers))
    controls = [control_vectors(vectors, best, targets, seed, j, basis)
                for j in range(opts.control_draws)]

    with scoring_progress(backend, len(test.items) * (1 + (2 + len(controls)) * len(targets)),
                             "test", progress):
        test_src, test_gold = source_scores(test)
        test_base = arms.parts_for(test_src, scores_of(test, None, None), test_gold)
        test_best = arms.parts_for(test_src, scores_of(test, by_target(best), best), test_gold)
        test_controls = [arms.parts_for(test_src, scores_of(test, c, best), test_gold)
                         for c in controls]
    test_control = arms.mean_parts(test_controls)
    inside = _inside(backend, test, source, targets, opts, by_target(best), controls, best)
    steered_effect = ctl.metric_effects(test_best, test_base)
    draw_effects = [ctl.metric_effects(parts, test_base) for parts in test_controls]
    first = controls[0]
    best_test = arms.report_block(test_best, test_base, n_boot=n_boot, seed=seed)
    return SteeringResult(
        model=getattr(backend, "name", None), fingerprint=inner.fingerprint,
        data=data.source_path or data.name, source=source, targets=targets, shots=shots,
        pooling=opts.pooling, select=opts.select, split=split,
        vectors={"path": VECTORS_FILE, "names": sorted(vectors.vectors),
                 "norms": vectors.meta.get("norms", {})},
        source_accuracy={"test": mean_with_ci(
            accuracy_per_item(distributions(test_src), test_gold), n_boot=n_boot,
            seed=seed)},
        baseline={"dev": baseline_dev,
                  "test": arms.report_block(test_base, None, n_boot=n_boot, seed=seed)},
        best={**best.as_dict(), "dev": best_row["dev"], "test": best_test,
              "holm": holm_block(best_test)},
        control={"direction": "random", "kind": opts.control_kind, "draws": len(controls),
                 "layers": list(best.layers), "alpha": best.alpha, "seed": seed,
                 "matches": best.direction,
                 "shared_across_layers": True,
                 "total_push": {t: {"steered": ctl.total_push(by_target(best)[t], best.layers,
                                                              best.alpha),
                                    "control": ctl.total_push(first[t], best.layers,
                                                              best.alpha)}
                                for t in targets},
                 "norms": {t: v.norm(dim=-1)[list(best.layers)].tolist()
                           for t, v in first.items()},
                 "arm": "the item parts averaged over the draws (the expected random push)",
                 "test": arms.report_block(test_control, test_base, n_boot=n_boot, seed=seed),
                 "best_vs_control": arms.report_block(test_best, test_control, n_boot=n_boot,
                                                    seed=seed, key="vs_control")["all"],
                 "effects": {"steered": steered_effect, "per_draw": draw_effects},
                 "rank": {name: ctl.rank_summary(value, [d.get(name) for d in draw_effects],
                                                 name in ctl.LOWER_IS_BETTER)
                          for name, value in steered_effect.items()},
                 "inside_rank": inside.pop("_rank")},
        sweep=sweep, inside=inside, config=opts.to_dict(),
        seconds=round(time.time() - started, 1), steering_vectors=vectors)


def _inside(backend: Any, test: Any, source: str, targets: list[str], opts: SteerOptions,
            chosen: Mapping[str, Any], controls: Sequence[Mapping[str, Any]], best: Setting
            ) -> dict[str, Any]:
    """ILO and similarity by layer of the test texts: no steering, the best setting and
    the first control draw, each with CIs and chance levels from the same item draws (so
    the arms are paired); the paired change of ILO and of the parallel cosine against no
    steering; and, per layer, where the steered change falls among every draw's (``_rank``,
    moved to the control block by the caller)."""
    texts = parallel_texts(test, [source, *targets])

    def steer_with(vecs: Mapping[str, Any]) -> Any:
        def steer_for(lang: str) -> Any:
            if lang == source:
                return contextlib.nullcontext()
            return steering(backend, vecs[lang], best.layers, best.alpha)
        return steer_for

    def target_states(vecs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        # the source is never steered: its states are the baseline's
        steered = hidden_by_language(backend, {t: texts[t] for t in targets}, opts.pooling,
                                     steer_with(vecs))
        return {source: states["baseline"][source], **steered}

    states = {"baseline": hidden_by_language(backend, texts, opts.pooling)}
    states["steered"] = target_states(chosen)
    draws = [target_states(c) for c in controls]
    states["control"] = draws[0]
    common = {"k": opts.k, "n_boot": opts.n_boot, "n_shuffles": opts.n_shuffles,
              "seed": opts.seed}
    out: dict[str, Any] = {name: inside_summary(s, source, **common)
                           for name, s in states.items()}
    out["control_is"] = "draw 0 of the control (its rank among all draws: control.inside_rank)"
    out["cos_parallel_change"] = {
        name: cosine_difference(states["baseline"], states[name], source,
                                   n_boot=opts.n_boot, seed=opts.seed)
        for name in ("steered", "control")}
    out["ilo_change"] = {"steered": ilo_difference(states["baseline"], states["steered"],
                                                       k=opts.k, n_boot=opts.n_boot,
                                                       seed=opts.seed)}
    base_ilo = np.array(ctl.ilo_point(states["baseline"], opts.k))
    base_cos = ctl.cos_point(states["baseline"], source)
    steered_ilo = np.array(ctl.ilo_point(states["steered"], opts.k)) - base_ilo
    steered_cos = ctl.cos_point(states["steered"], source) - base_cos
    draw_ilo = [np.array(ctl.ilo_point(d, opts.k)) - base_ilo for d in draws]
    draw_cos = [ctl.cos_point(d, source) - base_cos for d in draws]
    out["_rank"] = {
        "ilo_change": [ctl.rank_summary(float(steered_ilo[i]), [float(d[i]) for d in draw_ilo],
                                        False) for i in range(len(base_ilo))],
        "cos_parallel_change": [ctl.rank_summary(float(steered_cos[i]),
                                                 [float(d[i]) for d in draw_cos], False)
                                for i in range(len(base_cos))],
        "per_draw": {"ilo_change": [d.tolist() for d in draw_ilo],
                     "cos_parallel_change": [d.tolist() for d in draw_cos]}}
    out.update({"n_boot": opts.n_boot, "n_shuffles": opts.n_shuffles, "seed": opts.seed,
                "resampling": "items; the same draws for every arm and layer (paired)"})
    return out
