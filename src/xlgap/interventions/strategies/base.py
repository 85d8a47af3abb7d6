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

Exact mode (``exact``) scores the candidates instead of sampling: TTA-k writes the
model's own greedy translations into the TTA prompt and scores the asked language's
candidates after the answer marker, so every language (the source included) is answered
in its own language with its own question in sight, as when sampling; tta-1 is therefore
not TEA. vote-k gives the exact distribution of the plurality winner of k draws from the
baseline distribution; that winner's mode is the baseline's mode, so exact vote-k cannot
move transfer, overall success or agreement (they are marked not applicable), only the
expected accuracy P(gold) and the chi-square distance.

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

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from xlgap.data.items import MASK, Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name, language_script
from xlgap.errors import ConfigError
from xlgap.interventions.parsing import first_line, parse_direct
from xlgap.models.base import Backend
from xlgap.prompting.answers import OTHER
from xlgap.prompting.scoring import softmax
from xlgap.prompting.templates import (
    PromptBuilder,
    ScoringPrompt,
    _gold_text,
    next_shots,
    question_text,
)
from xlgap.registry import Registry
from xlgap.sampling import option

PIVOT = "en"  # the language TEA answers in
BLANK_RUN = re.compile(r"_{2,}")  # how a model may write the blank of a cloze question


@dataclass(frozen=True)
class StrategyOptions:
    """Settings shared by every strategy (the CLI fills them from ``xlgap intervene``)."""

    samples: int = option(3, "final answers per item, language and strategy (R), all "
                          "sampled")
    temperature: float = option(1.0, "sampling temperature of the answers")
    shots: int = option(3, "few-shot examples in base-model prompts")
    seed: int = 0
    source: str = "en"
    translations: str = option("oracle", "TrEn-k translations: from the parallel data "
                               "(oracle) or made by the model (model)",
                               choices=("oracle", "model"))
    other_scripts: bool = option(False, "TrEn-k/TTA-k: only translation languages whose "
                                 "script differs from the source's")
    # explicit pool order (overrides the default); ``xlgap intervene`` takes it comma-separated
    translation_langs: tuple[str, ...] = option(
        (), "order of translation languages, comma-separated on the command line (default: "
        "the source, then the data set's languages)", text_list=True)
    max_new_tokens: int = option(16, "longest direct answer, in tokens (TTA gets more)")
    exact: bool = option(False, "white-box models: each strategy's final answer is the "
                         "distribution over the candidates from their log-probabilities (no "
                         "parse failures; --samples is then unused)")
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
        return [softmax(s).tolist() for s in scores]

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


def _as_cloze(translation: str, original: LangEntry) -> str:
    """Turn the blank of a translated cloze question back into a mask, so the English
    prompt is a completion like the baseline's (only when there is exactly one blank)."""
    if original.is_cloze and len(BLANK_RUN.findall(translation)) == 1:
        return BLANK_RUN.sub(MASK, translation)
    return translation


# -- registry --------------------------------------------------------------------------

Factory = Callable[[Backend, ParallelDataset, StrategyOptions, re.Match[str]], Strategy]


@dataclass(frozen=True)
class StrategySpec:
    """A family of strategies: ``pattern`` (a full-match regex over the name, its groups
    feed the factory: ``tren-(\\d+)``), ``factory`` and a one-line ``help`` for
    ``--help`` and the docs. Registered under :attr:`label` (``tren-k``)."""

    pattern: str
    factory: Factory
    help: str

    @property
    def label(self) -> str:
        return self.pattern.replace(r"(\d+)", "k")


def _checked(obj: Any) -> StrategySpec:
    if not isinstance(obj, StrategySpec):
        raise ConfigError(f"a strategy must be a StrategySpec (pattern, factory, help), "
                          f"got {obj!r}")
    return obj


#: label (``tren-k``) -> :class:`StrategySpec`. xlgap's own are registered by the modules
#: named here (imported on first use); another package adds one through the entry-point
#: group ``xlgap.strategies`` (``mine-k = "package.module:SPEC"``, a StrategySpec).
STRATEGIES: Registry[StrategySpec] = Registry("strategy", "xlgap.strategies",
                                              convert=_checked)
for _label, _module in (("baseline", "translation"), ("tren-k", "translation"),
                        ("tta-k", "translation"), ("tea", "translation"),
                        ("vote-k", "vote")):
    STRATEGIES.register(_label, f"xlgap.interventions.strategies.{_module}")


def register_strategy(pattern: str, factory: Factory, help_text: str) -> StrategySpec:
    """Register a strategy family in :data:`STRATEGIES`: ``pattern`` (a full-match regex
    over the name, groups feed the factory), the factory, and a one-line description for
    ``--help`` and the docs."""
    re.compile(pattern)  # a bad pattern fails here, not when a name is looked up
    spec = StrategySpec(pattern, factory, help_text)
    STRATEGIES.register(spec.label, spec)
    return spec


def _k(match: re.Match[str]) -> int:
    k = int(match.group(1))
    if k < 1:
        raise ConfigError(f"strategy {match.group(0)!r}: k must be >= 1")
    return k


def strategy_help() -> list[tuple[str, str]]:
    """(label, description) of every registered strategy."""
    return [(spec.label, spec.help) for spec in STRATEGIES.values()]


def _match(name: str) -> tuple[StrategySpec, re.Match[str]] | None:
    for spec in STRATEGIES.values():
        match = re.fullmatch(spec.pattern, name)
        if match:
            return spec, match
    return None


def get_strategy(name: str, backend: Backend, dataset: ParallelDataset,
                 options: StrategyOptions | None = None) -> Strategy:
    """Build the strategy ``name`` (e.g. ``"tren-3"``); :class:`ConfigError` if unknown."""
    found = _match(name.strip().lower())
    if found is None:
        known = ", ".join(p for p, _ in strategy_help())
        raise ConfigError(f"unknown strategy {name!r}; known: {known}")
    spec, match = found
    return spec.factory(backend, dataset, options or StrategyOptions(), match)


def parse_strategy_list(text: str) -> list[str]:
    """Split ``--strategies`` into names (lower-cased, duplicates dropped, order kept)."""
    names = _dedupe([s.strip().lower() for s in text.split(",") if s.strip()])
    if not names:
        raise ConfigError("--strategies is empty; e.g. --strategies baseline,tren-1,tta-1")
    for name in names:
        if _match(name) is None:
            known = ", ".join(p for p, _ in strategy_help())
            raise ConfigError(f"unknown strategy {name!r} in --strategies; known: {known}")
    return names
