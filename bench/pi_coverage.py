"""How well do the two pi estimators recover the truth? Bias, RMSE and CI coverage.

Each replicate draws pi from ``--pis`` (default {0.5, 0.7, 0.9}), simulates a run with
the default population (``xlgap.stats.simulate``) and ``--options`` candidates, and fits
both the mismatch estimator and the model-based estimator. With ``--k-eff`` the run is
fitted as an exact-mode one: each language's distribution is the share of
``--exact-draws`` simulated answers (close to the expected softmax an exact run scores),
fitted as expected counts of each ``k_eff`` given (the same simulated run for every
k_eff, so the rows show the estimate's sensitivity to that setting). The model's 95%
bootstrap CI should cover the true pi in about 95% of replicates. Both the nominal pi
and the replicate's realised share of variance items are reported as truth: the
estimators target the latter.

    python bench/pi_coverage.py --replicates 40 --out pi_coverage.json
    python bench/pi_coverage.py --opt n_particles=8000 --opt bias_prior=target
    python bench/pi_coverage.py --pis 0.1 0.3 --options 10 --replicates 8
    python bench/pi_coverage.py --pis 0.3 --options 10 --k-eff 20 50 100 --replicates 6
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from xlgap.stats.mismatch import pi_mismatch
from xlgap.stats.pi import PiFitOptions, counts_from_probs, fit_pi_model
from xlgap.stats.simulate import simulate_arrays


def _counts(answers: np.ndarray, m: int) -> np.ndarray:
    """(Q, K) answers -> (Q, M + 1) counts, "other" last."""
    cols = np.where(answers < 0, m, answers)
    out = np.zeros((answers.shape[0], m + 1))
    np.add.at(out, (np.repeat(np.arange(answers.shape[0]), answers.shape[1]), cols.ravel()), 1)
    return out


def _parse_opts(pairs: list[str]) -> PiFitOptions:
    known = {f.name: f.type for f in fields(PiFitOptions)}
    kw: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in known:
            raise SystemExit(f"unknown option {key!r}; known: {sorted(known)}")
        kw[key] = json.loads(value) if value[:1] in "[{0123456789.-" else value
        if isinstance(kw[key], list):
            kw[key] = tuple(kw[key])
    return PiFitOptions(**kw)


def run(replicates: int, questions: int, samples: int, options: int, seed: int,
        pis: list[float], opts: PiFitOptions, other_rate: float,
        k_effs: list[float] | None = None, exact_draws: int = 400) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(replicates):
        pi = float(rng.choice(pis))
        sim = simulate_arrays(pi=pi, questions=questions,
                              samples=exact_draws if k_effs else samples, options=options,
                              seed=seed * 100_003 + r, other_rate=other_rate)
        cs = _counts(sim.samples[sim.source], options)
        ct = _counts(sim.samples["t1"], options)
        n = cs.sum(axis=1, keepdims=True)
        fits: list[tuple[float | None, np.ndarray, np.ndarray]] = (
            [(k, counts_from_probs(cs / n, k), counts_from_probs(ct / n, k)) for k in k_effs]
            if k_effs else [(None, cs, ct)])
        for k_eff, fcs, fct in fits:
            t0 = time.perf_counter()
            fit = fit_pi_model(fcs, {"t1": fct}, options, options=opts).overall
            secs = time.perf_counter() - t0
            assert fit is not None
            row = {"replicate": r, "pi": pi, "pi_realised": float(sim.kappa["t1"].mean()),
                   "k_eff": k_eff, "model": fit.pi, "ci": list(fit.pi_ci), "tau": fit.tau,
                   "tau_ci": list(fit.tau_ci), "eta": fit.eta, "eta_ci": list(fit.eta_ci),
                   "at_grid_edge": list(fit.at_grid_edge),
                   "mismatch": pi_mismatch(fcs / fcs.sum(axis=1, keepdims=True),
                                           fct / fct.sum(axis=1, keepdims=True)),
                   "seconds": secs}
            rows.append(row)
            tag = f" k_eff={k_eff:g}" if k_eff is not None else ""
            print(f"  rep {r:3d}  pi={pi:.1f}{tag} realised={row['pi_realised']:.3f}  "
                  f"model={fit.pi:.3f} [{fit.pi_ci[0]:.3f}, {fit.pi_ci[1]:.3f}]  "
                  f"edge={row['at_grid_edge']}  mismatch={row['mismatch']:.3f}  "
                  f"({secs:.1f}s)", flush=True)
    return {"rows": rows, "summary": summarise(rows, sim.params)}


def _stats(err: np.ndarray) -> dict[str, float]:
    return {"bias": float(err.mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def summarise(rows: list[dict[str, Any]], params: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = sorted({(r["pi"], r.get("k_eff")) for r in rows},
                  key=lambda pk: (pk[0], pk[1] or 0.0))
    groups = {f"pi={p:.1f}" + (f",k={k:g}" if k is not None else ""):
              [r for r in rows if (r["pi"], r.get("k_eff")) == (p, k)] for p, k in keys}
    if len({r.get("k_eff") for r in rows}) == 1:  # one fit per replicate: all of them too
        groups = {"all": rows, **groups}
    for name, rs in groups.items():
        truth = np.array([r["pi"] for r in rs])
        model = np.array([r["model"] for r in rs])
        mism = np.array([r["mismatch"] for r in rs])
        lo = np.array([r["ci"][0] for r in rs])
        hi = np.array([r["ci"][1] for r in rs])
        tlo, thi = (np.array([r["tau_ci"][i] for r in rs]) for i in (0, 1))
        elo, ehi = (np.array([r["eta_ci"][i] for r in rs]) for i in (0, 1))
        out[name] = {
            "n": len(rs),
            "model": _stats(model - truth),
            "mismatch": _stats(mism - truth),
            "coverage": float(np.mean((lo <= truth) & (truth <= hi))),
            "ci_width": float(np.mean(hi - lo)),
            "tau_coverage": float(np.mean((tlo <= params["tau"]) & (params["tau"] <= thi))),
            "eta_coverage": float(np.mean((elo <= params["eta"]) & (params["eta"] <= ehi))),
            "tau_median": float(np.median([r["tau"] for r in rs])),
            "eta_median": float(np.median([r["eta"] for r in rs])),
            "seconds_mean": float(np.mean([r["seconds"] for r in rs])),
            "at_grid_edge": float(np.mean([bool(r.get("at_grid_edge")) for r in rs])),
        }
    return out


def table(summary: dict[str, Any]) -> str:
    head = (f"{'group':<14} {'n':>3}  {'model bias':>10} {'model rmse':>10} {'coverage':>8} "
            f"{'ci width':>8}  {'mism bias':>9} {'mism rmse':>9}  {'tau cov':>7} "
            f"{'eta cov':>7} {'at edge':>7} {'sec/fit':>7}")
    lines = [head, "-" * len(head)]
    for name, s in summary.items():
        lines.append(f"{name:<14} {s['n']:>3}  {s['model']['bias']:>+10.4f} "
                     f"{s['model']['rmse']:>10.4f} {s['coverage']:>8.2f} {s['ci_width']:>8.3f}"
                     f"  {s['mismatch']['bias']:>+9.4f} {s['mismatch']['rmse']:>9.4f}  "
                     f"{s['tau_coverage']:>7.2f} {s['eta_coverage']:>7.2f} "
                     f"{s['at_grid_edge']:>7.2f} {s['seconds_mean']:>7.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replicates", type=int, default=40)
    ap.add_argument("--questions", type=int, default=500)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--options", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pis", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    ap.add_argument("--other-rate", type=float, default=0.0)
    ap.add_argument("--k-eff", type=float, nargs="+", default=None,
                    help="fit as an exact-mode run, once per k_eff given")
    ap.add_argument("--exact-draws", type=int, default=400,
                    help="answers whose shares stand for an exact distribution")
    ap.add_argument("--opt", action="append", default=[],
                    help="PiFitOptions field=value (repeatable)")
    ap.add_argument("--out", type=Path, default=Path("pi_coverage.json"))
    args = ap.parse_args(argv)
    opts = _parse_opts(args.opt)
    t0 = time.perf_counter()
    result = run(args.replicates, args.questions, args.samples, args.options, args.seed,
                 args.pis, opts, args.other_rate, args.k_eff, args.exact_draws)
    result["config"] = {k: v for k, v in vars(args).items() if k != "out"}
    result["config"]["seconds_total"] = time.perf_counter() - t0
    print()
    print(table(result["summary"]))
    print(f"\ntotal {result['config']['seconds_total']:.0f}s; truth = nominal pi; "
          f"tau/eta truth = simulator defaults")
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
