"""The one registry of commands, :data:`COMMANDS` (:mod:`xlgap.registry`). Each command
module registers its functions with :func:`command`; the parser, the study runner and
``command_line`` learn from here what exists, what a command's config is and whether it
needs a white-box model.

xlgap's own commands are listed below with their help and their module (a lazy target);
the parser imports only the module of the command being run (:func:`load_command`), so
``xlgap --help`` stays fast. :func:`commands` imports them all (a study needs every
analysis). Another package adds a command through the entry-point group
``xlgap.commands`` (``mycmd = "package.module"``, a module whose ``@command("mycmd",
Config, help=...)`` registers it); ``xlgap --help`` lists it (importing that module,
which should keep its heavy imports inside the function).
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from xlgap.registry import Registry

#: command name -> :class:`Command`
COMMANDS: Registry[Command] = Registry("command", "xlgap.commands")


@dataclass(frozen=True)
class Command:
    """A registered command. ``analysis``: a study may list it under ``analyses`` (it
    writes into the directory its ``out`` option names); ``white_box``: it needs hidden
    states or hooks, so a study skips it for models without them."""

    name: str
    config: type | None
    func: Callable[..., int]
    analysis: bool = False
    white_box: bool = False
    # Commands with sub-actions build their own arguments and get the parsed namespace.
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    help_text: str = ""  # a plugin's; xlgap's own are listed with the registry

    @property
    def help(self) -> str:
        return COMMANDS.info(self.name).get("help") or self.help_text


# Every command of xlgap: the module (under xlgap.cli) that registers it, and its one-line
# help. Listing them here lets ``xlgap --help`` (and the parser of one command) start
# without importing every command module and the model stack behind them.
for _name, _module, _help in (
    ("sample", "commands.sample",
     "sample (or score) answers in every language into a run directory, then diagnose it "
     "(--source item: one run per source language of the items, pooled)"),
    ("diagnose", "commands.sample",
     "bias or variance: metrics, ensembling curves and pi for a run directory"),
    ("simulate", "commands.sample",
     "write a run drawn from the bias/variance generative model"),
    ("demo", "commands.sample",
     "the main job: sample, diagnose and look inside, on the embedded model and the "
     "built-in set"),
    ("plan", "commands.plan",
     "plan a study from a pilot run: items per metric for a CI width or an effect, samples "
     "per item, calls, tokens, cost and time"),
    ("data", "commands.data",
     "data sets: show one, list the benchmarks known by name, get one"),
    ("convert", "commands.data",
     "convert the embedded model into the cache (done automatically on first use)"),
    ("intervene", "commands.intervene",
     "reduce the gap: TrEn-k, TTA-k, TEA and response ensembling compared with baseline "
     "(transfer, overall success, CIs, paired tests)"),
    ("ilo", "commands.inside",
     "Interlingual Local Overlap (ILO) per layer, with intervals and chance level, from a "
     "model or your own vectors (--vectors FILE.npz)"),
    ("similarity", "commands.inside",
     "cross-lingual cosine, CKA and retrieval per layer, with intervals and chance levels"),
    ("logit-lens", "commands.inside",
     "answer probability and latent language at each layer"),
    ("consistency", "commands.inside",
     "rank consistency and shared correct/incorrect rates across languages"),
    ("inside", "commands.inside",
     "all white-box analyses: ILO, similarity, logit lens, consistency"),
    ("steer", "commands.steer",
     "steering vectors toward the source or the shared space: sweep layers x alpha on "
     "dev, report the best and a random control on test (CIs, paired p)"),
    ("finetune", "commands.steer",
     "fine-tune on one language with the first N blocks frozen (LoRA or full); ILO and "
     "transfer before/after, settings compared pairwise"),
    ("report", "commands.report",
     "one self-contained HTML page of the results in the given directories: verdicts, "
     "tables with CIs, figures, provenance"),
    ("run", "study",
     "run a study: models x data sets x analyses from one TOML file, resumable, with "
     "report.html at the end"),
):
    COMMANDS.register(_name, f"xlgap.cli.{_module}", help=_help)


def command(name: str, config: type | None, *, analysis: bool = False,
            white_box: bool = False,
            arguments: Callable[[argparse.ArgumentParser], None] | None = None,
            help: str = "") -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Register the decorated function as ``xlgap NAME`` taking a ``config`` instance
    (``help``: the one-line help of a command not listed above, a plugin's)."""
    def register(func: Callable[..., int]) -> Callable[..., int]:
        COMMANDS.register(name, Command(name, config, func, analysis, white_box, arguments,
                                        help))
        return func

    return register


def help_of(name: str) -> str:
    """The one-line help of ``name``, without importing xlgap's own command modules."""
    return COMMANDS.info(name).get("help") or COMMANDS.get(name).help


def load_command(name: str) -> Command:
    """The command ``name``, importing only the module that registers it."""
    return COMMANDS.get(name)


def commands() -> dict[str, Command]:
    """Every command, by name, in registration order (a study runs its analyses in that
    order: cheap sampling first); imports every command module once."""
    return {name: COMMANDS.get(name) for name in COMMANDS}


def find_command(name: str) -> Command | None:
    return load_command(name) if name in COMMANDS else None


def analyses() -> list[str]:
    """Names a study may list under ``analyses``."""
    return [c.name for c in commands().values() if c.analysis]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def command_line(name: str, config: Mapping[str, Any], cls: type | None = None) -> str:
    """``xlgap NAME --opt value ...``: the command that makes the same result, with only
    the options that differ from their defaults (all of them if the class is unknown)."""
    if cls is None:
        found = find_command(name)
        cls = found.config if found else None
    defaults: dict[str, Any] = {}
    flags: dict[str, str] = {}
    known: set[str] | None = None
    if cls is not None and dataclasses.is_dataclass(cls):
        known = set()
        for f in dataclasses.fields(cls):
            known.add(f.name)
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            if "flag" in f.metadata:
                flags[f.name] = "--" + str(f.metadata["flag"])
    words = ["xlgap", name]
    for key, value in config.items():
        if key in ("progress",) or (known is not None and key not in known):
            continue
        if key in defaults and defaults[key] == value:
            continue
        if value is None:
            continue
        if isinstance(value, Mapping):  # a KEY=VALUE table: one flag per pair
            for k, v in value.items():
                text = str(v).lower() if isinstance(v, bool) else str(v)
                words += [flags.get(key, _flag(key)), shlex.quote(f"{k}={text}")]
            continue
        if isinstance(value, bool):
            words.append(_flag(key) if value else "--no-" + key.replace("_", "-"))
        else:
            words += [_flag(key), shlex.quote(str(value))]
    return " ".join(words)
