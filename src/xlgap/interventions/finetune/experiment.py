"""The fine-tuning experiment as a Python API (the body of ``xlgap finetune``).

:func:`run_finetune` splits the items into train and held-out test sets, trains one copy
of the model per freeze setting N on one language only, and measures on the same test
items, for the base model and every N: accuracy per language, every registered pair
metric from the source per target and pooled (with 95% item-bootstrap CIs and paired
tests against the base model), ILO and similarity by layer (CIs and chance levels), and
paired comparisons between every two freeze settings (``comparisons``). It returns a
:class:`FinetuneResult`, which saves, reloads and turns into a DataFrame::

    result = run_finetune(backend, dataset, FinetuneOptions(lang="fr", freeze_first=[0, 9]),
                          work_dir="runs/finetune")
    result.save("runs/finetune")       # finetune.json
    result.to_frame()
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xlgap.errors import ConfigError
from xlgap.interventions.arms import VS_BASE, resolve_languages, usable_items, versus
from xlgap.interventions.finetune.seeds import (
    FIXED,
    FIXED_LABEL,
    fixed_transfer_parts,
    headline,
    setting_comparisons,
    setting_summary,
)
from xlgap.interventions.finetune.train import (
    Example,
    TrainSpec,
    examples_digest,
    finetuned_backend,
    prepare_completions,
    prepare_model,
    prepare_texts,
    train,
)
from xlgap.io import dump_json
from xlgap.models.cached import CachedBackend
from xlgap.models.layers import white_box
from xlgap.prompting.scoring import (
    candidate_scores,
    distributions,
    parallel_texts,
    scoring_progress,
)
from xlgap.prompting.templates import PromptBuilder
from xlgap.provenance import provenance, tagged
from xlgap.representations.extract import hidden_by_language
from xlgap.representations.ilo import ilo_difference
from xlgap.representations.layerwise import cosine_difference, inside_summary
from xlgap.sampling import default_shots, option
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES
from xlgap.stats.metrics import accuracy_per_item
from xlgap.stats.pairs import Part, pair_parts, paired_test, stack_parts, summarise

RESULT_FILE = "finetune.json"


@dataclass
class FinetuneOptions:
    """What :func:`run_finetune` does (the options of ``xlgap finetune``)."""

    source: str | None = None  # default: the data set's first language
    targets: Sequence[str] | None = None  # default: every other language
    lang: str = option("", "the one language to train on (default: the source)")
    # a list in Python; ``xlgap finetune`` takes it comma-separated (one declaration: the
    # command's flags, defaults and help are built from these fields)
    freeze_first: str | Sequence[int] = option(
        (0, 9), "blocks frozen from the bottom: one fine-tune per value", text_list=True)
    steps: int = option(200, "optimizer steps per fine-tune")
    method: str = option("lora", "lora (adapters through peft) or full",
                         choices=("lora", "full"))
    train_embeddings: bool = option(False, "train the embeddings too (LoRA on them with "
                                    "--method lora); by default they stay frozen")
    # a file of plain text in ``lang`` (or, in Python, its lines)
    text: str | Sequence[str] = option(
        "", "plain-text file in --lang to train on (one passage per line) instead of the "
        "train split's prompts completed with their answers")
    lr: float | None = option(None, "learning rate (default: 3e-4 for LoRA, 2e-5 for full)")
    rank: int = option(8, "LoRA rank")
    lora_alpha: float = option(16.0, "LoRA alpha (scale = alpha / rank)")
    train_batch: int = option(8, "training examples per step")
    max_length: int = option(64, "longest training text, in tokens (longer prompts lose "
                             "their start, never the answer; the counts are reported)")
    checkpoint_every: int = option(25, "steps between checkpoints (resume after a crash)")
    split: str | Sequence[float] = option(
        (0.5, 0, 0.5), "train,dev,test fractions (train: fine-tuning; test: held-out "
        "evaluation; dev is unused)", text_list=True)
    pooling: str = option("mean_no_bos", "pooling of hidden states for ILO and similarity",
                          choices=("mean", "mean_no_bos", "last"))
    shots: int | None = option(None, "few-shot examples in scoring prompts (default: 0 for "
                               "cloze items, else 3)")
    k: int = option(5, "ILO: nearest neighbours per point")
    eval_trained: bool = option(True, "also score the trained items in every language (does "
                                "what was learnt in --lang show in the others?)")
    n_boot: int = option(DEFAULT_N_BOOT, "bootstrap resamples for confidence intervals and "
                         "p-values")
    n_shuffles: int = option(DEFAULT_N_SHUFFLES, "shuffles averaged for the chance levels of "
                             "ILO and similarity")
    seed: int = 0
    progress: bool = False
    seeds: int = option(3, "training runs per freeze setting (seeds seed, seed+1, ...): the "
                        "spread between them is reported beside the item CIs")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("targets", "freeze_first", "text", "split"):
            if not isinstance(out[key], str | None):
                out[key] = list(out[key])
        return out


def parse_freeze(value: str | Sequence[int]) -> list[int]:
    try:
        values = ([int(x) for x in value.split(",") if x.strip()] if isinstance(value, str)
                  else [int(x) for x in value])
    except ValueError as exc:
        raise ConfigError(f"--freeze-first {value!r}: give block counts like 0,9") from exc
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"--freeze-first {value!r}: give block counts >= 0, like 0,9")
    return list(dict.fromkeys(values))


# -- evaluation ---------------------------------------------------------------------------------


def evaluate(backend: Any, dataset: Any, languages: Sequence[str], source: str, *,
             shots: int, pooling: str, n_boot: int, seed: int, k: int = 5,
             n_shuffles: int = 0, with_states: bool = True, progress: bool = False
             ) -> dict[str, Any]:
    """Accuracy per language, every registered pair metric from the source per target and
    pooled (``pairs``; ``transfer`` again on its own, as before), and ILO and similarity
    by layer, on ``dataset``'s items. Per-item parts (and states) are kept under
    ``_parts`` (``_states``) for paired tests; :func:`public` drops them."""
    with scoring_progress(backend, len(dataset.items) * len(languages), "exact scores",
                             progress):
        scores, gold = candidate_scores(backend, dataset, languages, shots)
    g = gold[source]
    probs = {lang: distributions(scores[lang]) for lang in languages}
    accuracy = {lang: Part.mean(accuracy_per_item(probs[lang], g)) for lang in languages}
    targets = [lang for lang in languages if lang != source]
    per_target = {t: {k2: v for k2, v in pair_parts(probs[source], probs[t], g).items()
                      if v is not None} for t in targets}
    pooled = ({k2: v for k2, v in stack_parts([per_target[t] for t in targets]).items()
               if v is not None} if targets else {})
    pairs = {"all": summarise(pooled, n_boot, seed),
             "per_target": {t: summarise(p, n_boot, seed) for t, p in per_target.items()}}
    result: dict[str, Any] = {
        "accuracy": summarise(accuracy, n_boot, seed),
        "transfer": {"all": pairs["all"].get("transfer"),
                     "per_target": {t: v.get("transfer") for t, v in pairs["per_target"].items()}},
        "pairs": pairs,
        "_parts": {"accuracy": accuracy, "all": pooled, "per_target": per_target},
        "_probs": probs, "_gold": g}
    if with_states:
        states = hidden_by_language(backend, parallel_texts(dataset, list(languages)), pooling)
        result["inside"] = inside_summary(states, source, k=k, n_boot=n_boot,
                                             n_shuffles=n_shuffles, seed=seed)
        result["_states"] = states
    return result


def compare(after: Mapping[str, Any], before: Mapping[str, Any], *, n_boot: int, seed: int
            ) -> dict[str, Any]:
    """Paired tests of ``after`` against ``before`` on the same items: accuracy per
    language, and every pair metric pooled and per target (the items are the pairs)."""
    a, b = after["_parts"], before["_parts"]
    return {"accuracy": paired_test(a["accuracy"], b["accuracy"], n_boot, seed),
            "all": paired_test(a["all"], b["all"], n_boot, seed) if a["all"] else {},
            "per_target": {t: paired_test(a["per_target"][t], b["per_target"][t], n_boot, seed)
                           for t in a["per_target"]}}


def with_p(stats: Mapping[str, Any], tests: Mapping[str, Any]) -> dict[str, Any]:
    """``stats`` (metric -> summary) with each paired test against the base model folded in
    as ``vs_base`` (:func:`xlgap.interventions.arms.versus`)."""
    out = {}
    for name, stat in stats.items():
        test = tests.get(name)
        out[name] = stat if stat is None or test is None else {**stat, VS_BASE: versus(test)}
    return out


def comparisons(runs: Sequence[tuple[int, Mapping[str, Any]]], *, n_boot: int, seed: int
                ) -> list[dict[str, Any]]:
    """Every two freeze settings against each other on the same held-out items: each
    pooled pair metric and the accuracy in every language, as ``{"a", "b", "metric",
    "estimate_a", "estimate_b", "estimate" (the difference a - b), "ci", "p", "p_floor",
    "n"}``."""
    out = []
    for (na, ea), (nb, eb) in itertools.combinations(runs, 2):
        pa, pb = ea["_parts"], eb["_parts"]
        tests = {**(paired_test(pa["all"], pb["all"], n_boot, seed) if pa["all"] else {}),
                 **{f"accuracy.{lang}": t for lang, t in
                    paired_test(pa["accuracy"], pb["accuracy"], n_boot, seed).items()}}
        for metric, test in tests.items():
            if test is None:
                continue
            out.append({"a": na, "b": nb, "metric": metric, "estimate_a": test["a"],
                        "estimate_b": test["b"], **(versus(test) or {})})
    return out


def public(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` without its per-item arrays."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


# -- the result ---------------------------------------------------------------------------------


@dataclass
class FinetuneResult:
    """What :func:`run_finetune` found; ``finetune.json`` is :meth:`to_dict`."""

    model: str | None
    fingerprint: str
    data: str
    source: str
    targets: list[str]
    languages: list[str]
    lang: str
    method: str
    steps: int
    lr: float
    train_embeddings: bool
    training_data: str
    examples: int
    example_counts: dict[str, int]
    split: dict[str, Any]
    base: dict[str, Any]
    runs: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    #: the training seeds of every freeze setting
    seeds: list[int] = field(default_factory=lambda: [0])
    #: per freeze setting, the seed-mean estimates with item CIs and the spread of seeds
    settings: list[dict[str, Any]] = field(default_factory=list)
    #: the setting that moved transfer (fixed denominator) most, p Holm-adjusted
    headline: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    provenance: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def save(self, path: str | Path) -> Path:
        """Write ``finetune.json`` (``path`` is the file or its directory), tagged and
        with a provenance block."""
        target = Path(path)
        if target.suffix != ".json":
            target = target / RESULT_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        body = self.to_dict()
        if body["provenance"] is None:
            body["provenance"] = provenance(self.config, data=self.data)
        return dump_json(tagged("finetune", body), target)

    @classmethod
    def load(cls, path: str | Path) -> FinetuneResult:
        p = Path(path)
        if p.is_dir():
            p = p / RESULT_FILE
        raw = json.loads(p.read_text(encoding="utf-8"))
        names = {f.name for f in dataclasses.fields(cls)}
        raw.setdefault("comparisons", [])
        raw.setdefault("example_counts", {})
        return cls(**{k: v for k, v in raw.items() if k in names})

    def to_frame(self) -> Any:
        """A pandas DataFrame of the held-out items, one row per model (``base`` or the
        freeze setting N), metric and group (a language for accuracy; ``all`` or a target
        for pair metrics): estimate, CI and, after fine-tuning, p against the base."""
        import pandas as pd

        rows = []

        seed_of: int | None = None

        def add(model: str, freeze: int | None, metric: str, group: str,
                stat: Mapping[str, Any] | None) -> None:
            if not stat:
                return
            ci = stat.get("ci") or [None, None]
            rows.append({"model": model, "freeze_first": freeze, "seed": seed_of,
                         "metric": metric,
                         "group": group, "estimate": stat.get("estimate"), "ci_low": ci[0],
                         "ci_high": ci[1], "p": (stat.get(VS_BASE) or {}).get("p"),
                         "n": stat.get("n")})

        def add_eval(model: str, freeze: int | None, accuracy: Mapping[str, Any],
                     pairs: Mapping[str, Any]) -> None:
            for lang, stat in accuracy.items():
                add(model, freeze, "accuracy", lang, stat)
            for group, stats in {"all": pairs.get("all", {}),
                                 **pairs.get("per_target", {})}.items():
                for metric, stat in stats.items():
                    add(model, freeze, metric, group, stat)

        def pairs_of(pairs: Mapping[str, Any] | None, transfer: Mapping[str, Any] | None
                     ) -> Mapping[str, Any]:
            if pairs or not transfer:
                return pairs or {}
            # files written before the pair-metric registry: transfer only
            return {"all": {"transfer": transfer.get("all")},
                    "per_target": {t: {"transfer": v} for t, v in
                                   (transfer.get("per_target") or {}).items()}}

        add_eval("base", None, self.base.get("accuracy", {}),
                 pairs_of(self.base.get("pairs"), self.base.get("transfer")))
        for run in self.runs:
            n = run["freeze_first"]
            seed_of = run.get("seed")
            add_eval(f"N={n}", n, run.get("accuracy_after", {}),
                     pairs_of(run.get("pairs_after"), run.get("transfer_after")))
        return pd.DataFrame(rows)


# -- the experiment ------------------------------------------------------------------------------


def training_examples(backend: Any, items: Any, lang: str, shots: int, text: str | Sequence[str],
                      max_length: int) -> tuple[list[Example], dict[str, int]]:
    """The training examples and what fitting them cost (see
    :func:`~xlgap.interventions.finetune.train.prepare_completions`): the train split's
    scoring prompts in ``lang`` completed with the gold answer, or plain ``text``."""
    encode = backend.encode  # the rule scoring uses (no second BOS before a chat prompt)
    if text:
        if isinstance(text, str):
            path = Path(text)
            try:
                lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read --text {path}: {exc}") from exc
        else:
            lines = [x.strip() for x in text]
        examples, counts = prepare_texts(encode, [x for x in lines if x], max_length)
    else:
        builder = PromptBuilder(backend, items.items, shots=shots)
        pairs = []
        for item in items.items:
            entry = item[lang]
            if entry.gold is None:
                continue
            prompt = builder.scoring_prompt(item, lang)
            pairs.append((prompt.prompt, prompt.continuations[entry.gold]))
        examples, counts = prepare_completions(encode, pairs, max_length)
    if not examples:
        raise ConfigError("no training examples (empty --text file, no gold answers in "
                          f"{lang}, or every example longer than --max-length)")
    return examples, counts


def _check(opts: FinetuneOptions) -> None:
    for name, value in (("steps", opts.steps), ("train-batch", opts.train_batch),
                        ("checkpoint-every", opts.checkpoint_every), ("rank", opts.rank),
                        ("max-length", opts.max_length), ("seeds", opts.seeds)):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")


def run_finetune(backend: Any, dataset: Any, options: FinetuneOptions | None = None, *,
                 work_dir: str | Path | None = None) -> FinetuneResult:
    """Run the fine-tuning experiment on a white-box ``backend`` and ``dataset`` (items
    with candidates). ``work_dir`` keeps ``freeze-N/`` (checkpoints, final weights): a
    rerun resumes or reloads from it; None trains in a temporary directory."""
    opts = options or FinetuneOptions()
    _check(opts)
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="xlgap-finetune-") as tmp:
            return run_finetune(backend, dataset, opts, work_dir=tmp)
    started = time.time()
    out = Path(work_dir)
    freeze = parse_freeze(opts.freeze_first)
    source, targets = resolve_languages(dataset, opts.source, opts.targets)
    lang = opts.lang or source
    languages = list(dict.fromkeys([source, *targets, lang]))
    data = usable_items(dataset, languages, "fine-tuning")
    split = data.split(opts.split, opts.seed, ("test",) if opts.text else ("train", "test"))
    train_items, test = data.only(split["train"]), data.only(split["test"])
    shots = opts.shots if opts.shots is not None else default_shots(data, exact=True)
    inner = white_box(backend)
    examples, counts = training_examples(inner, train_items, lang, shots, opts.text,
                                         opts.max_length)
    lr = opts.lr if opts.lr is not None else (3e-4 if opts.method == "lora" else 2e-5)
    common = {"shots": shots, "pooling": opts.pooling, "n_boot": opts.n_boot, "seed": opts.seed,
              "k": opts.k, "n_shuffles": opts.n_shuffles, "progress": opts.progress}
    base_eval = evaluate(backend, test, languages, source, **common)
    base_trained = (evaluate(backend, train_items, languages, source, with_states=False, **common)
                    if opts.eval_trained and not opts.text else None)
    seeds = [opts.seed + i for i in range(opts.seeds)]
    runs: list[dict[str, Any]] = []
    by_setting: list[tuple[int, list[dict[str, Any]]]] = []
    base_eval["_parts"]["fixed"] = stack_fixed(base_eval, base_eval, source, targets)
    for n in freeze:
        evals: list[dict[str, Any]] = []
        for train_seed in seeds:
            spec = TrainSpec(freeze_first=n, steps=opts.steps, method=opts.method,
                             train_embeddings=opts.train_embeddings, lr=lr,
                             batch_size=opts.train_batch, rank=opts.rank,
                             lora_alpha=opts.lora_alpha, seed=train_seed,
                             checkpoint_every=opts.checkpoint_every,
                             data_sha256=examples_digest(examples),
                             base_model=inner.fingerprint)
            trainable, lm = prepare_model(inner.model, spec)
            # the first seed keeps the old directory name, so earlier runs are reused
            run_dir = out / (f"freeze-{n}" if train_seed == opts.seed
                             else f"freeze-{n}-seed-{train_seed}")
            record = train(trainable, lm, examples, spec, run_dir,
                           pad_id=inner.tokenizer.pad_token_id, progress=opts.progress)
            tuned = finetuned_backend(backend, trainable, spec, record)
            cached = CachedBackend(tuned, backend.store) if hasattr(backend, "store") else tuned
            after = evaluate(cached, test, languages, source, **common)
            after["_parts"]["fixed"] = stack_fixed(base_eval, after, source, targets)
            runs.append({**_run_entry(n, record, base_eval, after, opts, source),
                         "seed": train_seed})
            if base_trained is not None:
                trained = evaluate(cached, train_items, languages, source, with_states=False,
                                   **common)
                pt = compare(trained, base_trained, n_boot=opts.n_boot, seed=opts.seed)
                runs[-1]["trained_items"] = {
                    "accuracy_before": base_trained["accuracy"],
                    "accuracy_after": with_p(trained["accuracy"], pt["accuracy"])}
            evals.append(after)
            del trainable, lm, tuned, cached
            gc.collect()
        by_setting.append((n, evals))
    settings = [setting_summary(n, seeds, evals, base_eval,
                                [r for r in runs if r["freeze_first"] == n],
                                n_boot=opts.n_boot, seed=opts.seed)
                for n, evals in by_setting]
    base = {**public(base_eval),
            **({"trained_items": public(base_trained)} if base_trained else {})}
    return FinetuneResult(
        model=getattr(backend, "name", None), fingerprint=inner.fingerprint,
        data=data.source_path or data.name, source=source, targets=targets,
        languages=languages, lang=lang, method=opts.method, steps=opts.steps, lr=lr,
        train_embeddings=opts.train_embeddings,
        training_data=(opts.text if isinstance(opts.text, str) else "given lines") if opts.text
        else f"train split, {lang} prompts + gold answers",
        examples=len(examples), example_counts=counts, split=split, base=base, runs=runs,
        comparisons=setting_comparisons(by_setting, source, k=opts.k, n_boot=opts.n_boot,
                                        seed=opts.seed),
        seeds=seeds, settings=settings, headline=headline(settings),
        config=opts.to_dict(), seconds=round(time.time() - started, 1))


def stack_fixed(base: Mapping[str, Any], after: Mapping[str, Any], source: str,
                targets: Sequence[str]) -> Any:
    """Pooled ``(Q, T)`` parts of transfer on the base model's source-correct items."""
    return fixed_transfer_parts(base["_probs"], after["_probs"], base["_gold"], source, targets)


def _fixed_entry(before: Mapping[str, Any], after: Mapping[str, Any], opts: FinetuneOptions
                 ) -> dict[str, Any]:
    """Transfer on the base model's source-correct items after fine-tuning, against the
    base model's transfer (the same items and denominator): ``{estimate, ci, n, label,
    vs_base}``."""
    fixed, ref = after["_parts"]["fixed"], before["_parts"]["all"]["transfer"]
    stat = summarise({"t": fixed}, opts.n_boot, opts.seed)["t"] or {}
    test = paired_test({"t": fixed}, {"t": ref}, opts.n_boot, opts.seed)["t"] or {}
    return {**stat, "label": FIXED_LABEL, VS_BASE: versus(test)}


def _run_entry(n: int, record: Mapping[str, Any], before: Mapping[str, Any],
               after: Mapping[str, Any], opts: FinetuneOptions, source: str
               ) -> dict[str, Any]:
    """One freeze setting's entry of ``runs``: training record, losses, inside by layer
    before and after, and every metric after with its paired test against the base."""
    p = compare(after, before, n_boot=opts.n_boot, seed=opts.seed)
    return {
        "freeze_first": n, "train": {k: v for k, v in record.items() if k != "losses"},
        "loss_first": record["losses"][0] if record["losses"] else None,
        "loss_last": record["losses"][-1] if record["losses"] else None,
        "losses_every_10": record["losses"][::10],
        "ilo_before": before["inside"]["ilo"], "ilo_after": after["inside"]["ilo"],
        "cos_before": before["inside"]["cos_parallel"],
        "cos_after": after["inside"]["cos_parallel"],
        "inside_after": after["inside"],
        "cos_change": cosine_difference(before["_states"], after["_states"], source,
                                           n_boot=opts.n_boot, seed=opts.seed),
        "ilo_change": ilo_difference(before["_states"], after["_states"], k=opts.k,
                                     n_boot=opts.n_boot, seed=opts.seed),
        FIXED: _fixed_entry(before, after, opts),
        "transfer_before": before["transfer"],
        "transfer_after": {
            "all": with_p({"t": after["transfer"]["all"]}, {"t": p["all"].get("transfer")})["t"],
            "per_target": {t: with_p({"t": v}, {"t": p["per_target"][t].get("transfer")})["t"]
                           for t, v in after["transfer"]["per_target"].items()}},
        "pairs_after": {"all": with_p(after["pairs"]["all"], p["all"]),
                        "per_target": {t: with_p(v, p["per_target"][t])
                                       for t, v in after["pairs"]["per_target"].items()}},
        "accuracy_before": before["accuracy"],
        "accuracy_after": with_p(after["accuracy"], p["accuracy"])}
