"""Shared plumbing of every command: where results go, which store, which backend and data.

Command modules (``xlgap.cli``, ``xlgap.cli.commands.intervene``, ``xlgap.cli.commands.inside``
and the others) import these from here, so none of them imports another command module.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from xlgap import models
from xlgap.cli.config import RunConfig
from xlgap.data import load_dataset, validate_language
from xlgap.data.languages import check_known
from xlgap.errors import XlgapError
from xlgap.interventions.steering import apply_steering_options
from xlgap.judging import Judge
from xlgap.models.cached import CachedBackend
from xlgap.models.ray import RayBackend
from xlgap.paths import cache_root
from xlgap.sampling import ITEM_SOURCE
from xlgap.store import Store


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def open_store(cfg: RunConfig):
    return Store(Path(cfg.store) if cfg.store else cache_root() / "store")


#: ``--chat-template`` as the backends' ``is_chat`` (None: guess from the model's name)
CHAT_TEMPLATE: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}


def chat_template_options(value: str) -> dict[str, Any]:
    """``--chat-template`` as backend options: ``is_chat``, and ``chat_template`` (the
    template's text) when the value is a file."""
    if value in CHAT_TEMPLATE:
        return {"is_chat": CHAT_TEMPLATE[value]}
    path = Path(value).expanduser()
    if not path.is_file():
        raise XlgapError(f"--chat-template {value!r}: use auto, yes, no, or a Jinja template "
                         "file (no such file)")
    return {"is_chat": True, "chat_template": path.read_text(encoding="utf-8")}


def open_backend(cfg: RunConfig):
    """The backend ``--model`` names, behind the result store.

    What the backend can do is read from its class before it is built (its declared
    capabilities), so a wrong combination fails before a model is loaded."""
    store = open_store(cfg)
    model_args = models.check_model_args(cfg.model, getattr(cfg, "model_args", None) or {})
    # Generic options: every backend takes those its factory names (the API options only
    # an API backend does; ``store`` goes to a backend that caches itself).
    options: dict[str, Any] = {"device": cfg.device, "dtype": cfg.dtype,
                               "batch_size": cfg.batch_size, "base_url": cfg.base_url,
                               "api_key_env": cfg.api_key_env, "chat": cfg.api_chat,
                               "store": store,
                               **chat_template_options(getattr(cfg, "chat_template", "auto"))}
    kind = models.split_spec(cfg.model)[0]
    if getattr(cfg, "steer", "") and (models.declared(cfg.model, "in_process") is False
                                       or models.declared(cfg.model, "white_box") is False
                                       or getattr(cfg, "ray", "")):
        raise XlgapError(f"--steer hooks a model's layers in this process: not with backend "
                         f"{kind!r} (it declares no white-box model in this process) or "
                         "--ray")
    if getattr(cfg, "ray", ""):
        # One GPU per worker where the model runs on GPUs (a backend that needs one; any
        # with --device cuda): Ray then gives each actor its own device through
        # CUDA_VISIBLE_DEVICES. RayBackend refuses a backend that is not in_process.
        on_gpu = bool(models.declared(cfg.model, "needs_gpu")) or cfg.device.startswith("cuda")
        options.pop("store", None)  # the workers' results are stored here, once
        backend = RayBackend(cfg.model, options, model_args=model_args, address=cfg.ray,
                             workers=cfg.workers, num_gpus=1.0 if on_gpu else 0.0)
    else:
        # through the module, so that tests can swap the loader
        backend = models.load_backend(cfg.model, model_args=model_args, **options)
    backend.name = cfg.model  # type: ignore[attr-defined]
    if backend.caches_itself:
        return backend  # it stores every HTTP request itself (finer-grained resume)
    cached = CachedBackend(backend, store)
    cached.name = cfg.model  # type: ignore[attr-defined]
    if getattr(cfg, "steer", ""):
        apply_steering_options(cached, cfg.steer, cfg.steer_layers, cfg.steer_alpha)
    return cached


def report_problems(problems: list[str], name: str, shown: int = 20) -> None:
    """Print what loading the data left out (``--on-error skip``), the first ``shown``."""
    if not problems:
        return
    print(f"[xlgap] data set {name}: {len(problems)} problem(s), left out:", file=sys.stderr)
    for line in problems[:shown]:
        print(f"  {line}", file=sys.stderr)
    if len(problems) > shown:
        print(f"  ... and {len(problems) - shown} more", file=sys.stderr)


def open_dataset(cfg: RunConfig, *, all_languages: bool = False, item_source: bool = False):
    """The data set, limited, with source and targets checked against its languages.

    It keeps only the source and targets unless ``all_languages`` (interventions
    translate through languages that are not targets). ``--source item`` (each item asked
    from its own source language) is accepted where ``item_source`` says the command
    supports it: the source returned is then ``"item"``, the targets are every requested
    language (each group drops its own source), and the data set keeps the items' source
    languages and the targets."""

    if cfg.source == ITEM_SOURCE and not item_source:
        raise XlgapError("--source item (each item from its own source language) works with "
                         "`xlgap sample` and `xlgap intervene` only; give one --source "
                         "language here, or run `xlgap sample --source item`")
    dataset = load_dataset(cfg.data or None, on_missing=cfg.on_missing,
                           on_error=cfg.on_error, data_map=getattr(cfg, "data_map", "") or None)
    report_problems(dataset.problems, dataset.name)
    if getattr(cfg, "as_open", False):
        dataset = dataset.as_open()
    if cfg.source == ITEM_SOURCE:
        dataset = dataset.subset(cfg.limit)  # --limit: the first N items, before grouping
        without = len(dataset) - len(dataset.item_sources)
        if without:
            raise XlgapError(f"--source item: {without} of {len(dataset)} items of data set "
                             f"{dataset.name} record no source language of their own (ECLeKTic"
                             " does; in JSONL it is an item's \"source\" key); give one "
                             "--source language instead")
        targets = check_known([validate_language(t, "--targets")
                               for t in cfg.target_list(dataset.languages)],
                              dataset.languages, f"data set {dataset.name}")
        keep = set(targets) | set(dataset.item_sources.values())
        return (dataset.subset(None, [lang for lang in dataset.languages if lang in keep]),
                ITEM_SOURCE, targets)
    source = validate_language(cfg.source, "--source")
    if source == "en" and "en" not in dataset.languages and dataset.languages:
        # the default source; data without English gets its first language instead
        source = dataset.languages[0]
        print(f"[xlgap] data set {dataset.name} has no 'en': source language {source!r} "
              "(choose another with --source)", file=sys.stderr)
    targets = [validate_language(t, "--targets") for t in cfg.target_list(dataset.languages)]
    # the data set's own codes: --targets zh finds zh-Hans in FLORES-named data
    source, *targets = check_known([source, *targets], dataset.languages,
                                   f"data set {dataset.name}")
    cfg.source = source
    sources = sorted(set(dataset.item_sources.values()))
    if set(sources) - {source}:
        # the default 'en' cannot be told from a given --source: say what --source item does
        print(f"[xlgap] data set {dataset.name} records each item's own source language "
              f"({len(dataset.item_sources)} items, from {', '.join(sources)}); this command "
              f"measures from {source} for all of them. `xlgap sample --source item` measures "
              "transfer from each item's own source.", file=sys.stderr)
    keep = None if all_languages else [source, *[t for t in targets if t != source]]
    dataset = dataset.subset(cfg.limit, keep)
    return dataset, source, [t for t in targets if t != source]


def open_judge(cfg: Any):
    """The judge of open answers that ``--judge`` names (None: alias matching)."""
    if not getattr(cfg, "judge", ""):
        return None
    from dataclasses import replace

    # The judge is its own model: neither the studied model's steering, its chat template
    # choice nor its backend options (--model-arg) apply to it.
    return Judge(open_backend(replace(cfg, model=cfg.judge, chat_template="auto", steer="",
                                      model_args={})), cfg.judge)

