"""Reading part of a run: its rows for chosen items, and what its answers failed to parse.

Both read the run format (``samples.jsonl``, :class:`~xlgap.runs.Run`), so they live with
it; the interventions comparison uses them on each strategy's run directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from xlgap.errors import DataError
from xlgap.runs.files import SAMPLES_FILE
from xlgap.runs.reader import Run

__all__ = ["parse_failures", "restrict_run"]


def restrict_run(run: Run, item_ids: Sequence[str]) -> Run:
    """``run`` limited to ``item_ids``, in that order (a directory may hold more items
    than the command that reads it, e.g. after an earlier run with a larger ``--limit``)."""
    index = {item_id: i for i, item_id in enumerate(run.item_ids)}
    missing = [i for i in item_ids if i not in index]
    if missing:
        raise DataError(f"{run.path}: the run has no item(s) {missing[:5]}; rerun the "
                        "command to complete it")
    rows = np.asarray([index[i] for i in item_ids], dtype=np.int64)
    if list(item_ids) == list(run.item_ids):
        return run

    def take(d: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        return None if d is None else {k: v[rows] for k, v in d.items()}

    present = take(run.present) or {}
    return replace(run, item_ids=list(item_ids), n_options=run.n_options[rows],
                   gold=run.gold[rows], counts=take(run.counts),
                   samples=take(run.samples) or {}, probs=take(run.probs) or {},
                   present=present, answer_vectors=take(run.answer_vectors),
                   is_open=None if run.is_open is None else run.is_open[rows],
                   other_labels=[run.other_labels[i] for i in rows]
                   if run.other_labels else [],
                   missing={lang: int(len(rows) - p.sum()) for lang, p in present.items()})


def parse_failures(run_dir: str | Path, item_ids: Sequence[str] | None = None
                   ) -> dict[str, int]:
    """Failed parses per language, read from ``samples.jsonl`` (over ``item_ids`` when
    given; the last write of a sample wins, as in :func:`xlgap.runs.load_run`; rows
    without the field count as parsed)."""
    path = Path(run_dir) / SAMPLES_FILE
    keep = None if item_ids is None else set(item_ids)
    flags: dict[tuple[str, str, int], bool] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line; load_run ignores it too
            key = (str(row.get("item")), str(row.get("lang")), int(row.get("sample", -1)))
            if keep is None or key[0] in keep:
                flags[key] = bool(row.get("failed", False))
    out: dict[str, int] = {}
    for (_, lang, _), failed in flags.items():
        out[lang] = out.get(lang, 0) + int(failed)
    return out
