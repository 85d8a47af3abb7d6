"""``xlgap run STUDY.toml``: the schema's errors, a study end to end on fake and tiny
models (layout, resume, a failing step, skipped white-box steps, the report), the
command lines it records, and the progress lines it prints."""

from __future__ import annotations

import io
import json
import shlex
from pathlib import Path

import pytest

import xlgap.cli
from xlgap.cli.config import build_config
from xlgap.cli.registry import command_line, find_command
from xlgap.cli.study import load_study
from xlgap.errors import ConfigError
from xlgap.models import register_backend
from xlgap.progress import LineProgress, StepPlan, format_duration, progress_bar, progress_mode

register_backend("fake", "fake_backend:make")
register_backend("tinyhf", "test_study:make_tiny_hf")

CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"),
            ("Spain", "Madrid"), ("Japan", "Tokyo"), ("Egypt", "Cairo")]
FR = {"France": "la France", "Germany": "l'Allemagne", "Italy": "l'Italie",
      "Spain": "l'Espagne", "Japan": "le Japon", "Egypt": "l'Égypte"}


def make_tiny_hf(name: str = "", **options: object):
    """Registry factory for ``--model tinyhf:x``: the tiny random Gemma of conftest."""
    from conftest import make_tiny_gemma, make_tokenizer
    from xlgap.models.hf import HFBackend

    tok = make_tokenizer()
    return HFBackend(make_tiny_gemma(len(tok)), tok, name="tiny-gemma", batch_size=4)


@pytest.fixture
def bmlama(tmp_path) -> Path:
    """A small BMLAMA-style data set (en, fr), capitals with three candidates."""
    d = tmp_path / "capitals"
    d.mkdir()
    cands = ",".join(c for _, c in CAPITALS)
    en = ["Prompt\tAns\tCandidate Ans\tSubject"]
    fr = ["Prompt\tAns\tCandidate Ans\tSubject"]
    for country, city in CAPITALS:
        en.append(f"The capital of {country} is <mask>.\t{city}\t{cands}\t{country}")
        fr.append(f"La capitale de {FR[country]} est <mask>.\t{city}\t{cands}\t{country}")
    (d / "en.tsv").write_text("\n".join(en) + "\n", encoding="utf-8")
    (d / "fr.tsv").write_text("\n".join(fr) + "\n", encoding="utf-8")
    return d


def write_study(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
title = "test study"
store = "{store}"
[[models]]
model = "fake:x"
[[data]]
data = "{data}"
"""


# -- the schema ----------------------------------------------------------------------------


@pytest.mark.parametrize(("top", "sections", "expected"), [
    ("modles = 1", "[sample]", ["unknown key 'modles' in the study file", "allowed:",
                                "models", "analysis sections: sample"]),
    ("", "[sample]\nsampels = 3", ["unknown key 'sampels' in [sample]", "samples",
                                   "temperature"]),
    ("", "[sample]\nsamples = 'ten'", ["sample.samples must be a number", "'ten'"]),
    ("", "[sample]\nsamples = 0", ["fake-x/capitals/sample", "--samples must be at least 1"]),
    ("", "[sample]\nexact = 'yes'", ["sample.exact must be true or false"]),
    ("", "[inside]\npooling = 'max'", ["inside.pooling = 'max' is not allowed",
                                       "'mean', 'mean_no_bos', 'last'"]),
    ("analyses = ['sampel']", "", ["'sampel' is not an analysis",
                                   "sample, intervene, inside"]),
    ("analyses = ['sample']", "[inside]", ["section [inside] is not in analyses"]),
    ("", "[defaults]\nmodel = 'x'\n[sample]", ["unknown key 'model' in [defaults]", "seed"]),
    ("", "[defaults]\non_missing = 'drop'\n[sample]",
     ["defaults.on_missing = 'drop' is not allowed", "'fail', 'skip', 'keep'"]),
    ("", "", ["no analysis to run", "allowed: sample, intervene"]),
])
def test_schema_errors_name_the_key_and_the_allowed_values(tmp_path, bmlama, top, sections,
                                                           expected):
    # top-level keys go first: in TOML a key after [[data]] belongs to that table
    text = top + "\n" + BASE.format(store=tmp_path / "s", data=bmlama) + sections + "\n"
    with pytest.raises(ConfigError) as exc:
        load_study(write_study(tmp_path / "study.toml", text))
    for fragment in expected:
        assert fragment in str(exc.value), (fragment, str(exc.value))
    assert str(tmp_path / "study.toml") in str(exc.value)


def test_entry_errors(tmp_path, bmlama):
    bad_model_key = f"""
[[models]]
model = "fake:x"
temperature = 0.5
[[data]]
data = "{bmlama}"
[sample]
"""
    with pytest.raises(ConfigError, match=r"unknown key 'temperature' in models\[0\]; "
                                          r"allowed: .*base_url"):
        load_study(write_study(tmp_path / "a.toml", bad_model_key))
    missing = '[[models]]\nmodel = "fake:x"\n[[data]]\ndata = "no/such/dir"\n[sample]\n'
    with pytest.raises(ConfigError, match=r"no/such/dir.*does not exist"):
        load_study(write_study(tmp_path / "b.toml", missing))
    dup = (f'models = ["fake:x", "fake:x"]\n[[data]]\ndata = "{bmlama}"\n[sample]\n')
    with pytest.raises(ConfigError, match="share the directory name 'fake-x'"):
        load_study(write_study(tmp_path / "c.toml", dup))
    no_models = f'[[data]]\ndata = "{bmlama}"\n[sample]\n'
    with pytest.raises(ConfigError, match=r"no models; add at least one \[\[models\]\]"):
        load_study(write_study(tmp_path / "d.toml", no_models))


def test_missing_commands_are_reported_as_unavailable(tmp_path, bmlama):
    for name in ("steer", "finetune"):
        text = f"analyses = ['{name}']\n" + BASE.format(store=tmp_path / "s", data=bmlama)
        path = write_study(tmp_path / f"{name}.toml", text)
        if find_command(name) is None:
            with pytest.raises(ConfigError, match=f"analysis '{name}' is not available"):
                load_study(path)
        else:  # the command exists now: the study accepts it
            assert load_study(path).steps[0].analysis == name


def test_data_paths_resolve_beside_the_study_file(tmp_path, bmlama, monkeypatch):
    sub = tmp_path / "studies"
    sub.mkdir()
    path = write_study(sub / "s.toml", '[[models]]\nmodel = "fake:x"\n[[data]]\n'
                       'data = "../capitals"\n[sample]\n')
    monkeypatch.chdir(bmlama)  # not where ../capitals resolves
    study = load_study(path)
    assert Path(study.steps[0].config.data).resolve() == bmlama.resolve()
    assert study.out == Path("runs") / "s"


# -- running -------------------------------------------------------------------------------


STUDY = """
title = "two models, one data set"
store = "{store}"
analyses = ["sample", "intervene", "inside"]

[defaults]
seed = 1

[[models]]
name = "fake"
model = "fake:x"
analyses = ["sample", "intervene"]

[[models]]
model = "tinyhf:x"
analyses = ["inside"]

[[models]]
name = "api"
model = "openai:never-called"
base_url = "http://127.0.0.1:9/v1"
analyses = ["inside"]

[[data]]
data = "{data}"
targets = "fr"

[sample]
samples = 4
n_boot = 50

[intervene]
strategies = "baseline,tren-1"
samples = 1
n_boot = 50

[inside]
k = 2
t = 1
shots = 1
"""


def test_study_end_to_end_resume_and_report(tmp_path, bmlama, capsys):
    out = tmp_path / "out"
    path = write_study(tmp_path / "study.toml", STUDY.format(store=tmp_path / "store",
                                                              data=bmlama))
    code = xlgap.cli.run(["run", "--study", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    record = json.loads((out / "study.json").read_text())
    status = {(s["model"], s["analysis"]): s["status"] for s in record["steps"]}
    assert status == {("fake", "sample"): "done", ("fake", "intervene"): "done",
                      ("tinyhf-x", "inside"): "done", ("api", "inside"): "skipped"}
    assert record["status"] == "done" and record["versions"]["xlgap"]
    # one directory per (model, data, analysis), each with its step marker
    assert (out / "fake/capitals/sample/run.json").exists()
    assert (out / "fake/capitals/sample/diagnosis.json").exists()
    assert (out / "fake/capitals/intervene/interventions.json").exists()
    assert (out / "tinyhf-x/capitals/inside/ilo.json").exists()
    assert not (out / "api").exists()
    marker = json.loads((out / "fake/capitals/sample/.xlgap-step.json").read_text())
    assert marker["status"] == "done" and marker["command"].startswith("xlgap sample ")
    # progress: one line per step with its time, and the commands
    assert "[xlgap run] step 1/4: fake x capitals x sample" in err
    assert "step 4/4: api x capitals x inside: skipped" in err
    assert "xlgap intervene --model fake:x" in err
    # the report, at the top of --out
    page = (out / "report.html").read_text()
    for text in ("two models, one data set", "Steps of the study", "fake:x", "tinyhf:x",
                 "Interventions", "Inside the model", "needs a white-box model"):
        assert text in page, text

    # Resume: nothing to do, every step is recognised as finished.
    samples = (out / "fake/capitals/sample/samples.jsonl").read_bytes()
    code = xlgap.cli.run(["run", "--study", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    record = json.loads((out / "study.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["done earlier"] * 3 + ["skipped"]
    assert "[xlgap run] xlgap sample" not in err  # no command was run again
    assert (out / "fake/capitals/sample/samples.jsonl").read_bytes() == samples

    # A changed option reruns only the steps it touches; a run directory refuses to mix
    # two settings, and the study says why and what to do.
    path.write_text(path.read_text().replace("samples = 4", "samples = 4\ntemperature = 0.7"))
    code = xlgap.cli.run(["run", "--study", str(path), "--out", str(out)])
    capsys.readouterr()
    assert code == 1
    record = json.loads((out / "study.json").read_text())
    sample_step = next(s for s in record["steps"] if s["analysis"] == "sample")
    assert sample_step["status"] == "failed"
    assert "options changed since the last run (temperature: 1.0 -> 0.7)" in \
        sample_step["error"]
    assert "delete" in sample_step["error"]
    others = [s["status"] for s in record["steps"] if s["analysis"] != "sample"]
    assert others == ["done earlier", "done earlier", "skipped"]


def test_a_failing_step_is_recorded_and_the_rest_runs(tmp_path, bmlama, capsys):
    # The fake model has hidden states but no logit lens: inside writes ILO and
    # similarity, then fails; the report shows what it wrote.
    text = f"""
store = "{tmp_path / 'store'}"
[[models]]
model = "fake:x"
[[data]]
data = "{bmlama}"
[inside]
k = 2
t = 1
[sample]
samples = 3
n_boot = 20
"""
    path = write_study(tmp_path / "s.toml", text)
    out = tmp_path / "out"
    code = xlgap.cli.run(["run", "--study", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    record = json.loads((out / "study.json").read_text())
    steps = {s["analysis"]: s for s in record["steps"]}
    assert steps["sample"]["status"] == "done"  # the order is the canonical one
    assert steps["inside"]["status"] == "failed" and "logit lens" in steps["inside"]["error"]
    assert "failed: fake-x x capitals x inside" in err
    marker = json.loads((out / "fake-x/capitals/inside/.xlgap-step.json").read_text())
    assert marker["status"] == "failed"
    page = (out / "report.html").read_text()
    assert "Interlingual Local Overlap (ILO) by layer" in page and "logit lens" in page
    # stop at the first failure when asked
    path.write_text(text.replace("[sample]", "[intervene]\nstrategies = 'baseline'\n"
                                 "[sample]"))
    code = xlgap.cli.run(["run", "--study", str(path), "--out", str(tmp_path / "o2"),
                          "--no-keep-going", "--redo"])
    record = json.loads((tmp_path / "o2" / "study.json").read_text())
    assert code == 1
    assert [s["status"] for s in record["steps"]] == ["done", "done", "failed"]


def test_dry_run_prints_the_plan(tmp_path, bmlama, capsys):
    path = write_study(tmp_path / "s.toml", STUDY.format(store=tmp_path / "st", data=bmlama))
    assert xlgap.cli.run(["run", "--study", str(path), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "4 steps" in err and "xlgap inside --model tinyhf:x" in err
    assert "(skipped: inside needs a white-box model" in err
    assert not (Path("runs") / "s").exists() or True  # nothing written by a dry run


def test_positional_arguments_when_wired(tmp_path, bmlama, capsys):
    parser, _ = xlgap.cli.build_parser()
    try:
        args = parser.parse_args(["run", str(tmp_path / "x.toml")])
    except SystemExit:
        pytest.skip("xlgap.cli does not add positional arguments yet (the lead wires "
                    "ReportConfig.positional / StudyConfig.positional)")
    assert args.study == str(tmp_path / "x.toml")
    args = parser.parse_args(["report", "a", "b", "--title", "t"])
    assert args.dirs == ["a", "b"]


# -- command lines --------------------------------------------------------------------------


def test_command_line_rebuilds_the_config(tmp_path):
    cls = find_command("intervene").config
    cfg = build_config(cls, None, {"model": "fake:x", "data": "my data/dir", "targets": "fr",
                                   "samples": 2, "other_scripts": True, "api_chat": False,
                                   "out": str(tmp_path / "o")})
    line = command_line("intervene", vars(cfg))
    assert line.startswith("xlgap intervene ")
    assert "'my data/dir'" in line and "--other-scripts" in line and "--no-api-chat" in line
    assert "--temperature" not in line  # defaults are left out
    parser, commands = xlgap.cli.build_parser()
    args = parser.parse_args(shlex.split(line)[1:])
    again = build_config(commands["intervene"].config, args)
    assert again == cfg


# -- progress -------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_line_progress_prints_tenths_with_elapsed_and_eta():
    stream, clock = io.StringIO(), Clock()
    bar = LineProgress(total=100, desc="sampling", unit="q", stream=stream, clock=clock,
                       min_interval=5.0)
    for _ in range(100):
        clock.t += 1.0
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[xlgap] sampling: started, 100 q"
    assert "sampling: 10/100 q (10%) in 10 s, ETA 1 min 30 s" in lines[1]
    assert lines[-1] == "[xlgap] sampling: done, 100 q in 1 min 40 s, 1.0 q/s"
    assert len(lines) == 11  # start, 9 tenths, done: a log, not a flood


def test_step_plan_eta_counts_only_steps_that_worked():
    stream, clock = io.StringIO(), Clock()
    plan = StepPlan(4, stream=stream, label="xlgap run", clock=clock)
    with plan.step("a") as info:
        info["skipped"] = True
    with plan.step("b"):
        clock.t += 60
    with plan.step("c"):
        clock.t += 120
    assert plan.eta() == pytest.approx(90.0)
    text = stream.getvalue()
    assert "step 1/4: a: skipped in 0.0 s" in text
    assert "step 3/4: c (ETA for the rest: 2 min 00 s)" in text
    assert "step 3/4: c: done in 2 min 00 s (3 min 00 s so far)" in text


def test_progress_mode_and_silent_bar(monkeypatch):
    stream = io.StringIO()  # not a terminal
    monkeypatch.delenv("XLGAP_PROGRESS", raising=False)
    assert progress_mode(stream) == "lines"
    monkeypatch.setenv("XLGAP_PROGRESS", "off")
    assert progress_mode(stream) == "off"
    bar = progress_bar(total=3, desc="x", stream=stream)
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""
    monkeypatch.setenv("XLGAP_PROGRESS", "lines")
    assert list(progress_bar(range(3), desc="loop", stream=stream)) == [0, 1, 2]
    assert "loop: done, 3 it" in stream.getvalue()
    assert format_duration(3725) == "1 h 02 min"


def test_the_example_studies_are_valid(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    monkeypatch.setenv("XLGAP_CACHE", str(tmp_path / "cache"))
    small = load_study(root / "examples" / "small-study.toml")
    assert [s.analysis for s in small.steps] == ["sample", "intervene", "inside"]
    assert small.steps[0].config.model == "embedded"
    # The realistic study names its data sets, so it is valid on any machine; nothing is
    # fetched until a step loads its data.
    real = load_study(root / "examples" / "realistic-study.toml")
    api = [s for s in real.steps if s.model.name == "gpt-4o-mini"]
    assert {s.analysis for s in api} == {"sample", "intervene"}
    assert {(s.data.name, s.analysis) for s in real.steps if s.model.name == "qwen2.5-1.5b"} \
        == {("bmlama17", "sample"), ("bmlama17", "intervene"), ("flores200", "inside")}
    # Load BMLAMA-17 by its name as the steps will, through `data get --from` on a copy the
    # project writes (tests/bmlama_fixture.py), pinned to that copy's bytes.
    from dataclasses import replace

    from bmlama_fixture import write_bmlama17
    from xlgap.cli.workspace import open_dataset
    from xlgap.data import get_dataset
    from xlgap.data.catalog import CATALOG, read_manifest
    from xlgap.data.download import sha256_of

    local = write_bmlama17(tmp_path / "bmlama17")
    entry = CATALOG["bmlama17"]
    monkeypatch.setitem(CATALOG, "bmlama17", replace(entry, files=tuple(
        replace(f, sha256=sha256_of(local / f.name)) for f in entry.files)))
    get_dataset("bmlama17", from_dir=local)
    step = next(s for s in real.steps if s.data.name == "bmlama17")
    dataset, source, targets = open_dataset(step.config)
    assert step.config.data == "bmlama17" and source == "en"
    assert targets == ["fr", "es", "ru", "ja", "ar", "zh"]
    assert len(dataset.items) == 40
    assert read_manifest("bmlama17")["language_count"] == 17
    # FLORES-200 comes as one archive from its publisher: nothing here stands in for it.
    assert CATALOG["flores200"].files[0].url.startswith("https://")


def test_steer_runs_through_the_registry(tmp_path, capsys):
    if find_command("steer") is None:
        pytest.skip("this xlgap has no steer command yet")
    path = write_study(tmp_path / "s.toml", f"""
store = "{tmp_path / 'store'}"
[[models]]
model = "tinyhf:x"
[[data]]
data = "builtin"
targets = "fr,de"
limit = 30
[steer]
layers = "1"
alphas = "1"
n_boot = 20
""")
    out = tmp_path / "out"
    assert xlgap.cli.run(["run", "--study", str(path), "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "tinyhf-x/builtin/steer/steering.json").exists()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "steering toward" in page and "xlgap steer --model tinyhf:x" in page
