"""docs/python-api.md is run, block by block, as a user would paste it into a notebook.

Every ```python block of the page runs in one shared namespace, in order, inside a fresh
working directory, on the embedded model. A block that raises fails the test with the
block's number and first line, so the page cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def test_the_page_has_code_to_run():
    found = blocks()
    assert len(found) >= 5, "docs/python-api.md lost its code blocks"
    text = "\n".join(found)
    for step in ("xlgap.sample(", "xlgap.diagnose(", "xlgap.compare_strategies(", "apply(",
                 "xlgap.run_steering(", "xlgap.look_inside(", "xlgap.write_report("):
        assert step in text, f"the Python API page no longer shows {step}"
    # one import: the study reaches everything through the top level
    imports = re.findall(r"^(?:from|import) (\S+)", text, re.M)
    assert set(imports) <= {"xlgap", "pandas"}, imports


@pytest.mark.slow
def test_every_code_block_of_the_python_api_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__python_api_page__"}
    for number, code in enumerate(blocks(), 1):
        try:
            exec(compile(code, f"{PAGE.name} block {number}", "exec"), namespace)
        except Exception as exc:  # name the block, keep the traceback
            first = code.strip().splitlines()[0]
            raise AssertionError(f"block {number} ({first!r}) raised {exc!r}") from exc
    # The page ends with a report that names every result it made.
    page = (tmp_path / "study" / "report.html").read_text(encoding="utf-8")
    for kind in ("diagnos", "interventions", "steering", "ilo"):
        assert kind in page.lower()
    # the study's table: every kind, one schema
    study = namespace["study"]
    assert list(study.columns) == ["kind", "arm", "target", "metric", "estimate", "ci_low",
                                   "ci_high", "p", "n"]
    assert {"diagnosis", "interventions", "steering", "ilo", "similarity"} <= set(study.kind)
