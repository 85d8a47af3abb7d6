"""``xlgap steer`` and ``xlgap finetune``: reducing the gap inside a white-box model.

Thin wrappers: options -> :class:`~xlgap.interventions.steering.SteerOptions` /
:class:`~xlgap.interventions.finetune.FinetuneOptions`, the backend and data through the
workspace, :func:`~xlgap.interventions.steering.run_steering` /
:func:`~xlgap.interventions.finetune.run_finetune`, the result saved, a text summary
printed and the figures drawn (see ``docs/steering.md``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlgap.cli import workspace
from xlgap.cli.config import RunConfig, config_to_dict, from_options, opt, options_from
from xlgap.cli.registry import command
from xlgap.data.languages import check_known
from xlgap.errors import ConfigError
from xlgap.interventions.finetune import FinetuneOptions, run_finetune
from xlgap.interventions.finetune.experiment import parse_freeze
from xlgap.interventions.steering import SteerOptions, run_steering
from xlgap.interventions.steering.experiment import VECTORS_FILE, parse_sweep
from xlgap.report.plots import finetune as finetune_plots
from xlgap.report.plots import steering as steering_plots


@dataclass
class SteerConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train, dev, test)")
    # the steering options are declared once, on SteerOptions (help and default)
    directions: str = from_options(SteerOptions, "directions")
    layers: str = from_options(SteerOptions, "layers")
    alphas: str = from_options(SteerOptions, "alphas")
    pooling: str = from_options(SteerOptions, "pooling")
    split: str = from_options(SteerOptions, "split")
    select: str = from_options(SteerOptions, "select")
    shots: int | None = from_options(SteerOptions, "shots")
    k: int = from_options(SteerOptions, "k")
    n_boot: int = from_options(SteerOptions, "n_boot")
    n_shuffles: int = from_options(SteerOptions, "n_shuffles")
    control_draws: int = from_options(SteerOptions, "control_draws")
    control_kind: str = from_options(SteerOptions, "control_kind")


@dataclass
class FinetuneConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train and test)")
    # the fine-tuning options are declared once, on FinetuneOptions (help and default)
    lang: str = from_options(FinetuneOptions, "lang")
    freeze_first: str = from_options(FinetuneOptions, "freeze_first")
    steps: int = from_options(FinetuneOptions, "steps")
    seeds: int = from_options(FinetuneOptions, "seeds")
    method: str = from_options(FinetuneOptions, "method")
    train_embeddings: bool = from_options(FinetuneOptions, "train_embeddings")
    text: str = from_options(FinetuneOptions, "text")
    lr: float | None = from_options(FinetuneOptions, "lr")
    rank: int = from_options(FinetuneOptions, "rank")
    lora_alpha: float = from_options(FinetuneOptions, "lora_alpha")
    train_batch: int = from_options(FinetuneOptions, "train_batch")
    max_length: int = from_options(FinetuneOptions, "max_length")
    checkpoint_every: int = from_options(FinetuneOptions, "checkpoint_every")
    split: str = from_options(FinetuneOptions, "split")
    pooling: str = from_options(FinetuneOptions, "pooling")
    shots: int | None = from_options(FinetuneOptions, "shots")
    k: int = from_options(FinetuneOptions, "k")
    eval_trained: bool = from_options(FinetuneOptions, "eval_trained")
    n_boot: int = from_options(FinetuneOptions, "n_boot")
    n_shuffles: int = from_options(FinetuneOptions, "n_shuffles")


# -- shared steps ------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[xlgap] {msg}", file=sys.stderr, flush=True)


def _open(cfg: RunConfig, command: str, extra_langs: Sequence[str] = ()) -> tuple[
        Any, Any, str, list[str], Path]:
    """Backend, data, source, targets, out."""

    # Checked before anything loads: these commands hook one model in this process.
    if cfg.ray:
        raise ConfigError(f"xlgap {command} hooks the model in this process; --ray is for "
                          "sample, intervene and the representation commands")
    if cfg.steer:
        raise ConfigError(f"xlgap {command} sets up its own model changes; --steer is for "
                          "the other commands")
    dataset, source, targets = workspace.open_dataset(cfg, all_languages=bool(extra_langs))
    check_known(extra_langs, dataset.languages, f"data set {dataset.name}")
    if not targets:
        raise ConfigError(f"xlgap {command} needs at least one target language (--targets)")
    backend = workspace.open_backend(cfg)
    if not backend.supports_white_box:
        raise ConfigError(f"xlgap {command} needs a white-box model; {cfg.model!r} is not one")
    out = Path(cfg.out) if cfg.out else workspace.default_out(command)
    out.mkdir(parents=True, exist_ok=True)
    return backend, dataset, source, targets, out


Figure = tuple[Callable[[dict[str, Any], Path], Path], str]


def _draw(figures: Sequence[Figure], result: dict[str, Any], out: Path) -> list[Path]:
    """The report's figures (drawing function, file name), drawn from the result as
    written."""
    return [draw(result, out / name) for draw, name in figures]


# -- steer -------------------------------------------------------------------------------------


STEER_FIGURES: tuple[Figure, ...] = (
    (steering_plots.plot_sweep, "steering_sweep.png"),
    (steering_plots.plot_before_after, "steering_test.png"),
    (steering_plots.plot_inside, "steering_inside.png"))


@command("steer", SteerConfig, analysis=True, white_box=True)
def cmd_steer(cfg: SteerConfig) -> int:

    parse_sweep(cfg.directions, cfg.layers, cfg.alphas)  # bad options fail before any load
    backend, dataset, source, targets, out = _open(cfg, "steer")
    options = options_from(SteerOptions, cfg, source=source, targets=targets,
                           progress=cfg.show_progress())
    _log(f"steer: model {cfg.model}, {len(dataset.items)} items, {source} -> "
         f"{', '.join(targets)}; results in {out}")
    result = run_steering(backend, dataset, options, vectors_file=out / VECTORS_FILE)
    result.config = config_to_dict(cfg)
    result.save(out)
    _draw(STEER_FIGURES, result.to_dict(), out)
    print(format_steer(result.to_dict()))
    _log(f"wrote {out / 'steering.json'}, {VECTORS_FILE} and three figures in "
         f"{result.seconds:.0f} s")
    return 0


def _ci(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("estimate") is None:
        return "n/a"
    lo, hi = stat["ci"]
    text = f"{stat['estimate']:.3f} [{_num(lo)}, {_num(hi)}]"
    test = stat.get("vs_base") or {}
    if test.get("p") is not None:
        text += f" p{_p(test['p'], test.get('p_floor'))}"
    return text


def _p(p: float, floor: float | None) -> str:
    """``=0.034``, or ``<0.002`` at the bootstrap's resolution floor."""
    if floor is not None and p <= floor + 1e-12:
        return f"<{floor:.3g}"
    return f"={p:.3f}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_steer(result: dict[str, Any]) -> str:
    best = result["best"]
    lines = [f"Steering sweep on dev ({result['select']}; no steering "
             f"{result['baseline']['dev'][result['select']]:.3f}):"]
    for row in result["sweep"]:
        mark = " <- best" if (row["direction"], row["layers"], row["alpha"]) == (
            best["direction"], best["layers"], best["alpha"]) else ""
        lines.append(f"  {row['direction']:<7} layers {'+'.join(map(str, row['layers'])):<8} "
                     f"alpha {row['alpha']:<5g} {_num(row['dev'][result['select']])}{mark}")
    control_block = result.get("control") or {}
    lines.append(f"Test split ({len(result['split']['test'])} items): no steering -> best -> "
                 f"random control, mean of {control_block.get('draws', 1)} directions "
                 "(95% CI, paired p against no steering); the steered effect's percentile "
                 "among the random directions' effects:")
    control = control_block.get("test", {}).get("all", {})
    rank = control_block.get("rank") or {}
    for metric, stat in best["test"]["all"].items():
        pct = (rank.get(metric) or {}).get("percentile")
        lines.append(f"  {metric:<16} {_ci(result['baseline']['test']['all'].get(metric)):<28}"
                     f" -> {_ci(stat):<38} -> {_ci(control.get(metric)):<38}"
                     f" {'' if pct is None else f'{pct:.0f}th pct'}")
    return "\n".join(lines)


# -- finetune ----------------------------------------------------------------------------------


FINETUNE_FIGURES: tuple[Figure, ...] = ((finetune_plots.plot_ilo, "finetune_ilo.png"),
                                        (finetune_plots.plot_transfer, "finetune_transfer.png"))


@command("finetune", FinetuneConfig, analysis=True, white_box=True)
def cmd_finetune(cfg: FinetuneConfig) -> int:

    parse_freeze(cfg.freeze_first)  # bad options fail before any load
    backend, dataset, source, targets, out = _open(cfg, "finetune",
                                                   extra_langs=[cfg.lang] if cfg.lang else [])
    # the data set's own code for --lang (zh -> zh-Hans), or its source
    lang = check_known([cfg.lang], dataset.languages, "the data set (--lang)")[0] if cfg.lang \
        else source
    options = options_from(FinetuneOptions, cfg, source=source, targets=targets, lang=lang,
                           progress=cfg.show_progress())
    _log(f"finetune: model {cfg.model}, {cfg.method} in {lang}, {cfg.steps} steps x "
         f"{cfg.train_batch}, first {cfg.freeze_first} blocks frozen; results in {out}")
    result = run_finetune(backend, dataset, options, work_dir=out)
    result.config = config_to_dict(cfg)
    result.save(out)
    _draw(FINETUNE_FIGURES, result.to_dict(), out)
    print(format_finetune(result.to_dict()))
    _log(f"wrote {out / 'finetune.json'} and two figures in {result.seconds:.0f} s")
    return 0


def format_finetune(result: dict[str, Any]) -> str:
    lines = [f"Fine-tuning in {result['lang']} ({result['method']}, {result['steps']} steps); "
             "held-out items:",
             f"  base      transfer {_ci(result['base']['transfer']['all'])}"]
    for run in result["runs"]:
        vs_base = run["transfer_after"]["all"].get("vs_base") or {}
        lines.append(f"  N={run['freeze_first']:<3} seed {run.get('seed', 0):<3} transfer "
                     f"{_ci(run['transfer_after']['all'])}"
                     f"  (p vs base {_num(vs_base.get('p'))})")
    for s in result.get("settings") or []:
        fixed = (s.get("pairs_after") or {}).get("transfer_base_items") or {}
        sd = (fixed.get("seed_spread") or {}).get("sd")
        lines.append(f"  N={s['freeze_first']:<3} mean of seeds {s['seeds']}: transfer on the "
                     f"base model's source-correct items {_ci(fixed)}, SD between seeds "
                     f"{_num(sd)}")
    head = result.get("headline")
    if head:
        lines.append(f"Largest change ({head['label']}): N={head['freeze_first']} "
                     f"{head['estimate']:+.3f}, p {_num(head['p'])} unadjusted, "
                     f"{_num(head['p_holm'])} {head['p_holm_label']}")
    counts = result.get("example_counts") or {}
    if counts.get("prompt_cut") or counts.get("text_cut") or counts.get("dropped"):
        lines.append(f"Training examples: {counts.get('kept')} of {counts.get('given')} kept, "
                     f"{counts.get('prompt_cut', counts.get('text_cut', 0))} cut to "
                     f"--max-length, {counts.get('dropped')} dropped")
    between = [c for c in result.get("comparisons", []) if c["metric"] == "transfer"]
    if between:
        lines.append("Freeze settings against each other (same items), transfer a - b:")
        for c in between:
            ci = c.get("ci") or [None, None]
            p = " n/a" if c.get("p") is None else _p(c["p"], c.get("p_floor"))
            lines.append(f"  N={c['a']} vs N={c['b']}: {_num(c['estimate'])} "
                         f"[{_num(ci[0])}, {_num(ci[1])}] p{p}")
    lines.append("ILO by layer (mean over languages), before -> after:")
    before = result["runs"][0]["ilo_before"] if result["runs"] else []
    lines.append("  layer  base   " + "  ".join(f"N={r['freeze_first']:<4}"
                                             for r in result["runs"]))
    for i, value in enumerate(before):
        lines.append(f"  {i:>5}  {_num(value)}  " + "  ".join(
            f"{_num(r['ilo_after'][i]):<6}" for r in result["runs"]))
    return "\n".join(lines)
