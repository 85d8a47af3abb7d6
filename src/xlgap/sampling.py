"""Make a run: answers of a model to every item in the source and target languages.

Sample mode draws K responses per (item, language) and maps each to a candidate index;
exact mode (white-box backends) takes the distribution over candidates from ``score``.
Rows are appended to the run directory chunk by chunk, and every model call goes
through the result store, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.data.items import Item, ParallelDataset
from xlgap.errors import ConfigError
from xlgap.judging import Judge
from xlgap.models.base import Backend
from xlgap.models.embedder import Embedder, embedder_name, self_embedder
from xlgap.progress import progress_bar
from xlgap.prompting.answers import answer_matches, matching_languages
from xlgap.prompting.scoring import softmax
from xlgap.prompting.templates import PromptBuilder, open_aliases
from xlgap.provenance import data_hash, entry_hash, provenance
from xlgap.runs import (
    EMBEDDINGS_FILE,
    SAMPLE_EMBEDDINGS_FILE,
    RunWriter,
    UsageLog,
    open_item_texts,
    read_meta,
)


def option(default: Any, help: str, **kw: Any) -> Any:
    """An API option with its one help text: a command takes its flag, default and help
    from here (see :func:`xlgap.cli.config.from_options`)."""
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class SamplingOptions:
    """How a run answers: the keywords of :func:`xlgap.sample` and the options of
    ``xlgap sample`` (one declaration: the command's flags are built from these fields)."""

    samples: int = option(20, "responses sampled per item and language (K)")
    temperature: float = option(1.0, "sampling temperature")
    max_new_tokens: int = option(16, "longest sampled answer, in tokens")
    exact: bool = option(False, "take exact candidate distributions from log-probabilities "
                       "instead of sampling (white-box backends)")
    shots: int | None = option(None, "few-shot examples in base-model prompts (default: 3; 0 "
                             "when --exact scores cloze sentences, which need no format cue)")
    seed: int = option(0, "random seed")
    # (item, language) pairs per model call; None: 64 exact, 16 sampled
    chunk: int | None = None
    embed_answers: bool = True
    normalize: str = option("none", "--exact: score normalisation: none (total log-probability), "
                          "tokens (per token) or bytes (per UTF-8 byte of the answer text)",
                          choices=("none", "tokens", "bytes"))
    shuffle_options: bool = option(False, "lettered multiple choice: shuffle the option order "
                                 "per item and language (separates position bias from the gap)")

    def resolved(self, dataset: ParallelDataset) -> SamplingOptions:
        """These options with the data-dependent defaults filled in (``shots``, ``chunk``):
        what a run records and resumes by."""
        shots = self.shots if self.shots is not None else default_shots(dataset, self.exact)
        chunk = self.chunk if self.chunk is not None else (64 if self.exact else 16)
        return replace(self, shots=shots, chunk=chunk)


def default_shots(dataset: ParallelDataset, exact: bool) -> int:
    """3 shots show a base model the answer format; scoring whole cloze sentences needs
    none (and the shorter prompt makes exact mode several times faster)."""
    entries = [e for it in dataset.items[:50] for e in it.langs.values()]
    mostly_cloze = bool(entries) and sum(e.is_cloze for e in entries) > len(entries) / 2
    return 0 if exact and mostly_cloze else 3


def item_rows(items: Sequence[Item], languages: Sequence[str]) -> list[dict[str, Any]]:
    """``items.jsonl`` rows, each with the content hash of every language it holds (a
    resumed run checks them, see :class:`xlgap.runs.RunWriter`).

    An open item (gold answers, no candidates) has one answer concept, the gold answer
    (``n_options`` 1, ``gold`` 0, ``open`` true): an answer that matches a gold alias is
    that concept, any other answer is an "other" concept of its own text."""
    rows = []
    for it in items:
        present = [lang for lang in languages if it.has(lang)]
        row: dict[str, Any] = {"id": it.id, "hashes": {lang: entry_hash(it[lang])
                                                        for lang in present}}
        if it.is_open:
            row.update({"n_options": 1, "gold": 0, "open": True,
                        "answers": {lang: list(it[lang].answers) for lang in present}})
        else:
            gold = next((it[lang].gold for lang in present if it[lang].gold is not None),
                        None)
            row.update({"n_options": it.n_candidates, "gold": gold,
                        "candidates": {lang: list(it[lang].candidates) for lang in present}})
        rows.append(row)
    return rows


def answerable(item: Item, lang: str, exact: bool) -> bool:
    """Whether a run answers ``item`` in ``lang``: it has candidates, or (sampling only)
    gold answers to judge free text against."""
    if not item.has(lang):
        return False
    entry = item[lang]
    return bool(entry.candidates) or (not exact and entry.is_open)


PairAnswers = Callable[[list[tuple[Item, str]]], list[dict[str, Any]]]


def fill_run(run_dir: str | Path, dataset: ParallelDataset, *, source: str,
             targets: Sequence[str], meta: dict[str, Any], answer: PairAnswers,
             chunk: int, progress: bool = True, desc: str = "answers") -> Path:
    """The one run loop of ``sample``, ``intervene`` and every other command that answers
    items: create or resume the run directory, skip the (item, language) pairs it holds,
    and answer the rest ``chunk`` pairs at a time with ``answer`` (which returns the
    rows for :meth:`RunWriter.add_samples` or ``add_distributions``, by the run's mode),
    writing after each chunk.

    ``meta["answer_options"]`` holds every setting that changes answers: resuming a directory
    made with other options, another model (fingerprint) or other data (an item's content
    hash) is refused with a message that names the difference. ``meta`` is completed with
    the provenance (versions, data hash) and the languages a resumed run already had.
    """
    run_dir = Path(run_dir)
    languages = [source, *[t for t in targets if t != source]]
    meta = {"source": source, "languages": languages, "targets": languages[1:],
            "data": dataset.source_path or dataset.name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
    meta["provenance"] = provenance(meta.get("config"), data=meta["data"],
                                    data_hash=data_hash(dataset.items, languages))
    meta = _resumable_meta(run_dir, meta)
    exact = meta.get("mode") == "exact"
    items = [it for it in dataset.items if any(answerable(it, lang, exact)
                                               for lang in languages)]
    with RunWriter(run_dir, meta) as writer:
        writer.add_items(item_rows(items, languages))
        done = writer.done_keys()
        pairs = [(it, lang) for it in items for lang in languages
                 if answerable(it, lang, exact) and (it.id, lang) not in done]
        add = writer.add_distributions if writer.mode == "exact" else writer.add_samples
        with progress_bar(total=len(pairs), desc=desc, unit="q", enabled=progress) as bar:
            for start in range(0, len(pairs), chunk):
                part = pairs[start:start + chunk]
                add(answer(part))
                bar.update(len(part))
    return run_dir


def make_run(backend: Backend, dataset: ParallelDataset, run_dir: str | Path, *,
             source: str, targets: Sequence[str], options: SamplingOptions,
             meta: dict[str, Any] | None = None, progress: bool = True,
             judge: Judge | None = None, embedder: Embedder | None = None) -> Path:
    """Write (or resume) a baseline run directory; returns its path.

    ``judge`` (see :mod:`xlgap.judging`) decides open answers instead of alias matching;
    ``embedder`` embeds the sampled answers of open items (default: the model's own
    last-layer state, where the backend has one)."""
    if options.exact and not backend.can_score:
        raise ConfigError(f"--exact needs a backend that can score continuations; "
                          f"{backend.kind!r} cannot. Drop --exact to sample answers instead.")
    options = options.resolved(dataset)
    builder = PromptBuilder(backend, dataset.items, shots=options.shots,
                            shuffle_options=options.shuffle_options)

    usage = UsageLog(run_dir, backend)

    def answer(chunk: list[tuple[Item, str]]) -> list[dict[str, Any]]:
        with usage.chunk(len(chunk)) as record:
            rows = _answer(chunk, record)
        return rows

    def _answer(chunk: list[tuple[Item, str]], record: Callable[..., None]
                ) -> list[dict[str, Any]]:
        if options.exact:
            prompts = [builder.scoring_prompt(it, lang) for it, lang in chunk]
            scores = backend.score_batch([(p.prompt, list(p.continuations)) for p in prompts],
                                         normalize=options.normalize)
            record([p.prompt for p in prompts],
                   [c for p in prompts for c in p.continuations], completions=len(prompts))
            return [{"item": it.id, "lang": lang, "probs": softmax(s).tolist(), "logprobs": s}
                    for (it, lang), s in zip(chunk, scores, strict=True)]
        prompts = [builder.generation_prompt(it, lang) for it, lang in chunk]
        outs = backend.generate(prompts, n=options.samples, temperature=options.temperature,
                                max_new_tokens=options.max_new_tokens, seed=options.seed)
        record(prompts, [t for texts in outs for t in texts],
               completions=len(prompts) * options.samples)
        rows = []
        for (it, lang), texts in zip(chunk, outs, strict=True):
            if judge is not None and it[lang].is_open:
                answers = judge.judge(it, lang, texts)
            else:
                answers = [builder.map_generated(it, lang, t) for t in texts]
            rows.extend({"item": it.id, "lang": lang, "sample": k, "answer": a, "text": t,
                         **(open_match(it, lang, t) if it[lang].is_open else {})}
                        for k, (a, t) in enumerate(zip(answers, texts, strict=True)))
        return rows

    answer_options = {k: getattr(options, k) for k in _ANSWER_OPTIONS}
    if judge is not None:
        answer_options["judge"] = judge.name
    run_meta = {"model": getattr(backend, "name", backend.fingerprint),
                "fingerprint": backend.fingerprint,
                "mode": "exact" if options.exact else "sample",
                # an exact run has distributions, not samples: no sample count to show
                "samples": None if options.exact else options.samples,
                "strategy": "baseline",
                "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
                "answer_options": answer_options, **(meta or {})}
    fill_run(run_dir, dataset, source=source, targets=targets, meta=run_meta, answer=answer,
             chunk=options.chunk, progress=progress,
             desc="exact scores" if options.exact else "sampling")
    if options.embed_answers:
        if embedder is None and backend.supports_white_box:
            embedder = self_embedder(backend)
        if embedder is not None:
            write_answer_embeddings(embedder, dataset.items, source, Path(run_dir))
            if not options.exact:
                write_sample_embeddings(embedder, Path(run_dir))
    return Path(run_dir)


# Settings that change a baseline run's answers (the chunk size and embeddings do not).
_ANSWER_OPTIONS = ("exact", "samples", "temperature", "max_new_tokens", "shots", "seed",
                   "normalize", "shuffle_options")


def _resumable_meta(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Refuse to resume a run made with another model or answer options; keep the
    languages it already has."""
    if not (run_dir / "run.json").exists():
        return meta
    old = read_meta(run_dir)
    diffs = []
    if old.get("fingerprint") and old["fingerprint"] != meta.get("fingerprint"):
        diffs.append(f"model {old.get('model')!r} (now {meta.get('model')!r})")
    if old.get("strategy", "baseline") != meta.get("strategy", "baseline"):
        diffs.append(f"strategy {old.get('strategy')!r} (now {meta.get('strategy')!r})")
    new_opts = meta.get("answer_options", {})
    if "answer_options" in old:
        old_opts = old["answer_options"]
        keys = sorted(set(old_opts) | set(new_opts))  # a setting added or dropped differs too
    else:  # a run from before answer_options: compare what it recorded
        old_opts = old.get("options", {})
        keys = sorted(k for k in new_opts if k in old_opts)
    diffs += [f"{k}={old_opts.get(k)!r} (now {new_opts.get(k)!r})" for k in keys
              if old_opts.get(k) != new_opts.get(k)]
    if diffs:
        raise ConfigError(f"{run_dir} holds a run made with {', '.join(diffs)}; resume it with "
                          "the same options or choose another --out")
    merged = dict(meta)
    merged["languages"] = [*old["languages"],
                           *[x for x in meta["languages"] if x not in old["languages"]]]
    merged["targets"] = [x for x in merged["languages"] if x != meta["source"]]
    return merged


def write_answer_embeddings(embedder: Embedder, items: Sequence[Item], lang: str,
                            run_dir: Path) -> None:
    """Embedding of each candidate answer concept, as the source language writes it
    (``answer_embeddings.npz``, for the L2 distance of candidate items)."""
    path = run_dir / EMBEDDINGS_FILE
    with_candidates = [it for it in items if it.has(lang) and it[lang].candidates]
    wanted = {it.id for it in with_candidates}
    if path.exists():
        with np.load(path) as existing:
            if wanted <= set(existing.files):
                return  # resumed with the same or fewer items: nothing new to embed
    texts = [c for it in with_candidates for c in it[lang].candidates]
    if not texts:
        return
    vecs = embedder(texts)
    arrays, pos = {}, 0
    for it in with_candidates:
        m = len(it[lang].candidates)
        arrays[it.id] = vecs[pos:pos + m].astype(np.float32)
        pos += m
    tmp = run_dir / "answer_embeddings.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(path)


def open_match(item: Item, lang: str, text: str) -> dict[str, Any]:
    """What an open answer's sample row records beside its answer: ``lenient`` (a gold
    alias of any language occurs anywhere in it) and ``alias_langs`` (the languages whose
    aliases start it, the strict rule that decides ``answer`` without a judge), so the
    answer's language is reported apart from its correctness."""
    aliases = open_aliases(item)
    return {"lenient": any(answer_matches(text, names, lang) for names in aliases.values()),
            "alias_langs": matching_languages(text, aliases, lang)}


def write_sample_embeddings(embedder: Embedder, run_dir: Path) -> None:
    """Embeddings of every sampled answer of the run's open items
    (``sample_embeddings.npz``: ``pairs`` (P, 2) item id and language, ``vectors``
    (P, K, d)), for the paper's L2 distance between source and target answers. Pairs
    already embedded are kept (a resumed run embeds only what is new)."""
    texts = open_item_texts(run_dir)
    if not texts:
        return
    path = run_dir / SAMPLE_EMBEDDINGS_FILE
    name = embedder_name(embedder)
    done: dict[tuple[str, str], np.ndarray] = {}
    if path.exists():
        with np.load(path) as old:
            # vectors of another embedder are not comparable with new ones: redo them all
            if "embedder" in old.files and str(old["embedder"]) == name:
                done = {(str(i), str(lang)): v
                        for (i, lang), v in zip(old["pairs"], old["vectors"], strict=True)}
    todo = [key for key in texts if key not in done]
    if todo:
        flat = [t for key in todo for t in texts[key]]
        # An empty answer has no vector (NaN), never a shared " " that would make "no
        # answer" coincide across languages; the curves leave it out of their subsets.
        said = [i for i, t in enumerate(flat) if t.strip()]
        got = (np.asarray(embedder([flat[i] for i in said]), dtype=np.float32) if said
               else np.zeros((0, 0), np.float32))
        # the vector size: from this batch, from earlier ones, or from one probe
        dim = (got.shape[1] if said else next(iter(done.values())).shape[-1] if done
               else np.asarray(embedder([" "])).shape[1])
        vecs = np.full((len(flat), dim), np.nan, dtype=np.float32)
        if said:
            vecs[said] = got
        k = len(texts[todo[0]])
        for n, key in enumerate(todo):
            done[key] = vecs[n * k:(n + 1) * k]
    keys = sorted(done)
    tmp = run_dir / "sample_embeddings.tmp.npz"
    np.savez(tmp, pairs=np.array(keys, dtype=str).reshape(len(keys), 2),
             vectors=np.stack([done[key] for key in keys]), embedder=np.array(name))
    tmp.replace(path)


# --------------------------------------------------------------------------------------
# --source item: one run per source language (ECLeKTic's protocol)

#: ``--source item``: every item is asked from its own source language (``Item.source``)
ITEM_SOURCE = "item"


def source_run_dir(out: str | Path, source: str) -> Path:
    """The run directory of the items from ``source`` under a ``--source item`` output."""
    return Path(out) / f"source-{source}"


def source_groups(dataset: ParallelDataset, targets: Sequence[str]
                  ) -> list[tuple[str, ParallelDataset, list[str]]]:
    """The items grouped by their own source language, in order of first appearance: per
    group its source, its data set (kept to that source and its targets) and its targets
    (``targets`` less the source). A group left with no target is dropped with a warning;
    an item without a source language is an error (the caller checks the data first)."""
    groups = []
    for src, group in dataset.by_source().items():
        if not src:
            raise ConfigError(f"data set {dataset.name}: {len(group)} item(s) record no source "
                              "language; --source item needs one per item")
        group_targets = [t for t in targets if t != src]
        if not group_targets:
            logging.getLogger(__name__).warning(
                "%d item(s) from %s left out: no target language but their source",
                len(group), src)
            continue
        groups.append((src, group.subset(None, [src, *group_targets]), group_targets))
    return groups


def make_source_runs(backend: Backend, dataset: ParallelDataset, out: str | Path, *,
                     targets: Sequence[str], options: SamplingOptions,
                     meta: dict[str, Any] | None = None, progress: bool = True,
                     judge: Judge | None = None, embedder: Embedder | None = None
                     ) -> dict[str, Path]:
    """``--source item``: one :func:`make_run` per source group (:func:`source_groups`),
    each in ``OUT/source-<lang>/``, a normal run directory with that source and the other
    languages as targets, so transfer is measured from where each item comes from. Each
    run resumes on its own; returns source language -> run directory."""
    runs: dict[str, Path] = {}
    options = options.resolved(dataset)  # one default for every group: the whole set's
    for src, group, group_targets in source_groups(dataset, targets):
        runs[src] = make_run(backend, group, source_run_dir(out, src), source=src,
                             targets=group_targets, options=options,
                             meta={**(meta or {}), "source_group": src}, progress=progress,
                             judge=judge, embedder=embedder)
    return runs
