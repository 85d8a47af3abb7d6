"""docs/results.md and the committed result files agree (issue 18, point 9): every table of
the page is written by scripts/results_tables.py from the files under docs/results/ and
bench/results/, and this test fails when one of them changes without the other."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tables():
    spec = importlib.util.spec_from_file_location("results_tables",
                                                  ROOT / "scripts" / "results_tables.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_table_of_the_page_comes_from_the_files() -> None:
    tables = _tables()
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    assert tables.update(page, ROOT) == page, (
        "docs/results.md disagrees with the result files: run "
        "`python scripts/results_tables.py`")
    # every table of the page sits inside a marked block
    inside = "".join(m.group(0) for m in tables._BLOCK.finditer(page))
    outside = tables._BLOCK.sub("", page)
    assert not re.search(r"^\|", outside, re.MULTILINE), "a table without markers"
    assert inside.count("\n|") > 20


def test_a_changed_file_makes_the_page_stale(tmp_path: Path) -> None:
    tables = _tables()
    for rel in ("docs/results", "bench/results"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    path = tmp_path / "docs/results/bmlama-exact/diagnosis.json"
    diag = json.loads(path.read_text(encoding="utf-8"))
    diag["accuracy"]["fr"]["estimate"] = 0.123
    path.write_text(json.dumps(diag), encoding="utf-8")
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    new = tables.update(page, tmp_path)
    assert new != page and "| fr | 0.123 [" in new


def test_an_unknown_table_is_refused() -> None:
    with pytest.raises(KeyError):
        _tables().update("<!-- table:nope -->\n| a |\n<!-- /table:nope -->\n", ROOT)
