"""The diagnosis summary and the report's run section lead with per-response transfer
(issue 24, point 1, the presentation side): the mode-based figures are labelled
ensembled and the difference is shown as what ensembling adds; files without the
per-response metrics still render."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from xlgap.report.sections.run import pair_columns, transfer_line
from xlgap.runs import load_run
from xlgap.stats.diagnose import diagnose, format_summary
from xlgap.stats.simulate import simulate_run


@pytest.fixture(scope="module")
def diag(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path: Path = tmp_path_factory.mktemp("lead") / "run"
    run = load_run(simulate_run(path, pi=0.9, questions=80, samples=10, seed=5))
    return diagnose(run, n_boot=50, fit_model=False)


def _with_response(diag: dict, value: float) -> dict:
    d = copy.deepcopy(diag)
    entry = {"estimate": value, "ci": [value - 0.03, value + 0.03], "n": 80}
    for scope in (d["overall"], *d["pairs"].values()):
        scope["response_transfer"] = dict(entry)
    d["metrics"] = {"response_transfer": {"label": "transfer (per response)"},
                    **d["metrics"]}
    return d


def test_summary_leads_with_per_response_transfer(diag: dict) -> None:
    d = _with_response(diag, 0.412)
    text = format_summary(d)
    ens = d["overall"]["transfer"]["estimate"]
    first = next(line for line in text.splitlines() if "transfer" in line)
    assert first.startswith("transfer per response 0.412")
    assert f"{ens - 0.412:+.3f}" in text  # what ensembling adds to one answer
    header = next(line for line in text.splitlines() if line.startswith("pair "))
    assert header.index("transfer (per response)") < header.index("transfer (ensembled)")


def _without_response(diag: dict) -> dict:
    """A diagnosis written before the per-response metrics existed."""
    d = copy.deepcopy(diag)
    for scope in (d["overall"], d["metrics"], *d["pairs"].values()):
        for key in [k for k in scope if k.startswith("response_")]:
            del scope[key]
    return d


def test_summary_without_per_response_metrics_says_so(diag: dict) -> None:
    text = format_summary(_without_response(diag))
    assert "per-response transfer not in this file" in text
    assert "transfer (ensembled)" in text and "(per response)" not in text


def test_report_orders_and_labels_the_columns(diag: dict) -> None:
    d = _with_response(diag, 0.412)
    cols = pair_columns(d)
    assert cols[0][0] == "response_transfer"
    labels = dict(cols)
    assert "ensembled" in labels["transfer"] and "ensembled" in labels["agreement"]
    line = transfer_line({"response_transfer": d["overall"]["response_transfer"],
                          "transfer": d["overall"]["transfer"]})
    assert line.startswith("transfer per response 0.412") and "ensembled" in line
    assert transfer_line({"transfer": d["overall"]["transfer"]}).startswith(
        "transfer (ensembled")


def test_report_shows_the_l2_share_beside_its_null(diag: dict) -> None:
    """The simulated run has candidate embeddings: its L2 share and the permutation null
    are in the file and the run section tabulates them, p at its floor as a bound."""
    from xlgap.report.sections.run import _l2_share

    share = diag["overall"]["variance_share_l2"]
    assert share["null"]["n"] > 0 and share["p_floor"] == pytest.approx(1 / 200)
    (table,) = _l2_share(diag)
    assert [row[0].text for row in table.rows] == ["t1", "overall"]
    p = table.rows[-1][3].text
    assert p == "<= 0.005" if share["p"] <= share["p_floor"] else p == f"{share['p']:.3f}"
