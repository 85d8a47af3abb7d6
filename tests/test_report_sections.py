"""The report's sections, template and figures: dispatch on the ``format`` tag (file names
for older files), escaping of every string from a result file, every figure once, wide
tables in a scrolling box, one formatter for estimates and p-values, and a report that
reads files only."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xlgap.report.format import fmt_estimate, fmt_p, p_floor, pct
from xlgap.report.html import discover, write_report
from xlgap.report.sections import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
COMMITTED = [RESULTS / name for name in ("bmlama-exact", "interventions-exact", "steering",
                                         "finetune")]


def _write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _pngs(*dirs: Path) -> list[Path]:
    found = []
    for d in dirs:
        for base, subdirs, files in os.walk(d):
            subdirs[:] = [s for s in subdirs if s != "hidden"]
            found += [Path(base) / f for f in files if f.endswith(".png")]
    return found


# -- dispatch ------------------------------------------------------------------------------


def test_sections_dispatch_on_the_format_tag_then_the_file_name(tmp_path):
    steer = json.loads((RESULTS / "steering" / "steering.json").read_text())
    # new files: the tag decides, whatever the name
    _write(tmp_path / "a" / "my-steering-run.json", {**steer, "format": "steering"})
    _write(tmp_path / "b" / "layers.json", {"format": "ilo", "layers": []})
    # older files: the "xlgap-KIND/1" tag, or the file name when there is no tag
    _write(tmp_path / "c" / "anything.json", {"format": "xlgap-interventions/1",
                                              "strategies": {}})
    _write(tmp_path / "d" / "finetune.json", {"runs": []})
    # a tag no section knows: shown generically; an untagged unknown file: not a result
    _write(tmp_path / "e" / "result.json", {"format": "xlgap-future/9", "x": 1})
    _write(tmp_path / "f" / "notes.json", {"x": 1})
    artifacts, notes = discover([tmp_path])
    kinds = {a.dir.name: a.kind for a in artifacts}
    assert kinds == {"a": "steering", "b": "inside", "c": "interventions", "d": "finetune",
                     "e": "extra"}, kinds
    assert not notes
    page = write_report([tmp_path], tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"steering toward {steer['best']['direction']}" in page  # the steering section
    assert re.search(r'data-kind="steering"><h3>Steering: ', page)


def test_every_kind_has_one_section_with_its_tags():
    tags = [t for s in SECTIONS.values() for t in s.formats]
    assert len(tags) == len(set(tags))
    for tag in ("run", "diagnosis", "interventions", "steering", "finetune", "ilo",
                "similarity", "logit_lens", "consistency", "study"):
        assert tag in tags, tag
    orders = [s.order for s in SECTIONS.values()]
    assert len(orders) == len(set(orders))


# -- escaping ------------------------------------------------------------------------------


def test_strings_from_result_files_are_escaped(tmp_path):
    evil = "<script>alert('x')</script>"
    run = json.loads((RESULTS / "bmlama-exact" / "run.json").read_text())
    diag = json.loads((RESULTS / "bmlama-exact" / "diagnosis.json").read_text())
    _write(tmp_path / "run" / "run.json", {**run, "model": evil, "strategy": evil})
    _write(tmp_path / "run" / "diagnosis.json", {**diag, "verdict": f"bias {evil}"})
    _write(tmp_path / "x" / "result.json", {"format": "xlgap-odd/1", "summary": evil,
                                            "model": evil, "a": {"t": 1}, "b": {"t": 2}})
    page = write_report([tmp_path], tmp_path / "r.html", title=evil).read_text("utf-8")
    assert "alert(" in page  # the text is there ...
    assert "<script>alert(" not in page  # ... but never as markup
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert "bias &lt;script&gt;" in page  # the verdict the diagnosis wrote
    # the raw JSON for download keeps the string, with "<" written so it cannot end the
    # <script type="application/json"> element that holds it
    assert "\\u003cscript>alert('x')\\u003c/script>" in page
    assert page.count("<script") == page.count("</script>")


# -- verdicts are read, never recomputed ---------------------------------------------------


def test_the_verdict_is_read_from_the_diagnosis(tmp_path):
    run = (RESULTS / "bmlama-exact" / "run.json").read_text()
    diag = json.loads((RESULTS / "bmlama-exact" / "diagnosis.json").read_text())
    diag.pop("verdict", None)  # as a file written before diagnoses recorded it
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(run)
    _write(tmp_path / "old" / "diagnosis.json", diag)
    page = write_report([tmp_path / "old"], tmp_path / "o.html").read_text("utf-8")
    assert 'class="verdict"' not in page.split('id="verdicts"')[1].split("</section>")[1]
    assert "gap</b> on" in page  # the numbers are still there
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "run.json").write_text(run)
    _write(tmp_path / "new" / "diagnosis.json",
           {**diag, "verdict": {"text": "variance: ensembling closes the gap", "kind": "x"}})
    page = write_report([tmp_path / "new"], tmp_path / "n.html").read_text("utf-8")
    assert '<p class="verdict">variance: ensembling closes the gap</p>' in page
    assert "<b>variance: ensembling closes the gap</b>" in page  # on the model's card


# -- figures: one engine, each figure once --------------------------------------------------


def _figures(page: str) -> list[tuple[str, str]]:
    """(section anchor, figure name) of every figure on the page."""
    out = []
    for sec in re.finditer(r'<section class="artifact" id="([^"]+)"(.*?)</section>', page,
                           re.S):
        out += [(sec.group(1), name) for name in re.findall(r'data-figure="([^"]+)"',
                                                             sec.group(2))]
    return out


def test_every_figure_appears_once(tmp_path):
    page = write_report(COMMITTED, tmp_path / "r.html").read_text(encoding="utf-8")
    pngs = _pngs(*COMMITTED)
    assert len(pngs) == 10
    for png in pngs:  # each PNG a command wrote, embedded once
        b64 = base64.b64encode(png.read_bytes()).decode("ascii")
        assert page.count(b64) == 1, png
    figures = _figures(page)
    assert len(figures) == len(set(figures)) == len(pngs)
    assert page.count('<svg class="chart"') == 0  # nothing redrawn next to its PNG
    assert page.count("<figure") == len(pngs)


def test_figures_without_a_png_are_drawn_once_as_svg(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    for name in ("run.json", "diagnosis.json"):  # the diagnosis without its plots/
        shutil.copy(RESULTS / "bmlama-exact" / name, d / name)
    page = write_report([d], tmp_path / "r.html").read_text(encoding="utf-8")
    assert '<img class="png"' not in page  # no PNG was written, none is shown
    names = [name for _, name in _figures(page)]
    assert sorted(names) == ["accuracy.png", "confidence.png", "ensembling.png", "pi.png"]
    assert page.count('<svg class="chart"') == 4


# -- wide tables ---------------------------------------------------------------------------


def test_every_table_is_inside_a_scrolling_box(tmp_path):
    page = write_report(COMMITTED, tmp_path / "r.html").read_text(encoding="utf-8")
    tables = re.findall(r"(.{0,40})<table", page)
    assert tables
    assert all(before.endswith('<div class="tablewrap">') for before in tables), tables
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert re.search(r"\.tablewrap\{[^}]*overflow-x:auto", css)


def test_wide_tables_stay_on_the_page_in_chromium(tmp_path):
    from test_report import _browser, _find_chromium

    chromium = _find_chromium()
    if chromium is None:
        pytest.skip("chromium not found (test_report.py installs it where it can)")
    report = write_report(COMMITTED, tmp_path / "r.html")
    dom = _browser(chromium, tmp_path / "profile", "--window-size=1400,1200",
                   "--virtual-time-budget=5000", "--dump-dom", report.resolve().as_uri())
    head = re.search(r"<html[^>]*>", dom.stdout)
    assert head, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', head.group(0)))
    assert attrs.get("report-ready") == "1" and attrs.get("errors") == ""
    assert attrs.get("broken-figures") == ""
    assert int(attrs["page-width"]) <= 1400  # the interventions table scrolls in its box


# -- one formatter -------------------------------------------------------------------------


def test_one_formatter_for_estimates_and_p_values():
    x = {"estimate": 0.8123, "ci": [0.7461, 0.8702]}
    assert fmt_estimate(x) == "0.812 [0.746, 0.870]"
    assert fmt_estimate(x, 2) == "0.81 [0.75, 0.87]"
    assert fmt_estimate(x, percent=True) == "81.2 [74.6, 87.0]"
    assert fmt_estimate({**x, "chance": 0.25}) == "0.812 [0.746, 0.870], chance 0.250"
    assert fmt_estimate({"estimate": 0.5, "ci": [None, None]}) == "0.500"
    assert fmt_estimate(None) == fmt_estimate(float("nan")) == "-"
    assert fmt_estimate(120) == "120" and pct(x) == "81.2%"
    # p-values: the bootstrap's resolution floor 2 / (n_boot + 1) prints as "< floor"
    assert p_floor(999) == pytest.approx(0.002)
    assert fmt_p(2 / 1000, n_boot=999) == "< 0.002"
    assert fmt_p(2 / 1001, n_boot=1000) == "< 0.002"
    assert fmt_p(2 / 101, n_boot=100) == "< 0.02"
    assert fmt_p(0.0341, n_boot=1000) == "0.034"
    assert fmt_p(0.0004) == "< 0.001" and fmt_p(0.5) == "0.500"
    assert fmt_p(None) == fmt_p(float("nan")) == "-"
    assert fmt_p({"p": 0.01}) == "0.010"


# -- the report reads files only -----------------------------------------------------------


def test_the_report_imports_no_analysis_or_command_code(tmp_path):
    code = ("import sys\nfrom xlgap.report.html import write_report\n"
            f"write_report({[str(p) for p in COMMITTED]!r}, {str(tmp_path / 'r.html')!r})\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['xlgap', 'study'],"
            " ['xlgap', 'stats'], ['xlgap', 'cli'], ['xlgap', 'interventions'],"
            " ['xlgap', 'representations'], ['xlgap', 'workspace'], ['xlgap', 'config']))\n"
            "print(bad)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout
