"""``xlgap report``: one self-contained HTML page of real results (a simulated run, a
sampled run with its look inside, an intervention comparison), tolerant of partial and
unknown files, and checked as a person sees it: opened in headless Chromium, with a
screenshot, no script errors and every figure drawn."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from markupsafe import escape

import xlgap.cli
from xlgap.models import register_backend
from xlgap.report.html import discover, write_report
from xlgap.stats.simulate import simulate_run

register_backend("fake", "fake_backend:make")
register_backend("tinyhf", "test_report:make_tiny_hf")

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"),
            ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo")]


def make_tiny_hf(name: str = "", **options: object):
    """Registry factory for ``--model tinyhf:x``: the tiny random Gemma of conftest."""
    from conftest import make_tiny_gemma, make_tokenizer
    from xlgap.models.hf import HFBackend

    tok = make_tokenizer()
    return HFBackend(make_tiny_gemma(len(tok)), tok, name="tiny-gemma", batch_size=4)


def _cli(*args: str) -> None:
    assert xlgap.cli.run(list(args)) == 0, args


def _diagnose(run_dir: Path, *, n_boot: int, seed: int) -> None:
    """``xlgap diagnose``, as a user runs it: diagnosis.json with its verdict, and plots."""
    _cli("diagnose", str(run_dir), "--n-boot", str(n_boot), "--seed", str(seed))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    """Real outputs of the commands, small: two simulated runs (variance and bias), a
    demo-like directory (a sampled run with ``inside/`` in it) on the tiny model, and an
    intervention comparison on the fake model."""
    root = tmp_path_factory.mktemp("results")
    store = str(root / "store")
    variance = simulate_run(root / "sim-variance", pi=0.9, questions=200, samples=10, seed=1)
    _diagnose(variance, n_boot=100, seed=1)
    bias = simulate_run(root / "sim-bias", pi=0.2, questions=150, samples=10, seed=2,
                        targets=("t1", "t2"))
    _diagnose(bias, n_boot=100, seed=2)
    # A second model: the run.json model label is free text (docs/run-format.md).
    meta = json.loads((bias / "run.json").read_text())
    (bias / "run.json").write_text(json.dumps({**meta, "model": "simulated-bias"}))
    demo = root / "demo"
    _cli("sample", "--model", "tinyhf:x", "--limit", "8", "--targets", "fr,de", "--samples",
         "3", "--n-boot", "50", "--store", store, "--out", str(demo), "--no-progress")
    _cli("inside", "--model", "tinyhf:x", "--limit", "8", "--targets", "fr,de", "--k", "3",
         "--shots", "1", "--store", store, "--out", str(demo / "inside"), "--no-progress")
    data = root / "capitals"
    data.mkdir()
    cands = ",".join(c for _, c in CAPITALS)
    for lang, pattern in (("en", "The capital of {} is <mask>."),
                          ("fr", "La capitale de {} est <mask>.")):
        rows = ["Prompt\tAns\tCandidate Ans\tSubject"]
        rows += [f"{pattern.format(country)}\t{city}\t{cands}\t{country}"
                 for country, city in CAPITALS]
        (data / f"{lang}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    iv = root / "intervene"
    _cli("intervene", "--model", "fake:x", "--data", str(data), "--strategies",
         "baseline,tren-1", "--samples", "2", "--n-boot", "50", "--store", store, "--out",
         str(iv), "--no-progress")
    return {"root": root, "variance": variance, "bias": bias, "demo": demo, "iv": iv}


def _pngs_under(*dirs: Path) -> list[Path]:
    found = []
    for d in dirs:
        for base, subdirs, files in os.walk(d):
            subdirs[:] = [s for s in subdirs if s != "hidden"]
            found += [Path(base) / f for f in files if f.endswith(".png")]
    return found


@pytest.fixture(scope="module")
def report(results, tmp_path_factory) -> Path:
    dirs = [results[k] for k in ("variance", "bias", "demo", "iv")]
    out = tmp_path_factory.mktemp("report") / "report.html"
    return write_report([*dirs, results["root"] / "no-such-dir"], out, "Test report")


def test_report_holds_every_result_figure_and_verdict(results, report):
    page = report.read_text(encoding="utf-8")
    assert "<title>Test report</title>" in page
    # one verdict card per model, with the diagnosis' own verdict sentence
    for model in ("simulated", "simulated-bias", "tinyhf:x", "fake:x"):
        assert f"<h3>{model}</h3>" in page, model
    for run in ("variance", "bias"):
        diag = json.loads((results[run] / "diagnosis.json").read_text())
        assert str(escape(diag["verdict"])) in page
        pi = diag["pi"]["model"]
        assert f"{pi['estimate']:.2f} [{pi['ci'][0]:.2f}, {pi['ci'][1]:.2f}]" in page
    assert "(simulated with true pi 0.90, realised 0.91)" in page
    assert "transfer" in page and "95% CI" in page
    # what helped, where the languages share representations
    assert "helped most" in page or "no strategy beat baseline" in page
    assert "Interlingual Local Overlap (ILO) by layer" in page and "Logit lens" in page
    # every PNG the commands wrote is embedded once; the comparison of runs, which no
    # command draws, is drawn here with the same engine (matplotlib, as SVG)
    pngs = _pngs_under(results["variance"], results["bias"], results["demo"], results["iv"])
    assert len(pngs) >= 10
    assert page.count('src="data:image/png;base64,') == len(pngs)
    assert page.count('<svg class="chart"') == 1
    # runs side by side, sortable tables
    assert "Side by side" in page and 'class="data sortable"' in page
    # provenance: commands and versions
    # the diagnosis of a simulated run was made by ``xlgap diagnose``, as recorded
    assert f"xlgap diagnose {results['variance']} --n-boot 100 --seed 1" in page
    assert "xlgap intervene --model fake:x" in page
    assert "xlgap sample --model tinyhf:x" in page
    assert "(this result is part of that run)" in page  # demo/inside belongs to demo/
    assert "xlgap 0.1.0" in page or "xlgap</dt>" in page
    # the missing directory is a note, not an error
    assert "no-such-dir: not found" in page


def test_report_fetches_nothing(report):
    page = report.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # matplotlib's SVG refers to its own clip paths
    assert not re.search(r"<script[^>]+src=", page)


def test_the_demo_inside_directory_is_attributed_to_its_model(results):
    artifacts, _ = discover([results["demo"]])
    kinds = {a.kind: a for a in artifacts}
    assert set(kinds) == {"run", "inside"}
    assert kinds["inside"].model == "tinyhf:x" and kinds["inside"].data == "builtin"
    assert kinds["inside"].owner is kinds["run"]


def test_partial_and_unknown_files_become_notes(results, tmp_path):
    d = tmp_path / "odd"
    shutil.copytree(results["variance"], d / "run")
    diag = json.loads((d / "run" / "diagnosis.json").read_text())
    for key in ("pi", "confidence_vs_agreement", "mode_accuracy"):
        diag.pop(key)
    diag["pairs"]["t1"].pop("ensembling")
    (d / "run" / "diagnosis.json").write_text(json.dumps(diag))
    (d / "undiagnosed").mkdir()
    shutil.copy(results["variance"] / "run.json", d / "undiagnosed" / "run.json")
    (d / "steer").mkdir()
    # steering.json is written by a command still being built: its shape is unknown here
    (d / "steer" / "steering.json").write_text(json.dumps({
        "format": "xlgap-steering/1", "model": "tinyhf:x",
        "alphas": {"0": {"transfer": {"estimate": 0.31, "ci": [0.2, 0.4]}, "accuracy": 0.5},
                   "4": {"transfer": {"estimate": 0.44, "ci": [0.3, 0.55]}, "accuracy": 0.6}},
        "layers": [3, 4]}))
    (d / "steer" / "finetune.json").write_text('{"format": "xlgap-finetune/1", "loss": [')
    (d / "future").mkdir()
    (d / "future" / "result.json").write_text(json.dumps({"format": "xlgap-future/9",
                                                         "numbers": list(range(40))}))
    (d / "iv").mkdir()
    (d / "iv" / "interventions.json").write_text(json.dumps(["not", "an", "object"]))
    (d / "inside").mkdir()
    (d / "inside" / "ilo.json").write_text(json.dumps({"layers": [{"layer": 0}, "junk"]}))
    (d / "empty").mkdir()
    page = write_report([d], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "not diagnosed yet" in page
    assert "no verdict" in page or "pi" in page
    assert "highest transfer: 4 (0.440) among 2 alphas" in page
    assert "0.440 [0.300, 0.550]" in page
    assert "finetune.json: not valid JSON" in page
    assert "xlgap-future/9" in page and "40 numbers, 0 to 39" in page
    assert "interventions.json: not a JSON object" in page
    assert "figure ilo.png could not be drawn from the data" in page
    empty = write_report([d / "empty"], tmp_path / "e.html").read_text(encoding="utf-8")
    assert "No xlgap results were found" in empty


def test_report_shows_steering_results(tmp_path):
    from xlgap.cli.registry import find_command

    if find_command("steer") is None:
        pytest.skip("this xlgap has no steer command yet")
    out = tmp_path / "steer"
    _cli("steer", "--model", "tinyhf:x", "--limit", "30", "--targets", "fr,de", "--layers",
         "1,2", "--alphas", "1", "--n-boot", "30", "--store", str(tmp_path / "store"),
         "--out", str(out), "--no-progress")
    page = write_report([out], tmp_path / "r.html").read_text(encoding="utf-8")
    result = json.loads((out / "steering.json").read_text())
    assert "<h3>tinyhf:x</h3>" in page and "Steering: tinyhf:x on builtin" in page
    assert f"steering toward {result['best']['direction']}" in page
    assert "Held-out test items: the best setting chosen on dev" in page
    assert page.count('src="data:image/png;base64,') == len(_pngs_under(out))
    assert "xlgap steer --model tinyhf:x" in page


def test_report_command(results, tmp_path, capsys):
    out = tmp_path / "cmp.html"
    code = xlgap.cli.run(["report", "--dirs", f"{results['variance']},{results['bias']}",
                          "--out", str(out), "--title", "two runs"])
    assert code == 0 and "<title>two runs</title>" in out.read_text(encoding="utf-8")
    assert str(out) in capsys.readouterr().err
    code = xlgap.cli.run(["report", "--dirs", str(results["iv"])])
    assert code == 0 and (results["iv"] / "report.html").exists()
    with pytest.raises(SystemExit) as exc:
        xlgap.cli.main(["report"])
    assert exc.value.code == 2
    assert "give one or more result directories" in capsys.readouterr().err


# -- as a person sees it: headless Chromium ------------------------------------------------


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium: found on PATH, else installed from Debian (as root, time-boxed),
    else the test is skipped with the reason."""
    found = _find_chromium()
    if found:
        return found
    if os.environ.get("XLGAP_NO_BROWSER_INSTALL"):
        pytest.skip("chromium not found and XLGAP_NO_BROWSER_INSTALL is set")
    if not shutil.which("apt-get") or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("chromium not found, and it can only be installed here as root with "
                    "apt-get (Debian: apt-get install -y chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for cmd, limit in ((["apt-get", "update", "-qq"], 300),
                           (["apt-get", "install", "-y", "-qq", "-o",
                             "DPkg::Lock::Timeout=120", "chromium"], 900)):
            subprocess.run(cmd, check=True, capture_output=True, timeout=limit, env=env)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium not found and could not be installed ({exc})")
    found = _find_chromium()
    if not found:
        pytest.skip("chromium was installed but is not on PATH")
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Own profile directory: several browsers may run at once on a shared machine.
    return subprocess.run([chromium, "--headless", "--disable-gpu", "--no-sandbox",
                           "--disable-dev-shm-usage", "--hide-scrollbars",
                           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                           *args], capture_output=True, text=True, timeout=180)


def test_report_in_headless_chromium(chromium, report, tmp_path):
    url = report.resolve().as_uri()
    page = report.read_text(encoding="utf-8")
    expected = page.count('<img class="png"') + page.count('<svg class="chart"')
    dom = _browser(chromium, tmp_path / "profile", "--virtual-time-budget=5000",
                   "--dump-dom", url)
    head = re.search(r"<html[^>]*>", dom.stdout)
    assert head, f"no page rendered: {dom.stderr[-2000:]}"
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', head.group(0)))
    assert attrs.get("report-ready") == "1", "the page's script did not run to its end"
    assert attrs.get("errors") == "", f"script errors: {attrs.get('errors')}"
    assert attrs.get("broken-figures") == "", f"figures not drawn: {attrs['broken-figures']}"
    assert int(attrs["figures"]) == expected
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "rror" in line], console
    shot = tmp_path / "report.png"
    run = _browser(chromium, tmp_path / "profile", "--window-size=1280,2400",
                   f"--screenshot={shot}", url)
    assert shot.exists() and shot.stat().st_size > 20_000, run.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(str(shot))
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    keep = os.environ.get("XLGAP_REPORT_SCREENSHOT")
    if keep:  # for a person to look at
        shutil.copy(shot, keep)
