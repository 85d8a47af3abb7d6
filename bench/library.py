"""What a study pays before its first step: ``import xlgap`` and getting the study's names.

Each measurement is a fresh interpreter (``python -X importtime`` is not needed: wall time of
the import statements, median of ``--repeats``), on the same machine in one call, so the
ratios compare like with like. ``--before SRC`` times another checkout's ``src`` (e.g. the
code before the lazy top level) the same way.

* ``import xlgap``: the package alone;
* ``study names``: the names ``docs/python-api.md`` uses (``xlgap.<name>`` after; before,
  the 14 names from 10 modules the page imported).

Run: ``python bench/library.py [--before /path/to/old/src]``; writes
``bench/results/library.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

AFTER = {"import xlgap": "import xlgap",
         "study names": "import xlgap\nfor n in ('load_backend', 'load_dataset', 'sample', "
                        "'diagnose', 'compare_strategies', 'train_steering_vectors', "
                        "'run_steering', 'look_inside', 'write_report', 'load_result'):\n"
                        "    getattr(xlgap, n)"}
BEFORE = {"import xlgap": "import xlgap",
          "study names": "from xlgap.data import load_dataset\n"
                         "from xlgap.models import load_backend\n"
                         "from xlgap.runs import load_run\n"
                         "from xlgap.sampling import SamplingOptions, make_run\n"
                         "from xlgap.stats.diagnose import diagnose\n"
                         "from xlgap.results import Result\n"
                         "from xlgap.interventions.experiment import run_interventions\n"
                         "from xlgap.interventions.strategies import StrategyOptions\n"
                         "from xlgap.interventions.steering import (SteerOptions, "
                         "SteeringResult, run_steering, train_steering_vectors)\n"
                         "from xlgap.report.html import write_report"}


def timed(code: str, src: Path) -> float:
    probe = ("import time\nt = time.perf_counter()\n" + code
             + "\nprint(time.perf_counter() - t)")
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = {}
    for name, code in AFTER.items():
        rows[name] = {"after_s": statistics.median(timed(code, SRC)
                                                   for _ in range(args.repeats))}
        if args.before is not None:
            before = statistics.median(timed(BEFORE[name], args.before)
                                       for _ in range(args.repeats))
            rows[name].update(before_s=before, ratio=rows[name]["after_s"] / before)
    for name, row in rows.items():
        print(f"{name:<14} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    out = Path(__file__).parent / "results" / "library.json"
    out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
