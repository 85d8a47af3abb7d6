"""The worked example of docs/planning.md: plan a study from a 30-item pilot on the embedded
model, run the planned study, and compare planned with realised CI half-widths.

Items are BMLAMA-17 (``--data``, a directory of {lang}.tsv) in a seeded random order: the
pilot is the first 30, the planned run the first N (N from the plan, or ``--items``), so
both are random samples of the same set (the files are sorted by relation, so the first
items of the file would not be). Exact mode (candidate scores), zero shots (cloze).

    step 1: python bench/planning_example.py pilot   -> OUT/pilot, OUT/plan.json, plan.png
    step 2: python bench/planning_example.py run [--items N] -> OUT/run, OUT/comparison.json

Run it under the model lock (``flock /tmp/xlgap-model.lock ...``).

``--from-run DIR`` does the same without the model, from a finished run of it (the
committed ``docs/results/bmlama-exact``, 300 items): the pilot is 30 of its items drawn at
random, the planned run N others drawn at random (disjoint from the pilot), each written
as a run directory of its own.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from xlgap.cli.commands.plan import format_plan
from xlgap.cli.commands.sample import SampleConfig
from xlgap.cli.workspace import open_backend
from xlgap.data.loaders import load_dataset
from xlgap.io import dump_json
from xlgap.report.plots.planning import write_plan_plot
from xlgap.runs import load_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.plan_study import plan
from xlgap.stats.planning import pilot_quantities, predicted_halfwidth

TARGETS = ["es", "ru", "zh", "ar", "ja"]


def _dataset(path: str, seed: int):
    data = load_dataset(path, on_missing="skip")
    order = np.random.default_rng(seed).permutation(len(data))
    return replace(data, items=[data.items[i] for i in order])


def _make(data, out: Path, n: int) -> Path:
    backend = open_backend(SampleConfig(model="embedded"))
    options = SamplingOptions(exact=True, shots=0, chunk=64)
    return make_run(backend, replace(data, items=data.items[:n]), out, source="en",
                    targets=TARGETS, options=options, progress=False,
                    meta={"config": {"bench": "planning_example", "items": n}})


def _subset_run(src: Path, ids: list[str], dst: Path) -> Path:
    """A run directory holding ``ids`` of the run in ``src`` (its answers as they are)."""
    keep = set(ids)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "run.json").write_text((src / "run.json").read_text())
    for name in ("items.jsonl", "distributions.jsonl", "samples.jsonl"):
        if (src / name).exists():
            lines = [line for line in (src / name).read_text().splitlines()
                     if line.strip() and str(json.loads(line).get("id", json.loads(line)
                                                                 .get("item"))) in keep]
            (dst / name).write_text("\n".join(lines) + "\n")
    return dst


def _compare(interval, entry: dict, n: int) -> dict:
    """Planned (from the pilot's curve) against realised half-width on ``n`` items."""
    est, realised = interval(np.arange(n), 0)
    pred = predicted_halfwidth(entry["curve"], n)
    return {"pilot_estimate": entry["estimate"], "estimate": est,
            "planned_halfwidth": pred["halfwidth"], "range": pred["range"],
            "realised_halfwidth": realised,
            "within": (realised is not None
                       and pred["range"][0] <= realised <= pred["range"][1]),
            "items_needed": entry["items_needed"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("step", choices=("pilot", "run"))
    ap.add_argument("--data", default="/work/shared/data/bmlama17")
    ap.add_argument("--out", default="docs/results/planning")
    ap.add_argument("--ci", type=float, default=0.05)
    ap.add_argument("--items", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--from-run", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    if args.from_run:
        order = [str(i) for i in np.random.default_rng(args.seed).permutation(
            load_run(args.from_run).item_ids)]
    else:
        data = _dataset(args.data, args.seed)
    if args.step == "pilot":
        if args.from_run:
            _subset_run(Path(args.from_run), order[:30], out / "pilot")
        else:
            _make(data, out / "pilot", 30)
        result = plan(out / "pilot", ci=args.ci, effect=0.1, power=0.8)
        result.save(out / "plan.json")
        write_plan_plot(result, out)
        print(format_plan(result))
        return
    pilot_plan = json.loads((out / "plan.json").read_text())
    n = args.items or pilot_plan["run"]["items"]
    run = load_run(_subset_run(Path(args.from_run), order[30:30 + n], out / "run")
                   if args.from_run else _make(data, out / "run", n))
    rows = {}
    for qty in pilot_quantities(run, pi=True, n_boot=1000)[0]:
        entry = pilot_plan["metrics"].get(qty.name)
        if entry is None or not entry.get("curve") or qty.pooled is None:
            continue
        rows[qty.name] = _compare(qty.pooled, entry, run.n_items)
        rows[qty.name]["per_target"] = {
            t: _compare(fn, entry["per_target"][t], run.n_items)
            for t, fn in qty.per_target.items() if entry["per_target"].get(t, {}).get("curve")}
    dump_json({"items": run.n_items, "ci_asked": pilot_plan["asked"]["ci"], "metrics": rows},
              out / "comparison.json", indent=1)
    print(f"{'metric':<18}{'planned':>9} {'range':>17} {'realised':>9}  within")
    for name, r in rows.items():
        for label, x in [(name, r), *((f"  {t}", v) for t, v in r["per_target"].items())]:
            print(f"{label:<18}{x['planned_halfwidth']:9.4f} [{x['range'][0]:.4f}, "
                  f"{x['range'][1]:.4f}] {x['realised_halfwidth']:9.4f}  {x['within']}")


if __name__ == "__main__":
    main()
