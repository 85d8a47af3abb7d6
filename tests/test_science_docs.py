"""docs/results.md and the committed result files agree (issue 18, point 9): every table of
the page is written by scripts/results_tables.py from the files under docs/results/ and
bench/results/, and this test fails when one of them changes without the other. Numbers
quoted in the prose are too (issue 24, point 9): inside a ``<!-- checked -->`` region
every decimal number and percentage is an inline ``<!-- at:FILE#KEY|FORMAT -->`` figure
written from its file."""

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


_CHECKED = re.compile(r"^<!-- checked -->\n(.*?)^<!-- /checked -->$", re.DOTALL | re.MULTILINE)
_NUMBER = re.compile(r"(?<![\w.-])[-+]?\d+\.\d+|\d+(?:\.\d+)? ?%")


def test_numbers_in_checked_prose_come_from_the_files() -> None:
    """Failing first (no region was checked): a number typed into the prose of the
    bmlama-exact and interventions-exact sections, instead of read from the files."""
    tables = _tables()
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    regions = _CHECKED.findall(page)
    assert len(regions) >= 2
    for heading in ("## Bias or variance", "## Prompt interventions"):
        section = page.split(heading, 1)[1].split("\n## ", 1)[0]
        assert _CHECKED.search(section), f"{heading}: no checked prose"
    # the interventions section is checked whole, below its commands
    section = page.split("## Prompt interventions", 1)[1].split("\n## ", 1)[0]
    assert section.split("```\n\n", 2)[-1].startswith("<!-- checked -->")
    for region in regions:
        assert tables._INLINE.search(region)
        # tables are checked whole by the test above; the prose around them here
        bare = _NUMBER.findall(tables._INLINE.sub("", tables._BLOCK.sub("", region)))
        assert not bare, f"numbers typed into checked prose, not read from a file: {bare}"


def test_a_changed_file_makes_a_quoted_number_stale(tmp_path: Path) -> None:
    tables = _tables()
    for rel in ("docs/results", "bench/results"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    path = tmp_path / "docs/results/interventions-exact/interventions.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["strategies"]["tea"]["response_transfer"]["estimate"] = 0.9123
    data["strategies"]["vote-5"]["vs_baseline"]["response_transfer"]["p"] = 0.2
    path.write_text(json.dumps(data), encoding="utf-8")
    page = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    new = tables.update(page, tmp_path)
    assert new != page
    assert "tea.response_transfer|pct1 -->91.2<!-- /at -->" in new
    assert "response_transfer.p|p -->0.2<!-- /at -->" in new


def test_a_quoted_number_with_no_value_is_refused() -> None:
    tables = _tables()
    with pytest.raises(KeyError, match=r"no 'overall\.nope'"):
        tables.update("<!-- at:docs/results/bmlama-exact/diagnosis.json#overall.nope|.3f -->"
                      "1<!-- /at -->", ROOT)
