"""Backend speed on the embedded model, against baselines and the machine, in one process.

(a) sampling throughput (answer tokens/s) of ``HFBackend.generate`` against a naive loop
    calling ``model.generate(num_return_sequences=n)`` one prompt at a time (n=20, same
    stop at a newline, full-vocabulary sampling at temperature 1); the two are interleaved,
    best of ``--rounds``. The naive loop runs on the first ``--naive-prompts`` prompts (its
    throughput does not depend on how many prompts it is given; it is slow);
(b) the compute bound: the float32 matmul rate of this machine measured on the model's own
    ``torch.nn.functional.linear`` shapes (each block projection and the output head, at
    the sampler's row count), and FLOPs per decoded token = 2 x the parameters a token
    touches (every block projection plus the head; embeddings are a lookup, attention over
    the context is left out), give the tokens/s the matmuls alone would allow; our
    sampler's throughput is reported as a share of it;
(c) exact candidate scoring (``score_batch``) against sampling n=20 per prompt, in prompts
    per second: against our sampler of (a), and against the naive loop;
(d) hidden-state extraction (every layer, mean-pooled) against a bare forward pass.

``--profile`` splits our sampler's time (cProfile) into prompt encoding, decoding blocks,
output head + sampling, and the Python loop around them; with ``PYTHONPATH`` pointing at
another checkout it profiles that one (before/after figures).

Usage: python bench/backend.py [--prompts 24] [--n 20] [--data PATH] [--profile]
Writes bench/results/backend.json (raw figures too). The machine is shared and noisy:
ratios measured side by side are what matter.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time
from pathlib import Path

import torch

from xlgap.data import load_dataset
from xlgap.models import load_backend
from xlgap.prompting.templates import PromptBuilder

ROOT = Path(__file__).resolve().parents[1]
_DATA_CANDIDATES = [ROOT / ".." / "shared" / "data" / "bmlama17",
                    ROOT / ".." / ".." / "shared" / "data" / "bmlama17"]
DEFAULT_DATA = next((p for p in _DATA_CANDIDATES if p.exists()), None)


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


def linear_shapes(model) -> dict[str, tuple[int, int, int]]:
    """``name: (out_features, in_features, count)`` of every matmul a decoded token runs."""
    shapes: dict[str, tuple[int, int, int]] = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            key = name.rsplit(".", 1)[-1] if ".layers." in name else name
            out_f, in_f = module.weight.shape
            old = shapes.get(key)
            shapes[key] = (out_f, in_f, (old[2] if old else 0) + 1)
    return shapes


def matmul_rates(shapes: dict[str, tuple[int, int, int]], rows: int, reps: int = 3,
                 chunks: tuple[int, ...] = (1024, 2048, 4096)) -> dict[str, dict[str, float]]:
    """Best-of-``reps`` float32 GFLOP/s of each shape with ``rows`` rows, by every engine
    this machine has: MKL (``F.linear``) and, where PyTorch has it, oneDNN with the weight
    packed once (:mod:`xlgap.models.onednn`). Shapes wider than a chunk (the head) are also
    timed over column chunks of each size in ``chunks``, as a fused head runs them. The
    fastest way counts, so the bound is the strictest."""
    try:
        from xlgap.models import onednn
    except ImportError:  # an older checkout (profiling before/after)
        onednn = None
    out = {}
    for key, (out_f, in_f, _) in shapes.items():
        x = torch.randn(rows, in_f)
        w = torch.randn(out_f, in_f) * 0.02
        flops = 2.0 * rows * in_f * out_f

        def whole(x=x, w=w) -> None:
            torch.nn.functional.linear(x, w)

        def chunked(x=x, w=w, size: int = 0) -> None:
            for start in range(0, w.shape[0], size):
                torch.nn.functional.linear(x, w[start:start + size])

        ways = [("gflops_whole", whole)] + [
            (f"gflops_chunked_{size}", lambda size=size: chunked(size=size))
            for size in chunks if out_f > size]
        if onednn is not None and onednn.available():
            size = onednn.PIECE if out_f > onednn.WIDE else out_f
            pieces = [torch.ops.mkldnn._reorder_linear_weight(w[s:s + size].contiguous(), 256)
                      for s in range(0, out_f, size)]

            def packed(x=x, pieces=pieces) -> None:
                for piece in pieces:
                    onednn.run_piece(x, piece)

            ways.append(("gflops_onednn", packed))
        row = {}
        for label, fn in ways:
            fn()
            best = min(_timed(fn) for _ in range(reps if out_f > 8192 else reps * 5))
            row[label] = flops / best / 1e9
        row["gflops"] = max(row.values())
        out[key] = row
    return out


def _same_engine(backend):
    """The context ``HFBackend``'s public methods run the model in (inference mode, float32
    linears through oneDNN where the backend does that), for a bare forward pass to be
    compared like with like."""
    import contextlib

    try:
        from xlgap.models.onednn import packed_linears
    except ImportError:  # an older checkout
        return torch.inference_mode()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(packed_linears(backend.model, getattr(backend, "_packs", None)))
    return stack


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def compute_bound(shapes: dict[str, tuple[int, int, int]],
                  rates: dict[str, dict[str, float]]) -> dict[str, float]:
    """Tokens/s if a decoded token did only its matmuls, each at its measured rate."""
    flops = {k: 2.0 * o * i * c for k, (o, i, c) in shapes.items()}
    seconds = sum(flops[k] / (rates[k]["gflops"] * 1e9) for k in flops)
    total = sum(flops.values())
    return {"gflop_per_token": total / 1e9, "head_share_of_flops": flops.get("lm_head", 0) / total,
            "tokens_per_s": 1.0 / seconds, "effective_gflops": total / seconds / 1e9,
            "peak_gflops": max(r["gflops"] for r in rates.values()),
            "tokens_per_s_at_peak": max(r["gflops"] for r in rates.values()) * 1e9 / total}


def profile_split(prof: cProfile.Profile) -> dict[str, float]:
    """Seconds of generate in prompt encoding, decoding blocks, head + sampling, and the
    rest (the Python loop), by function names of this and the previous implementation."""
    stats = pstats.Stats(prof).stats
    cum: dict[str, float] = {}
    for (_, _, func), (_, _, _, ct, _) in stats.items():
        cum[func] = cum.get(func, 0.0) + ct
    total = cum.get("generate", 0.0)
    head = cum.get("_pick", 0.0) + cum.get("_logits", 0.0)  # _pick holds head_sample now
    blocks = cum.get("_forward", 0.0) + cum.get("step", 0.0)
    return {"total_s": total, "head_and_sampling_s": head, "blocks_s": blocks,
            "python_loop_s": max(0.0, total - head - blocks)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--naive-prompts", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--data", default=str(DEFAULT_DATA) if DEFAULT_DATA else "builtin")
    ap.add_argument("--langs", default="en,fr,ru,ja")
    ap.add_argument("--profile", action="store_true", help="split our sampler's time")
    ap.add_argument("--profile-prompts", type=int, default=12)
    ap.add_argument("--skip-naive", action="store_true", help="only our sampler and the bound")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "backend.json"))
    args = ap.parse_args()

    torch.set_num_threads(max(1, torch.get_num_threads()))
    backend = load_backend("embedded", batch_size=args.batch_size)
    dataset = load_dataset(None if args.data == "builtin" else args.data)
    langs = [lang for lang in args.langs.split(",") if lang in dataset.languages]
    per_lang = max(1, args.prompts // len(langs))
    builder = PromptBuilder(backend, dataset.items[:200], shots=3)
    items = dataset.items[:per_lang]
    prompts = [builder.generation_prompt(it, lang) for it in items for lang in langs]
    scoring = [builder.scoring_prompt(it, lang) for it in items for lang in langs]
    naive_prompts = prompts[:args.naive_prompts]
    print(f"{len(prompts)} prompts ({', '.join(langs)}) from {args.data}; n={args.n}; "
          f"naive loop on the first {len(naive_prompts)}", flush=True)

    # warm-up (first calls allocate)
    backend.generate(prompts[:2], n=2, max_new_tokens=4, seed=99)
    if not args.skip_naive:
        naive_generate(backend, prompts[:1], 2, 4, 99)

    # (b) the machine's matmul rates at the rows our sampler keeps in flight
    try:  # (this file also profiles older checkouts, which have no shared decoder)
        from xlgap.models.decode import SharedPrefixDecoder

        budget = backend.batch_size * (32 if SharedPrefixDecoder.supports(backend.model) else 8)
    except ImportError:
        budget = backend.batch_size * 8
    rows = min(len(prompts), max(1, budget // args.n)) * args.n
    shapes = linear_shapes(backend.model)
    rates = matmul_rates(shapes, rows)
    bound = compute_bound(shapes, rates)
    print(json.dumps({"rows": rows, "rates": rates, "bound": bound}, indent=1), flush=True)

    # (a) interleaved rounds, best of each
    t_naive, t_ours, prof = [], [], None
    tok_naive = tok_ours = 0
    for r in range(args.rounds):
        if not args.skip_naive:
            t0 = time.perf_counter()
            naive = naive_generate(backend, naive_prompts, args.n, args.max_new_tokens, seed=1)
            t_naive.append(time.perf_counter() - t0)
            tok_naive = sum(answer_tokens(backend.tokenizer, x) for x in naive)
        t0 = time.perf_counter()
        ours = backend.generate(prompts, n=args.n, temperature=1.0,
                                max_new_tokens=args.max_new_tokens, seed=1)
        t_ours.append(time.perf_counter() - t0)
        tok_ours = sum(answer_tokens(backend.tokenizer, x) for x in ours)
        print(f"round {r}: naive {t_naive[-1] if t_naive else float('nan'):.1f} s, "
              f"ours {t_ours[-1]:.1f} s", flush=True)
    ours_tps = tok_ours / min(t_ours)
    split = None
    result = {
        "prompts": len(prompts), "n": args.n, "data": args.data, "rows_in_flight": rows,
        "rounds": args.rounds, "threads": torch.get_num_threads(),
        "ours_seconds": t_ours, "ours_tokens": tok_ours, "ours_tokens_per_s": ours_tps,
        "matmul_gflops": rates, "compute_bound": bound,
        "share_of_compute_bound": ours_tps / bound["tokens_per_s"],
        "share_of_compute_bound_at_peak_rate": ours_tps / bound["tokens_per_s_at_peak"],
        "targets": {"sampling_throughput_ratio": 15.0, "share_of_compute_bound": 0.6,
                    "extraction_vs_bare_forward": 0.9},
    }
    if t_naive:
        naive_tps = tok_naive / min(t_naive)
        result.update({
            "naive_prompts": len(naive_prompts), "naive_seconds": t_naive,
            "naive_tokens": tok_naive, "naive_tokens_per_s": naive_tps,
            "sampling_throughput_ratio": ours_tps / naive_tps})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))  # the sampling part, early
    if args.profile:  # on the first --profile-prompts prompts (profiling is slow)
        prof = cProfile.Profile()
        prof.enable()
        backend.generate(prompts[:args.profile_prompts], n=args.n, temperature=1.0,
                         max_new_tokens=args.max_new_tokens, seed=1)
        prof.disable()
        split = profile_split(prof)

    # (c) scoring against sampling
    t_score = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        backend.score_batch([(s.prompt, list(s.continuations)) for s in scoring])
        t_score.append(time.perf_counter() - t0)

    # (d) hidden-state extraction against a bare forward pass over the same batches
    texts = [p for p in prompts]
    t_bare, t_hidden = [], []
    for _ in range(args.rounds + 1):
        t0 = time.perf_counter()
        with _same_engine(backend):  # the matmul engine hidden_states runs with
            for _ in backend._all_layer_batches([backend.encode(t) for t in texts]):
                pass
        t_bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        backend.hidden_states(texts)
        t_hidden.append(time.perf_counter() - t0)

    result.update({
        "score_seconds": t_score,
        "candidates_per_prompt": sum(len(s.continuations) for s in scoring) / len(scoring),
        # prompts/s of exact scoring over prompts/s of sampling n per prompt
        "score_vs_sampling_speedup": min(t_ours) / min(t_score),
        "hidden_states_seconds": t_hidden, "bare_forward_seconds": t_bare,
        "extraction_vs_bare_forward": min(t_bare) / min(t_hidden)})
    if t_naive:
        # the naive loop's time for all prompts, at its measured throughput
        result["score_vs_naive_sampling_speedup"] = (
            min(t_naive) * len(prompts) / len(naive_prompts)) / min(t_score)
    if split:
        result["profile"] = split
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
