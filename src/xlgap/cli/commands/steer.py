"""``xlgap steer`` and ``xlgap finetune``: reducing the gap inside a white-box model.

Registered with the main CLI through :data:`COMMANDS`. The algorithms live in
:mod:`xlgap.interventions.steering` and :mod:`xlgap.interventions.finetune`; this module
is the plumbing: options, splits, what is computed in which order, and the files written
(see ``docs/steering.md``).
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xlgap.cli.config import RunConfig, config_to_dict, opt
from xlgap.cli.registry import command
from xlgap.errors import ConfigError
from xlgap.io import dump_json
from xlgap.provenance import tagged


@dataclass
class SteerConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train, dev, test)")
    directions: str = opt("shared", "vectors to sweep, comma-separated: shared (toward the "
                          "mean of all languages) and/or source (toward the source)")
    layers: str = opt("3,6,9,12", "layer settings to sweep, comma-separated: a layer (6), "
                      "layers steered together (4+8, or 4-8 for 4 to 8 at once); 0 = embeddings")
    alphas: str = opt("0.5,1,2", "steering strengths to sweep, comma-separated (1 moves a "
                      "target's mean state onto the mean it is steered toward)")
    pooling: str = opt("mean_no_bos", "pooling of the states the vectors are made from: "
                       "mean, mean_no_bos or last", choices=("mean", "mean_no_bos", "last"))
    split: str = opt("0.4,0.2,0.4", "train,dev,test fractions of the items (train: vectors; "
                     "dev: sweep; test: report)")
    select: str = opt("accuracy", "dev metric that picks the best setting",
                      choices=("accuracy", "agreement", "transfer", "rankc"))
    shots: int | None = opt(None, "few-shot examples in scoring prompts (default: 0 for "
                            "cloze items, else 3)")
    k: int = opt(5, "ILO: nearest neighbours per point")
    n_boot: int = opt(1000, "bootstrap resamples for confidence intervals and p-values")


@dataclass
class FinetuneConfig(RunConfig):
    limit: int | None = opt(200, "use only the first N items (split into train and test)")
    lang: str = opt("", "the one language to train on (default: the source)")
    freeze_first: str = opt("0,9", "blocks frozen from the bottom, comma-separated: one "
                            "fine-tune per value")
    steps: int = opt(200, "optimizer steps per fine-tune")
    method: str = opt("lora", "lora (adapters through peft) or full", choices=("lora", "full"))
    train_embeddings: bool = opt(False, "train the embeddings too (LoRA on them with "
                                 "--method lora); by default they stay frozen")
    text: str = opt("", "plain-text file in --lang to train on (one passage per line) "
                    "instead of the train split's prompts completed with their answers")
    lr: float | None = opt(None, "learning rate (default: 3e-4 for LoRA, 2e-5 for full)")
    rank: int = opt(8, "LoRA rank")
    lora_alpha: float = opt(16.0, "LoRA alpha (scale = alpha / rank)")
    train_batch: int = opt(8, "training examples per step")
    max_length: int = opt(64, "longest training text, in tokens")
    checkpoint_every: int = opt(25, "steps between checkpoints (resume after a crash)")
    split: str = opt("0.5,0,0.5", "train,dev,test fractions (train: fine-tuning; test: "
                     "held-out evaluation; dev is unused)")
    pooling: str = opt("mean_no_bos", "pooling of hidden states for ILO and similarity",
                       choices=("mean", "mean_no_bos", "last"))
    shots: int | None = opt(None, "few-shot examples in scoring prompts (default: 0 for "
                            "cloze items, else 3)")
    k: int = opt(5, "ILO: nearest neighbours per point")
    eval_trained: bool = opt(True, "also score the trained items in every language (does "
                             "what was learnt in --lang show in the others?)")
    n_boot: int = opt(1000, "bootstrap resamples for confidence intervals and p-values")


# -- shared steps ------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(f"[xlgap] {msg}", file=sys.stderr, flush=True)


def _open(cfg: RunConfig, command: str, extra_langs: Sequence[str] = ()) -> tuple[
        Any, Any, str, list[str], Path]:
    """Backend, data (items with every language and candidates), source, targets, out."""
    from xlgap.cli.workspace import default_out, open_backend, open_dataset
    from xlgap.data.items import ParallelDataset
    from xlgap.data.languages import check_known

    # Checked before anything loads: these commands hook one model in this process.
    if cfg.ray:
        raise ConfigError(f"xlgap {command} hooks the model in this process; --ray is for "
                          "sample, intervene and the representation commands")
    if cfg.steer:
        raise ConfigError(f"xlgap {command} sets up its own model changes; --steer is for "
                          "the other commands")
    dataset, source, targets = open_dataset(cfg, all_languages=bool(extra_langs))
    extra = check_known(extra_langs, dataset.languages, f"data set {dataset.name}")
    languages = [source, *targets, *[x for x in extra if x not in (source, *targets)]]
    if not targets:
        raise ConfigError(f"xlgap {command} needs at least one target language (--targets)")
    if not dataset.has_candidates:
        raise ConfigError(f"xlgap {command} scores answer candidates; data set {dataset.name} "
                          "has none (use BMLAMA-style data or the built-in set)")
    missing = [x for x in languages if x not in dataset.languages]
    if missing:
        raise ConfigError(f"data set {dataset.name} has no {', '.join(missing)}")
    items = [it for it in dataset.items
             if all(it.has(lang) and it[lang].candidates for lang in languages)]
    if len(items) < 10:
        raise ConfigError(f"only {len(items)} items have every language ({', '.join(languages)})"
                          " with candidates; xlgap " + command + " needs at least 10")
    data = ParallelDataset(dataset.name, languages, items, dataset.source_path)
    backend = open_backend(cfg)
    if not backend.supports_white_box:
        raise ConfigError(f"xlgap {command} needs a white-box model; {cfg.model!r} is not one")
    out = Path(cfg.out) if cfg.out else default_out(command)
    out.mkdir(parents=True, exist_ok=True)
    return backend, data, source, targets, out


def _subset(data: Any, ids: Sequence[str]) -> Any:
    from xlgap.data.items import ParallelDataset

    keep = set(ids)
    return ParallelDataset(data.name, data.languages, [it for it in data.items if it.id in keep],
                           data.source_path)


def _shots(cfg: Any, data: Any) -> int:
    from xlgap.sampling import default_shots

    return cfg.shots if cfg.shots is not None else default_shots(data, exact=True)


def _split(cfg: Any, data: Any, need: Sequence[str]) -> dict[str, Any]:
    from xlgap.interventions.steering import parse_split, split_items

    fractions = parse_split(cfg.split)
    parts = split_items([it.id for it in data.items], fractions, cfg.seed)
    small = [name for name in need if len(parts[name]) < 5]
    if small:
        raise ConfigError(f"--split {cfg.split} on {len(data.items)} items leaves fewer than 5 "
                          f"in {', '.join(small)}; raise --limit or change --split")
    return {"seed": cfg.seed, "fractions": list(fractions), **parts}


# -- steer -------------------------------------------------------------------------------------


def _vectors(cfg: SteerConfig, backend: Any, train: Any, source: str, targets: list[str],
             out: Path, data_name: str) -> tuple[Any, dict[str, Any]]:
    """The steering vectors from the train split, reused from ``out`` when they match."""
    from xlgap.interventions.steering import (
        SteeringVectors,
        compute_vectors,
        hidden_by_language,
        white_box,
    )
    from xlgap.prompting.scoring import parallel_texts

    path = out / "vectors.safetensors"
    meta = {"model": cfg.model, "fingerprint": white_box(backend).fingerprint,
            "pooling": cfg.pooling, "source": source, "targets": targets,
            "languages": [source, *targets], "data": data_name,
            "item_ids": [it.id for it in train.items]}
    if path.exists():
        old = SteeringVectors.load(path)
        if all(old.meta.get(k) == v for k, v in meta.items()):
            return old, old.meta.get("norms", {})
    states = hidden_by_language(backend, parallel_texts(train, [source, *targets]), cfg.pooling)
    vectors, norms = compute_vectors(states, source, targets)
    meta["layers"] = list(range(next(iter(vectors.values())).shape[0]))
    meta["norms"] = norms
    result = SteeringVectors(vectors, meta)
    result.save(path)
    return result, norms


@command("steer", SteerConfig, "steering vectors toward the source or the shared space: sweep "
         "layers x alpha on dev, report the best on test (CIs, paired p)", analysis=True,
         white_box=True)
def cmd_steer(cfg: SteerConfig) -> int:
    from tqdm.auto import tqdm

    from xlgap.interventions import steering as st

    started = time.time()
    settings = st.parse_sweep(cfg.directions, cfg.layers, cfg.alphas)
    backend, data, source, targets, out = _open(cfg, "steer")
    inner = st.white_box(backend)
    for s in settings:  # fail before any work on a layer the model does not have
        for layer in s.layers:
            st.layer_module(inner.model, layer)
    split = _split(cfg, data, ("train", "dev", "test"))
    train, dev, test = (_subset(data, split[name]) for name in ("train", "dev", "test"))
    shots = _shots(cfg, data)
    _log(f"steer: model {cfg.model}, {len(data.items)} items ({len(train.items)} train, "
         f"{len(dev.items)} dev, {len(test.items)} test), {source} -> {', '.join(targets)}, "
         f"{len(settings)} settings; results in {out}")
    vectors, norms = _vectors(cfg, backend, train, source, targets, out,
                              data.source_path or data.name)
    from xlgap.prompting.scoring import candidate_scores

    def source_scores(ds: Any) -> tuple[Any, Any]:
        scores, gold = candidate_scores(backend, ds, [source], shots)
        return scores[source], gold[source]

    progress = cfg.show_progress()
    with st.scoring_progress(backend, len(dev.items) * (1 + len(targets)), "dev, no steering",
                             progress):
        dev_src, dev_gold = source_scores(dev)
        dev_base = st.parts_for(dev_src, st.setting_scores(backend, dev, targets, shots, None,
                                                           None), dev_gold)
    sweep = []
    bar = tqdm(settings, desc="sweep (dev)", unit="setting", disable=not progress)
    for setting in bar:
        parts = st.parts_for(dev_src, st.setting_scores(backend, dev, targets, shots, vectors,
                                                        setting), dev_gold)
        point = st.point_estimates(st.stack_parts(parts))
        point["per_target_accuracy"] = {t: st.point_estimates(p)["accuracy"]
                                        for t, p in parts.items()}
        sweep.append({**setting.as_dict(), "dev": point})
    bar.close()
    baseline_dev = st.point_estimates(st.stack_parts(dev_base))

    def score_of(row: dict[str, Any]) -> float:
        value = row["dev"][cfg.select]
        return float("-inf") if value != value else value  # NaN never wins

    best_row = max(sweep, key=score_of)
    best = st.Setting(best_row["direction"], tuple(best_row["layers"]), best_row["alpha"])
    _log(f"best on dev: toward {best.direction}, layers {best.layer_label}, alpha "
         f"{best.alpha:g} ({cfg.select} {best_row['dev'][cfg.select]:.3f} vs "
         f"{baseline_dev[cfg.select]:.3f} without steering); evaluating on test")

    with st.scoring_progress(backend, len(test.items) * (1 + 2 * len(targets)), "test",
                             progress):
        test_src, test_gold = source_scores(test)
        test_base = st.parts_for(test_src, st.setting_scores(backend, test, targets, shots,
                                                             None, None), test_gold)
        test_best = st.parts_for(test_src, st.setting_scores(backend, test, targets, shots,
                                                             vectors, best), test_gold)
    from xlgap.prompting.scoring import parallel_texts
    from xlgap.stats.bootstrap import mean_with_ci
    from xlgap.stats.metrics import accuracy_per_item

    texts = parallel_texts(test, [source, *targets])

    def steer_for(lang: str) -> Any:
        if lang == source:
            import contextlib

            return contextlib.nullcontext()
        return st.steering(backend, vectors.vectors[f"{best.direction}.{lang}"], best.layers,
                           best.alpha)

    inside = {"baseline": st.inside_summary(st.hidden_by_language(backend, texts, cfg.pooling),
                                            source, k=cfg.k),
              "steered": st.inside_summary(st.hidden_by_language(backend, texts, cfg.pooling,
                                                                 steer_for), source, k=cfg.k)}
    result: dict[str, Any] = {
        "model": cfg.model, "fingerprint": inner.fingerprint,
        "data": data.source_path or data.name, "source": source, "targets": targets,
        "shots": shots, "pooling": cfg.pooling, "select": cfg.select, "split": split,
        "vectors": {"path": "vectors.safetensors", "names": sorted(vectors.vectors),
                    "norms": norms},
        "source_accuracy": {"test": mean_with_ci(
            accuracy_per_item(st.distributions(test_src), test_gold), n_boot=cfg.n_boot,
            seed=cfg.seed)},
        "baseline": {"dev": baseline_dev,
                     "test": st.report_block(test_base, None, n_boot=cfg.n_boot,
                                             seed=cfg.seed)},
        "best": {**best.as_dict(), "dev": best_row["dev"],
                 "test": st.report_block(test_best, test_base, n_boot=cfg.n_boot,
                                         seed=cfg.seed)},
        "sweep": sweep, "inside": inside, "config": config_to_dict(cfg)}
    # The vectors file remembers the best setting: ``--steer FILE:LANG`` then needs no more.
    vectors.meta["best"] = best.as_dict()
    vectors.save(out / "vectors.safetensors")
    result["seconds"] = round(time.time() - started, 1)
    dump_json(tagged("steering", result), out / "steering.json")
    st.plot_sweep(result, out / "steering_sweep.png")
    st.plot_before_after(result, out / "steering_test.png")
    st.plot_inside(result, out / "steering_inside.png")
    print(format_steer(result))
    _log(f"wrote {out / 'steering.json'}, vectors.safetensors and three figures in "
         f"{result['seconds']:.0f} s")
    return 0


def _ci(stat: dict[str, Any] | None) -> str:
    if not stat or stat.get("estimate") is None:
        return "n/a"
    lo, hi = stat["ci"]
    text = f"{stat['estimate']:.3f} [{_num(lo)}, {_num(hi)}]"
    if stat.get("p_value") is not None:
        text += f" p={stat['p_value']:.3f}"
    return text


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_steer(result: dict[str, Any]) -> str:
    best = result["best"]
    lines = [f"Steering sweep on dev ({result['select']}; no steering "
             f"{result['baseline']['dev'][result['select']]:.3f}):"]
    for row in result["sweep"]:
        mark = " <- best" if (row["direction"], row["layers"], row["alpha"]) == (
            best["direction"], best["layers"], best["alpha"]) else ""
        lines.append(f"  {row['direction']:<7} layers {'+'.join(map(str, row['layers'])):<8} "
                     f"alpha {row['alpha']:<5g} {_num(row['dev'][result['select']])}{mark}")
    lines.append(f"Test split ({len(result['split']['test'])} items), no steering vs best "
                 "(95% CI, paired p):")
    for metric in ("accuracy", "agreement", "transfer", "rankc"):
        lines.append(f"  {metric:<10} {_ci(result['baseline']['test']['all'][metric]):<28} -> "
                     f"{_ci(best['test']['all'][metric])}")
    return "\n".join(lines)


# -- finetune ----------------------------------------------------------------------------------


def _training_examples(cfg: FinetuneConfig, backend: Any, train: Any, lang: str,
                       shots: int) -> list[Any]:
    from xlgap.interventions import finetune as ft
    from xlgap.prompting.templates import PromptBuilder

    encode = backend.encode  # the rule scoring uses (no second BOS before a chat prompt)
    if cfg.text:
        path = Path(cfg.text)
        try:
            lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read --text {path}: {exc}") from exc
        examples = ft.text_examples(encode, [x for x in lines if x], cfg.max_length)
    else:
        builder = PromptBuilder(backend, train.items, shots=shots)
        pairs = []
        for item in train.items:
            entry = item[lang]
            if entry.gold is None:
                continue
            prompt = builder.scoring_prompt(item, lang)
            pairs.append((prompt.prompt, prompt.continuations[entry.gold]))
        examples = ft.completion_examples(encode, pairs, cfg.max_length)
    if not examples:
        raise ConfigError("no training examples (empty --text file, or no gold answers in "
                          f"{lang})")
    return examples


def _parse_freeze(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"--freeze-first {text!r}: give block counts like 0,9") from exc
    if not values or any(v < 0 for v in values):
        raise ConfigError(f"--freeze-first {text!r}: give block counts >= 0, like 0,9")
    return list(dict.fromkeys(values))


@command("finetune", FinetuneConfig, "fine-tune on one language with the first N blocks frozen "
         "(LoRA or full); ILO and transfer before/after", analysis=True, white_box=True)
def cmd_finetune(cfg: FinetuneConfig) -> int:
    from xlgap.data.languages import check_known
    from xlgap.interventions import finetune as ft
    from xlgap.interventions.steering import white_box

    started = time.time()
    freeze = _parse_freeze(cfg.freeze_first)
    for name, value in (("steps", cfg.steps), ("train-batch", cfg.train_batch),
                        ("checkpoint-every", cfg.checkpoint_every), ("rank", cfg.rank),
                        ("max-length", cfg.max_length)):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    backend, data, source, targets, out = _open(cfg, "finetune",
                                                extra_langs=[cfg.lang] if cfg.lang else [])
    # the data set's own code for --lang (zh -> zh-Hans), or its source
    lang = check_known([cfg.lang], data.languages, "the data set (--lang)")[0] if cfg.lang \
        else source
    languages = list(data.languages)
    split = _split(cfg, data, ("test",) if cfg.text else ("train", "test"))
    train, test = _subset(data, split["train"]), _subset(data, split["test"])
    shots = _shots(cfg, data)
    inner = white_box(backend)
    examples = _training_examples(cfg, inner, train, lang, shots)
    lr = cfg.lr if cfg.lr is not None else (3e-4 if cfg.method == "lora" else 2e-5)
    _log(f"finetune: model {cfg.model}, {cfg.method}, {len(examples)} {lang} examples, "
         f"{cfg.steps} steps x {cfg.train_batch}, first {freeze} blocks frozen; evaluating "
         f"{len(test.items)} held-out items in {', '.join(languages)}; results in {out}")
    common = {"shots": shots, "pooling": cfg.pooling, "n_boot": cfg.n_boot, "seed": cfg.seed,
              "k": cfg.k, "progress": cfg.show_progress()}
    base_eval = ft.evaluate(backend, test, languages, source, **common)
    base_trained = (ft.evaluate(backend, train, languages, source, with_states=False, **common)
                    if cfg.eval_trained and not cfg.text else None)
    runs = []
    for n in freeze:
        spec = ft.TrainSpec(freeze_first=n, steps=cfg.steps, method=cfg.method,
                            train_embeddings=cfg.train_embeddings, lr=lr,
                            batch_size=cfg.train_batch, rank=cfg.rank,
                            lora_alpha=cfg.lora_alpha, seed=cfg.seed,
                            checkpoint_every=cfg.checkpoint_every,
                            data_sha256=ft.examples_digest(examples),
                            base_model=inner.fingerprint)
        trainable, lm = ft.prepare_model(inner.model, spec)
        record = ft.train(trainable, lm, examples, spec, out / f"freeze-{n}",
                          pad_id=inner.tokenizer.pad_token_id, progress=cfg.show_progress())
        tuned = ft.finetuned_backend(backend, trainable, spec, record)
        from xlgap.models.cached import CachedBackend

        cached = CachedBackend(tuned, backend.store) if hasattr(backend, "store") else tuned
        after = ft.evaluate(cached, test, languages, source, **common)
        p = ft.compare(base_eval, after, n_boot=cfg.n_boot, seed=cfg.seed)
        run: dict[str, Any] = {
            "freeze_first": n, "train": {k: v for k, v in record.items() if k != "losses"},
            "loss_first": record["losses"][0] if record["losses"] else None,
            "loss_last": record["losses"][-1] if record["losses"] else None,
            "losses_every_10": record["losses"][::10],
            "ilo_before": base_eval["inside"]["ilo"], "ilo_after": after["inside"]["ilo"],
            "cos_before": base_eval["inside"]["cos_parallel"],
            "cos_after": after["inside"]["cos_parallel"],
            "transfer_before": base_eval["transfer"],
            "transfer_after": {**after["transfer"], "p_value": p["transfer"]},
            "accuracy_before": base_eval["accuracy"],
            "accuracy_after": {k: {**v, "p_value": p["accuracy"][k]}
                               for k, v in after["accuracy"].items()}}
        if base_trained is not None:
            trained = ft.evaluate(cached, train, languages, source, with_states=False, **common)
            pt = ft.compare(base_trained, trained, n_boot=cfg.n_boot, seed=cfg.seed)
            run["trained_items"] = {
                "accuracy_before": base_trained["accuracy"],
                "accuracy_after": {k: {**v, "p_value": pt["accuracy"][k]}
                                   for k, v in trained["accuracy"].items()}}
        runs.append(run)
        del trainable, lm, tuned, cached
        gc.collect()
        _log(f"freeze-first {n}: loss {run['loss_first']:.3f} -> {run['loss_last']:.3f}, "
             f"transfer {_ci(run['transfer_before']['all'])} -> "
             f"{_ci(run['transfer_after']['all'])}")
    result = {"model": cfg.model, "fingerprint": inner.fingerprint,
              "data": data.source_path or data.name, "source": source, "targets": targets,
              "languages": languages, "lang": lang, "method": cfg.method, "steps": cfg.steps,
              "lr": lr, "train_embeddings": cfg.train_embeddings,
              "training_data": cfg.text or f"train split, {lang} prompts + gold answers",
              "examples": len(examples), "split": split,
              "base": {**ft.public(base_eval),
                       **({"trained_items": ft.public(base_trained)} if base_trained else {})},
              "runs": runs, "config": config_to_dict(cfg)}
    result["seconds"] = round(time.time() - started, 1)
    dump_json(tagged("finetune", result), out / "finetune.json")
    ft.plot_ilo(result, out / "finetune_ilo.png")
    ft.plot_transfer(result, out / "finetune_transfer.png")
    print(format_finetune(result))
    _log(f"wrote {out / 'finetune.json'} and two figures in {result['seconds']:.0f} s")
    return 0


def format_finetune(result: dict[str, Any]) -> str:
    lines = [f"Fine-tuning in {result['lang']} ({result['method']}, {result['steps']} steps); "
             "held-out items:",
             f"  base      transfer {_ci(result['base']['transfer']['all'])}"]
    for run in result["runs"]:
        lines.append(f"  N={run['freeze_first']:<3}    transfer {_ci(run['transfer_after']['all'])}"
                     f"  (p vs base {_num(run['transfer_after']['p_value'].get('all'))})")
    lines.append("ILO by layer (mean over languages), before -> after:")
    before = result["runs"][0]["ilo_before"] if result["runs"] else []
    lines.append("  layer  base   " + "  ".join(f"N={r['freeze_first']:<4}"
                                             for r in result["runs"]))
    for i, value in enumerate(before):
        lines.append(f"  {i:>5}  {_num(value)}  " + "  ".join(
            f"{_num(r['ilo_after'][i]):<6}" for r in result["runs"]))
    return "\n".join(lines)
