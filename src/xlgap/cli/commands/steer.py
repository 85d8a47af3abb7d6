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
from xlgap.cli.config import RunConfig, config_to_dict, opt
from xlgap.cli.registry import command
from xlgap.data.languages import check_known
from xlgap.errors import ConfigError
from xlgap.interventions.finetune import FinetuneOptions, run_finetune
from xlgap.interventions.finetune.experiment import parse_freeze
from xlgap.interventions.steering import SteerOptions, run_steering
from xlgap.interventions.steering.control import CONTROL_KINDS
from xlgap.interventions.steering.experiment import DEFAULT_DRAWS, VECTORS_FILE, parse_sweep
from xlgap.report.plots import finetune as finetune_plots
from xlgap.report.plots import steering as steering_plots
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES


@dataclass
class SteerConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train, dev, test)")
    directions: str = opt("shared", "vectors to sweep, comma-separated: shared (toward the "
                          "mean of all languages) and/or source (toward the source)")
    layers: str = opt("3,6,9,12", "layer settings to sweep, comma-separated: a layer (6), "
                      "layers steered together (4+8, or 4-8 for 4 to 8 at once); 0 = the input "
                      "of the first block")
    alphas: str = opt("0.5,1,2", "steering strengths to sweep, comma-separated: the total "
                      "strength, split evenly over a setting's layers (with one layer, 1 "
                      "moves a target's mean state onto the mean it is steered toward; with "
                      "several, each adds 1/n of its vector and the shifts add up along the "
                      "residual stream to about that)")
    pooling: str = opt("mean_no_bos", "pooling of the states the vectors are made from: "
                       "mean, mean_no_bos or last", choices=("mean", "mean_no_bos", "last"))
    split: str = opt("0.4,0.2,0.4", "train,dev,test fractions of the items (train: vectors; "
                     "dev: sweep; test: report)")
    select: str = opt("accuracy", "dev metric that picks the best setting",
                      choices=("accuracy", "agreement", "transfer", "rankc"))
    shots: int | None = opt(None, "few-shot examples in scoring prompts (default: 0 for "
                            "cloze items, else 3)")
    k: int = opt(5, "ILO: nearest neighbours per point")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals and p-values")
    n_shuffles: int = opt(DEFAULT_N_SHUFFLES, "shuffles averaged for the chance levels of "
                          "ILO and similarity")
    control_draws: int = opt(DEFAULT_DRAWS, "random directions of the control: the steered "
                             "effect is reported as a percentile among theirs")
    control_kind: str = opt("isotropic", "random directions: isotropic, or covariance (drawn "
                            "from the training states' covariance at the steered layer)",
                            choices=CONTROL_KINDS)


@dataclass
class FinetuneConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train and test)")
    lang: str = opt("", "the one language to train on (default: the source)")
    freeze_first: str = opt("0,9", "blocks frozen from the bottom, comma-separated: one "
                            "fine-tune per value")
    steps: int = opt(200, "optimizer steps per fine-tune")
    seeds: int = opt(3, "training runs per freeze setting (seeds seed, seed+1, ...): the "
                     "spread between them is reported beside the item CIs")
    method: str = opt("lora", "lora (adapters through peft) or full", choices=("lora", "full"))
    train_embeddings: bool = opt(False, "train the embeddings too (LoRA on them with "
                                 "--method lora); by default they stay frozen")
    text: str = opt("", "plain-text file in --lang to train on (one passage per line) "
                    "instead of the train split's prompts completed with their answers")
    lr: float | None = opt(None, "learning rate (default: 3e-4 for LoRA, 2e-5 for full)")
    rank: int = opt(8, "LoRA rank")
    lora_alpha: float = opt(16.0, "LoRA alpha (scale = alpha / rank)")
    train_batch: int = opt(8, "training examples per step")
    max_length: int = opt(64, "longest training text, in tokens (longer prompts lose their "
                          "start, never the answer; the counts are reported)")
    checkpoint_every: int = opt(25, "steps between checkpoints (resume after a crash)")
    split: str = opt("0.5,0,0.5", "train,dev,test fractions (train: fine-tuning; test: "
                     "held-out evaluation; dev is unused)")
    pooling: str = opt("mean_no_bos", "pooling of hidden states for ILO and similarity",
                       choices=("mean", "mean_no_bos", "last"))
    shots: int | None = opt(None, "few-shot examples in scoring prompts (default: 0 for "
                            "cloze items, else 3)")
    k: int = opt(5, "ILO: nearest neighbours per point")
    eval_trained: bool = opt(True, "also score the trained items in every language (does "
                             "what was learnt in --lang show in the others?)")
    n_boot: int = opt(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals and p-values")
    n_shuffles: int = opt(DEFAULT_N_SHUFFLES, "shuffles averaged for the chance levels of "
                          "ILO and similarity")


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
    options = SteerOptions(source=source, targets=targets, directions=cfg.directions,
                           layers=cfg.layers, alphas=cfg.alphas, pooling=cfg.pooling,
                           split=cfg.split, select=cfg.select, shots=cfg.shots, k=cfg.k,
                           n_boot=cfg.n_boot, n_shuffles=cfg.n_shuffles, seed=cfg.seed,
                           progress=cfg.show_progress(), control_draws=cfg.control_draws,
                           control_kind=cfg.control_kind)
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
    options = FinetuneOptions(
        source=source, targets=targets, lang=lang, freeze_first=cfg.freeze_first,
        steps=cfg.steps, method=cfg.method, train_embeddings=cfg.train_embeddings,
        text=cfg.text, lr=cfg.lr, rank=cfg.rank, lora_alpha=cfg.lora_alpha,
        train_batch=cfg.train_batch, max_length=cfg.max_length,
        checkpoint_every=cfg.checkpoint_every, split=cfg.split, pooling=cfg.pooling,
        shots=cfg.shots, k=cfg.k, eval_trained=cfg.eval_trained, n_boot=cfg.n_boot,
        n_shuffles=cfg.n_shuffles, seed=cfg.seed, progress=cfg.show_progress(),
        seeds=cfg.seeds)
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
