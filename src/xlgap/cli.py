"""The ``xlgap`` command line. Each subcommand is a typed config (see :mod:`xlgap.config`)
plus a function; errors that users can fix print one clear line, not a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from xlgap.config import (
    RunConfig,
    add_config_arguments,
    build_config,
    config_to_dict,
    opt,
    read_config_file,
)
from xlgap.errors import XlgapError
from xlgap.models.embedder import open_embedder
from xlgap.workspace import (
    default_out,
    open_backend,
    open_dataset,
    open_judge,
    open_store,
)

# -- configs -------------------------------------------------------------------------------


@dataclass
class SampleConfig(RunConfig):
    samples: int = opt(20, "responses sampled per item and language (K)")
    temperature: float = opt(1.0, "sampling temperature")
    exact: bool = opt(False, "take exact candidate distributions from log-probabilities "
                      "instead of sampling (white-box backends)")
    normalize: str = opt("none", "--exact: score normalisation: none (total log-probability), "
                         "tokens (per token) or bytes (per UTF-8 byte of the answer text)",
                         choices=("none", "tokens", "bytes"))
    shuffle_options: bool = opt(False, "lettered multiple choice: shuffle the option order per "
                                "item and language (separates position bias from the gap)")
    judge: str = opt("", "open questions: a model (any --model value) that judges each free-"
                     "text answer against the gold answers, instead of alias matching")
    embedder: str = opt("self", "open questions: the answer embedder for the L2 distance: "
                        "'self' (the model's own last-layer state), 'self:LAYER', or a "
                        "Hugging Face encoder (hub id in the local cache, or a path)")
    shots: int | None = opt(None, "few-shot examples in base-model prompts (default: 3; 0 "
                            "when --exact scores cloze sentences, which need no format cue)")
    max_new_tokens: int = opt(16, "longest sampled answer, in tokens")
    diagnose: bool = opt(True, "run the diagnosis when sampling is done")
    n_boot: int = opt(1000, "bootstrap resamples for confidence intervals")


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
    n_boot: int = opt(1000, "bootstrap resamples for confidence intervals")
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


def _sampling_options(cfg: SampleConfig, dataset: Any):
    from xlgap.sampling import SamplingOptions, default_shots

    shots = cfg.shots if cfg.shots is not None else default_shots(dataset, cfg.exact)
    return SamplingOptions(samples=cfg.samples, temperature=cfg.temperature,
                           max_new_tokens=cfg.max_new_tokens, exact=cfg.exact,
                           shots=shots, seed=cfg.seed, chunk=64 if cfg.exact else 16,
                           normalize=cfg.normalize, shuffle_options=cfg.shuffle_options)


def _print_accuracy(run_dir: Path) -> None:
    from xlgap.data.languages import language_name
    from xlgap.sampling import accuracy_table

    acc = accuracy_table(run_dir)
    print("\nAccuracy per language")
    for lang, value in sorted(acc.items(), key=lambda kv: -kv[1]):
        bar = "#" * round(value * 30)
        print(f"  {lang:<8} {language_name(lang):<22} {value:6.1%}  {bar}")


# -- commands ------------------------------------------------------------------------------


def sample_and_diagnose(cfg: SampleConfig, out: Path, label: str) -> tuple[Any, Any, str,
                                                                            list[str]]:
    """Make (or resume) a run in ``out`` and diagnose it; shared by ``sample`` and ``demo``."""
    from xlgap.sampling import make_run

    dataset, source, targets = open_dataset(cfg)
    backend = open_backend(cfg)
    print(f"[xlgap] {label}: model {cfg.model}, {len(dataset)} items, {source} -> "
          f"{', '.join(targets)}, {'exact' if cfg.exact else f'K={cfg.samples}'}; "
          f"run dir {out}", file=sys.stderr)
    make_run(backend, dataset, out, source=source, targets=targets,
             options=_sampling_options(cfg, dataset), meta={"config": config_to_dict(cfg)},
             progress=cfg.show_progress(), judge=open_judge(cfg),
             embedder=open_embedder(cfg.embedder, backend, store=open_store(cfg),
                                    device=cfg.device if cfg.device != "auto" else "cpu"))
    _print_accuracy(out)
    if cfg.diagnose:
        _diagnose(out, cfg.n_boot, cfg.seed, fit_model=True, progress=cfg.show_progress())
    return backend, dataset, source, targets


def cmd_sample(cfg: SampleConfig) -> int:
    sample_and_diagnose(cfg, Path(cfg.out) if cfg.out else default_out("sample"), "sample")
    return 0


def _diagnose(run_dir: Path, n_boot: int, seed: int, *, fit_model: bool,
              progress: bool) -> dict[str, Any]:
    from xlgap.stats.diagnose import diagnose_dir, format_summary

    diag = diagnose_dir(run_dir, n_boot=n_boot, seed=seed, fit_model=fit_model,
                        progress=progress)
    print()
    print(format_summary(diag))
    print(f"\n[xlgap] wrote {run_dir / 'diagnosis.json'} and plots in {run_dir / 'plots'}")
    return diag


def cmd_diagnose(cfg: DiagnoseConfig) -> int:
    if not cfg.run_dir:
        raise XlgapError("xlgap diagnose RUN_DIR: give the run directory")
    _diagnose(Path(cfg.run_dir), cfg.n_boot, cfg.seed, fit_model=cfg.model_fit,
              progress=sys.stderr.isatty())
    return 0


def cmd_simulate(cfg: SimulateConfig) -> int:
    from xlgap.stats.simulate import simulate_run

    out = Path(cfg.out) if cfg.out else default_out("simulate")
    targets = [f"t{i + 1}" for i in range(cfg.targets)]
    simulate_run(out, pi=cfg.pi, tau=cfg.tau, eta=cfg.eta, questions=cfg.questions,
                 samples=cfg.samples, options=cfg.options, seed=cfg.seed, targets=targets)
    print(f"[xlgap] wrote a simulated run to {out} (truth in {out / 'truth.json'})")
    if cfg.diagnose:
        _diagnose(out, 1000, cfg.seed, fit_model=True, progress=sys.stderr.isatty())
    return 0


def cmd_demo(cfg: DemoConfig) -> int:
    """The main job on the three research lines: bias or variance (a run and its
    diagnosis), what helps (prompt strategies against the baseline), inside the model
    (ILO and similarity by layer); then one report page over all of it."""
    from dataclasses import replace

    from xlgap.progress import format_duration, step
    from xlgap.report.html import write_report

    started = time.time()
    out = Path(cfg.out) if cfg.out else Path("runs") / "demo"
    with step("1/3 bias or variance: answers and their diagnosis"):
        backend, dataset, source, targets = sample_and_diagnose(
            replace(cfg, out=str(out / "run")), out / "run", "demo")
    with step("2/3 what helps: prompt strategies against the baseline"):
        from xlgap.interventions.cli import InterveneConfig, cmd_intervene

        fields = {k: getattr(cfg, k) for k in InterveneConfig.__dataclass_fields__
                  if hasattr(cfg, k)}
        cmd_intervene(InterveneConfig(**{**fields, "out": str(out / "intervene"),
                                         "samples": 1 if cfg.exact else 3,
                                         "shots": cfg.shots if cfg.shots is not None else 3}),
                      backend=backend)
    if cfg.represent and backend.supports_white_box:
        with step("3/3 inside the model: ILO and similarity by layer"):
            from xlgap.representations.cli import demo_section

            print(demo_section(cfg, backend, dataset, [source, *targets], out / "inside",
                               n_boot=min(cfg.n_boot, 100)))
    report = write_report([out], out / "report.html", f"xlgap demo: {cfg.model}")
    print(f"\n[xlgap] demo done in {format_duration(time.time() - started)}; everything is "
          f"in {out}")
    print(f"[xlgap] report: {report.resolve()}")
    return 0


def cmd_data_show(path: str, on_missing: str, on_error: str = "fail") -> int:
    from xlgap.data import describe, format_description, load_dataset
    from xlgap.workspace import report_problems

    dataset = load_dataset(None if path in ("builtin", "demo") else path, on_missing=on_missing,
                           on_error=on_error)
    report_problems(dataset.problems, dataset.name)
    print(format_description(describe(dataset)))
    return 0


def cmd_convert(_: argparse.Namespace) -> int:
    from xlgap.models.embedded import ensure_converted

    print(ensure_converted())
    return 0


# -- parser --------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[type | None, Callable[..., int], str]] = {
    "demo": (DemoConfig, cmd_demo, "the main job: sample, diagnose and look inside, on the "
             "embedded model and the built-in set"),
    "sample": (SampleConfig, cmd_sample, "sample (or score) answers in every language into a "
               "run directory, then diagnose it"),
    "diagnose": (DiagnoseConfig, cmd_diagnose, "bias or variance: metrics, ensembling curves "
                 "and pi for a run directory"),
    "simulate": (SimulateConfig, cmd_simulate, "write a run drawn from the bias/variance "
                 "generative model"),
}


def _extra_commands() -> dict[str, tuple[type | None, Callable[..., int], str]]:
    """Commands that live with their own module (registered there to keep cli.py small)."""
    extra: dict[str, tuple[type | None, Callable[..., int], str]] = {}
    for module in ("xlgap.interventions.cli", "xlgap.representations.cli",
                   "xlgap.interventions.inside_cli", "xlgap.report.cli", "xlgap.study"):
        extra.update(importlib.import_module(module).COMMANDS)
    return extra


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="xlgap", description="Measure, explain and reduce the cross-lingual gap of "
        "language models.")
    from xlgap import __version__

    parser.add_argument("--version", action="version", version=f"xlgap {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {**COMMANDS, **_extra_commands()}
    for name, (cls, _, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # a command's config may name one positional argument (``xlgap run FILE``)
        positional = getattr(cls, "positional", None)
        if positional:
            dest, nargs = positional
            p.add_argument(dest, nargs=nargs, default=argparse.SUPPRESS,
                           metavar=dest.upper())
        if cls is not None:
            add_config_arguments(p, cls)
    data = sub.add_parser("data", help="inspect parallel data sets")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    show = data_sub.add_parser("show", help="languages, item count and candidates per item")
    show.add_argument("path", help="'builtin', a .jsonl file or a data directory")
    show.add_argument("--on-missing", default="keep", choices=("fail", "skip", "keep"))
    show.add_argument("--on-error", default="fail", choices=("fail", "skip"),
                      help="a malformed line: fail, or skip it and report it")
    data_sub.add_parser("list", help="the benchmarks known by name, and which are cached")
    get = data_sub.add_parser("get", help="download, verify and convert a benchmark into the "
                              "cache (or --out DIR)")
    get.add_argument("name", help="a name from `xlgap data list`")
    get.add_argument("--out", default=None, help="folder for the converted copy (default: "
                     "$XLGAP_CACHE/datasets/NAME)")
    get.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                     help="take the published files from DIR instead of downloading them")
    sub.add_parser("convert", help="convert the embedded model into the cache (done "
                   "automatically on first use)")
    return parser, commands


def run(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 1
    if args.command == "data":
        from xlgap.cli_data import cmd_data_get, cmd_data_list

        action = getattr(args, "data_command", None)
        if action == "list":
            return cmd_data_list()
        if action == "get":
            return cmd_data_get(args.name, args.out, args.from_dir)
        if action != "show":
            parser.parse_args(["data", "--help"])
        return cmd_data_show(args.path, args.on_missing, args.on_error)
    if args.command == "convert":
        return cmd_convert(args)
    cls, func, _ = commands[args.command]
    file_values = read_config_file(args.config_file) if args.config_file else None
    cfg = build_config(cls, args, file_values)
    return func(cfg)


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(argv)
    except XlgapError as exc:
        print(f"xlgap: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        code = 0
    except KeyboardInterrupt:
        print("\nxlgap: interrupted; results so far are saved - rerun the same command to "
              "resume", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
