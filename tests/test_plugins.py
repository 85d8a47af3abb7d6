"""Another installed package extends xlgap through entry points (one group per registry:
``xlgap.backends``, ``xlgap.formats``, ``xlgap.datasets``, ``xlgap.strategies``,
``xlgap.pair_metrics``, ``xlgap.report_sections``, ``xlgap.commands``), and what it adds
shows where a user looks: the CLI.

Each test installs a real package (a module plus a ``.dist-info`` folder with
``entry_points.txt``, as pip leaves one) into a folder on ``sys.path``: the
``install_plugin`` fixture of conftest."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from xlgap.cli import main
from xlgap.errors import ConfigError
from xlgap.models import register_backend

register_backend("fake", "fake_backend:make")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


ROWS = {
    "en": ["Prompt\tAns\tCandidate Ans\tSubject",
           "The capital of France is <mask>.\tParis\tParis,Berlin,Rome\tFrance",
           "The capital of Italy is <mask>.\tRome\tParis,Berlin,Rome\tItaly"],
    "fr": ["Prompt\tAns\tCandidate Ans\tSubject",
           "La capitale de la France est <mask>.\tParis\tParis,Berlin,Rome\tFrance",
           "La capitale de l'Italie est <mask>.\tRome\tParis,Berlin,Rome\tItalie"],
}


def write_tsvs(folder: Path) -> dict[str, str]:
    """BMLAMA-style ``{lang}.tsv`` files; their sha256 by file name."""
    folder.mkdir(parents=True)
    digests = {}
    for lang, lines in ROWS.items():
        data = ("\n".join(lines) + "\n").encode()
        (folder / f"{lang}.tsv").write_bytes(data)
        digests[f"{lang}.tsv"] = hashlib.sha256(data).hexdigest()
    return digests


# -- backends ------------------------------------------------------------------------------

BACKEND = '''
from fake_backend import FakeBackend


class PlugBackend(FakeBackend):
    def __init__(self, name, *, greeting="hello"):
        super().__init__()
        self.model_name, self.greeting = name, greeting
'''


def test_a_plugin_backend_answers_to_model_prefix_and_loads_only_when_used(
        install_plugin, capsys, tmp_path):
    from xlgap.models import BACKENDS, backend_class, load_backend

    install_plugin("xlgap_plug", BACKEND, {"xlgap.backends": {"plug": "xlgap_plug:PlugBackend"}})
    assert "plug" in BACKENDS and "xlgap_plug" not in sys.modules  # listed, not imported
    backend = load_backend("plug:tiny", model_args={"greeting": "hi"})
    assert type(backend).__name__ == "PlugBackend"
    assert (backend.model_name, backend.greeting) == ("tiny", "hi")
    assert backend_class("plug:tiny") is type(backend)
    data = tmp_path / "bm"
    write_tsvs(data)
    code, _, err = run_cli(capsys, "sample", "--model", "plug:tiny", "--data", str(data),
                              "--samples", "3", "--store", str(tmp_path / "s"),
                              "--out", str(tmp_path / "run"), "--no-diagnose")
    assert code == 0, err
    assert len((tmp_path / "run" / "samples.jsonl").read_text().splitlines()) == 2 * 2 * 3
    # its options are checked like a built-in's: the error names the ones it takes
    code, _, err = run_cli(capsys, "sample", "--model", "plug:tiny", "--model-arg", "colour=1",
                           "--data", str(data), "--store", str(tmp_path / "s"),
                           "--out", str(tmp_path / "run2"))
    assert code == 2 and "colour" in err and "greeting" in err


def test_xlgaps_own_backend_wins_over_a_plugin_of_the_same_name(install_plugin):
    from xlgap.models import BACKENDS

    install_plugin("xlgap_hf", BACKEND, {"xlgap.backends": {"hf": "xlgap_hf:PlugBackend"}})
    assert BACKENDS.target("hf") == "xlgap.models.hf:HFBackend.from_pretrained"


def test_a_plugin_that_does_not_load_is_an_error_naming_it(install_plugin):
    from xlgap.models import load_backend

    install_plugin("xlgap_broken", "", {"xlgap.backends": {"broken": "xlgap_broken:Nothing"}})
    with pytest.raises(ConfigError, match=r"backend 'broken'.*xlgap_broken:Nothing"):
        load_backend("broken:x")


# -- data sets and formats -----------------------------------------------------------------

DATASET = '''
from xlgap.data import converters
from xlgap.data.catalog import DatasetInfo, RemoteFile

INFO = DatasetInfo(
    name="tinyfacts", title="Tiny facts", measures="capitals, cloze with candidates",
    languages=("en", "fr"), items="2 per language", licence="CC0-1.0",
    citation="nobody, 2026", homepage="https://example.org/tinyfacts", revision=None,
    files=(RemoteFile("https://example.org/tinyfacts/en.tsv", "en.tsv", "{en}"),
           RemoteFile("https://example.org/tinyfacts/fr.tsv", "fr.tsv", "{fr}")),
    output="tinyfacts", convert=converters.copy_tsv_dir)
'''


def test_a_plugin_data_set_is_listed_fetched_and_used_by_name(install_plugin, capsys,
                                                              tmp_path, monkeypatch):
    monkeypatch.setenv("XLGAP_CACHE", str(tmp_path / "cache"))
    digests = write_tsvs(tmp_path / "published")
    install_plugin("xlgap_tiny", DATASET.format(en=digests["en.tsv"], fr=digests["fr.tsv"]),
                   {"xlgap.datasets": {"tinyfacts": "xlgap_tiny:INFO"}})
    code, out, _ = run_cli(capsys, "data", "list")
    assert code == 0
    line = next(x for x in out.splitlines() if x.startswith("tinyfacts"))
    assert "CC0-1.0" in line and "xlgap data get tinyfacts" in line
    assert "bmlama17" in out  # the built-in ones are still there
    code, out, err = run_cli(capsys, "data", "get", "tinyfacts", "--from",
                             str(tmp_path / "published"))
    assert code == 0, err
    assert "Tiny facts: 2 items in 2 languages" in out
    assert "pinned: all 2 files" in out
    code, _, err = run_cli(capsys, "sample", "--model", "fake:x", "--data", "tinyfacts",
                           "--samples", "2", "--store", str(tmp_path / "s"),
                           "--out", str(tmp_path / "run"), "--no-diagnose")
    assert code == 0, err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "tinyfacts" in json.dumps(run)


def test_a_plugin_data_set_that_is_no_dataset_info_is_refused(install_plugin, capsys):
    install_plugin("xlgap_notinfo", "INFO = {'name': 'x'}\n",
                   {"xlgap.datasets": {"notinfo": "xlgap_notinfo:INFO"}})
    code, _, err = run_cli(capsys, "data", "get", "notinfo")
    assert code == 2 and "DatasetInfo" in err and "Traceback" not in err


FORMAT = '''
from xlgap.data.formats import Format
from xlgap.data.formats.bmlama import FORMAT as BMLAMA


def _load(path, **options):
    return BMLAMA.load(path / "tables", **options)


FORMAT = Format(name="facts", description="a .facts folder holding tables/{lang}.tsv",
                detect=lambda p: p.suffix == ".facts" and (p / "tables").is_dir(),
                load=_load, priority=0)
'''


def test_a_plugin_format_reads_data_no_built_in_format_reads(install_plugin, capsys,
                                                             tmp_path):
    folder = tmp_path / "capitals.facts"
    write_tsvs(folder / "tables")
    code, _, err = run_cli(capsys, "data", "show", str(folder))
    assert code == 2 and "Traceback" not in err  # without the plugin: no format reads it
    install_plugin("xlgap_facts", FORMAT, {"xlgap.formats": {"facts": "xlgap_facts:FORMAT"}})
    code, out, err = run_cli(capsys, "data", "show", str(folder))
    assert code == 0, err
    assert "2 items" in out and "French" in out
    code, _, err = run_cli(capsys, "data", "show", str(tmp_path / "nothing.xyz"))
    assert code == 2 and "a .facts folder holding tables/{lang}.tsv" in err


# -- strategies and pair metrics -----------------------------------------------------------

STRATEGY = '''
from xlgap.interventions.strategies import StrategySpec
from xlgap.interventions.strategies.translation import Baseline


class Echo(Baseline):
    def __init__(self, backend, dataset, options, k):
        super().__init__(backend, dataset, options)
        self.name = f"echo-{k}"


SPEC = StrategySpec(r"echo-(\\d+)", lambda b, d, o, m: Echo(b, d, o, int(m.group(1))),
                    "the baseline prompt under another name (a plugin)")
'''


def test_a_plugin_strategy_runs_in_xlgap_intervene(install_plugin, capsys, tmp_path):
    from xlgap.interventions.strategies import strategy_help

    install_plugin("xlgap_echo", STRATEGY, {"xlgap.strategies": {"echo-k": "xlgap_echo:SPEC"}})
    assert ("echo-k", "the baseline prompt under another name (a plugin)") in strategy_help()
    data = tmp_path / "bm"
    write_tsvs(data)
    code, _, err = run_cli(capsys, "intervene", "--model", "fake:x", "--data", str(data),
                           "--targets", "fr", "--strategies", "baseline,echo-2", "--exact",
                           "--n-boot", "50", "--no-progress", "--store", str(tmp_path / "s"),
                           "--out", str(tmp_path / "iv"))
    assert code == 0, err
    table = json.loads((tmp_path / "iv" / "interventions.json").read_text())
    arms = table["strategies"]
    assert set(arms) == {"baseline", "echo-2"}
    # the same prompts to a deterministic backend: the same answers, so the same metrics
    for metric in ("response_transfer", "transfer", "accuracy", "js"):
        assert arms["echo-2"][metric] == arms["baseline"][metric]
    code, _, err = run_cli(capsys, "intervene", "--model", "fake:x", "--data", str(data),
                           "--strategies", "nope", "--out", str(tmp_path / "iv2"))
    assert code == 2 and "echo-k" in err


METRIC = '''
import numpy as np

from xlgap.stats.pairs import PairMetric

METRIC = PairMetric("quarter", lambda p, q, g, e: np.full(len(p), 0.25), "mean",
                    "a constant quarter (a plugin)", "higher")
BAD = PairMetric("bad", lambda p, q, g, e: None, "median", "bad", "higher")
'''


def test_a_plugin_pair_metric_is_reported_by_diagnose(install_plugin, capsys, tmp_path):
    from xlgap.stats.pairs import PAIR_METRICS, describe_metrics

    install_plugin("xlgap_quarter", METRIC, {"xlgap.pair_metrics": {
        "quarter": "xlgap_quarter:METRIC", "bad": "xlgap_quarter:BAD"}})
    assert list(PAIR_METRICS)[:3] == ["response_transfer", "response_agreement",
                                      "response_success"]  # xlgap's own lead
    with pytest.raises(ConfigError, match="aggregation must be 'mean' or 'ratio'"):
        PAIR_METRICS.get("bad")
    del PAIR_METRICS["bad"]
    assert describe_metrics()["quarter"]["label"] == "a constant quarter (a plugin)"
    out = tmp_path / "sim"
    assert run_cli(capsys, "simulate", "--questions", "40", "--samples", "5", "--options",
                   "4", "--seed", "1", "--out", str(out))[0] == 0
    code, _, err = run_cli(capsys, "diagnose", str(out), "--n-boot", "50")
    assert code == 0, err
    diagnosis = json.loads((out / "diagnosis.json").read_text())
    assert diagnosis["metrics"]["quarter"]["label"] == "a constant quarter (a plugin)"
    for table in (diagnosis["overall"], *diagnosis["pairs"].values()):
        assert table["quarter"]["estimate"] == pytest.approx(0.25)
        assert table["quarter"]["ci"] == pytest.approx([0.25, 0.25])
        assert table["quarter"]["n"] == 40


# -- report sections and commands ----------------------------------------------------------

SECTION = '''
from xlgap.report.blocks import Para
from xlgap.report.sections import Section


class NoteSection(Section):
    kind = "tiny_note"
    formats = ("tiny_note",)
    title = "Tiny note"
    order = 5

    def summary(self, art):
        return "a note from a plugin"

    def body(self, art):
        return [Para("the note says: " + art.get("tiny_note")["message"], "verdict")]
'''


def test_a_plugin_report_section_shows_its_kind_of_result(install_plugin, capsys, tmp_path):
    result = tmp_path / "note"
    result.mkdir()
    (result / "tiny_note.json").write_text(json.dumps(
        {"format": "tiny_note", "message": "bonjour"}))
    install_plugin("xlgap_note", SECTION,
                   {"xlgap.report_sections": {"tiny_note": "xlgap_note:NoteSection"}})
    code, _, err = run_cli(capsys, "report", str(result), "--out", str(tmp_path / "r.html"))
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert "the note says: bonjour" in page and "Tiny note" in page
    assert "a note from a plugin" in page  # its verdict card


COMMAND = '''
from dataclasses import dataclass

from xlgap.cli.registry import command


@dataclass
class HelloConfig:
    name: str = "world"
    times: int = 1


@command("hello", HelloConfig, help="say hello (a command from a plugin)")
def hello(cfg):
    for _ in range(cfg.times):
        print(f"hello {cfg.name}")
    return 0
'''


def test_a_plugin_command_is_in_help_and_runs(install_plugin, capsys):
    install_plugin("xlgap_hello", COMMAND, {"xlgap.commands": {"hello": "xlgap_hello"}})
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "hello" in out and "say hello (a command from a plugin)" in out
    assert "sample" in out and "report" in out
    code, out, _ = run_cli(capsys, "hello", "--name", "you", "--times", "2")
    assert code == 0 and out.splitlines() == ["hello you", "hello you"]


# -- the registry itself -------------------------------------------------------------------


def test_a_registry_reads_entry_points_only_for_what_its_own_entries_cannot_answer(
        monkeypatch):
    from xlgap import registry
    from xlgap.registry import Registry

    asked: list[str] = []
    monkeypatch.setattr(registry, "entry_points", lambda group: asked.append(group) or [])
    things: Registry[object] = Registry("thing", "xlgap.things")
    things.register("json", "json:dumps")
    assert "json" in things and things.get("json") is json.dumps and asked == []
    assert "nope" not in things and asked == ["xlgap.things"]
    with pytest.raises(ConfigError, match=r"unknown thing 'nope'; known: json"):
        things.get("nope")
    assert asked == ["xlgap.things"]  # read once


def test_a_module_target_must_register_its_entry_and_targets_follow_overrides(tmp_path,
                                                                             monkeypatch):
    from xlgap.registry import Registry

    things: Registry[object] = Registry("thing")
    (tmp_path / "registers_it.py").write_text(
        "from test_plugins import THINGS\n\n@THINGS.register('made')\ndef made():\n"
        "    return 1\n")
    (tmp_path / "forgets_it.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules[__name__], "THINGS", things, raising=False)
    things.register("made", "registers_it")
    things.register("forgotten", "forgets_it")
    assert things.get("made")() == 1 and things.target("made") == "registers_it"
    with pytest.raises(ConfigError, match="importing 'forgets_it' did not register it"):
        things.get("forgotten")
    things.register("made", print)  # an object now: its own path, not the module's
    assert things.target("made") == "builtins:print"
    for name in ("registers_it", "forgets_it"):
        sys.modules.pop(name, None)


def test_xlgap_help_imports_no_command_module_and_no_backend():
    import subprocess

    code = ("import sys\nfrom xlgap.cli.main import build_parser\nbuild_parser('')\n"
            "print(sorted(m for m in sys.modules if m.startswith(('xlgap.cli.commands', "
            "'xlgap.cli.study', 'xlgap.models.hf', 'xlgap.report', 'torch'))))")
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**__import__("os").environ, "PYTHONPATH": str(src)})
    assert out.stdout.strip() == "[]"
