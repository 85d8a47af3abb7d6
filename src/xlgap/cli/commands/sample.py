"""``sample``, ``diagnose``, ``simulate`` and ``demo``: the bias-or-variance line and the
main job."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xlgap.api.inside import look_inside
from xlgap.api.runs import compare_strategies
from xlgap.cli import workspace
from xlgap.cli.config import RunConfig, config_to_dict, from_options, opt, options_from
from xlgap.cli.registry import command
from xlgap.data.languages import language_name
from xlgap.errors import XlgapError
from xlgap.interventions.strategies import parse_strategy_list
from xlgap.models.embedder import open_embedder
from xlgap.progress import format_duration, step
from xlgap.report.html import write_report
from xlgap.report.plots.diagnosis import write_plots
from xlgap.report.plots.representations import plot_ilo_by_layer, plot_similarity_by_layer
from xlgap.report.text import format_ilo, format_interventions_table, format_similarity
from xlgap.runs import load_run
from xlgap.sampling import (
    ITEM_SOURCE,
    SamplingOptions,
    make_run,
    make_source_runs,
    source_run_dir,
)
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, nan_mean
from xlgap.stats.by_source import format_by_source, write_by_source
from xlgap.stats.diagnose import diagnose_dir, format_summary, write_diagnosis
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.sequential import run_until_ci
from xlgap.stats.simulate import simulate_run


@dataclass
class SampleConfig(RunConfig):
    source: str = opt("en", "source language (BCP 47), or 'item': each item asked from its "
                      "own source language where the data records one (ECLeKTic), one run "
                      "per source in OUT/source-<lang>/, pooled in OUT/by_source.json")
    # the sampling options are declared once, on SamplingOptions (help and default)
    samples: int = from_options(SamplingOptions, "samples")
    temperature: float = from_options(SamplingOptions, "temperature")
    exact: bool = from_options(SamplingOptions, "exact")
    normalize: str = from_options(SamplingOptions, "normalize")
    shuffle_options: bool = from_options(SamplingOptions, "shuffle_options")
    judge: str = opt("", "open questions: a model (any --model value) that judges each free-"
                     "text answer against the gold answers, instead of alias matching")
    embedder: str = opt("self", "open questions: the answer embedder for the L2 distance: "
                        "'self' (the model's own last-layer state), 'self:LAYER', or a "
                        "Hugging Face encoder (hub id in the local cache, or a path)")
    shots: int | None = from_options(SamplingOptions, "shots")
    max_new_tokens: int = from_options(SamplingOptions, "max_new_tokens")
    diagnose: bool = opt(True, "run the diagnosis when sampling is done")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals")
    until_ci: float | None = opt(None, "sequential: add items in batches (30, then doubling) "
                                 "until --metric's pooled CI half-width is at most this, "
                                 "or the data run out (CIs corrected for the looks; "
                                 "OUT/sequential.json, docs/planning.md)")
    metric: str = opt("transfer", "with --until-ci: the pair metric whose CI decides")


@dataclass
class DemoConfig(SampleConfig):
    """The main job, sized to finish while you watch on two CPU cores: exact candidate
    scores (no sampling noise, a fraction of the cost) on 30 built-in items in 6
    languages of 5 scripts, one-shot prompts; a full study adds items, languages, shots
    and sampled answers."""

    exact: bool = opt(True, "score the candidates exactly (--no-exact: sample K answers)")
    samples: int = opt(10, "with --no-exact: responses sampled per item and language (K)")
    limit: int | None = opt(30, "items of the data set (the built-in set has 70)")
    targets: str = opt("es,ru,zh,ar,hi", "target languages")
    shots: int | None = opt(1, "few-shot examples in the prompts")
    strategies: str = opt("baseline,tren-1,vote-5", "what helps: the strategies compared "
                          "(scored exactly when --exact)")
    represent: bool = opt(True, "look inside: ILO and similarity by layer")
    n_boot: int = opt(300, "bootstrap resamples for confidence intervals")


@dataclass
class DiagnoseConfig:
    positional: ClassVar[tuple[str, str]] = ("run_dir", "?")  # xlgap diagnose RUN_DIR
    run_dir: str = opt("", "run directory (see docs/run-format.md)")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals")
    seed: int = opt(0, "random seed")
    model_fit: bool = opt(True, "fit the model-based pi estimate (--no-model-fit: faster)")


@dataclass
class SimulateConfig:
    pi: float = opt(0.9, "share of variance-type gaps")
    tau: float = opt(1.5, "shrinkage of the source centre in the target")
    eta: float = opt(2.0, "extra spread of target logits")
    questions: int = opt(500, "questions")
    samples: int = opt(20, "responses per question and language")
    options: int = opt(4, "answer options per question")
    targets: int = opt(1, "number of simulated target languages")
    seed: int = opt(0, "random seed")
    out: str = opt("", "output run directory")
    diagnose: bool = opt(False, "diagnose the simulated run right away")


def _sampling_options(cfg: SampleConfig) -> SamplingOptions:
    return options_from(SamplingOptions, cfg)


def accuracy_table(run_dir: str | Path) -> dict[str, float]:
    """Per-language accuracy straight from a run (mean probability of the gold answer over
    the items that language answered), for the quick table before the diagnosis."""
    run = load_run(run_dir)
    out: dict[str, float] = {}
    for lang in run.languages:
        per_item = accuracy_per_item(run.probs[lang], run.gold).astype(float)
        per_item[~run.present[lang]] = np.nan
        out[lang] = nan_mean(per_item)
    return out


def _print_accuracy(run_dir: Path) -> None:
    acc = accuracy_table(run_dir)
    print("\nAccuracy per language")
    for lang, value in sorted(acc.items(), key=lambda kv: -kv[1]):
        bar = "#" * round(value * 30)
        print(f"  {lang:<8} {language_name(lang):<22} {value:6.1%}  {bar}")


def sample_and_diagnose(cfg: SampleConfig, out: Path, label: str) -> tuple[Any, Any, str,
                                                                            list[str]]:
    """Make (or resume) a run in ``out`` and diagnose it; shared by ``sample`` and ``demo``."""
    dataset, source, targets = workspace.open_dataset(cfg)
    backend = workspace.open_backend(cfg)
    print(f"[xlgap] {label}: model {cfg.model}, {len(dataset)} items, {source} -> "
          f"{', '.join(targets)}, {'exact' if cfg.exact else f'K={cfg.samples}'}; "
          f"run dir {out}", file=sys.stderr)
    def make(data: Any) -> Path:
        return make_run(
            backend, data, out, source=source, targets=targets,
            options=_sampling_options(cfg), meta={"config": config_to_dict(cfg)},
            progress=cfg.show_progress(), judge=workspace.open_judge(cfg),
            embedder=open_embedder(cfg.embedder, backend, store=workspace.open_store(cfg),
                                   device=cfg.device if cfg.device != "auto" else "cpu"))

    if cfg.until_ci:  # sequential: looks planned in advance, Bonferroni over them
        seq = run_until_ci(dataset, out, target=cfg.until_ci, make=make, metric=cfg.metric,
                           n_boot=cfg.n_boot, seed=cfg.seed)
        print(f"[xlgap] --until-ci: {seq['metric']} {seq['estimate']} CI {seq['ci']} on "
              f"{seq['items']} items ({seq['correction']}); "
              f"{'reached' if seq['reached'] else seq['why']}", file=sys.stderr)
    else:
        make(dataset)
    _print_accuracy(out)
    if cfg.diagnose:
        _diagnose(out, cfg.n_boot, cfg.seed, fit_model=True, progress=cfg.show_progress())
    return backend, dataset, source, targets


def sample_by_source(cfg: SampleConfig, out: Path) -> dict[str, Path]:
    """``--source item``: one run per source language of the items in ``OUT/source-<lang>/``
    (each resumable and diagnosed on its own), then the pooled summary
    ``OUT/by_source.json``. Returns source language -> run directory."""
    dataset, _, targets = workspace.open_dataset(cfg, item_source=True)
    backend = workspace.open_backend(cfg)
    groups = dataset.by_source()
    print(f"[xlgap] sample: model {cfg.model}, {len(dataset)} items from their own source "
          f"language ({', '.join(f'{src} {len(g)}' for src, g in groups.items())}) -> "
          f"{', '.join(targets)}, {'exact' if cfg.exact else f'K={cfg.samples}'}; one run "
          f"per source in {source_run_dir(out, '<lang>')}", file=sys.stderr)
    runs = make_source_runs(
        backend, dataset, out, targets=targets, options=_sampling_options(cfg),
        meta={"config": config_to_dict(cfg)}, progress=cfg.show_progress(),
        judge=workspace.open_judge(cfg),
        embedder=open_embedder(cfg.embedder, backend, store=workspace.open_store(cfg),
                               device=cfg.device if cfg.device != "auto" else "cpu"))
    for src, run_dir in runs.items():
        print(f"\n== items from {src} ({language_name(src)}): {run_dir}")
        _print_accuracy(run_dir)
        if cfg.diagnose:
            _diagnose(run_dir, cfg.n_boot, cfg.seed, fit_model=True,
                      progress=cfg.show_progress())
    if cfg.diagnose:
        _pool(out, runs, cfg.n_boot, cfg.seed)
    return runs


def _pool(out: Path, runs: dict[str, Path], n_boot: int, seed: int) -> None:
    result = write_by_source(out, runs, n_boot=n_boot, seed=seed)
    print("\nTransfer from each item's own source language")
    print(format_by_source(result))
    print(f"\n[xlgap] wrote {out / 'by_source.json'}")


def _source_runs(out: Path) -> dict[str, Path]:
    """The runs of a ``--source item`` output directory, by source language."""
    prefix = source_run_dir(out, "").name
    return {d.name[len(prefix):]: d for d in sorted(out.glob(f"{prefix}*"))
            if (d / "run.json").exists()}


@command("sample", SampleConfig, analysis=True)
def cmd_sample(cfg: SampleConfig) -> int:
    out = Path(cfg.out) if cfg.out else workspace.default_out("sample")
    if cfg.source == ITEM_SOURCE:
        if cfg.until_ci:
            raise XlgapError("--until-ci takes one source language; --source item makes a "
                             "run per source (run --until-ci on each group's data instead)")
        sample_by_source(cfg, out)
    else:
        sample_and_diagnose(cfg, out, "sample")
    return 0


def _diagnose(run_dir: Path, n_boot: int, seed: int, *, fit_model: bool,
              progress: bool) -> dict[str, Any]:
    diag = diagnose_dir(run_dir, n_boot=n_boot, seed=seed, fit_model=fit_model,
                        progress=progress)
    diag["plots"] = [p.name for p in write_plots(diag, run_dir / "plots")]
    write_diagnosis(diag, run_dir)
    print()
    print(format_summary(diag))
    print(f"\n[xlgap] wrote {run_dir / 'diagnosis.json'} and plots in {run_dir / 'plots'}")
    return diag


@command("diagnose", DiagnoseConfig)
def cmd_diagnose(cfg: DiagnoseConfig) -> int:
    if not cfg.run_dir:
        raise XlgapError("xlgap diagnose RUN_DIR: give the run directory")
    run_dir = Path(cfg.run_dir)
    runs = {} if (run_dir / "run.json").exists() else _source_runs(run_dir)
    if not runs:
        _diagnose(run_dir, cfg.n_boot, cfg.seed, fit_model=cfg.model_fit,
                  progress=sys.stderr.isatty())
        return 0
    # the output of `sample --source item`: every group's run, then the pooled summary
    for run in runs.values():
        _diagnose(run, cfg.n_boot, cfg.seed, fit_model=cfg.model_fit,
                  progress=sys.stderr.isatty())
    _pool(run_dir, runs, cfg.n_boot, cfg.seed)
    return 0


@command("simulate", SimulateConfig)
def cmd_simulate(cfg: SimulateConfig) -> int:
    out = Path(cfg.out) if cfg.out else workspace.default_out("simulate")
    targets = [f"t{i + 1}" for i in range(cfg.targets)]
    simulate_run(out, pi=cfg.pi, tau=cfg.tau, eta=cfg.eta, questions=cfg.questions,
                 samples=cfg.samples, options=cfg.options, seed=cfg.seed, targets=targets)
    print(f"[xlgap] wrote a simulated run to {out} (truth in {out / 'truth.json'})")
    if cfg.diagnose:
        _diagnose(out, 1000, cfg.seed, fit_model=True, progress=sys.stderr.isatty())
    return 0


@command("demo", DemoConfig)
def cmd_demo(cfg: DemoConfig) -> int:
    """The main job on the three research lines: bias or variance (a run and its
    diagnosis), what helps (prompt strategies against the baseline), inside the model
    (ILO and similarity by layer); then one report page over all of it."""
    started = time.time()
    out = Path(cfg.out) if cfg.out else Path("runs") / "demo"
    with step("1/3 bias or variance: answers and their diagnosis"):
        backend, dataset, source, targets = sample_and_diagnose(
            replace(cfg, out=str(out / "run")), out / "run", "demo")
    with step("2/3 what helps: prompt strategies against the baseline"):
        # translations may use any language of the data set, not only the run's
        full = workspace.open_dataset(cfg, all_languages=True)[0]
        found = compare_strategies(
            backend, full, parse_strategy_list(cfg.strategies), source=source,
            targets=targets, out=out / "intervene", exact=cfg.exact,
            samples=1 if cfg.exact else 3, shots=cfg.shots if cfg.shots is not None else 3,
            temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, n_boot=cfg.n_boot,
            seed=cfg.seed, progress=cfg.show_progress(), config=config_to_dict(cfg))
        print(format_interventions_table(found))
    if cfg.represent and backend.supports_white_box:
        with step("3/3 inside the model: ILO and similarity by layer"):
            inside = look_inside(backend, dataset, source=source, targets=targets,
                                     out=out / "inside", analyses=["ilo", "similarity"],
                                     n_boot=min(cfg.n_boot, 100), seed=cfg.seed,
                                     batch_size=cfg.batch_size, progress=cfg.show_progress())
            plot_ilo_by_layer(inside["ilo"], out / "inside" / "ilo.png")
            plot_similarity_by_layer(inside["similarity"], out / "inside" / "similarity.png")
            print(f"\n{format_ilo(inside['ilo'])}\n\n{format_similarity(inside['similarity'])}")
    report = write_report([out], out / "report.html", f"xlgap demo: {cfg.model}")
    print(f"\n[xlgap] demo done in {format_duration(time.time() - started)}; everything is "
          f"in {out}")
    print(f"[xlgap] report: {report.resolve()}")
    return 0


