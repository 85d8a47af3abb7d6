"""The strategies that change the prompt: baseline, TrEn-k, TTA-k and TEA (see
:mod:`xlgap.interventions.strategies` for what each does and which languages it uses)."""

from __future__ import annotations

from collections.abc import Sequence

from xlgap.data.items import MASK, Item, LangEntry, ParallelDataset
from xlgap.data.languages import language_name
from xlgap.errors import ConfigError
from xlgap.interventions.parsing import parse_after_marker, parse_direct
from xlgap.interventions.strategies.base import (
    PIVOT,
    PairResult,
    Strategy,
    StrategyOptions,
    _as_cloze,
    _k,
    _lang_list,
    _WithTranslations,
    register_strategy,
)
from xlgap.models.base import Backend
from xlgap.prompting.templates import (
    ScoringPrompt,
    _cloze_parts,
    _gold_text,
    _uses_prefix,
    answer_continuations,
    question_text,
)

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
        """The sampled TTA prompt, continued with the model's own greedy translations of
        the question into the k languages and the answer marker; the asked language's
        candidates are scored after it. Every pair, the source included, is answered in
        its own language with its own question in sight, as in the sampled TTA."""
        plans = [(it, lang, self.translation_languages(it, lang, self.k))
                 for it, lang in pairs]
        requests = [(it, question_text(it[lang]), lang, c) for it, lang, langs in plans
                    for c in langs]
        done = iter(self.translate(requests))
        return self.score_prompts([self.answer_scoring_prompt(it, lang, {c: next(done)
                                                                        for c in langs})
                                   for it, lang, langs in plans])

    def answer_scoring_prompt(self, item: Item, lang: str, translations: dict[str, str]
                              ) -> ScoringPrompt:
        """:meth:`prompt` with ``translations`` (``{language: text}``, in pool order)
        written as the model's own lines, then the answer marker and ``lang``'s
        candidates as continuations."""
        entry = item[lang]
        lines = [f"{language_name(c)}: {t}" for c, t in translations.items()]
        chat = self.backend.is_chat
        if chat:
            text = self.prompt(item, lang) + "\n".join(lines) + "\nAnswer: "
        else:  # the prompt already ends with the first language's label
            first = lines[0].split(":", 1)[1]
            text = (self.prompt(item, lang) + first + "".join(f"\n{ln}" for ln in lines[1:])
                    + f"\nAnswer ({language_name(lang)}):")
        return ScoringPrompt(text, answer_continuations(entry, chat=chat, cloze_prefix=False))

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


register_strategy(r"baseline", lambda b, d, o, m: Baseline(b, d, o),
                  "the question alone in the asked language")
register_strategy(r"tren-(\d+)", lambda b, d, o, m: TranslationEnsemble(b, d, o, _k(m)),
                  "the question plus k translations of it in one prompt")
register_strategy(r"tta-(\d+)", lambda b, d, o, m: TranslateThenAnswer(b, d, o, _k(m)),
                  "the model translates the question into k languages, then answers")
register_strategy(r"tea", lambda b, d, o, m: TranslateEnglishAnswer(b, d, o),
                  "translate into English, answer in English, translate the answer back")
