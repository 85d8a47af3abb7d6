"""examples/quickstart.ipynb is executed as a user runs it, in a fresh kernel (nbclient), on
the embedded model: every cell must run, the results must show as tables and the report
inline."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "quickstart.ipynb"


def test_the_notebook_is_a_study_through_the_top_level():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    for step in ("xlgap.sample(", "xlgap.diagnose(", "xlgap.compare_strategies(",
                 "xlgap.look_inside(", "xlgap.write_report("):
        assert step in code
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit the notebook without outputs (the test makes them)"


@pytest.mark.slow
def test_the_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=1200, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails here, with its traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    shown = "\n".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "diagnosis</b> result" in shown  # a result shows as a table
    assert "<iframe srcdoc=" in shown and "xlgap quickstart" in shown  # the report inline
    assert (tmp_path / "study" / "report.html").exists()
