"""What answering a run cost: ``usage.jsonl``, one line per answered chunk.

Written by :func:`xlgap.sampling.make_run` as it answers, read by ``xlgap plan`` to price
a planned run; it is part of the run format, so it lives with the other run files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from xlgap.errors import DataError
from xlgap.models.base import Backend

__all__ = ["USAGE_FILE", "UsageLog", "read_usage"]

USAGE_FILE = "usage.jsonl"  # one line per answered chunk: calls, tokens, seconds


class UsageLog:
    """What answering cost, one ``usage.jsonl`` line per chunk of (item, language) pairs:
    ``pairs``, ``prompts`` (requests), ``completions`` (answers generated, or candidate
    sets scored), ``prompt_tokens`` and ``answer_tokens`` (by the backend's own
    tokenizer, its ``encode``; null for a backend without one, e.g. an API, whose
    ``prompt_chars`` and ``answer_chars`` are kept instead), ``seconds`` (wall clock,
    cache hits included), the backend ``kind`` and ``first`` (the first chunk of this
    run call: it carries the backend's warm-up). ``xlgap plan`` prices a planned run
    from these lines; a chunk answered again after a crash is counted twice."""

    def __init__(self, run_dir: str | Path, backend: Backend) -> None:
        self.path = Path(run_dir) / USAGE_FILE
        self.kind = getattr(backend, "kind", "unknown")
        self.encode = getattr(backend, "encode", None)
        counts = getattr(backend, "token_counts", None)
        # a tokenizer counts what was sent; without one, the server's own counts
        self.counts = counts if callable(counts) and not callable(self.encode) else None
        self.first = True

    def _tokens(self, texts: Sequence[str]) -> int | None:
        if not callable(self.encode):
            return None
        return int(sum(len(self.encode(t)) for t in texts))

    @staticmethod
    def _reported(before: dict[str, int], after: dict[str, int]) -> dict[str, int | None]:
        """Prompt and answer tokens the server reported between two snapshots; null when
        no response came back with counts (scoring requests, a silent server)."""
        delta = {k: after[k] - before[k] for k in after}
        if delta["responses"] == 0 or delta["unreported"] > 0:
            return {"prompt_tokens": None, "answer_tokens": None}
        return {"prompt_tokens": delta["prompt_tokens"],
                "answer_tokens": delta["completion_tokens"]}

    @contextlib.contextmanager
    def chunk(self, pairs: int) -> Iterator[Callable[..., None]]:
        seen: dict[str, Any] = {}

        def record(prompts: Sequence[str], answers: Sequence[str], *, completions: int
                   ) -> None:
            seen.update(prompts=len(prompts), completions=int(completions),
                        prompt_tokens=self._tokens(prompts),
                        answer_tokens=self._tokens(answers),
                        prompt_chars=sum(len(p) for p in prompts),
                        answer_chars=sum(len(a) for a in answers))

        before = self.counts() if self.counts is not None else None
        started = time.perf_counter()
        yield record
        if before is not None:
            seen.update(self._reported(before, self.counts()))
        row = {"pairs": pairs, **seen, "seconds": round(time.perf_counter() - started, 4),
               "backend": self.kind, "first": self.first}
        self.first = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read_usage(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The lines of a run's ``usage.jsonl`` (empty when the run has none)."""
    path = Path(run_dir) / USAGE_FILE
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
    return rows
