"""Backend speed on the embedded model, as ratios against baselines run in the same process.

(a) sampling throughput of ``HFBackend.generate`` against a naive loop calling
    ``model.generate(num_return_sequences=n)`` one prompt at a time (n=20, same prompts,
    same stop at a newline), in answer tokens per second;
(b) exact candidate scoring (``score_batch``) against sampling n=20 per prompt, in
    prompts per second: against our batched sampler of (a), and against the naive loop.

Usage: python bench/backend.py [--prompts 24] [--n 20] [--data PATH] [--profile]
Writes bench/results/backend.json. These machines are noisy: only the ratios matter.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import torch

from xlgap.data import load_dataset
from xlgap.models import load_backend
from xlgap.prompting.templates import PromptBuilder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "bmlama17"


def answer_tokens(tokenizer, texts: list[str]) -> int:
    """Tokens of the answers plus one for the stop token (same count for both sides)."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)


def naive_generate(backend, prompts: list[str], n: int, max_new: int, seed: int) -> list[list[str]]:
    tok, model = backend.tokenizer, backend.model
    outs = []
    torch.manual_seed(seed)
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        with torch.inference_mode():
            gen = model.generate(**ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                 num_return_sequences=n, max_new_tokens=max_new,
                                 stop_strings=["\n"], tokenizer=tok,
                                 pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        outs.append([t.split("\n", 1)[0] for t in texts])
    return outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA.exists() else "builtin")
    ap.add_argument("--langs", default="en,fr,ru,ja")
    ap.add_argument("--profile", action="store_true", help="print a profile of our sampler")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "backend.json"))
    args = ap.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    backend = load_backend("embedded", batch_size=16)
    dataset = load_dataset(None if args.data == "builtin" else args.data)
    langs = [lang for lang in args.langs.split(",") if lang in dataset.languages]
    per_lang = max(1, args.prompts // len(langs))
    builder = PromptBuilder(backend, dataset.items[:200], shots=3)
    items = dataset.items[:per_lang]
    prompts = [builder.generation_prompt(it, lang) for lang in langs for it in items]
    scoring = [builder.scoring_prompt(it, lang) for lang in langs for it in items]
    print(f"{len(prompts)} prompts ({', '.join(langs)}) from {args.data}; n={args.n}")

    # warm-up (first calls allocate)
    backend.generate(prompts[:2], n=2, max_new_tokens=4, seed=99)
    naive_generate(backend, prompts[:1], 2, 4, 99)

    t0 = time.perf_counter()
    naive = naive_generate(backend, prompts, args.n, args.max_new_tokens, seed=1)
    t_naive = time.perf_counter() - t0
    tok_naive = sum(answer_tokens(backend.tokenizer, x) for x in naive)

    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    ours = backend.generate(prompts, n=args.n, temperature=1.0,
                            max_new_tokens=args.max_new_tokens, seed=1)
    if prof:
        prof.disable()
    t_ours = time.perf_counter() - t0
    tok_ours = sum(answer_tokens(backend.tokenizer, x) for x in ours)

    t0 = time.perf_counter()
    backend.score_batch([(s.prompt, list(s.continuations)) for s in scoring])
    t_score = time.perf_counter() - t0

    result = {
        "prompts": len(prompts), "n": args.n, "data": args.data,
        "naive_seconds": t_naive, "naive_tokens": tok_naive,
        "naive_tokens_per_s": tok_naive / t_naive,
        "ours_seconds": t_ours, "ours_tokens": tok_ours, "ours_tokens_per_s": tok_ours / t_ours,
        "sampling_throughput_ratio": (tok_ours / t_ours) / (tok_naive / t_naive),
        "score_seconds": t_score,
        "candidates_per_prompt": sum(len(s.continuations) for s in scoring) / len(scoring),
        "score_vs_sampling_speedup": t_ours / t_score,
        # the same scoring against the naive sampling loop of (a)
        "score_vs_naive_sampling_speedup": t_naive / t_score,
        "targets": {"sampling_throughput_ratio": 3.0, "score_vs_sampling_speedup": 20.0},
    }
    print(json.dumps(result, indent=2))
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
        print(buf.getvalue())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
