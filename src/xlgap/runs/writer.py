"""Writing a run directory: :class:`RunWriter` appends what each (item, language) answered
and checks a resumed run against what the directory holds."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from xlgap.errors import DataError
from xlgap.io import dump_json
from xlgap.provenance import FORMAT_VERSION
from xlgap.runs.files import (
    DISTRIBUTIONS_FILE,
    FORMAT,
    ITEMS_FILE,
    OTHER,
    RUN_FILE,
    SAMPLES_FILE,
    _append_jsonl,
    _iter_jsonl,
    _lock_dir,
    _repair_tail,
    _require,
    done_keys,
    read_meta,
)


class RunWriter:
    """Create (or reopen) a run directory and append items, samples or distributions.

    ``meta`` fills ``run.json``; ``format``, ``created``, ``source`` (``"en"``),
    ``strategy`` (``"baseline"``) and ``mode`` (``"sample"``) get defaults, ``languages``
    and ``targets`` are completed from each other. Reopening a directory whose
    ``run.json`` has another mode, source or sample count is refused, so that a resumed
    run cannot mix two different runs.

    A writer holds an exclusive lock on the directory until :meth:`close` (or its process
    ends, crash included): a second writer gets a clear error instead of interleaving
    lines. Item rows may carry ``hashes`` ({language: content hash}); reopening a run with
    an item whose content differs from what the run was made with is refused.
    """

    def __init__(self, run_dir: str | os.PathLike[str], meta: Mapping[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh: FileLock | None = _lock_dir(self.dir)
        try:
            self._open(meta)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the directory's lock (idempotent)."""
        if self._lock_fh is not None:
            self._lock_fh.release()
            self._lock_fh = None

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, meta: Mapping[str, Any]) -> None:
        self.meta = self._complete_meta(dict(meta))
        run_file = self.dir / RUN_FILE
        if run_file.exists():
            old = read_meta(self.dir)
            # an exact run has no sample count (older ones recorded the option)
            exact = self.meta.get("mode") == "exact"
            for key in ("mode", "source") if exact else ("mode", "source", "samples"):
                if old.get(key) != self.meta.get(key):
                    raise DataError(f"{run_file}: existing run has {key}={old.get(key)!r}, "
                                    f"not {self.meta.get(key)!r}; use another directory")
            self.meta["created"] = old.get("created", self.meta["created"])
        dump_json(self.meta, run_file)
        for name in (ITEMS_FILE, SAMPLES_FILE, DISTRIBUTIONS_FILE):
            _repair_tail(self.dir / name)
        self._item_ids: set[str] = set()
        self._hashes: dict[str, dict[str, str]] = {}
        if (self.dir / ITEMS_FILE).exists():
            for _, o in _iter_jsonl(self.dir / ITEMS_FILE):
                self._item_ids.add(str(o.get("id")))
                if isinstance(o.get("hashes"), dict):
                    self._hashes.setdefault(str(o.get("id")), {}).update(o["hashes"])

    @staticmethod
    def _complete_meta(meta: dict[str, Any]) -> dict[str, Any]:
        meta.setdefault("source", "en")
        meta.setdefault("mode", "sample")
        meta.setdefault("strategy", "baseline")
        meta.setdefault("model", "")
        meta.setdefault("data", "")
        meta.setdefault("options", {})
        meta.setdefault("created", datetime.now(UTC).isoformat(timespec="seconds"))
        meta["format"] = FORMAT
        meta["format_version"] = FORMAT_VERSION
        if meta["mode"] not in ("sample", "exact"):
            raise DataError(f"run meta: mode must be 'sample' or 'exact', not {meta['mode']!r}")
        if meta["mode"] == "sample":
            k = meta.get("samples")
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise DataError(f"run meta: sample mode needs 'samples' >= 1, got {k!r}")
        src = meta["source"]
        targets = list(meta.get("targets") or [])
        languages = list(meta.get("languages") or [])
        if not languages:
            languages = [src, *[t for t in targets if t != src]]
        if src not in languages:
            languages.insert(0, src)
        if not targets:
            targets = [lang for lang in languages if lang != src]
        languages += [t for t in targets if t not in languages]
        meta["languages"], meta["targets"] = languages, targets
        return meta

    @property
    def mode(self) -> str:
        return str(self.meta["mode"])

    def _check_pair(self, row: dict[str, Any], where: str) -> None:
        """The item must be written already and the language declared in run.json."""
        row["item"] = str(_require(row, "item", (str, int), where))
        lang = _require(row, "lang", str, where)
        if row["item"] not in self._item_ids:
            raise DataError(f"{where}: item {row['item']!r} has not been added (add_items)")
        if lang not in self.meta["languages"]:
            raise DataError(f"{where}: language {lang!r} is not in the run's languages "
                            f"{self.meta['languages']}")

    def add_items(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append item rows (``id``, ``n_options``, optional ``gold``, ``candidates``).

        Items already in the file (a resumed run) are skipped; returns how many were
        written.
        """
        fresh = []
        for row in rows:
            where = f"add_items({row.get('id')!r})"
            item_id = str(_require(row, "id", (str, int), where))
            m = _require(row, "n_options", int, where)
            gold = row.get("gold")
            if m < 0:
                raise DataError(f"{where}: n_options must be >= 0")
            if gold is not None and not (isinstance(gold, int) and 0 <= gold < m):
                raise DataError(f"{where}: gold {gold!r} is not an option index < {m}")
            new_hashes = row.get("hashes") or {}
            old_hashes = self._hashes.get(item_id, {})
            changed = sorted(lang for lang, h in new_hashes.items()
                             if lang in old_hashes and old_hashes[lang] != h)
            if changed:
                raise DataError(
                    f"{self.dir}: item {item_id!r} in {', '.join(changed)} differs from the "
                    "data this run was made with (another content hash); resuming would mix "
                    "two data sets. Use another --out, or the data the run was made with.")
            if item_id in self._item_ids:
                added = {lang: h for lang, h in new_hashes.items() if lang not in old_hashes}
                if added:  # a language added to a resumed run: record its hashes
                    self._hashes.setdefault(item_id, {}).update(added)
                    fresh.append({**row, "id": item_id, "hashes": added})
                continue
            self._item_ids.add(item_id)
            if new_hashes:
                self._hashes[item_id] = dict(new_hashes)
            fresh.append({**row, "id": item_id})
        return _append_jsonl(self.dir / ITEMS_FILE, fresh)

    def add_samples(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append sampled responses (``item``, ``lang``, ``sample``, ``answer``, ``text``)."""
        rows = self._pair_rows("add_samples", "sample", rows)
        for r, where in rows:
            k = _require(r, "sample", int, where)
            ans = _require(r, "answer", int, where)
            if ans < OTHER:
                raise DataError(f"{where}: answer {ans} < -1")
            if not 0 <= k < self.meta["samples"]:
                raise DataError(f"{where}: sample index {k} outside 0..{self.meta['samples'] - 1}")
        return _append_jsonl(self.dir / SAMPLES_FILE, [r for r, _ in rows])

    def add_distributions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append exact distributions (``item``, ``lang``, ``probs``)."""
        rows = self._pair_rows("add_distributions", "exact", rows)
        for r, where in rows:
            probs = _require(r, "probs", list, where)
            try:
                r["probs"] = [float(p) for p in probs]
            except (TypeError, ValueError) as exc:
                raise DataError(f"{where}: probs are not numbers") from exc
        return _append_jsonl(self.dir / DISTRIBUTIONS_FILE, [r for r, _ in rows])

    def _pair_rows(self, op: str, mode: str, rows: Iterable[Mapping[str, Any]]
                   ) -> list[tuple[dict[str, Any], str]]:
        """Copies of per-(item, language) rows, checked, each with where it came from."""
        if self.mode != mode:
            raise DataError(f"{self.dir}: {op} on a run in {self.mode!r} mode")
        out = []
        for row in rows:
            r = dict(row)
            where = f"{op}({r.get('item')!r}, {r.get('lang')!r})"
            self._check_pair(r, where)
            out.append((r, where))
        return out

    def done_keys(self) -> set[tuple[str, str]]:
        """The ``(item, lang)`` pairs already complete on disk (a resumed run skips them).

        In sample mode a pair is complete when every sample index ``0..K-1`` is present.
        """
        return done_keys(self.dir)


