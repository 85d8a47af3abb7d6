"""Seeded, disjoint train / dev / test splits of a data set's items (steering and
fine-tuning both use them: vectors or training on train, choices on dev, reports on test)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xlgap.data.items import ParallelDataset
from xlgap.errors import ConfigError, DataError

SPLITS = ("train", "dev", "test")


def parse_split(text: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.4,0.2,0.4"`` (or three numbers) -> train, dev and test fractions (normalised
    to sum 1)."""
    try:
        parts = [float(x) for x in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(f"--split {text!r}: give three fractions, e.g. 0.4,0.2,0.4") from exc
    if len(parts) != 3 or any(x < 0 for x in parts) or sum(parts) <= 0:
        raise ConfigError(f"--split {text!r}: give three non-negative fractions "
                          "(train,dev,test), e.g. 0.4,0.2,0.4")
    total = sum(parts)
    return parts[0] / total, parts[1] / total, parts[2] / total


def split_items(ids: Sequence[str], fractions: tuple[float, float, float],
                seed: int) -> dict[str, list[str]]:
    """Disjoint train / dev / test lists of ``ids`` from one seeded shuffle (each list
    keeps the data's order, so it reads and diffs well)."""
    n = len(ids)
    if len(set(ids)) != n:
        raise DataError("split_items: item ids must be unique")
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(fractions[0] * n)
    n_dev = min(n - n_train, round(fractions[1] * n))
    cut = {"train": order[:n_train], "dev": order[n_train:n_train + n_dev],
           "test": order[n_train + n_dev:]}
    return {name: [ids[i] for i in sorted(idx.tolist())] for name, idx in cut.items()}


def subset(data: ParallelDataset, ids: Sequence[str]) -> ParallelDataset:
    """The items of ``data`` whose ids are in ``ids`` (data order kept)."""
    keep = set(ids)
    return ParallelDataset(data.name, data.languages, [it for it in data.items if it.id in keep],
                           data.source_path)


def make_split(data: ParallelDataset, fractions: str | Sequence[float], seed: int,
               need: Sequence[str]) -> dict[str, Any]:
    """``{"seed", "fractions", "train", "dev", "test"}`` (ids), checking that every split
    in ``need`` has at least 5 items."""
    parsed = parse_split(fractions)
    parts = split_items([it.id for it in data.items], parsed, seed)
    small = [name for name in need if len(parts[name]) < 5]
    if small:
        raise ConfigError(f"split {fractions} on {len(data.items)} items leaves fewer than 5 "
                          f"in {', '.join(small)}; use more items or other fractions")
    return {"seed": seed, "fractions": list(parsed), **parts}
