"""Coverage of ``xlgap sample --until-ci``'s stopping rule on the simulator.

A population of simulated items fixes the truth (pooled transfer over all of them); each
study draws a data set from it, takes items look by look and stops the first time the
interval is narrow enough. Two rules on the same studies: *naive* (the 95% interval at
every look) and *bonferroni* (each look's interval at level 1 - 0.05 / L for the L
planned looks, what ``--until-ci`` uses); two look schedules: the doubling one of
``--until-ci`` (30, 60, 120, ...) and batches of 10 items (many looks, where a naive stop
errs most). Coverage is the share of studies whose interval at the stop holds the truth.

Usage: python bench/sequential_coverage.py [--runs 400]
Writes bench/results/sequential_coverage.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xlgap.io import dump_json
from xlgap.stats import sequential


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=400)
    ap.add_argument("--target", type=float, default=0.05)
    args = ap.parse_args()
    out = {}
    schedules = {"doubling from 30": sequential.look_sizes(1000),
                 "batches of 10": [*range(10, 1000, 10), 1000]}
    for schedule, sizes in schedules.items():
        res = sequential.coverage(target=args.target, runs=args.runs, data_items=1000,
                                  population=4000, n_boot=500, sizes=sizes)
        out[schedule] = res
        print(schedule, f"{len(sizes)} looks", json.dumps(res["rules"]))
    dump_json(out, Path("bench/results/sequential_coverage.json"), indent=1)


if __name__ == "__main__":
    main()
