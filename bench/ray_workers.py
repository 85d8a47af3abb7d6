"""Ray sharding on one small machine: 2 workers with 1 thread each against 1 worker with 2
threads, and 1 worker against no Ray at all (the overhead of the actor hop).

Same work in every setting, on the embedded model (HF backend): sampling (``--prompts``
BMLAMA prompts in ``--langs``, n samples each) and exact scoring of the same items, sent
in chunks as the run loop sends them (16 pairs per sampling call, 64 per scoring call).
Model loading and cluster start-up are timed apart; the settings' rounds interleave, and
their samples are compared with the first setting's (they match up to rare flips where a
batch split differently changes float rounding). A no-op call's round trip to an actor
gives the per-call cost of the hop itself.

Usage: python bench/ray_workers.py [--prompts 16] [--n 10] [--rounds 3]
Writes bench/results/ray_workers.json. These machines are shared and noisy: compare the
ratios of one invocation, not times across invocations.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / ".." / "shared" / "data" / "bmlama17"


def workload(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, list[str]]]]:
    from xlgap.data import load_dataset
    from xlgap.prompting.templates import PromptBuilder

    # the prompts of a base (non-chat) model; building them needs no model
    plain = SimpleNamespace(is_chat=False, chat_prompt=lambda message: message)
    langs = args.langs.split(",")
    data = load_dataset(args.data).subset(None, langs)
    pairs = [(it, lang) for it in data.items for lang in langs if it.has(lang)][:args.prompts]
    gen = PromptBuilder(plain, data.items, shots=3)
    score = PromptBuilder(plain, data.items, shots=0)
    prompts = [gen.generation_prompt(it, lang) for it, lang in pairs]
    requests = []
    for it, lang in pairs:
        p = score.scoring_prompt(it, lang)
        requests.append((p.prompt, list(p.continuations)))
    return prompts, requests


def run_calls(backend: Any, prompts: list[str], requests: list[tuple[str, list[str]]],
              n: int, max_new: int) -> tuple[dict[str, float], list[list[str]]]:
    """Time the sampling and scoring calls, chunked as the run loop sends them; returns
    the times and the samples."""
    times: dict[str, float] = {}
    samples: list[list[str]] = []
    start = time.perf_counter()
    for i in range(0, len(prompts), 16):
        samples += backend.generate(prompts[i:i + 16], n=n, temperature=1.0,
                                    max_new_tokens=max_new, seed=0)
    times["sample_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, len(requests), 64):
        backend.score_batch(requests[i:i + 64])
    times["score_s"] = time.perf_counter() - start
    times["total_s"] = times["sample_s"] + times["score_s"]
    return times, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="timed repetitions per setting, "
                    "interleaved (the best is kept; no store, so each round recomputes)")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--langs", default="en,fr,ru,ja")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray_workers.json"))
    args = ap.parse_args()

    import ray
    import torch

    from xlgap.models import load_backend
    from xlgap.models.ray import RayBackend

    prompts, requests = workload(args)
    cpus = os.cpu_count() or 1
    settings = [("no Ray, 2 threads", None, 2), ("Ray, 1 worker x 2 threads", 1, 2),
                ("Ray, 2 workers x 1 thread", 2, 1)]
    # logical CPUs for both Ray settings' actors at once (they are idle in turn)
    ray.init(num_cpus=4, include_dashboard=False,
             object_store_memory=256 * 1024 * 1024)
    results: dict[str, Any] = {"prompts": len(prompts), "score_requests": len(requests),
                               "n": args.n, "max_new_tokens": args.max_new_tokens,
                               "cpus": cpus, "settings": {}}
    backends, loads = {}, {}
    for label, workers, threads in settings:
        start = time.perf_counter()
        if workers is None:
            torch.set_num_threads(threads)
            backends[label] = load_backend("embedded", batch_size=16)
        else:
            backends[label] = RayBackend("embedded", {"batch_size": 16}, workers=workers,
                                         threads=threads)
        loads[label] = round(time.perf_counter() - start, 1)
    # Rounds interleave the settings, so that a change in the machine's load (it is
    # shared) falls on all of them alike.
    rounds: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in settings}
    reference: list[list[str]] | None = None
    differ: dict[str, int] = {}
    total_samples = len(prompts) * args.n
    for r in range(args.rounds):
        for label, _, _ in settings:
            times, sampled = run_calls(backends[label], prompts, requests, args.n,
                                       args.max_new_tokens)
            rounds[label].append(times)
            reference = reference if reference is not None else sampled
            # Sampled texts match up to float noise: a batch split differently (8 prompts
            # per worker instead of 16 in one batch) pads differently, which can flip a
            # sampled token where two are nearly tied, Ray or not.
            differ[label] = max(differ.get(label, 0), sum(
                a != b for got, want in zip(sampled, reference, strict=True)
                for a, b in zip(got, want, strict=True)))
            print(f"round {r + 1}: {label:<28} sample {times['sample_s']:6.1f} s  "
                  f"score {times['score_s']:6.1f} s  total {times['total_s']:6.1f} s",
                  flush=True)
        # the raw times so far, should the run be cut short (the machine is shared)
        results["rounds_so_far"] = rounds
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for label, _, _ in settings:
        best = min(rounds[label], key=lambda t: t["total_s"])
        results["settings"][label] = {"load_s": loads[label], "rounds": rounds[label],
                                      "best": best, "samples_differing": differ[label],
                                      "samples": total_samples}
        print(f"{label:<28} load {loads[label]:6.1f} s  best total {best['total_s']:6.1f} s "
              f" samples differing from the first setting: {differ[label]}/{total_samples}")
    # The hop itself: a call that does nothing, to one actor and back.
    hop = backends["Ray, 1 worker x 2 threads"]
    hop.worker_pids()
    start = time.perf_counter()
    for _ in range(50):
        hop.worker_pids()
    results["ray_call_roundtrip_ms"] = round((time.perf_counter() - start) / 50 * 1000, 2)
    print(f"Ray call round trip (no-op, one actor): {results['ray_call_roundtrip_ms']} ms")
    for backend in backends.values():
        if isinstance(backend, RayBackend):
            backend.close()
    ray.shutdown()
    del results["rounds_so_far"]
    s = results["settings"]
    one = s["Ray, 1 worker x 2 threads"]["best"]["total_s"]
    two = s["Ray, 2 workers x 1 thread"]["best"]["total_s"]
    local = s["no Ray, 2 threads"]["best"]["total_s"]
    two_best = s["Ray, 2 workers x 1 thread"]["best"]
    one_best = s["Ray, 1 worker x 2 threads"]["best"]
    phase = {k: two_best[k] / one_best[k] for k in ("sample_s", "score_s")}
    results["ratios"] = {
        "two_workers_over_one_worker": round(two / one, 3),
        "two_workers_over_one_worker_sampling": round(phase["sample_s"], 3),
        "two_workers_over_one_worker_scoring": round(phase["score_s"], 3),
        "one_worker_over_no_ray": round(one / local, 3),
        "two_workers_over_no_ray": round(two / local, 3)}
    print(json.dumps(results["ratios"]))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
