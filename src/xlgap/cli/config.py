"""Typed configs that are at once the command line and the config file.

Every command that runs a model takes the same :class:`RunConfig` options, so users learn
them once. A field's metadata gives its help text; ``--config FILE`` (TOML or JSON) sets
defaults that flags on the command line override.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from xlgap.errors import ConfigError
from xlgap.models import parse_model_args

T = TypeVar("T")


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its help text (and optional short flag via ``flag=``)."""
    return field(default=default, metadata={"help": help, **kw})


def from_options(options: type, name: str, help: str | None = None, **kw: Any) -> Any:
    """A config field declared once, on the API's options dataclass ``options``: its
    default, and its help text unless the options class has none (then ``help``). So a
    flag and the Python keyword of the same name cannot drift apart."""
    f = options.__dataclass_fields__[name]
    text = f.metadata.get("help", help)
    if text is None:
        raise ConfigError(f"{options.__name__}.{name} has no help text; give one")
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    meta = dict(f.metadata)
    if meta.pop("text_list", False):
        # a list in Python, comma-separated on the command line and in config files
        default = ",".join(str(x) for x in default)
    return field(default=default, metadata={**meta, "help": text,
                                            "declared_in": options.__name__, **kw})


def options_from(options: type[T], config: Any, **overrides: Any) -> T:
    """An ``options`` instance from the same-named fields of a command's ``config``
    (``overrides`` win): the one place a command's flags become the API's options."""
    names = options.__dataclass_fields__  # type: ignore[attr-defined]
    values = {k: getattr(config, k) for k in names if hasattr(config, k)}
    return options(**{**values, **overrides})


def table_opt(help: str, flag: str) -> Any:
    """A ``KEY=VALUE`` table field: ``--FLAG KEY=VALUE`` on the command line (repeatable,
    or a comma-separated list), a table in a config or study file."""
    return field(default_factory=dict, metadata={"help": help, "flag": flag})


@dataclass
class RunConfig:
    """Options shared by every command that runs a model."""

    model: str = opt("embedded", "model: 'embedded' (Gemma 3 270M, default), a Hugging Face "
                     "id or local path, or openai:NAME")
    data: str = opt("builtin", "parallel data: 'builtin', a catalogue name (xlgap data list), "
                    "hf:ORG/NAME[:CONFIG][@SPLIT], a .jsonl/.parquet/.csv file, or a "
                    "directory of {lang}.tsv (BMLAMA) or {lang}.txt (sentences)")
    data_map: str = opt("", "table columns -> item fields for hf:, .parquet, .csv and "
                        "save_to_disk data, e.g. id=qid,prompt=question,answers=answer,"
                        "candidates=choices,gold=label,lang=language (see docs/data.md)")
    source: str = opt("en", "source language (BCP 47)")
    targets: str = opt("", "comma-separated target languages (default: all others)")
    limit: int | None = opt(None, "use only the first N items")
    out: str = opt("", "output directory (default: runs/<command>-<time>)")
    batch_size: int = opt(16, "prompts per model batch (lower it on out-of-memory)")
    seed: int = opt(0, "random seed")
    device: str = opt("auto", "cpu, cuda (or cuda:N) or auto")
    dtype: str = opt("auto", "auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, "
                     "float16")
    on_missing: str = opt("fail", "an item lacking a language: fail, skip or keep",
                          choices=("fail", "skip", "keep"))
    ray: str = opt("", "shard model calls over Ray actors: 'local' (a cluster on this "
                   "machine) or a cluster address ('auto', 'ray://HOST:10001'); needs xlgap[ray]")
    workers: int = opt(2, "with --ray: actors, each holding one backend")
    as_open: bool = opt(False, "drop the candidates: ask every item as an open question, "
                        "judged against its gold answers")
    on_error: str = opt("fail", "a malformed line or inconsistent item in the data: fail, or "
                        "skip it and report it (file:line)", choices=("fail", "skip"))
    base_url: str = opt("", "base URL of an OpenAI-compatible server (with --model openai:NAME)")
    api_chat: bool = opt(True, "openai: the chat endpoint (--no-api-chat: plain completions, "
                         "for base models)")
    api_key_env: str = opt("OPENAI_API_KEY", "environment variable holding the API key")
    model_args: dict[str, Any] = table_opt(  # noqa: RUF009 - returns a field()
        "an option of the model's backend, KEY=VALUE (repeatable, or a comma-separated list; "
        "a model_args table in a config or study file): vLLM engine arguments such as "
        "tensor_parallel_size=2, max_model_len=4096, gpu_memory_utilization=0.8; API "
        "concurrency=16, timeout=120, max_retries=4. A key the backend does not take is an "
        "error that lists the ones it does", "model-arg")
    chat_template: str = opt("auto", "local models: wrap prompts in the tokenizer's chat "
                             "template: auto (names with -it, instruct or chat), yes, no, or "
                             "a Jinja template file to use instead of the tokenizer's "
                             "(--api-chat is the openai: equivalent)")
    store: str = opt("", "result store directory (default: $XLGAP_CACHE/store)")
    steer: str = opt("", "steer the model with FILE[:NAME] (vectors from xlgap steer; NAME: "
                     "shared.fr, source.ja or a language) at every prompt of the command")
    steer_layers: str = opt("", "with --steer: layers, e.g. 9 or 4+8 (default: the best "
                            "setting recorded in the file)")
    steer_alpha: float | None = opt(None, "with --steer: strength (default: the best "
                                    "setting recorded in the file)")
    progress: bool = opt(True, "progress bars on a terminal (--no-progress hides them; "
                         "XLGAP_PROGRESS=1 shows them in logs)")

    def show_progress(self) -> bool:
        """Progress unless --no-progress: a bar on a terminal, lines with elapsed time and
        ETA in logs (see :mod:`xlgap.progress`; ``XLGAP_PROGRESS`` overrides)."""
        return bool(self.progress)

    def target_list(self, languages: list[str]) -> list[str]:
        """The requested targets, or every language but the source."""
        if self.targets:
            return [t.strip() for t in self.targets.split(",") if t.strip()]
        return [lang for lang in languages if lang != self.source]


def _base_type(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one ``--flag`` per field of dataclass ``cls`` (defaults left unset: see below)."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group("options")
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                                  "help": f"{f.metadata.get('help', '')} (default: {default})"}
        if _is_table(tp):
            # repeatable; the KEY=VALUE strings are parsed in build_config
            kwargs.update(action="append", metavar="KEY=VALUE",
                          help=str(f.metadata.get("help", "")))
            group.add_argument("--" + f.metadata.get("flag", f.name.replace("_", "-")),
                               **kwargs)
            continue
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = tp
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        group.add_argument(flag, **kwargs)
    parser.add_argument("--config", dest="config_file", default=None,
                        help="TOML or JSON file with option values (flags override it)")


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid {p.suffix or 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table of options, not "
                          f"{type(data).__name__}")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _is_table(tp: Any) -> bool:
    return typing.get_origin(tp) is dict or tp is dict


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """A config-file value as the field's type (TOML and JSON give strings or numbers)."""
    base = _base_type(tp)
    if _is_table(base):
        return parse_model_args(value)  # a table, or KEY=VALUE strings
    if value is None or (isinstance(value, base) and not (base is int and isinstance(value, bool))):
        return value
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no"):
                return value.lower() in ("true", "yes")
            raise ValueError(value)
        if base is float and isinstance(value, int):
            return float(value)
        return base(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"option {name!r} in the config file must be "
                          f"{getattr(base, '__name__', base)}, got {value!r}") from exc


# Options that must be at least this large (an int field named here).
MINIMUMS = {"limit": 0, "batch_size": 1, "n_boot": 1, "samples": 1, "shots": 0,
            "max_new_tokens": 1, "k": 1, "t": 1, "questions": 1, "options": 2, "targets": 1}


def build_config(cls: type[T], args: argparse.Namespace | None = None,
                 file_values: dict[str, Any] | None = None) -> T:
    """Defaults < config file < command line; unknown keys or bad values are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    if file_values:
        unknown = sorted(set(file_values) - names)
        if unknown:
            raise ConfigError(f"unknown option(s) in config file: {', '.join(unknown)}; "
                              f"known: {', '.join(sorted(names))}")
        values.update({k: _coerce(k, v, hints[k]) for k, v in file_values.items()})
    if args is not None:
        for key, value in vars(args).items():
            if key not in names:
                continue
            if _is_table(_base_type(hints[key])):
                # command-line KEY=VALUE pairs add to (and override) the file's table
                value = {**values.get(key, {}), **parse_model_args(value)}
            values[key] = value
    for name, low in MINIMUMS.items():
        value = values.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    return cls(**values)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
