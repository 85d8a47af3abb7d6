"""The command line as a user runs it: help, data, errors, simulate/diagnose, sample/resume."""

from __future__ import annotations

import json

import pytest

from xlgap.cli import main
from xlgap.models import register_backend
from xlgap.store import Store

register_backend("fake", "fake_backend:make")


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def write_bmlama(path, rows_by_lang):
    path.mkdir()
    for lang, rows in rows_by_lang.items():
        lines = ["Prompt\tAns\tCandidate Ans\tSubject"]
        lines += ["\t".join(r) for r in rows]
        (path / f"{lang}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def bmlama_dir(tmp_path):
    d = tmp_path / "bm"
    write_bmlama(d, {
        "en": [("The capital of France is <mask>.", "Paris", "Paris,Berlin,Rome", "France"),
               ("The capital of Italy is <mask>.", "Rome", "Paris,Berlin,Rome", "Italy")],
        "fr": [("La capitale de la France est <mask>.", "Paris", "Paris,Berlin,Rome", "France"),
               ("La capitale de l'Italie est <mask>.", "Rome", "Paris,Berlin,Rome", "Italie")],
    })
    return d


def test_help_lists_subcommands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for cmd in ("demo", "sample", "diagnose", "simulate", "intervene", "ilo", "logit-lens",
                "data"):
        assert cmd in out


def test_data_show_any_directory(capsys, bmlama_dir):
    code, out, _ = run_cli(capsys, "data", "show", str(bmlama_dir))
    assert code == 0
    assert "2 items" in out and "French" in out


def test_unknown_target_language_lists_known_ones(capsys, bmlama_dir, tmp_path):
    code, _, err = run_cli(capsys, "sample", "--model", "fake:x", "--data", str(bmlama_dir),
                           "--targets", "de", "--store", str(tmp_path / "s"))
    assert code == 2
    assert "de" in err and "en" in err and "fr" in err and "Traceback" not in err


def test_malformed_file_names_file_and_line(capsys, tmp_path):
    d = tmp_path / "bad"
    write_bmlama(d, {"en": [("a <mask>", "x", "x,y", "s"), ("only two", "fields")],
                     "fr": [("b <mask>", "x", "x,y", "s"), ("c <mask>", "x", "x,y", "s")]})
    code, _, err = run_cli(capsys, "data", "show", str(d), "--on-missing", "fail")
    assert code == 2
    assert "en.tsv" in err and "3" in err


def test_model_not_found_says_what_was_tried(capsys, bmlama_dir, tmp_path):
    code, _, err = run_cli(capsys, "sample", "--model", str(tmp_path / "no-such-model"),
                           "--data", str(bmlama_dir), "--store", str(tmp_path / "s"))
    assert code == 2
    assert "not found" in err and "tried" in err


def test_simulate_then_diagnose(capsys, tmp_path):
    out = tmp_path / "sim"
    code, _, _ = run_cli(capsys, "simulate", "--pi", "0.8", "--questions", "150", "--samples",
                         "10", "--options", "4", "--seed", "3", "--out", str(out))
    assert code == 0
    code, text, _ = run_cli(capsys, "diagnose", str(out), "--n-boot", "100")
    assert code == 0
    diag = json.loads((out / "diagnosis.json").read_text())
    lo, hi = diag["pi"]["model"]["ci"]
    assert 0.0 <= lo <= diag["pi"]["model"]["estimate"] <= hi <= 1.0
    assert 0.0 <= diag["pi"]["mismatch"] <= 1.0
    assert (out / "plots" / "ensembling.png").exists()
    assert "pi" in text


def test_sample_resumes_and_reuses_the_store(capsys, bmlama_dir, tmp_path):
    store, out = tmp_path / "store", tmp_path / "run"
    args = ("sample", "--model", "fake:x", "--data", str(bmlama_dir), "--samples", "5",
            "--store", str(store), "--out", str(out), "--no-diagnose")
    code, text, _ = run_cli(capsys, *args)
    assert code == 0 and "Accuracy per language" in text
    rows = (out / "samples.jsonl").read_text().splitlines()
    assert len(rows) == 2 * 2 * 5
    before = Store(store).count()
    # drop the last pair's rows as if the run had crashed, and rerun
    (out / "samples.jsonl").write_text("\n".join(rows[:-5]) + "\n")
    code, _, _ = run_cli(capsys, *args)
    assert code == 0
    assert (out / "samples.jsonl").read_text().splitlines() == rows
    assert Store(store).count() == before  # answered from the store


def test_config_file_sets_options(capsys, bmlama_dir, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'model = "fake:x"\ndata = "{bmlama_dir}"\nsamples = 3\ndiagnose = false\n'
                   f'store = "{tmp_path / "s"}"\n')
    code, _, _ = run_cli(capsys, "sample", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert code == 0
    assert json.loads((tmp_path / "r" / "run.json").read_text())["samples"] == 3


def test_sample_through_an_openai_compatible_server(capsys, bmlama_dir, tmp_path):
    """--model openai:NAME --base-url URL runs a whole sample + diagnosis over HTTP."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        code, text, err = run_cli(capsys, "sample", "--model", "openai:fake-model",
                                  "--base-url", server.base_url, "--data", str(bmlama_dir),
                                  "--samples", "4", "--store", str(tmp_path / "s"),
                                  "--out", str(tmp_path / "r"), "--n-boot", "50")
        first = server.count()
    assert code == 0, err
    assert "pi" in text
    assert len((tmp_path / "r" / "samples.jsonl").read_text().splitlines()) == 2 * 2 * 4
    assert first > 0


def test_resume_with_other_options_is_refused(capsys, bmlama_dir, tmp_path):
    base = ("sample", "--model", "fake:x", "--data", str(bmlama_dir), "--store",
            str(tmp_path / "s"), "--out", str(tmp_path / "r"), "--no-diagnose")
    assert run_cli(capsys, *base, "--samples", "3")[0] == 0
    code, _, err = run_cli(capsys, *base, "--samples", "3", "--temperature", "0.5")
    assert code == 2 and "temperature=1.0" in err and "another --out" in err
    # fewer targets on resume keeps the languages already in the run
    assert run_cli(capsys, *base, "--samples", "3", "--targets", "fr")[0] == 0
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["languages"] == ["en", "fr"]


@pytest.mark.parametrize(("content", "message"), [
    ('limit = "five"\n', "'limit' in the config file must be int"),
    ("samples = 0\n", "--samples must be at least 1"),
    ('[[x]]\n', "unknown option"),
])
def test_bad_config_values_are_clear_errors(capsys, tmp_path, content, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    code, _, err = run_cli(capsys, "sample", "--model", "fake:x", "--config", str(cfg))
    assert code == 2
    assert message in err


def test_demo_covers_three_lines_writes_a_report_and_reruns_for_free(tmp_path, monkeypatch,
                                                                     capsys, tiny_backend):
    """The main job end to end on a tiny model: a diagnosed run, the strategy table, the
    look inside, one report page; a second run computes nothing."""
    import xlgap.cli.workspace
    from xlgap.models.cached import CachedBackend

    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "demo"
    args = ("demo", "--no-progress", "--limit", "8", "--targets", "fr,ja", "--n-boot", "50",
            "--out", str(out))
    code, printed, err = run_cli(capsys, *args)
    assert code == 0, err
    diag = json.loads((out / "run" / "diagnosis.json").read_text())
    assert diag["mode"] == "exact" and set(diag["pairs"]) == {"fr", "ja"}
    table = json.loads((out / "intervene" / "interventions.json").read_text())
    assert set(table["strategies"]) == {"baseline", "tren-1", "vote-5"}
    assert all(m["parse_failures"]["total"] == 0 for m in table["strategies"].values())
    assert (out / "inside" / "ilo.json").exists() and (out / "inside" / "similarity.json").exists()
    page = (out / "report.html").read_text()
    assert "verdict" in page.lower() and "Interlingual Local Overlap" in page
    assert f"report: {(out / 'report.html').resolve()}" in printed
    for step in ("1/3 bias or variance", "2/3 what helps", "3/3 inside the model"):
        assert f"{step}" in err and "done in" in err
    computed = cached.computed
    assert run_cli(capsys, *args)[0] == 0
    assert cached.computed == computed
