"""What made a result: library versions, the full configuration and the data's content hash.

Every ``run.json`` and every result JSON carries :func:`provenance`, so a figure can be
traced to the code, the settings and the exact data behind it. Item contents are hashed per
(item, language) too (:func:`entry_hash`): a resumed run compares them with what it holds,
so it can never mix answers to two versions of a data set.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from functools import cache
from importlib import metadata
from typing import Any

# Bumped when a result file's layout changes incompatibly; readers check it with the tag.
FORMAT_VERSION = 1

# The command line being run, set once by the CLI; library calls leave it None.
_command: str | None = None


def set_command(line: str | None) -> None:
    """Record the command line that the results written from now on come from."""
    global _command
    _command = line


def tagged(kind: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` with its ``format`` tag first: the kind of result file it is ("run",
    "diagnosis", "interventions", "steering", "finetune", "ilo", "similarity",
    "logit_lens", "consistency", "study"), which readers such as the report dispatch on."""
    return {"format": kind, "format_version": FORMAT_VERSION,
            **{k: v for k, v in result.items() if k not in ("format", "format_version")}}


@cache
def versions() -> dict[str, str | None]:
    """Versions of xlgap and the libraries whose behaviour shapes its numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("xlgap", "torch", "transformers", "numpy", "scipy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _canonical(obj: Any) -> str:
    if is_dataclass(obj) and not isinstance(obj, type):
        obj = asdict(obj)
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)


def entry_hash(entry: Any) -> str:
    """Content hash of one item in one language (its prompt, answers, candidates, gold)."""
    return hashlib.sha256(_canonical(entry).encode("utf-8")).hexdigest()[:16]


def data_hash(items: Iterable[Any], languages: Iterable[str] | None = None) -> str:
    """Content hash of a data set's items (ids and entries), over ``languages`` if given."""
    keep = None if languages is None else set(languages)
    digest = hashlib.sha256()
    for item in items:
        digest.update(str(item.id).encode("utf-8") + b"\0")
        for lang in sorted(item.langs):
            if keep is None or lang in keep:
                digest.update(f"{lang}={entry_hash(item.langs[lang])};".encode())
    return digest.hexdigest()[:24]


def provenance(config: Mapping[str, Any] | None = None, *, data: str | None = None,
               data_hash: str | None = None, **extra: Any) -> dict[str, Any]:
    """The ``provenance`` block of a result file."""
    out: dict[str, Any] = {"versions": versions(), "command": _command}
    if config is not None:
        out["config"] = dict(config)
    if data is not None:
        out["data"] = data
    if data_hash is not None:
        out["data_hash"] = data_hash
    out.update(extra)
    return out
