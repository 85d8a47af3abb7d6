"""xlgap as a library: the lazy top level, one result schema, one declaration per option.

The command and its Python function must give the same result files on the same inputs;
every committed result file must reload with ``xlgap.load_result`` and give its numbers.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import xlgap
import xlgap.errors
import xlgap.results
from fake_backend import FakeBackend
from xlgap.cli import main
from xlgap.cli.commands.intervene import InterveneConfig
from xlgap.cli.commands.sample import SampleConfig
from xlgap.cli.commands.steer import FinetuneConfig, SteerConfig
from xlgap.interventions.finetune import FinetuneOptions
from xlgap.interventions.steering import SteerOptions
from xlgap.interventions.strategies import StrategyOptions
from xlgap.models import register_backend
from xlgap.results import COLUMNS, Result, kind_of
from xlgap.sampling import SamplingOptions

register_backend("fake", "fake_backend:make")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def run_cli(capsys, *args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    capsys.readouterr()
    return int(exc.value.code)


@pytest.fixture
def cloze_dir(tmp_path):
    """Four BMLAMA-style cloze items in en and fr (cloze: exact scoring uses 0 shots)."""
    d = tmp_path / "bm"
    d.mkdir()
    rows = {"en": [("The capital of France is <mask>.", "Paris"),
                   ("The capital of Italy is <mask>.", "Rome"),
                   ("The capital of Germany is <mask>.", "Berlin"),
                   ("The capital of Spain is <mask>.", "Madrid")],
            "fr": [("La capitale de la France est <mask>.", "Paris"),
                   ("La capitale de l'Italie est <mask>.", "Rome"),
                   ("La capitale de l'Allemagne est <mask>.", "Berlin"),
                   ("La capitale de l'Espagne est <mask>.", "Madrid")]}
    for lang, items in rows.items():
        lines = ["Prompt\tAns\tCandidate Ans\tSubject"]
        lines += [f"{p}\t{a}\tParis,Rome,Berlin,Madrid\tx" for p, a in items]
        (d / f"{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


# -- the top level -----------------------------------------------------------------------


def test_import_xlgap_is_light_and_every_name_resolves():
    code = ("import sys, xlgap; heavy = [m for m in ('torch', 'transformers', 'pandas') "
            "if m in sys.modules]; print(heavy); print(sorted(set(xlgap.__all__) - "
            "set(dir(xlgap))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "[]", f"import xlgap imported {out[0]}"
    assert out[1] == "[]", f"names in __all__ but not in dir(xlgap): {out[1]}"
    for name in xlgap.__all__:
        assert getattr(xlgap, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = xlgap.nope


def test_the_study_functions_are_functions_not_modules():
    # the trap of `from xlgap.stats import diagnose` (a module) is gone at the top level
    for name in ("diagnose", "sample", "compare_strategies", "look_inside", "load_result",
                 "write_report", "run_steering", "run_finetune", "hidden_states"):
        assert callable(getattr(xlgap, name)), name


def test_comma_strings_are_refused_where_lists_are_meant(cloze_dir):
    data = xlgap.load_dataset(str(cloze_dir))
    with pytest.raises(xlgap.errors.ConfigError, match="list"):
        xlgap.sample(FakeBackend(), data, source="en", targets="fr", exact=True)
    with pytest.raises(xlgap.errors.ConfigError, match=r"unknown option.*shot\b"):
        xlgap.sample(FakeBackend(), data, source="en", targets=["fr"], shot=1)


def test_write_report_takes_one_path_as_a_string(tmp_path):
    # the old write_report walked a str's characters: "s: not found", "t: not found", ...
    study = tmp_path / "study"
    (study / "run").mkdir(parents=True)
    for name in ("diagnosis.json", "run.json", "items.jsonl", "distributions.jsonl"):
        (study / "run" / name).write_bytes((RESULTS / "chat-exact" / name).read_bytes())
    page = xlgap.write_report(str(study), tmp_path / "report.html").read_text(encoding="utf-8")
    assert "not found" not in page
    assert "diagnos" in page.lower()


# -- one result schema -------------------------------------------------------------------


def committed() -> list[Path]:
    """The committed result files: JSON files tagged with a result kind."""
    return sorted(p for p in RESULTS.rglob("*.json") if p.name != "run.json"
                  and kind_of(json.loads(p.read_text(encoding="utf-8"))))


@pytest.mark.parametrize("path", committed(), ids=lambda p: str(p.relative_to(RESULTS)))
def test_committed_results_reload_with_their_numbers(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    result = xlgap.load_result(path)
    assert isinstance(result, Result)
    assert result.kind in ("diagnosis", "interventions", "steering", "finetune", "plan")
    frame = result.to_frame()
    assert list(frame.columns) == list(COLUMNS) and len(frame) > 10
    assert (frame.kind == result.kind).all()

    def row(**where):
        hit = frame
        for k, v in where.items():
            hit = hit[hit[k] == v]
        assert len(hit) == 1, (where, len(hit))
        return hit.iloc[0]

    if result.kind == "diagnosis":
        target = raw["targets"][0]
        for metric in ("transfer", "agreement"):
            node = raw["pairs"][target][metric]
            got = row(target=target, metric=metric)
            assert (got.estimate, got.ci_low, got.ci_high) == (node["estimate"], *node["ci"])
        assert row(target=raw["source"], metric="accuracy").estimate == \
            raw["accuracy"][raw["source"]]["estimate"]
    elif result.kind == "interventions":
        name = next(s for s in raw["strategies"] if s != "baseline")
        node = raw["strategies"][name]
        got = row(arm=name, target="all", metric="transfer")
        assert (got.estimate, got.ci_low, got.ci_high) == (node["transfer"]["estimate"],
                                                           *node["transfer"]["ci"])
        test = node["vs_baseline"]["transfer"]  # the paired test the old to_frame lost
        got = row(arm=f"{name} vs baseline", target="all", metric="transfer")
        assert (got.estimate, got.p, got.n) == (test["estimate"], test["p"], test["n"])
    elif result.kind == "steering":
        node = raw["best"]["test"]["all"]["transfer"]
        got = row(arm="best", target="all", metric="transfer")
        # the arm's row carries the p of its paired test against no steering (vs_base)
        assert (got.estimate, got.p, got.n) == (node["estimate"], node["vs_base"]["p"],
                                                node["n"])
        assert result.best == raw["best"]  # the experiment's own fields stay reachable
    elif result.kind == "plan":
        for name, entry in raw["metrics"].items():
            assert row(arm="planned", target="all", metric=f"{name}:items_needed"
                       ).estimate == entry["items_needed"]
            assert row(arm="pilot", target="all", metric=name).estimate == entry["estimate"]
    else:
        assert row(arm="base", target=raw["source"], metric="accuracy").estimate == \
            raw["base"]["accuracy"][raw["source"]]["estimate"]


def test_a_whole_study_concatenates_into_one_table():
    frames = [xlgap.load_result(p).to_frame() for p in committed()]
    table = pd.concat(frames, ignore_index=True)
    assert list(table.columns) == list(COLUMNS)
    assert set(table.kind) == {"diagnosis", "interventions", "steering", "finetune", "plan"}
    html = xlgap.load_result(committed()[0])._repr_html_()
    assert "<table>" in html and "estimate" in html


@pytest.mark.parametrize("test", [
    # paired tests as written before {estimate, ...}, and as they are written now
    {"a": 0.6, "b": 0.5, "difference": 0.1, "ci": [0.02, 0.18], "p": 0.01, "n": 40},
    {"estimate": 0.1, "ci": [0.02, 0.18], "p": 0.01, "p_floor": 0.002, "n": 40, "a": 0.6,
     "b": 0.5}])
def test_a_paired_test_is_the_estimate_of_a_difference(test):
    result = Result("interventions", {"strategies": {
        "baseline": {"transfer": {"estimate": 0.5, "ci": [0.4, 0.6], "n": 40},
                     "vs_baseline": None},
        "tea": {"transfer": {"estimate": 0.6, "ci": [0.5, 0.7], "n": 40},
                "per_target": {"fr": {"transfer": {"estimate": 0.7, "ci": [0.6, 0.8],
                                                   "n": 40}}},
                "vs_baseline": {"transfer": test}}}})
    frame = result.to_frame().set_index(["arm", "target", "metric"])
    diff = frame.loc[("tea vs baseline", "all", "transfer")]
    assert (diff.estimate, diff.ci_low, diff.ci_high, diff.p, diff.n) == (0.1, 0.02, 0.18,
                                                                          0.01, 40)
    assert frame.loc[("tea", "fr", "transfer")].estimate == 0.7
    assert frame.loc[("baseline", "all", "transfer")].estimate == 0.5
    assert len(frame) == 4


# -- one declaration per option ----------------------------------------------------------


@pytest.mark.parametrize(("config", "options"), [(SampleConfig, SamplingOptions),
                                                 (InterveneConfig, StrategyOptions),
                                                 (SteerConfig, SteerOptions),
                                                 (FinetuneConfig, FinetuneOptions)])
def test_the_command_takes_each_shared_option_from_the_api(config, options):
    api_fields = {f.name: f for f in dataclasses.fields(options)}
    shared = [f for f in dataclasses.fields(config) if f.name in api_fields]
    assert len(shared) >= 6
    for f in shared:
        if f.name in ("source", "targets", "seed", "progress"):
            continue  # RunConfig's, shared by every command
        api = api_fields[f.name]
        assert f.metadata.get("declared_in") == options.__name__, \
            f"{config.__name__}.{f.name} is declared by hand: use from_options"
        assert "help" in api.metadata, f"{options.__name__}.{f.name} has no help text"
        assert f.metadata["help"] == api.metadata["help"]
        if isinstance(api.default, tuple):
            # a list in Python (layers=[9]), comma-separated on the command line
            assert f.default == ",".join(str(x) for x in api.default), f.name
        else:
            assert f.default == api.default, f"{config.__name__}.{f.name}: default differs"


def test_list_options_take_lists_and_give_the_commands_settings():
    """``layers=[9]`` and ``freeze_first=[0, 9]`` in Python mean what ``--layers 9`` and
    ``--freeze-first 0,9`` mean on the command line."""
    from xlgap.interventions.finetune.experiment import parse_freeze
    from xlgap.interventions.steering import parse_sweep

    api, cli = SteerOptions(layers=[9, "4+8"]), SteerConfig(layers="9,4+8")
    assert parse_sweep(api.directions, api.layers, api.alphas) == parse_sweep(
        cli.directions, cli.layers, cli.alphas)
    default = SteerOptions()
    assert parse_sweep(default.directions, default.layers, default.alphas) == parse_sweep(
        SteerConfig().directions, SteerConfig().layers, SteerConfig().alphas)
    assert parse_freeze(FinetuneOptions(freeze_first=[0, 9]).freeze_first) == parse_freeze(
        FinetuneConfig().freeze_first) == [0, 9]


def test_python_sample_gives_the_numbers_of_xlgap_sample(capsys, tmp_path, cloze_dir):
    # old code: SamplingOptions(exact=True) used 3 shots, the command 0 on cloze data
    code = run_cli(capsys, "sample", "--model", "fake:x", "--data", str(cloze_dir),
                   "--targets", "fr", "--exact", "--no-diagnose", "--no-progress",
                   "--store", str(tmp_path / "store"), "--out", str(tmp_path / "cli"))
    assert code == 0
    run = xlgap.sample(FakeBackend(), xlgap.load_dataset(str(cloze_dir)), source="en",
                       targets=["fr"], exact=True, out=tmp_path / "py")
    assert isinstance(run, xlgap.Run) and run.n_items == 4
    for name in ("items.jsonl", "distributions.jsonl"):
        assert (tmp_path / "py" / name).read_text() == (tmp_path / "cli" / name).read_text()
    cli_meta = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert run.meta["answer_options"] == cli_meta["answer_options"]
    assert run.meta["answer_options"]["shots"] == 0
    cli_diag = xlgap.diagnose(tmp_path / "cli", n_boot=50, fit_model=False).to_frame()
    py_diag = xlgap.diagnose(run, n_boot=50, fit_model=False).to_frame()
    pd.testing.assert_frame_equal(cli_diag, py_diag)


def test_python_compare_strategies_gives_the_file_of_xlgap_intervene(capsys, tmp_path,
                                                                      cloze_dir):
    code = run_cli(capsys, "intervene", "--model", "fake:x", "--data", str(cloze_dir),
                   "--targets", "fr", "--strategies", "baseline,tren-1", "--exact",
                   "--n-boot", "50", "--no-progress", "--store", str(tmp_path / "store"),
                   "--out", str(tmp_path / "cli"))
    assert code == 0
    found = xlgap.compare_strategies(FakeBackend(), xlgap.load_dataset(str(cloze_dir)),
                                     ["baseline", "tren-1"], source="en", targets=["fr"],
                                     exact=True, n_boot=50, out=tmp_path / "py")
    cli = xlgap.load_result(tmp_path / "cli" / "interventions.json")
    py = xlgap.load_result(tmp_path / "py" / "interventions.json")
    assert cli["strategies"] == py["strategies"] == json.loads(json.dumps(found["strategies"]))
    pd.testing.assert_frame_equal(cli.to_frame(), py.to_frame())
    for name in ("baseline", "tren-1"):
        assert (tmp_path / "py" / name / "distributions.jsonl").read_text() == \
            (tmp_path / "cli" / name / "distributions.jsonl").read_text()


# -- one registry idiom ------------------------------------------------------------------


class PluginResult(Result):
    """A kind another package adds through the entry-point group ``xlgap.results``."""


def test_another_package_adds_a_result_kind_through_its_entry_point(monkeypatch, tmp_path):
    from importlib.metadata import EntryPoint

    from xlgap import registry
    from xlgap.results import KINDS, result_kinds

    ep = EntryPoint(name="plugin_kind", value="test_library:PluginResult", group="xlgap.results")
    monkeypatch.setattr(registry, "entry_points",
                        lambda group: [ep] if group == "xlgap.results" else [])
    monkeypatch.setattr(KINDS, "_plugins_loaded", False)
    monkeypatch.setattr(KINDS, "_entries", dict(KINDS._entries))
    path = Result("plugin_kind", {"x": {"estimate": 0.5, "ci": [0.4, 0.6], "n": 9}}).save(
        tmp_path / "plugin.json")
    loaded = xlgap.load_result(path)
    assert type(loaded).__name__ == "PluginResult" and loaded.kind == "plugin_kind"
    assert loaded.to_frame().iloc[0][["metric", "estimate", "n"]].tolist() == ["x", 0.5, 9]
    assert "plugin_kind" in result_kinds() and "diagnosis" in result_kinds()
    with pytest.raises(xlgap.errors.ConfigError, match=r"unknown results 'nope'.*diagnosis"):
        KINDS.get("nope")


def test_look_inside_gives_the_files_of_xlgap_ilo_and_similarity(capsys, tmp_path, cloze_dir):
    for cmd in ("ilo", "similarity"):
        code = run_cli(capsys, cmd, "--model", "fake:x", "--data", str(cloze_dir),
                       "--targets", "fr", "--k", "2", "--t", "1", "--n-boot", "20",
                       "--n-shuffles", "1", "--no-progress", "--store", str(tmp_path / "s"),
                       "--out", str(tmp_path / "cli"))
        assert code == 0
    inside = xlgap.look_inside(FakeBackend(), xlgap.load_dataset(str(cloze_dir)), source="en",
                               targets=["fr"], analyses=["ilo", "similarity"], k=2, t=1,
                               n_boot=20, n_shuffles=1, out=tmp_path / "py")
    assert sorted(inside) == ["ilo", "similarity"]
    for name in ("ilo", "similarity"):
        cli = json.loads((tmp_path / "cli" / f"{name}.json").read_text())
        py = json.loads((tmp_path / "py" / f"{name}.json").read_text())
        assert cli == py
    again = xlgap.load_result(tmp_path / "py")  # the directory: one result of kind inside
    pd.testing.assert_frame_equal(again.to_frame(), inside.to_frame())
    frame = inside.to_frame()
    assert set(frame.kind) == {"ilo", "similarity"}
    assert {"layer 0", "layer 2"} <= set(frame.arm)
    assert "en-fr" in set(frame[frame.kind == "similarity"].target)


def test_the_logit_lens_has_a_row_per_language_layer_and_curve():
    lens = xlgap.results.result_class("logit_lens")("logit_lens", {
        "pivot": "en", "layers": [0, 6],
        "languages": {"en": {"n_items": 5, "p_gold": [0.1, 0.4], "top1_gold": [0.0, 0.2],
                             "p_pivot": None},
                      "fr": {"n_items": 4, "p_gold": [0.05, 0.3], "top1_gold": [0.0, 0.1],
                             "p_pivot": [0.2, 0.5]}}})
    frame = lens.to_frame().set_index(["arm", "target", "metric"])
    assert len(frame) == 2 * 2 + 2 * 3
    assert frame.loc[("layer 6", "fr", "p_pivot")].estimate == 0.5
    assert frame.loc[("layer 0", "en", "p_gold")].n == 5


def test_load_backend_takes_your_own_model_and_caches_its_calls(tmp_path):
    from conftest import make_tiny_gemma, make_tokenizer

    tok = make_tokenizer()
    backend = xlgap.load_backend(make_tiny_gemma(len(tok)), tok, name="mine",
                                 cache=tmp_path / "store", batch_size=2)
    assert backend.name == "mine" and backend.supports_white_box
    question = [("The capital of France is", [" Paris", " Rome"])]
    first = backend.score_batch(question)
    computed = backend.computed
    assert backend.score_batch(question) == first and backend.computed == computed
    with pytest.raises(xlgap.errors.ConfigError, match="tokenizer"):
        xlgap.load_backend(object())


def _same_file_from_cli_and_python(tmp_path, capsys, command: list[str], run_python,
                                   name: str) -> None:
    """``xlgap COMMAND`` on the tiny random Gemma, then ``run_python(backend, out)`` on a
    fresh copy of it: the same ``name`` file, all but the provenance, the recorded command,
    the time taken and the output paths."""
    from test_report import make_tiny_hf
    from xlgap.models import BACKENDS, register_backend

    if "tinysteer" not in BACKENDS:
        register_backend("tinysteer", "test_report:make_tiny_hf")
    args = [*command, "--model", "tinysteer:x", "--targets", "fr,de", "--no-progress",
            "--store", str(tmp_path / "store"), "--out", str(tmp_path / "cli")]
    assert xlgap.cli.run(args) == 0
    capsys.readouterr()
    run_python(make_tiny_hf(), tmp_path / "py")

    def numbers(path):
        def strip(node):
            if isinstance(node, dict):
                return {k: strip(v) for k, v in node.items()
                        if k not in ("provenance", "config", "model", "seconds")}
            return [strip(v) for v in node] if isinstance(node, list) else node
        raw = json.loads((path / name).read_text(encoding="utf-8"))
        return json.loads(json.dumps(strip(raw)).replace(str(path), "OUT"))
    assert numbers(tmp_path / "py") == numbers(tmp_path / "cli")


def test_python_run_steering_gives_the_file_of_xlgap_steer(capsys, tmp_path):
    data = xlgap.load_dataset("builtin").subset(30)
    _same_file_from_cli_and_python(
        tmp_path, capsys,
        ["steer", "--limit", "30", "--layers", "1,2", "--alphas", "1", "--n-boot", "30",
         "--control-draws", "3"],
        lambda backend, out: xlgap.run_steering(
            backend, data, source="en", targets=["fr", "de"], out=out, layers=[1, 2],
            alphas=[1.0], n_boot=30, control_draws=3),
        "steering.json")


def test_python_run_finetune_gives_the_file_of_xlgap_finetune(capsys, tmp_path):
    data = xlgap.load_dataset("builtin").subset(24)
    _same_file_from_cli_and_python(
        tmp_path, capsys,
        ["finetune", "--limit", "24", "--freeze-first", "0,2", "--steps", "4", "--seeds",
         "2", "--n-boot", "30"],
        lambda backend, out: xlgap.run_finetune(
            backend, data, source="en", targets=["fr", "de"], out=out, freeze_first=[0, 2],
            steps=4, seeds=2, n_boot=30),
        "finetune.json")
