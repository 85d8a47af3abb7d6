"""Reading a run directory: :func:`load_run` turns its files into arrays (:class:`Run`),
answers mapped to concepts, with embeddings and open-answer texts where present."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.errors import DataError
from xlgap.prompting.answers import normalize
from xlgap.runs.files import (
    _PROB_TOLERANCE,
    DISTRIBUTIONS_FILE,
    EMBEDDINGS_FILE,
    ITEMS_FILE,
    MISSING,
    OTHER,
    SAMPLE_EMBEDDINGS_FILE,
    SAMPLES_FILE,
    _iter_jsonl,
    _require,
    read_meta,
)


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

    def to_frame(self) -> Any:
        """One row per (item, language) with data: P(gold) (the exact probability, or the
        share of the K answers that are gold) and the most chosen answer concept, as a
        pandas DataFrame (pandas imported on use)."""
        import pandas as pd

        rows = []
        for lang in self.languages:
            probs = self.probs[lang]
            for q, item_id in enumerate(self.item_ids):
                if not self.present[lang][q]:
                    continue
                gold = int(self.gold[q])
                rows.append({"item": item_id, "lang": lang,
                             "p_gold": float(probs[q, gold]) if gold >= 0 else None,
                             "top_answer": int(np.argmax(probs[q]))})
        return pd.DataFrame(rows)

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

    def located(path: Path) -> Iterator[tuple[dict[str, Any], str, int, str]]:
        """Each row of ``path`` with its place (``file:line``), item index and language;
        rows of items without candidates are skipped."""
        for lineno, o in _iter_jsonl(path):
            where = f"{path}:{lineno}"
            item_id = str(_require(o, "item", (str, int), where))
            lang = _require(o, "lang", str, where)
            if item_id in empty:
                continue
            if item_id not in index:
                raise DataError(f"{where}: item {item_id!r} is not in {ITEMS_FILE}")
            if lang not in lang_set:
                raise DataError(f"{where}: language {lang!r} is not in run.json languages")
            yield o, where, index[item_id], lang

    other_labels: list[list[str]] = [[] for _ in range(q)]
    if mode == "sample":
        path = run_dir / SAMPLES_FILE
        k = meta.get("samples")
        # answers[(i, lang)][s]: a candidate index, or a concept key for an "other" answer
        answers: dict[tuple[int, str], dict[int, int | tuple[str, str]]] = {}
        if path.exists():
            for o, where, i, lang in located(path):
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
            for o, where, i, lang in located(path):
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


def open_answer_summary(run_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Per language, over the open items' sampled answers (``samples.jsonl``): ``strict``
    accuracy (the answers counted right), ``lenient`` accuracy (an alias anywhere),
    ``other_language`` (the share of right answers that only another language's aliases
    name) and ``n`` answers. Empty when the run has no open answers with these fields."""
    path = Path(run_dir) / SAMPLES_FILE
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                o = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line
            if "lenient" in o:
                rows[(str(o.get("item")), str(o.get("lang")), int(o.get("sample", -1)))] = o
    out: dict[str, dict[str, Any]] = {}
    for (_, lang, _), o in rows.items():
        acc = out.setdefault(lang, {"n": 0, "strict": 0, "lenient": 0, "other_language": 0})
        right = o.get("answer") == 0
        acc["n"] += 1
        acc["strict"] += right
        acc["lenient"] += bool(o.get("lenient"))
        acc["other_language"] += right and lang not in (o.get("alias_langs") or [])
    for acc in out.values():
        right = acc["strict"]
        acc["other_language"] = acc["other_language"] / right if right else None
        acc["strict"] /= acc["n"]
        acc["lenient"] /= acc["n"]
    return out
