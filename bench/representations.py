"""Benchmarks of the representation analyses.

``--part ilo``: ILO on 17 languages x 1000 points, d = 640 (Gemma 3 270M's width), with
synthetic vectors shaped like hidden states (a shared direction every vector leans
towards, a per-sentence component shared across languages, a per-language offset and
noise). The chunked k-NN of :mod:`xlgap.representations.ilo` is compared in the same
process with a brute-force k-NN over the full N x N similarity matrix: wall time, peak
traced memory (tracemalloc, which numpy reports its buffers to) and agreement of the
neighbour lists. Prints a table and writes ``bench/results/representations_ilo.json``.

``--part uncertainty``: what the 95% intervals and chance levels cost on top of the
estimates (ILO of one layer; the similarity metrics of one language pair), on the same
kind of synthetic vectors. Writes ``bench/results/representations_uncertainty.json``.

Run: ``python bench/representations.py --part ilo`` (``--part all`` runs every part).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.representations.ilo import ilo, ilo_uncertainty, knn_cosine, normalise_rows
from xlgap.stats.bootstrap import DEFAULT_N_BOOT, DEFAULT_N_SHUFFLES

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_states(n_langs: int = 17, n: int = 1000, d: int = 640,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """Parallel vectors: common direction + sentence content + language offset + noise.

    The relative sizes give an intermediate ILO (neither fully mixed nor separated), so
    the neighbour search does real work rather than hitting trivial clusters.
    """
    rng = np.random.default_rng(seed)
    common = 4.0 * rng.normal(size=d)  # anisotropy: all hidden states share a direction
    content = rng.normal(size=(n, d))
    out: dict[str, np.ndarray] = {}
    for j in range(n_langs):
        offset = rng.uniform(0.3, 1.2) * rng.normal(size=d)
        noise = rng.normal(size=(n, d))
        out[f"l{j:02d}"] = (common + content + offset + noise).astype(np.float32)
    return out


def brute_knn(x: np.ndarray, k: int) -> np.ndarray:
    """Baseline: the full N x N cosine matrix, then argpartition + sort of each row."""
    xn = normalise_rows(x)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    n = sim.shape[0]
    part = np.argpartition(sim, n - k, axis=1)[:, n - k:]
    vals = np.take_along_axis(sim, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Result and best wall time over ``repeats`` runs."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best


def _peak_mib(fn: Callable[[], Any]) -> float:
    """Peak memory traced while ``fn`` runs, in MiB (numpy buffers included)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def bench_ilo(n_langs: int = 17, n: int = 1000, d: int = 640, k: int = 5, t: int = 3,
              chunks: tuple[int, ...] = (256, 2048), repeats: int = 3,
              brute: bool = True) -> dict[str, Any]:
    """Time and peak memory of ILO / chunked k-NN vs a brute-force full-matrix k-NN."""
    vecs = synthetic_states(n_langs, n, d)
    pooled = np.concatenate(list(vecs.values()))
    input_mib = pooled.nbytes / 2**20
    rows: list[dict[str, Any]] = []
    nn_ref = None
    for chunk in chunks:
        nn, knn_s = _timed(lambda c=chunk: knn_cosine(pooled, k, chunk=c), repeats)
        res, ilo_s = _timed(lambda c=chunk: ilo(vecs, k=k, t=t, chunk=c), repeats)
        rows.append({"method": f"chunked k-NN (chunk={chunk})", "chunk": chunk,
                     "knn_seconds": knn_s, "ilo_seconds": ilo_s,
                     "knn_peak_mib": _peak_mib(lambda c=chunk: knn_cosine(pooled, k, chunk=c)),
                     "ilo_mean": res.mean})
        nn_ref = nn if nn_ref is None else nn_ref
    result: dict[str, Any] = {
        "setup": {"n_languages": n_langs, "n_per_language": n, "n_points": n_langs * n,
                  "dim": d, "k": k, "t": t, "dtype": "float32", "input_mib": input_mib,
                  "repeats": repeats, "machine": platform.machine(),
                  "python": platform.python_version(), "numpy": np.__version__},
        "rows": rows,
        "ilo_mean": rows[0]["ilo_mean"],
        "bridge_mean": float(np.mean(list(res.bridge.values()))),
        "reach_mean": float(np.mean(list(res.reach.values()))),
    }
    if brute:
        nn_b, brute_s = _timed(lambda: brute_knn(pooled, k), min(repeats, 2))
        brute_peak = _peak_mib(lambda: brute_knn(pooled, k))
        same_rows = float(np.mean(np.all(nn_b == nn_ref, axis=1)))
        same_sets = float(np.mean([set(a) == set(b) for a, b in zip(nn_b, nn_ref, strict=True)]))
        rows.append({"method": "brute force (full N x N)", "chunk": None, "knn_seconds": brute_s,
                     "ilo_seconds": None, "knn_peak_mib": brute_peak, "ilo_mean": None})
        result["agreement"] = {"identical_neighbour_lists": same_rows,
                               "identical_neighbour_sets": same_sets}
        for row in rows[:-1]:
            row["time_ratio_vs_brute"] = row["knn_seconds"] / brute_s
            row["memory_ratio_vs_brute"] = row["knn_peak_mib"] / brute_peak
    return result


def print_ilo_table(result: dict[str, Any]) -> None:
    s = result["setup"]
    print(f"ILO benchmark: {s['n_languages']} languages x {s['n_per_language']} points, "
          f"d = {s['dim']}, k = {s['k']}, t = {s['t']} (input {s['input_mib']:.1f} MiB)")
    print(f"{'method':32} {'k-NN s':>8} {'ILO s':>8} {'peak MiB':>9} {'t/brute':>8} "
          f"{'mem/brute':>9}")
    for r in result["rows"]:
        ilo_s = "-" if r["ilo_seconds"] is None else f"{r['ilo_seconds']:.2f}"
        tr = r.get("time_ratio_vs_brute")
        mr = r.get("memory_ratio_vs_brute")
        print(f"{r['method']:32} {r['knn_seconds']:8.2f} {ilo_s:>8} {r['knn_peak_mib']:9.1f} "
              f"{'-' if tr is None else f'{tr:.2f}':>8} {'-' if mr is None else f'{mr:.3f}':>9}")
    print(f"mean ILO {result['ilo_mean']:.3f} (bridge {result['bridge_mean']:.3f}, "
          f"reach {result['reach_mean']:.3f})")
    if "agreement" in result:
        a = result["agreement"]
        print(f"chunked vs brute: identical neighbour lists {a['identical_neighbour_lists']:.4f}, "
              f"sets {a['identical_neighbour_sets']:.4f}")


SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bmlama17"


def _bmlama_texts(data: Path, n: int, langs: list[str] | None = None) -> dict[str, list[str]]:
    from xlgap.data import load_dataset
    from xlgap.prompting.scoring import parallel_texts

    dataset = load_dataset(str(data))
    langs = langs or dataset.languages
    return parallel_texts(dataset.subset(n, langs), langs)


def bench_extraction(data: Path, n: int = 40, batch_size: int = 16) -> dict[str, Any]:
    """Our extraction (pooling every layer, writing float16 per layer to disk) against a bare
    batched forward pass of the same model body over the same batches, in one process."""
    import tempfile

    import torch

    from xlgap.models import load_backend
    from xlgap.representations.extract import extract_hidden_states

    backend = load_backend("embedded", batch_size=batch_size)
    texts = _bmlama_texts(data, n)
    flat = [t for lang in texts for t in texts[lang]]
    encoded = [backend.encode(t) for t in flat]
    order = sorted(range(len(flat)), key=lambda i: len(encoded[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    from xlgap.models.onednn import packed_linears

    def bare() -> None:
        # the matmul engine the backend's methods run the model with, for a like-for-like
        # comparison
        with torch.inference_mode(), packed_linears(backend.model, backend._packs):
            for idx in batches:
                ids, mask, pos = backend._left_pad([encoded[i] for i in idx])
                backend.model.base_model(input_ids=ids, attention_mask=mask, position_ids=pos,
                                         use_cache=False)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            extract_hidden_states(backend, texts, tmp, pooling="mean_no_bos",
                                  batch_size=4 * batch_size, progress=False)

    bare()  # warm-up
    timings: dict[str, list[float]] = {"bare": [], "ours": []}
    for _ in range(2):  # interleaved, so drifts in machine load hit both
        for name, fn in (("bare", bare), ("ours", ours)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    t_bare, t_ours = min(timings["bare"]), min(timings["ours"])
    return {"texts": len(flat), "languages": len(texts), "batch_size": batch_size,
            "bare_forward_s": t_bare, "extraction_s": t_ours,
            "texts_per_s_bare": len(flat) / t_bare, "texts_per_s_ours": len(flat) / t_ours,
            "throughput_ratio": t_bare / t_ours, "target_ratio": 0.8}


def bench_ilo_real(data: Path, n: int = 1000, layers: tuple[int, ...] = (6, 12),
                   out_dir: Path | None = None) -> dict[str, Any]:
    """ILO time and peak memory per layer on real hidden states of 17 x n bmlama17 prompts."""
    from xlgap.models import load_backend
    from xlgap.representations.extract import CenteredStates, load_or_extract
    from xlgap.representations.ilo import ilo_by_layer

    backend = load_backend("embedded", batch_size=32)
    texts = _bmlama_texts(data, n)
    out_dir = out_dir or RESULTS / ".." / ".." / "runs" / "bench-ilo"
    # the same path as the commands: OUT/hidden/, resumed if interrupted
    states = CenteredStates(load_or_extract(backend, texts, out_dir, pooling="mean_no_bos",
                                            layers=list(layers), batch_size=64,
                                            progress=True))
    rows = []
    for layer in layers:
        vectors = states.layer(layer)
        tracemalloc.start()
        start = time.perf_counter()
        result = ilo_by_layer([vectors], k=5, t=3)[0]
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        rows.append({"layer": layer, "seconds": seconds, "peak_mib": peak,
                     "mean_ilo": result["mean"]})
    points = sum(len(v) for v in texts.values())
    input_mib = points * 640 * 4 / 2**20
    return {"languages": len(texts), "per_language": len(next(iter(texts.values()))),
            "points": points, "input_mib_float32": input_mib, "layers": rows}


def bench_uncertainty(n_langs: int = 5, sizes: tuple[int, ...] = (100, 1000), d: int = 640,
                      n_boot: int = DEFAULT_N_BOOT, n_shuffles: int = DEFAULT_N_SHUFFLES,
                      repeats: int = 2) -> dict[str, Any]:
    """Seconds for the estimate alone and with intervals + chance: ILO of one layer
    (n_langs x n points) and the similarity metrics of one pair (n items)."""
    from xlgap.representations.similarity import pair_chance, pair_metrics, pair_replicates
    from xlgap.stats.bootstrap import item_counts, shuffles

    rows = []
    for n in sizes:
        vecs = synthetic_states(n_langs, n, d)
        a, b = vecs["l00"], vecs["l01"]
        counts, perms = item_counts(n, n_boot), shuffles(n, n_shuffles)
        _, ilo_s = _timed(lambda v=vecs: ilo(v, k=5, t=3), repeats)
        _, ilo_u = _timed(lambda v=vecs: ilo_uncertainty(v, k=5, t=3, n_boot=n_boot,
                                                         n_shuffles=n_shuffles), repeats)
        _, sim_s = _timed(lambda a=a, b=b: pair_metrics(a, b), repeats)
        _, boot_s = _timed(lambda a=a, b=b, c=counts: pair_replicates(a, b, c), repeats)
        _, chance_s = _timed(lambda a=a, b=b, p=perms: pair_chance(a, b, p), repeats)
        rows.append({"n_items": n, "ilo_points": n_langs * n, "ilo_s": ilo_s,
                     "ilo_with_uncertainty_s": ilo_u, "pair_metrics_s": sim_s,
                     "pair_replicates_s": boot_s, "pair_chance_s": chance_s})
    return {"setup": {"n_languages": n_langs, "dim": d, "n_boot": n_boot,
                      "n_shuffles": n_shuffles, "repeats": repeats,
                      "machine": platform.machine(), "numpy": np.__version__},
            "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("ilo", "extract", "ilo-real", "uncertainty", "all"),
                        default="all")
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--extract-n", type=int, default=40,
                        help="items per language for the extraction-throughput part")
    parser.add_argument("--n-langs", type=int, default=17)
    parser.add_argument("--n", type=int, default=1000, help="points per language")
    parser.add_argument("--dim", type=int, default=640)
    parser.add_argument("--chunks", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--repeats", type=int, default=3,
                        help="timings are the best of this many runs (brute force: at most 2)")
    parser.add_argument("--no-brute", action="store_true", help="skip the full-matrix baseline")
    parser.add_argument("--out", type=Path, default=RESULTS / "representations_ilo.json")
    args = parser.parse_args(argv)
    if args.part in ("ilo", "all"):
        result = bench_ilo(args.n_langs, args.n, args.dim, chunks=tuple(args.chunks),
                           repeats=args.repeats, brute=not args.no_brute)
        print_ilo_table(result)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    if args.part in ("extract", "all"):
        result = bench_extraction(args.data, args.extract_n)
        print(json.dumps(result, indent=2))
        (RESULTS / "representations_extract.json").write_text(json.dumps(result, indent=2))
    if args.part in ("uncertainty", "all"):
        result = bench_uncertainty()
        print(json.dumps(result, indent=2))
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "representations_uncertainty.json").write_text(json.dumps(result, indent=2))
    if args.part in ("ilo-real", "all"):
        result = bench_ilo_real(args.data, args.n)
        print(json.dumps(result, indent=2))
        (RESULTS / "representations_ilo_real.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
