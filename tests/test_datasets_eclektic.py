"""ECLeKTic end to end, offline: its published file (``eclektic_main.jsonl``, the fixture
in tests/fixtures/datasets) through ``xlgap data get eclektic --from DIR``, ``sample
--source item``, ``diagnose`` and the HTML report, which shows ``by_source.json``; and
``intervene --source item`` on per-item-source data with candidates."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from fake_backend import FakeBackend
from xlgap.cli import main, workspace
from xlgap.data import catalog, load_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "eclektic_main.jsonl"


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


class QuizBackend(FakeBackend):
    """Knows ECLeKTic's questions: answers a question right where it is asked in its item's
    own source language or in a language of ``also``, and says it does not know elsewhere."""

    def __init__(self, rows: list[dict], also: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.also = also
        self.known: dict[str, tuple[str, bool]] = {}  # question -> (answer, asked in source)
        for row in rows:
            for key, text in row.items():
                if key.endswith("_q") and len(key) <= 5:
                    lang = key[:-2]
                    home = lang == row["original_lang"] or lang in also
                    self.known[text] = (row[f"{lang}_a"], home)

    @property
    def fingerprint(self) -> str:
        return f"quiz-{'-'.join(self.also)}"

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        out = []
        for prompt in prompts:
            hits = [q for q in self.known if q in prompt]
            assert len(hits) == 1, prompt  # zero shots: one question per prompt
            answer, right = self.known[hits[0]]
            out.append([answer if right else "I do not know"] * n)
        return out


@pytest.fixture
def eclektic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> list[dict]:
    """``xlgap data get eclektic --from DIR`` on the fixture, into a private cache."""
    monkeypatch.setenv("XLGAP_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "download"
    local.mkdir()
    shutil.copy(FIXTURE, local / "eclektic_main.jsonl")
    code, out, _ = run_cli(capsys, "data", "get", "eclektic", "--from", str(local))
    assert code == 0 and "2 items in 3 languages" in out
    manifest = catalog.read_manifest("eclektic")
    assert manifest is not None and manifest["fetched_from"] == str(local)
    (row,) = manifest["files"]
    assert row["from"] == str(local / "eclektic_main.jsonl") and not row["pinned"]
    assert "sha256 could not be computed" in row["why_not_pinned"]
    assert manifest["pinned"] is False
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("also, expected", [((), 0.0), (("en",), 0.5), (("en", "he", "ja"),
                                                                          1.0)])
def test_eclektic_from_its_published_file_to_the_report(eclektic, capsys, monkeypatch,
                                                        tmp_path: Path, also, expected) -> None:
    monkeypatch.setattr(workspace, "open_backend", lambda cfg: QuizBackend(eclektic, also))
    out = tmp_path / "run"
    code, _, _ = run_cli(capsys, "sample", "--data", "eclektic", "--source", "item",
                         "--samples", "2", "--shots", "0", "--n-boot", "50", "--no-diagnose",
                         "--store", str(tmp_path / "store"), "--out", str(out))
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["source-he", "source-ja"]
    for src, other in (("he", "ja"), ("ja", "he")):
        run = read(out / f"source-{src}" / "run.json")
        assert run["source"] == src and run["targets"] == ["en", other]
    code, _, _ = run_cli(capsys, "diagnose", str(out), "--n-boot", "50")
    assert code == 0
    result = read(out / "by_source.json")
    assert result["sources"] == ["he", "ja"]
    for src in ("he", "ja"):
        assert read(out / f"source-{src}" / "diagnosis.json")["accuracy"][src]["estimate"] == 1
    # each item right in its source counts once per target: 2 items x 2 targets; the answer
    # is right in `also` only, so transfer is the share of targets among `also`
    pooled = result["pooled"]
    assert pooled["transfer_parts"]["denominator"] == 4
    assert pooled["transfer"]["estimate"] == pytest.approx(expected)
    code, _, _ = run_cli(capsys, "report", "--dirs", str(out), "--out",
                         str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert code == 0 and "Transfer from each item" in page
    assert f"pooled transfer {expected:.3f}" in page
    # the heading names the model and data of the groups' runs
    assert re.search(r"Transfer from each item&#39;s source: [\w-]+ on eclektic", page)
    table = page[page.index("Transfer from each item"):]
    assert all(re.search(rf">{name}<", table) for name in ("he", "ja", "pooled"))


def test_intervene_on_open_questions_says_what_it_needs(eclektic, capsys, monkeypatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(workspace, "open_backend", lambda cfg: QuizBackend(eclektic))
    code, _, err = run_cli(capsys, "intervene", "--data", "eclektic", "--source", "item",
                           "--out", str(tmp_path / "iv"))
    assert code == 2 and "no answer candidates" in err and "Traceback" not in err
    assert not (tmp_path / "iv").exists()


class SourceBackend(FakeBackend):
    """Multiple choice: picks the gold option (its text is 'right') where the question is
    asked in the language the item comes from (the prompt says '[lang*]'), else 'wrong'."""

    @property
    def fingerprint(self) -> str:
        return "source-mc"

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        out = []
        for prompt in prompts:
            home = re.findall(r"\[(\w+)(\*?)\]", prompt)[-1][1]
            out.append(["right" if home else "wrong"] * n)
        return out


def test_intervene_source_item_compares_per_source_group(capsys, monkeypatch,
                                                         tmp_path: Path) -> None:
    langs = ("en", "fr", "de")
    sources = {"q0": "en", "q1": "en", "q2": "fr", "q3": "fr"}
    rows = []
    for item_id, src in sources.items():
        rows.append(json.dumps({"id": item_id, "source": src, "langs": {
            lang: {"prompt": f"[{lang}{'*' if lang == src else ''}] {item_id}?",
                   "candidates": ["right", "wrong"], "gold": 0} for lang in langs}}))
    data = tmp_path / "mc.jsonl"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert load_dataset(data).item_sources == sources
    monkeypatch.setattr(workspace, "open_backend", lambda cfg: SourceBackend())
    out = tmp_path / "iv"
    code, _, err = run_cli(capsys, "intervene", "--data", str(data), "--source", "item",
                           "--strategies", "baseline", "--samples", "2", "--shots", "0",
                           "--n-boot", "50", "--out", str(out))
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["source-en", "source-fr"]
    for src in ("en", "fr"):
        result = read(out / f"source-{src}" / "interventions.json")
        run = read(out / f"source-{src}" / "baseline" / "run.json")
        assert run["source"] == src and run["targets"] == [t for t in langs if t != src]
        ids = [json.loads(r)["id"] for r in
               (out / f"source-{src}" / "baseline" / "items.jsonl").read_text().splitlines()]
        assert ids == [i for i, s in sources.items() if s == src]
        assert result["format"] == "interventions"
