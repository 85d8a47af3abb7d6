"""Seeded, disjoint train / dev / test splits of item ids (steering and fine-tuning both use
them: vectors or training on train, choices on dev, reports on test). The data set's own
entry point is :meth:`xlgap.data.items.ParallelDataset.split`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
