"""Prompt strategies that try to close the cross-lingual gap at the input or the output.

Every strategy answers a list of (item, language) pairs and returns, for each pair, ``R``
final answer texts (``samples``, default 3, sampled at temperature 1) mapped to candidate
indices, so all strategies are compared on the same number of final answers. Strategies:

* ``baseline``: the question alone in the asked language (:class:`PromptBuilder`).
* ``tren-k`` (translation ensemble): the question plus k translations of it in one prompt;
  translations from the parallel data (``translations="oracle"``, default) or made by the
  model itself (``"model"``: few-shot translation, greedy). The answer is asked for in the
  question's language.
* ``tta-k`` (translate, then answer): the model writes k translations of the question
  first and the answer last; the answer is read after the last ``Answer`` marker.
* ``tea`` (translate, English answer): the model translates the question into English,
  answers the English question (baseline prompt), and translates its answer back; the
  back-translation is mapped to the asked language's candidates.
* ``vote-k`` (response ensembling): each final answer is the majority over k samples of
  the baseline prompt.

Which k languages: the *pool* is ``translation_langs`` when given, else the source
language, then the data set's other languages in data order (so a language's prompt does
not depend on which other targets a run has); the asked language is removed, and with
``other_scripts`` only languages whose script (ISO 15924) differs from the source's
script are kept. The first k of the pool that the item has are used. Every language of a
run goes through the same strategy, the source included (TEA answers an English question
directly).

Base models see few-shot completions whose shots are the next items of the data set
(cyclically) that have every language the prompt needs, built from the parallel data;
chat models see one user turn through ``backend.chat_prompt``. Every model call goes
through the backend, so under :class:`~xlgap.models.cached.CachedBackend` the model's own
translations and answers are cached like any other call.
"""

from __future__ import annotations

import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xlgap.data.items import MASK, Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name, language_script
from xlgap.errors import ConfigError
from xlgap.interventions.parsing import first_line, parse_after_marker, parse_direct
from xlgap.models.base import Backend
from xlgap.prompting.answers import OTHER, normalize
from xlgap.prompting.templates import (
    PromptBuilder,
    ScoringPrompt,
    _cloze_parts,
    _gold_text,
    _uses_prefix,
    answer_continuations,
    next_shots,
    question_text,
)
from xlgap.sampling import softmax

PIVOT = "en"  # the language TEA answers in
BLANK_RUN = re.compile(r"_{2,}")  # how a model may write the blank of a cloze question


@dataclass(frozen=True)
class StrategyOptions:
    """Settings shared by every strategy (the CLI fills them from ``xlgap intervene``)."""

    samples: int = 3  # R final answers per (item, language)
    temperature: float = 1.0
    shots: int = 3
    seed: int = 0
    source: str = "en"
    translations: str = "oracle"  # TrEn-k: "oracle" (parallel data) or "model"
    other_scripts: bool = False
    translation_langs: tuple[str, ...] = ()  # explicit pool order (overrides the default)
    max_new_tokens: int = 16  # a direct answer
    exact: bool = False  # final answers as distributions over the candidates (scores)
    translation_tokens: int = 64  # one translated question
    tta_tokens_per_lang: int = 48  # TTA: budget per translation, plus one answer budget

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ConfigError(f"--samples must be >= 1, got {self.samples}")
        if self.shots < 0:
            raise ConfigError(f"--shots must be >= 0, got {self.shots}")
        if self.translations not in ("oracle", "model"):
            raise ConfigError(f"--translations must be 'oracle' or 'model', not "
                              f"{self.translations!r}")


@dataclass
class PairResult:
    """A strategy's R final answers for one (item, language).

    ``texts`` are the parsed final answers ("" where parsing failed), ``answers`` their
    candidate indices (OTHER = -1 for a failed parse or an answer naming no candidate),
    ``failed`` marks the failed parses, ``raw`` the model's outputs behind each answer and
    ``intermediate`` what the strategy made on the way (translations, English answers).
    """

    item: str
    lang: str
    texts: list[str]
    answers: list[int]
    failed: list[bool]
    raw: list[Any]
    intermediate: dict[str, Any] = field(default_factory=dict)

    @property
    def n_failed(self) -> int:
        return sum(self.failed)


def _lang_list(codes: Sequence[str]) -> str:
    """'English', 'English and Russian', 'English, Russian and Japanese'."""
    names = [language_name(c) for c in codes]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _dedupe(codes: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(codes))


class Strategy(ABC):
    """A way of prompting; subclasses implement :meth:`run`."""

    name: str = "abstract"

    def __init__(self, backend: Backend, dataset: ParallelDataset,
                 options: StrategyOptions) -> None:
        self.backend = backend
        self.dataset = dataset
        self.options = options
        self.builder = PromptBuilder(backend, dataset.items, shots=options.shots)
        self._index = {it.id: i for i, it in enumerate(dataset.items)}
        self._pools: dict[str, list[str]] = {}

    # -- shared helpers ------------------------------------------------------------------
    def shot_items(self, item: Item, langs: Sequence[str], answer_lang: str) -> list[Item]:
        """PromptBuilder's shot rule, extended to shots that need several languages."""
        return next_shots(self.dataset.items, self._index, item, self.options.shots, langs,
                          answer_lang)

    def pool(self, lang: str) -> list[str]:
        """Candidate translation languages for questions asked in ``lang``, in order."""
        if lang not in self._pools:
            opts = self.options
            order = list(opts.translation_langs) or [opts.source, *self.dataset.languages]
            pool = [c for c in _dedupe(order) if c != lang]
            if opts.other_scripts:
                src_script = language_script(opts.source)
                pool = [c for c in pool if language_script(c) != src_script]
            self._pools[lang] = pool
        return list(self._pools[lang])

    def translation_languages(self, item: Item, lang: str, k: int) -> list[str]:
        """The first ``k`` languages of :meth:`pool` that ``item`` has.

        Raises :class:`ConfigError` when fewer than ``k`` are available.
        """
        chosen = [c for c in self.pool(lang) if item.has(c)][:k]
        if len(chosen) < k:
            where = " with --other-scripts" if self.options.other_scripts else ""
            raise ConfigError(
                f"strategy {self.name!r} needs {k} translation language(s) for item "
                f"{item.id!r} asked in {lang!r}{where}, but only {chosen or 'none'} are "
                f"available (pool: {self.pool(lang)}); lower k or add languages")
        return chosen

    def generate(self, prompts: Sequence[str], *, n: int, temperature: float,
                 max_new_tokens: int, stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        """One backend call for a whole step (greedy calls use seed 0 so that they are
        shared across runs with different seeds)."""
        if not prompts:
            return []
        seed = self.options.seed if temperature > 0 else 0
        return self.backend.generate(list(prompts), n=n, temperature=temperature,
                                     max_new_tokens=max_new_tokens, seed=seed, stop=stop)

    def sample(self, prompts: Sequence[str], *, max_new_tokens: int | None = None,
               n: int | None = None, stop: Sequence[str] = ("\n",)) -> list[list[str]]:
        """R (or ``n``) samples per prompt at the strategy temperature."""
        return self.generate(prompts, n=n or self.options.samples,
                             temperature=self.options.temperature,
                             max_new_tokens=max_new_tokens or self.options.max_new_tokens,
                             stop=stop)

    def map_direct(self, item: Item, lang: str, raws: Sequence[str],
                   parse: Callable[[str], str | None] = parse_direct,
                   intermediate: dict[str, Any] | None = None) -> PairResult:
        """Parse each output, map it to ``lang``'s candidates; failures -> OTHER."""
        texts, answers, failed = [], [], []
        for raw in raws:
            parsed = parse(raw)
            texts.append(parsed or "")
            failed.append(parsed is None)
            answers.append(OTHER if parsed is None
                           else self.builder.map_generated(item, lang, parsed))
        return PairResult(item.id, lang, texts, answers, failed, list(raws),
                          dict(intermediate or {}))

    # -- translation prompts (used by TrEn-k with model translations and by TEA) ---------
    def translation_prompt(self, item: Item, text: str, src: str, dst: str) -> str:
        """Prompt whose greedy completion translates ``text`` from ``src`` into ``dst``;
        base models get other items' parallel questions as examples."""
        return self._pair_prompt(item, text, src, dst, "text", question_text)

    def term_prompt(self, item: Item, text: str, src: str, dst: str) -> str:
        """Prompt whose greedy completion translates a short answer (a name or a word);
        base models get other items' gold answers in both languages as examples."""
        return self._pair_prompt(item, text, src, dst, "word or name", _gold_text)

    def _pair_prompt(self, item: Item, text: str, src: str, dst: str, what: str,
                     example: Callable[[LangEntry], str]) -> str:
        """A translation prompt: an instruction for chat models; for base models, pairs
        ``example(src) / example(dst)`` from the shot items, then ``text``."""
        s_name, d_name = language_name(src), language_name(dst)
        if self.backend.is_chat:
            return self.backend.chat_prompt(
                f"Translate this {s_name} {what} into {d_name}. "
                f"Reply with the translation only.\n\n{text}")
        blocks = [f"{s_name}: {example(o[src])}\n{d_name}: {example(o[dst])}"
                  for o in self.shot_items(item, [src, dst], dst) if example(o[src])]
        blocks.append(f"{s_name}: {text}\n{d_name}:")
        return "\n\n".join(blocks)

    def translate(self, requests: Sequence[tuple[Item, str, str, str]], *,
                  term: bool = False) -> list[str]:
        """Greedy model translations of ``(item, text, src, dst)`` in one backend call
        (empty string where the model wrote nothing usable). A question keeps its
        punctuation; a short answer (``term``) is cleaned like an answer."""
        make = self.term_prompt if term else self.translation_prompt
        prompts = [make(it, text, src, dst) for it, text, src, dst in requests]
        limit = self.options.max_new_tokens if term else self.options.translation_tokens
        outs = self.generate(prompts, n=1, temperature=0.0, max_new_tokens=limit)
        parse = parse_direct if term else first_line
        return [parse(o[0]) or "" for o in outs]

    def check(self, pairs: Sequence[tuple[Item, str]]) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ConfigError` before any model call if some pair cannot be done."""

    def describe(self) -> dict[str, Any]:
        """What a run's ``run.json`` should record about this strategy."""
        return {}

    @abstractmethod
    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        """Answer every (item, language) pair (batched: one backend call per step)."""

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        """Exact mode: each pair's final answer as a distribution over its candidates
        (softmax of the candidates' log-probabilities), so nothing fails to parse."""
        raise ConfigError(f"strategy {self.name!r} has no exact mode")

    def score_prompts(self, prompts: Sequence[ScoringPrompt]) -> list[list[float]]:
        """Distributions over the continuations of each prompt (one backend call)."""
        if not prompts:
            return []
        scores = self.backend.score_batch([(p.prompt, list(p.continuations))
                                           for p in prompts])
        return [softmax(s) for s in scores]

    def scoring_prompt_for(self, item: Item, lang: str, question: str, answer_lang: str
                           ) -> ScoringPrompt:
        """The baseline scoring prompt for ``question`` (a translation of ``item``'s
        question in ``lang``) asked in ``answer_lang``, with ``answer_lang``'s candidates:
        candidate j is the same entity in every language, so scores map back by index."""
        target = item[answer_lang]
        entry = LangEntry(_as_cloze(question, item[lang]), candidates=target.candidates,
                          gold=target.gold, format=target.format)
        return self.builder.scoring_prompt(Item(item.id, {answer_lang: entry}), answer_lang)


class _WithTranslations(Strategy):
    """A strategy that uses k translation languages per question."""

    def __init__(self, backend: Backend, dataset: ParallelDataset, options: StrategyOptions,
                 k: int) -> None:
        super().__init__(backend, dataset, options)
        self.k = k

    def check(self, pairs: Sequence[tuple[Item, str]]) -> None:
        for it, lang in pairs:
            self.translation_languages(it, lang, self.k)

    def describe(self) -> dict[str, Any]:
        return {"k": self.k, "translation_pool": {
            lang: self.pool(lang) for lang in self.dataset.languages}}


# -- strategies ------------------------------------------------------------------------


class Baseline(Strategy):
    """The question alone in the asked language."""

    name = "baseline"

    def prompt(self, item: Item, lang: str) -> str:
        return self.builder.generation_prompt(item, lang)

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        outs = self.sample([self.prompt(it, lang) for it, lang in pairs])
        return [self.map_direct(it, lang, raws) for (it, lang), raws in zip(pairs, outs,
                                                                             strict=True)]

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        return self.score_prompts([self.builder.scoring_prompt(it, lang)
                                   for it, lang in pairs])


def _answer_block(entry: LangEntry, lang: str, *, answer: str | None) -> str:
    """The asked-language part of a TrEn block: the sentence (cloze with text before the
    mask: completed up to the mask) or the question then an ``Answer (Lang):`` line."""
    name = language_name(lang)
    if _uses_prefix(entry):
        if answer is None:
            return f"{name}: {_cloze_parts(entry)[0]}"
        return f"{name}: {entry.prompt.replace(MASK, answer)}"
    tail = "" if answer is None else f" {answer}"
    return f"{name}: {question_text(entry)}\nAnswer ({name}):{tail}"


class TranslationEnsemble(_WithTranslations):
    """TrEn-k: the question plus k translations of it in one prompt."""

    def __init__(self, backend: Backend, dataset: ParallelDataset, options: StrategyOptions,
                 k: int) -> None:
        super().__init__(backend, dataset, options, k)
        self.name = f"tren-{k}"

    def prompt(self, item: Item, lang: str, translations: dict[str, str]) -> str:
        """The answer prompt given the translations ``{language: text}`` (in order)."""
        entry = item[lang]
        if self.backend.is_chat:
            name = language_name(lang)
            lines = [f"{name}: {question_text(entry)}",
                     *(f"{language_name(c)}: {t}" for c, t in translations.items())]
            return self.backend.chat_prompt(
                f"Answer the question with only the answer (a few words), in {name}. "
                f"The same question in other languages is given below it to help.\n\n"
                + "\n".join(lines))
        langs = list(translations)
        blocks = []
        for shot in self.shot_items(item, [lang, *langs], lang):
            lines = [f"{language_name(c)}: {question_text(shot[c])}" for c in langs]
            lines.append(_answer_block(shot[lang], lang, answer=_gold_text(shot[lang])))
            blocks.append("\n".join(lines))
        lines = [f"{language_name(c)}: {t}" for c, t in translations.items()]
        lines.append(_answer_block(entry, lang, answer=None))
        blocks.append("\n".join(lines))
        return "\n\n".join(blocks)

    def oracle_translations(self, item: Item, lang: str) -> dict[str, str]:
        return {c: question_text(item[c]) for c in self.translation_languages(item, lang,
                                                                               self.k)}

    def model_translations(self, pairs: Sequence[tuple[Item, str]]) -> list[dict[str, str]]:
        """The model's own translations of each pair's question (one batched call)."""
        plans = [(it, lang, self.translation_languages(it, lang, self.k)) for it, lang in pairs]
        requests = [(it, question_text(it[lang]), lang, c) for it, lang, langs in plans
                    for c in langs]
        done = iter(self.translate(requests))
        return [{c: next(done) for c in langs} for _, _, langs in plans]

    def translations(self, pairs: Sequence[tuple[Item, str]]) -> list[dict[str, str]]:
        if self.options.translations == "model":
            return self.model_translations(pairs)
        return [self.oracle_translations(it, lang) for it, lang in pairs]

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        prompts = []
        for (it, lang), tr in zip(pairs, self.translations(pairs), strict=True):
            entry = it[lang]
            prompts.append(ScoringPrompt(self.prompt(it, lang, tr), answer_continuations(
                entry, chat=self.backend.is_chat, cloze_prefix=_uses_prefix(entry))))
        return self.score_prompts(prompts)

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        translations = self.translations(pairs)
        outs = self.sample([self.prompt(it, lang, tr) for (it, lang), tr
                            in zip(pairs, translations, strict=True)])
        return [self.map_direct(it, lang, raws, intermediate={
                    "translations": tr, "translation_source": self.options.translations})
                for (it, lang), raws, tr in zip(pairs, outs, translations, strict=True)]


class TranslateThenAnswer(_WithTranslations):
    """TTA-k: the model writes k translations of the question, then the answer."""

    def __init__(self, backend: Backend, dataset: ParallelDataset, options: StrategyOptions,
                 k: int) -> None:
        super().__init__(backend, dataset, options, k)
        self.name = f"tta-{k}"

    def prompt(self, item: Item, lang: str) -> str:
        entry = item[lang]
        langs = self.translation_languages(item, lang, self.k)
        name = language_name(lang)
        if self.backend.is_chat:
            labels = ", ".join(f"'{language_name(c)}: ...'" for c in langs)
            return self.backend.chat_prompt(
                f"First translate the question into {_lang_list(langs)}, one line per "
                f"language ({labels}). Then write a last line 'Answer: ' followed by only "
                f"the answer (a few words), in {name}.\n\n{name}: {question_text(entry)}")
        blocks = [f"Translate each question into {_lang_list(langs)}, then answer it in "
                  f"{name}."]
        for shot in self.shot_items(item, [lang, *langs], lang):
            lines = [f"Question ({name}): {question_text(shot[lang])}",
                     *(f"{language_name(c)}: {question_text(shot[c])}" for c in langs),
                     f"Answer ({name}): {_gold_text(shot[lang])}"]
            blocks.append("\n".join(lines))
        blocks.append(f"Question ({name}): {question_text(entry)}\n"
                      f"{language_name(langs[0])}:")
        return "\n\n".join(blocks)

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        """The model's own translations of the question into the k languages (greedy);
        in each, the candidates of that language are scored; the k distributions are
        averaged (candidate j is the same entity everywhere)."""
        plans = [(it, lang, self.translation_languages(it, lang, self.k))
                 for it, lang in pairs]
        requests = [(it, question_text(it[lang]), lang, c) for it, lang, langs in plans
                    for c in langs]
        done = iter(self.translate(requests))
        prompts = [self.scoring_prompt_for(it, lang, next(done), c)
                   for it, lang, langs in plans for c in langs]
        dists = iter(self.score_prompts(prompts))
        return [np.mean([next(dists) for _ in langs], axis=0).tolist()
                for _, _, langs in plans]

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        budget = self.options.tta_tokens_per_lang * self.k + self.options.max_new_tokens
        # A base model's block ends at a blank line or a new "Question"; a chat model may
        # put blank lines between its translations and its answer, so it runs to its end.
        stop = () if self.backend.is_chat else ("\n\n", "\nQuestion")
        outs = self.sample([self.prompt(it, lang) for it, lang in pairs],
                           max_new_tokens=budget, stop=stop)
        return [self.map_direct(it, lang, raws, parse=parse_after_marker,
                                intermediate={"languages": self.translation_languages(
                                    it, lang, self.k)})
                for (it, lang), raws in zip(pairs, outs, strict=True)]


def _as_cloze(translation: str, original: LangEntry) -> str:
    """Turn the blank of a translated cloze question back into a mask, so the English
    prompt is a completion like the baseline's (only when there is exactly one blank)."""
    if original.is_cloze and len(BLANK_RUN.findall(translation)) == 1:
        return BLANK_RUN.sub(MASK, translation)
    return translation


class TranslateEnglishAnswer(Strategy):
    """TEA: translate into English, answer in English, translate the answer back."""

    name = "tea"
    pivot = PIVOT

    def check(self, pairs: Sequence[tuple[Item, str]]) -> None:
        if not any(self.pivot in it.langs for it in self.dataset.items):
            raise ConfigError(f"strategy 'tea' answers in {self.pivot!r}, but the data set "
                              f"has no {self.pivot!r} (its shots come from there)")

    def answer_prompt(self, item: Item, lang: str, english_question: str) -> str:
        """The baseline English prompt for the (translated) question."""
        if lang == self.pivot:
            return self.builder.generation_prompt(item, self.pivot)
        entry = LangEntry(_as_cloze(english_question, item[lang]))
        return self.builder.generation_prompt(Item(item.id, {self.pivot: entry}), self.pivot)

    def english_questions(self, pairs: Sequence[tuple[Item, str]]) -> dict[int, str]:
        """Each pair's question in English: its own, or the model's greedy translation."""
        foreign = [(i, it, lang) for i, (it, lang) in enumerate(pairs) if lang != self.pivot]
        english_q = {i: question_text(it[lang]) for i, (it, lang) in enumerate(pairs)
                     if lang == self.pivot}
        done = self.translate([(it, question_text(it[lang]), lang, self.pivot)
                               for _, it, lang in foreign])
        english_q.update({i: t for (i, _, _), t in zip(foreign, done, strict=True)})
        return english_q

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        """The English question (translated by the model) with the English candidates
        scored; no translation back is needed, candidates map by index."""
        self.check(pairs)
        english_q = self.english_questions(pairs)
        return self.score_prompts([
            self.builder.scoring_prompt(it, self.pivot) if lang == self.pivot
            else self.scoring_prompt_for(it, lang, english_q[i], self.pivot)
            for i, (it, lang) in enumerate(pairs)])

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        self.check(pairs)
        # Step 1: questions into English (greedy, one call).
        english_q = self.english_questions(pairs)
        # Step 2: R sampled English answers per question (one call).
        outs = self.sample([self.answer_prompt(it, lang, english_q[i])
                            for i, (it, lang) in enumerate(pairs)])
        english_a = [[parse_direct(r) for r in raws] for raws in outs]
        # Step 3: answers back into the asked language (greedy, one call, deduplicated).
        back_requests = sorted({(i, a) for i, (_, lang) in enumerate(pairs)
                                if lang != self.pivot for a in english_a[i] if a})
        back = self.translate([(pairs[i][0], a, self.pivot, pairs[i][1])
                               for i, a in back_requests], term=True)
        back_of = dict(zip(back_requests, back, strict=True))
        results = []
        for i, (it, lang) in enumerate(pairs):
            finals = [a if lang == self.pivot or a is None else back_of[(i, a)]
                      for a in english_a[i]]
            # A final answer that is None or empty fails to parse; map_direct counts it.
            res = self.map_direct(it, lang, [f or "" for f in finals], intermediate={
                "english_question": english_q[i], "english_answers": english_a[i],
                "english_raw": outs[i]})
            # The output behind each final answer: the back-translation, or the English
            # answer where there was nothing to translate back.
            res.raw = [outs[i][r] if lang == self.pivot or english_a[i][r] is None
                       else finals[r] for r in range(len(finals))]
            results.append(res)
        return results


class Vote(Strategy):
    """vote-k: each final answer is the majority over k baseline samples.

    Votes are over answer concepts: a sample naming candidate j votes for j; one naming
    no candidate votes for its normalised text (so identical free-form answers can win);
    an empty sample does not vote. Ties go to the answer seen first among the k samples.
    """

    def __init__(self, backend: Backend, dataset: ParallelDataset, options: StrategyOptions,
                 k: int) -> None:
        super().__init__(backend, dataset, options)
        self.k = k
        self.name = f"vote-{k}"

    def run(self, pairs: Sequence[tuple[Item, str]]) -> list[PairResult]:
        r, k = self.options.samples, self.k
        outs = self.sample([self.builder.generation_prompt(it, lang) for it, lang in pairs],
                           n=r * k)
        results = []
        for (it, lang), raws in zip(pairs, outs, strict=True):
            texts, answers, failed, groups = [], [], [], []
            for rep in range(r):
                group = raws[rep * k:(rep + 1) * k]
                text, answer = majority(group, lambda t, it=it, lang=lang:
                                        self.builder.map_generated(it, lang, t), lang)
                texts.append(text or "")
                answers.append(answer)
                failed.append(text is None)
                groups.append(group)
            results.append(PairResult(it.id, lang, texts, answers, failed, groups,
                                      {"k": k}))
        return results

    def score(self, pairs: Sequence[tuple[Item, str]]) -> list[list[float]]:
        """The distribution of the majority of k answers drawn from the baseline's exact
        distribution (seeded per item and language)."""
        base = self.score_prompts([self.builder.scoring_prompt(it, lang)
                                   for it, lang in pairs])
        return [vote_distribution(p, self.k, _pair_seed(self.options.seed, it.id, lang))
                for (it, lang), p in zip(pairs, base, strict=True)]


def _pair_seed(seed: int, item_id: str, lang: str) -> int:
    digest = hashlib.sha256(f"{seed}\t{item_id}\t{lang}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


VOTE_DRAWS = 4000  # Monte Carlo draws for the exact distribution of a k-vote winner


def vote_distribution(probs: Sequence[float], k: int, seed: int) -> list[float]:
    """The distribution of the winner of k answers drawn from ``probs`` (plurality; ties go
    to the answer drawn first, as in :func:`majority`), by seeded Monte Carlo."""
    p = np.asarray(probs, dtype=np.float64)
    m = p.size
    draws = np.random.default_rng(seed).choice(m, size=(VOTE_DRAWS, k), p=p / p.sum())
    onehot = draws[:, :, None] == np.arange(m)
    counts = onehot.sum(axis=1)
    first = np.where(onehot.any(axis=1), onehot.argmax(axis=1), k)
    winner = np.argmax(counts * (k + 1) - first, axis=1)
    return (np.bincount(winner, minlength=m) / VOTE_DRAWS).tolist()


def majority(raws: Sequence[str], concept: Callable[[str], int], lang: str | None = None
             ) -> tuple[str | None, int]:
    """The winning (text, answer concept) over ``raws``, each parsed answer mapped by
    ``concept`` (a candidate index or OTHER); ``(None, OTHER)`` when every sample is empty.
    See :class:`Vote` for the rule."""
    counts: dict[tuple[str, Any], int] = {}
    first_text: dict[tuple[str, Any], str] = {}
    for raw in raws:
        parsed = parse_direct(raw)
        if parsed is None:
            continue
        idx = concept(parsed)
        key: tuple[str, Any] = ("c", idx) if idx != OTHER else ("t", normalize(parsed, lang))
        counts[key] = counts.get(key, 0) + 1
        first_text.setdefault(key, parsed)
    if not counts:
        return None, OTHER
    # max() keeps the first maximal key in insertion order: ties go to the first seen.
    best = max(counts, key=lambda key: counts[key])
    return first_text[best], best[1] if best[0] == "c" else OTHER


# -- registry --------------------------------------------------------------------------

Factory = Callable[[Backend, ParallelDataset, StrategyOptions, re.Match[str]], Strategy]

_REGISTRY: list[tuple[re.Pattern[str], Factory, str]] = []


def register_strategy(pattern: str, factory: Factory, help_text: str) -> None:
    """Register a strategy: ``pattern`` (a full-match regex over the name, groups feed the
    factory), the factory, and a one-line description for ``--help`` and the docs."""
    _REGISTRY.append((re.compile(pattern), factory, help_text))


def _k(match: re.Match[str]) -> int:
    k = int(match.group(1))
    if k < 1:
        raise ConfigError(f"strategy {match.group(0)!r}: k must be >= 1")
    return k


register_strategy(r"baseline", lambda b, d, o, m: Baseline(b, d, o),
                  "the question alone in the asked language")
register_strategy(r"tren-(\d+)", lambda b, d, o, m: TranslationEnsemble(b, d, o, _k(m)),
                  "the question plus k translations of it in one prompt")
register_strategy(r"tta-(\d+)", lambda b, d, o, m: TranslateThenAnswer(b, d, o, _k(m)),
                  "the model translates the question into k languages, then answers")
register_strategy(r"tea", lambda b, d, o, m: TranslateEnglishAnswer(b, d, o),
                  "translate into English, answer in English, translate the answer back")
register_strategy(r"vote-(\d+)", lambda b, d, o, m: Vote(b, d, o, _k(m)),
                  "majority answer over k samples of the baseline prompt")


def strategy_help() -> list[tuple[str, str]]:
    """(pattern, description) of every registered strategy."""
    return [(p.pattern.replace(r"(\d+)", "k"), h) for p, _, h in _REGISTRY]


def get_strategy(name: str, backend: Backend, dataset: ParallelDataset,
                 options: StrategyOptions | None = None) -> Strategy:
    """Build the strategy ``name`` (e.g. ``"tren-3"``); :class:`ConfigError` if unknown."""
    key = name.strip().lower()
    for pattern, factory, _ in _REGISTRY:
        match = pattern.fullmatch(key)
        if match:
            return factory(backend, dataset, options or StrategyOptions(), match)
    known = ", ".join(p for p, _ in strategy_help())
    raise ConfigError(f"unknown strategy {name!r}; known: {known}")


def parse_strategy_list(text: str) -> list[str]:
    """Split ``--strategies`` into names (lower-cased, duplicates dropped, order kept)."""
    names = _dedupe([s.strip().lower() for s in text.split(",") if s.strip()])
    if not names:
        raise ConfigError("--strategies is empty; e.g. --strategies baseline,tren-1,tta-1")
    for name in names:
        if not any(p.fullmatch(name) for p, _, _ in _REGISTRY):
            known = ", ".join(p for p, _ in strategy_help())
            raise ConfigError(f"unknown strategy {name!r} in --strategies; known: {known}")
    return names
