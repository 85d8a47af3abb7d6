"""Result objects: what every analysis returns to Python callers.

A :class:`Result` is the JSON-ready dict an analysis computed (so every existing
``result["pairs"]["fr"]`` keeps working) plus its kind, with three conveniences: ``save``
writes the tagged result file the CLI writes, ``load`` reads any result file back, and
``to_frame`` flattens every estimate in it into a tidy pandas DataFrame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlgap.errors import DataError
from xlgap.io import dump_json
from xlgap.provenance import tagged

# Older files carry "xlgap-<kind>/1" tags, newer ones the bare kind.
_LEGACY_PREFIX = "xlgap-"


def kind_of(payload: Mapping[str, Any]) -> str | None:
    """The kind a result file's ``format`` tag names (None when it has no tag)."""
    fmt = payload.get("format")
    if not isinstance(fmt, str):
        return None
    if fmt.startswith(_LEGACY_PREFIX):
        return fmt[len(_LEGACY_PREFIX):].split("/", 1)[0]
    return fmt


class Result(dict[str, Any]):
    """A result of kind ``kind`` ("diagnosis", "interventions", "steering", ...)."""

    def __init__(self, kind: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self.kind = kind

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result file (a directory gets ``<kind>.json`` inside it)."""
        target = Path(path)
        if target.is_dir() or not target.suffix:
            target = target / f"{self.kind}.json"
        return dump_json(tagged(self.kind, self), target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        target = Path(path)
        try:
            payload = json.loads(target.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{target}: cannot read a result file ({exc})") from exc
        if not isinstance(payload, dict):
            raise DataError(f"{target}: a result file holds a JSON object")
        return cls(kind_of(payload) or target.stem, payload)

    def estimates(self) -> Iterator[dict[str, Any]]:
        """One row per estimate in the result: where it sits (its key path, as ``part_0``,
        ``part_1``, ...), the estimate and its interval, and any p-value beside it."""
        yield from _estimate_rows(self, ())

    def to_frame(self) -> Any:
        """Every estimate as a row of a pandas DataFrame (pandas imported on use)."""
        import pandas as pd

        rows = list(self.estimates())
        depth = max((len(r["path"]) for r in rows), default=0)
        flat = []
        for r in rows:
            parts = {f"part_{i}": (r["path"][i] if i < len(r["path"]) else None)
                     for i in range(depth)}
            flat.append({**parts, **{k: v for k, v in r.items() if k != "path"}})
        return pd.DataFrame(flat)


def _estimate_rows(node: Any, path: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    if isinstance(node, Mapping):
        if "estimate" in node and not isinstance(node["estimate"], Mapping):
            ci = node.get("ci") or [None, None]
            row = {"path": path, "estimate": node["estimate"],
                   "ci_low": ci[0] if len(ci) > 0 else None,
                   "ci_high": ci[1] if len(ci) > 1 else None}
            if "p" in node:
                row["p"] = node["p"]
            yield row
            return
        for key, value in node.items():
            if key in ("provenance", "config"):
                continue
            yield from _estimate_rows(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _estimate_rows(value, (*path, str(i)))
