"""The run directory: what a sampling run writes and every analysis reads.

A run holds, for each item and language, either K sampled answers mapped to answer
concepts (``mode = "sample"``) or an exact distribution over the candidates
(``mode = "exact"``). The format is documented in ``docs/run-format.md``; any tool may
write it, and :func:`load_run` accepts any directory that follows it.

Files are JSON Lines appended in place, each call flushed and fsynced, so a run that is
killed keeps what it wrote; :class:`RunWriter` cuts a torn last line when it reopens the
directory, and :meth:`RunWriter.done_keys` tells a resumed run what to skip.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from xlgap.errors import DataError
from xlgap.io import dump_json
from xlgap.prompting.answers import normalize
from xlgap.provenance import FORMAT_VERSION

FORMAT = "run"  # the format tag (older runs say "xlgap-run/1", still read)
RUN_FILE = "run.json"
ITEMS_FILE = "items.jsonl"
SAMPLES_FILE = "samples.jsonl"
DISTRIBUTIONS_FILE = "distributions.jsonl"
EMBEDDINGS_FILE = "answer_embeddings.npz"
SAMPLE_EMBEDDINGS_FILE = "sample_embeddings.npz"
OTHER = -1  # answer index of a response that matches no candidate
LOCK_FILE = ".lock"
MISSING = -2  # fill value in ``Run.samples`` for an (item, language) with no data
_PROB_TOLERANCE = 1e-3  # how far a distribution's sum may be from 1 before it is an error


# --------------------------------------------------------------------------------------
# JSON Lines helpers


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each line; tolerate only a torn final line.

    A final line without a newline that does not parse is what a crash mid-write leaves:
    it is skipped. Any other unparsable line, or a line that is not a JSON object, is a
    :class:`DataError` naming the file and the line.
    """
    with path.open("rb") as fh:
        data = fh.read()
    if not data:
        return
    lines = data.split(b"\n")
    torn_possible = not data.endswith(b"\n")
    last = len(lines) - 1
    for idx, raw in enumerate(lines):
        lineno = idx + 1
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if torn_possible and idx == last:
                return  # the write a crash interrupted
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got "
                            f"{type(obj).__name__}")
        yield lineno, obj


def _repair_tail(path: Path) -> None:
    """Cut a torn final line (no trailing newline) so that appends start on a fresh line.

    A final line that lacks its newline but parses (a file written by another tool) is
    kept and given the newline instead.
    """
    if not path.exists():
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            fh.truncate(cut)
        else:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def _append_jsonl(path: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    """Append rows as JSON Lines, flush and fsync; return how many were written."""
    lines = [json.dumps(dict(r), ensure_ascii=False, separators=(",", ":")) + "\n"
             for r in rows]
    if not lines:
        return 0
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def _require(obj: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str
             ) -> Any:
    """``obj[key]`` checked against ``types`` (a JSON ``true`` never passes as a number)."""
    if key not in obj:
        raise DataError(f"{where}: missing field {key!r}")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{where}: field {key!r} has type {type(value).__name__}")
    return value


def _lock_dir(run_dir: Path) -> FileLock:
    """Take the run directory's exclusive OS lock (it goes with a crashed writer's process:
    never stale); the holder notes its process id in the file for a second writer's error."""
    lock, path = FileLock(str(run_dir / LOCK_FILE)), run_dir / LOCK_FILE
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        raise DataError(f"{run_dir} is being written by {holder or 'another process'}; wait "
                        "for it to finish, or choose another --out") from None
    with contextlib.suppress(OSError):  # a note only (Windows locks the file's first byte)
        path.write_text(f"process {os.getpid()}", encoding="utf-8")
    return lock


# --------------------------------------------------------------------------------------
# writing


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


def done_keys(run_dir: str | os.PathLike[str]) -> set[tuple[str, str]]:
    """Complete ``(item, lang)`` pairs of the run in ``run_dir`` (see RunWriter)."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("mode") == "exact":
        path = run_dir / DISTRIBUTIONS_FILE
        if not path.exists():
            return set()
        return {(str(o.get("item")), str(o.get("lang"))) for _, o in _iter_jsonl(path)}
    path = run_dir / SAMPLES_FILE
    if not path.exists():
        return set()
    k = int(meta.get("samples") or 0)
    seen: dict[tuple[str, str], set[int]] = {}
    for _, o in _iter_jsonl(path):
        s = o.get("sample")
        if isinstance(s, int) and not isinstance(s, bool):
            seen.setdefault((str(o.get("item")), str(o.get("lang"))), set()).add(s)
    return {key for key, idx in seen.items() if len(idx & set(range(k))) == k}


# --------------------------------------------------------------------------------------
# reading


def read_meta(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``run.json``."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        raise DataError(f"{path}: no run.json (not a run directory)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object")
    fmt = meta.get("format", FORMAT)
    if fmt != FORMAT and not str(fmt).startswith("xlgap-run/"):
        raise DataError(f"{path}: unknown format {fmt!r}")
    if meta.get("mode", "sample") not in ("sample", "exact"):
        raise DataError(f"{path}: mode must be 'sample' or 'exact', not {meta.get('mode')!r}")
    if "source" not in meta:
        raise DataError(f"{path}: missing field 'source'")
    return meta


@dataclass
class Run:
    """A loaded run as arrays (Q items, M_max = largest option count).

    Answers are *concepts*: columns ``0..M_max-1`` are the candidates (zero padding beyond
    an item's own count); the columns after them are the item's "other" answers, one
    column per distinct normalised answer text (:func:`xlgap.prompting.answers.normalize`)
    over all its languages, so two answers that name no candidate agree exactly when
    their normalised texts match. An empty or unparseable answer (or one without text) is
    a "no answer" concept of its own language: it never agrees across languages.
    ``other_labels[i]`` names item i's other columns in order.

    ``counts[lang]`` is ``(Q, O)`` answers per concept, O = M_max + the most other
    concepts of any item (``None`` in exact mode). ``probs[lang]`` is ``(Q, O)`` in both
    modes: counts / K in sample mode, the exact distribution over the candidates in
    exact mode (O = M_max there). ``samples[lang]`` is ``(Q, K)`` concept indices
    (``-2`` missing); empty in exact mode.
    ``present[lang]`` marks the items that have data in that language; an item missing a
    language drops out of every metric that needs it, and ``missing`` counts them.
    Options beyond an item's ``n_options`` are zero padding.
    """

    source: str
    targets: list[str]
    languages: list[str]
    mode: str
    item_ids: list[str]
    n_options: np.ndarray
    gold: np.ndarray
    counts: dict[str, np.ndarray] | None
    samples: dict[str, np.ndarray]
    probs: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    embeddings: dict[str, np.ndarray] | None = None
    k: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    path: Path | None = None
    other_labels: list[list[str]] = field(default_factory=list)
    #: (Q,) True for open items (one answer concept, the gold answer; ``items.jsonl``
    #: field ``open``)
    is_open: np.ndarray | None = None
    #: ``sample_embeddings.npz`` read into (Q, K, d) per language (NaN where a pair has
    #: none): an embedding of every sampled answer of the open items
    answer_vectors: dict[str, np.ndarray] | None = None
    #: what made ``answer_vectors`` (``self:17:mean_no_bos``, ``embedder:PATH``); None
    #: in files written before it was recorded
    answer_embedder: str | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def m_max(self) -> int:
        return int(self.n_options.max()) if len(self.n_options) else 0

    @property
    def n_columns(self) -> int:
        """O: candidate columns plus other-answer concepts."""
        return next(iter(self.probs.values())).shape[1] if self.probs else self.m_max

    def _open_mask(self) -> np.ndarray:
        return self.is_open if self.is_open is not None else np.zeros(self.n_items, bool)

    def other_share(self, lang: str) -> float:
        """Share of ``lang``'s answer mass on no candidate, over its present candidate
        items (NaN without any: an open item has no candidates to name)."""
        p = self.probs[lang][self.present[lang] & ~self._open_mask()]
        return float(p[:, self.m_max:].sum() / p.sum()) if p.size and p.sum() > 0 \
            else float("nan")

    def no_answer_share(self, lang: str) -> float:
        """Share of ``lang``'s sampled answers to open items that are empty or unparseable
        (its "no answer" concept); NaN without open items or sampled answers."""
        rows = np.flatnonzero(self.present[lang] & self._open_mask())
        if self.mode != "sample" or self.counts is None or not rows.size:
            return float("nan")
        counts = self.counts[lang]
        empty = sum(int(counts[i, self.m_max + j]) for i in rows
                    for j, label in enumerate(self.other_labels[i])
                    if label == f"(no answer, {lang})")
        total = int(counts[rows].sum())
        return empty / total if total else float("nan")

    def pair_mask(self, target: str) -> np.ndarray:
        """Items present in both the source and ``target``."""
        return self.present[self.source] & self.present[target]


def _load_items(path: Path) -> tuple[list[str], list[int], list[int], set[str], list[bool]]:
    """Items with at least one option, the ids of those with none (set aside), and
    which items are open."""
    if not path.exists():
        raise DataError(f"{path}: missing (a run needs items.jsonl)")
    ids: list[str] = []
    ms: list[int] = []
    golds: list[int] = []
    seen: dict[str, tuple[int, int]] = {}
    empty: set[str] = set()
    open_flags: list[bool] = []
    for lineno, o in _iter_jsonl(path):
        where = f"{path}:{lineno}"
        item_id = str(_require(o, "id", (str, int), where))
        m = _require(o, "n_options", int, where)
        if m < 0:
            raise DataError(f"{where}: n_options must be >= 0, got {m}")
        if m == 0:
            empty.add(item_id)  # no candidates: nothing to compare, set aside
            continue
        gold = o.get("gold")
        if gold is None:
            gold = -1
        elif not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < m:
            raise DataError(f"{where}: gold {gold!r} is not an option index below {m}")
        if item_id in seen:
            if seen[item_id] != (m, gold):
                raise DataError(f"{where}: item {item_id!r} repeated with other fields")
            continue
        seen[item_id] = (m, gold)
        ids.append(item_id)
        ms.append(m)
        golds.append(gold)
        open_flags.append(bool(o.get("open", False)))
    return ids, ms, golds, empty - set(ids), open_flags


def load_run(run_dir: str | os.PathLike[str]) -> Run:
    """Read a run directory into arrays (see :class:`Run`).

    Raises :class:`DataError` (naming file and line) on a malformed line, an unknown item
    or language, an answer index outside ``-1..M-1``, or a distribution of the wrong
    length or with negative mass. A torn final line (crash) is ignored. In sample mode a
    pair with fewer than K samples is treated as missing; a sample index written twice
    (a pair re-sampled after a crash) keeps the last value.
    """
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    mode = str(meta.get("mode", "sample"))
    source = str(meta["source"])
    targets = [str(t) for t in meta.get("targets") or []]
    languages = [str(lang) for lang in meta.get("languages") or []]
    for lang in [source, *targets]:
        if lang not in languages:
            languages.append(lang)
    if not targets:
        targets = [lang for lang in languages if lang != source]

    ids, ms, golds, empty, open_flags = _load_items(run_dir / ITEMS_FILE)
    index = {item_id: i for i, item_id in enumerate(ids)}
    lang_set = set(languages)
    q = len(ids)
    n_options = np.asarray(ms, dtype=np.int64)
    m_max = int(n_options.max()) if q else 0
    warnings: list[str] = []
    counts: dict[str, np.ndarray] | None
    samples: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}

    if empty:
        warnings.append(f"{len(empty)} items have no candidates (n_options 0) and are "
                        f"left out")

    def locate(o: dict[str, Any], where: str) -> tuple[int, str] | None:
        item_id = str(_require(o, "item", (str, int), where))
        lang = _require(o, "lang", str, where)
        if item_id in empty:
            return None
        if item_id not in index:
            raise DataError(f"{where}: item {item_id!r} is not in {ITEMS_FILE}")
        if lang not in lang_set:
            raise DataError(f"{where}: language {lang!r} is not in run.json languages")
        return index[item_id], lang

    other_labels: list[list[str]] = [[] for _ in range(q)]
    if mode == "sample":
        path = run_dir / SAMPLES_FILE
        k = meta.get("samples")
        # answers[(i, lang)][s]: a candidate index, or a concept key for an "other" answer
        answers: dict[tuple[int, str], dict[int, int | tuple[str, str]]] = {}
        if path.exists():
            for lineno, o in _iter_jsonl(path):
                where = f"{path}:{lineno}"
                found = locate(o, where)
                if found is None:
                    continue
                i, lang = found
                s = _require(o, "sample", int, where)
                a = _require(o, "answer", int, where)
                if not OTHER <= a < ms[i]:
                    raise DataError(f"{where}: answer {a} outside -1..{ms[i] - 1} for item "
                                    f"{ids[i]!r}")
                if s < 0:
                    raise DataError(f"{where}: negative sample index {s}")
                answers.setdefault((i, lang), {})[s] = (a if a >= 0 else
                                                        _other_key(o, lang, open_flags[i]))
        if not isinstance(k, int) or k < 1:
            k = max((len(v) for v in answers.values()), default=0)
            warnings.append(f"run.json has no 'samples'; using K={k} from the data")
        # one column per distinct other concept of an item, in order of first appearance
        concept_cols: list[dict[tuple[str, str], int]] = [{} for _ in range(q)]
        for (i, _), got in sorted(answers.items(), key=lambda kv: (kv[0][0],
                                                                   languages.index(kv[0][1]))):
            for s_idx in sorted(got):
                a = got[s_idx]
                if isinstance(a, tuple) and a not in concept_cols[i]:
                    concept_cols[i][a] = m_max + len(concept_cols[i])
                    other_labels[i].append(a[1] if a[0] == "text" else f"(no answer, {a[1]})")
        n_cols = m_max + max((len(c) for c in concept_cols), default=0)
        counts = {}
        for lang in languages:
            smp = np.full((q, k), MISSING, dtype=np.int64)
            have = np.zeros(q, dtype=bool)
            for i in range(q):
                got = answers.get((i, lang))
                if not got:
                    continue
                vals = [got[s] for s in range(k) if s in got]
                if len(vals) < k:
                    continue  # incomplete pair: counted as missing below
                smp[i] = [v if isinstance(v, int) else concept_cols[i][v] for v in vals]
                have[i] = True
            cnt = np.zeros((q, n_cols), dtype=np.int64)
            rows = np.nonzero(have)[0]
            if rows.size:
                np.add.at(cnt, (np.repeat(rows, k), smp[rows].ravel()), 1)
            samples[lang], counts[lang], present[lang] = smp, cnt, have
            probs[lang] = cnt / max(k, 1)
    else:
        k = 0
        counts = None
        path = run_dir / DISTRIBUTIONS_FILE
        for lang in languages:
            probs[lang] = np.zeros((q, m_max))
            present[lang] = np.zeros(q, dtype=bool)
        if path.exists():
            for lineno, o in _iter_jsonl(path):
                where = f"{path}:{lineno}"
                found = locate(o, where)
                if found is None:
                    continue
                i, lang = found
                p = _require(o, "probs", list, where)
                try:
                    arr = np.asarray(p, dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise DataError(f"{where}: probs are not numbers") from exc
                if arr.shape != (ms[i],):
                    raise DataError(f"{where}: {arr.size} probs for item {ids[i]!r} with "
                                    f"{ms[i]} options")
                if not np.all(np.isfinite(arr)) or arr.min() < 0:
                    raise DataError(f"{where}: probs must be finite and >= 0")
                total = arr.sum()
                if abs(total - 1.0) > _PROB_TOLERANCE:
                    raise DataError(f"{where}: probs sum to {total:.6g}, not 1")
                probs[lang][i, :ms[i]] = arr / total
                present[lang][i] = True

    missing = {lang: int(q - present[lang].sum()) for lang in languages}
    for lang, n in missing.items():
        if n:
            warnings.append(f"{n} of {q} items have no complete data in {lang!r}")

    embeddings = None
    emb_path = run_dir / EMBEDDINGS_FILE
    if emb_path.exists():
        embeddings = {}
        try:
            with np.load(emb_path) as npz:
                for key in npz.files:
                    embeddings[key] = np.asarray(npz[key], dtype=np.float64)
        except (OSError, ValueError) as exc:
            raise DataError(f"{emb_path}: cannot read ({exc})") from exc
        for item_id, arr in embeddings.items():
            if item_id in index and (arr.ndim != 2 or arr.shape[0] != ms[index[item_id]]):
                raise DataError(f"{emb_path}: array {item_id!r} has shape {arr.shape}, "
                                f"expected ({ms[index[item_id]]}, d)")

    answer_vectors, answer_embedder = _load_sample_embeddings(
        run_dir / SAMPLE_EMBEDDINGS_FILE, index, languages, int(k)) if mode == "sample" \
        else (None, None)
    return Run(source=source, targets=targets, languages=languages, mode=mode, item_ids=ids,
               n_options=n_options, gold=np.asarray(golds, dtype=np.int64), counts=counts,
               samples=samples, probs=probs, present=present, embeddings=embeddings,
               k=int(k), meta=meta, missing=missing, warnings=warnings, path=run_dir,
               other_labels=other_labels, is_open=np.asarray(open_flags, dtype=bool),
               answer_vectors=answer_vectors, answer_embedder=answer_embedder)


def _load_sample_embeddings(path: Path, index: dict[str, int], languages: list[str],
                            k: int) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``sample_embeddings.npz`` as (Q, K, d) arrays per language (NaN where absent), and
    the name of the embedder that made them."""
    if not path.exists():
        return None, None
    try:
        with np.load(path) as npz:
            pairs, vectors = npz["pairs"], np.asarray(npz["vectors"], dtype=np.float64)
            embedder = str(npz["embedder"]) if "embedder" in npz.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if vectors.ndim != 3 or pairs.shape != (vectors.shape[0], 2) or vectors.shape[1] != k:
        raise DataError(f"{path}: expected pairs (P, 2) and vectors (P, K={k}, d), got "
                        f"{pairs.shape} and {vectors.shape}")
    out = {lang: np.full((len(index), k, vectors.shape[2]), np.nan) for lang in languages}
    for (item_id, lang), vec in zip(pairs, vectors, strict=True):
        if str(item_id) in index and str(lang) in out:
            out[str(lang)][index[str(item_id)]] = vec
    return out, embedder


def open_item_texts(run_dir: str | os.PathLike[str]) -> dict[tuple[str, str], list[str]]:
    """The K answer texts of every complete (item, language) pair of the open items."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    k = int(meta.get("samples") or 0)
    open_ids = {str(o.get("id")) for _, o in _iter_jsonl(run_dir / ITEMS_FILE)
                if o.get("open")}
    path = run_dir / SAMPLES_FILE
    if not open_ids or not path.exists() or k < 1:
        return {}
    texts: dict[tuple[str, str], dict[int, str]] = {}
    for _, o in _iter_jsonl(path):
        if str(o.get("item")) in open_ids:
            text = o.get("text")
            texts.setdefault((str(o.get("item")), str(o.get("lang"))), {})[
                int(o.get("sample", -1))] = text if isinstance(text, str) else ""
    return {key: [got[s] for s in range(k)] for key, got in texts.items()
            if all(s in got for s in range(k))}


def _other_key(row: Mapping[str, Any], lang: str, is_open: bool = False) -> tuple[str, str]:
    """The concept of an answer that names no candidate: its normalised text, or a "no
    answer" concept of its language when the text is empty, missing or failed to parse.

    On an open item a wrong answer is its text *in its language* (normalised texts have
    no brackets, so the tag meets no answer): by spelling alone French "Paris" would
    agree with English "Paris" but never "Париж", so agreement would hang on the script."""
    text = row.get("text")
    norm = normalize(text.strip().split("\n", 1)[0]) if isinstance(text, str) else ""
    if not norm or row.get("failed"):
        return ("none", lang)
    if is_open:
        return ("text", f"{norm} [{lang}]")
    return ("text", norm)
