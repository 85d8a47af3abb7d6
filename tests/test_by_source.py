"""``xlgap sample --source item``: one run per item source language (ECLeKTic's protocol),
transfer measured from each item's own source, and the pooled ``by_source.json``."""

from __future__ import annotations

import json
import re

import pytest

from fake_backend import FakeBackend
from xlgap.cli import main, workspace

LANGS = ("en", "fr", "de")
# ECLeKTic-style items (open questions, one gold answer, "source" = the language whose
# Wikipedia has the fact, as the eclektic converter writes them): two from en, two from fr.
# The prompt says which language it is in and marks the item's own source with '*', so a
# backend can answer by language.
SOURCES = {"q0": "en", "q1": "en", "q2": "fr", "q3": "fr"}


def write_items(path, sources=SOURCES):
    lines = []
    for item_id, src in sources.items():
        langs = {lang: {"prompt": f"[{lang}{'*' if lang == src else ''}] Is {item_id} true?",
                        "answers": ["yes"]} for lang in LANGS}
        row = {"id": item_id, "langs": langs, **({"source": src} if src else {})}
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class HomeBackend(FakeBackend):
    """Answers right ('yes') exactly where a question is asked in its item's own source
    language or in a language of ``also``, wrong ('no') elsewhere; fails on generate call
    number ``fail_at`` (an interrupted run)."""

    def __init__(self, also: tuple[str, ...] = (), fail_at: int | None = None) -> None:
        super().__init__()
        self.also = also
        self.fail_at = fail_at
        self.generated = 0

    @property
    def fingerprint(self) -> str:
        return f"home-{'-'.join(self.also)}"

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        self.generated += 1
        if self.generated == self.fail_at:
            raise RuntimeError("killed")
        out = []
        for prompt in prompts:
            lang, home = re.search(r"\[(\w+)(\*?)\]", prompt.rsplit("Q:", 1)[-1]).groups()
            out.append(["yes" if home or lang in self.also else "no"] * n)
        return out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exc.value.code), out, err


def sample(capsys, monkeypatch, tmp_path, backend, out, *extra: str) -> tuple[int, str, str]:
    monkeypatch.setattr(workspace, "open_backend", lambda cfg: backend)
    data = tmp_path / "eclektic.jsonl"
    if not data.exists():
        write_items(data)
    return run_cli(capsys, "sample", "--data", str(data), "--samples", "2", "--shots", "0",
                   "--n-boot", "50", "--store", str(tmp_path / "store"), "--out", str(out),
                   *extra)


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_one_run_per_source_group(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    code, text, _ = sample(capsys, monkeypatch, tmp_path, HomeBackend(), out, "--source", "item")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["by_source.json", "source-en", "source-fr"]
    for src, ids in (("en", ["q0", "q1"]), ("fr", ["q2", "q3"])):
        run = read(out / f"source-{src}" / "run.json")
        assert run["source"] == src and run["source_group"] == src
        assert run["targets"] == [t for t in LANGS if t != src]
        rows = (out / f"source-{src}" / "items.jsonl").read_text().splitlines()
        assert [json.loads(r)["id"] for r in rows] == ids
        diag = read(out / f"source-{src}" / "diagnosis.json")
        assert diag["source"] == src
        assert diag["accuracy"][src]["estimate"] == 1.0  # right in the item's own language
    result = read(out / "by_source.json")
    assert result["format"] == "by_source" and result["sources"] == ["en", "fr"]
    assert "pooled" in text


@pytest.mark.parametrize("also, expected", [((), 0.0), (LANGS, 1.0), (("fr",), 0.25)])
def test_transfer_is_measured_from_the_items_source(capsys, monkeypatch, tmp_path, also,
                                                    expected):
    out = tmp_path / "run"
    code, _, _ = sample(capsys, monkeypatch, tmp_path, HomeBackend(also), out,
                        "--source", "item")
    assert code == 0
    pooled = read(out / "by_source.json")["pooled"]
    # every item is right in its own source, so each counts once per target (4 x 2)
    assert pooled["transfer_parts"]["denominator"] == 8
    assert pooled["transfer"]["estimate"] == pytest.approx(expected)
    # from English for all: the fr items are wrong in en and leave the denominator, so
    # the same answers give another transfer (0.5, not 0.25) where they differ by source
    code, _, _ = sample(capsys, monkeypatch, tmp_path, HomeBackend(also), tmp_path / "en",
                        "--source", "en")
    assert code == 0
    from_en = read(tmp_path / "en" / "diagnosis.json")["overall"]["transfer"]["estimate"]
    assert from_en == pytest.approx({(): 0.0, LANGS: 1.0, ("fr",): 0.5}[also])


def test_pooled_numbers_are_the_groups_parts(capsys, monkeypatch, tmp_path):
    sources = {f"q{i}": src for i, src in enumerate(["en", "fr", "de"] * 4)}
    write_items(tmp_path / "eclektic.jsonl", sources)
    out = tmp_path / "run"
    # answers drawn by hash: some right, some wrong in every language
    code, _, _ = sample(capsys, monkeypatch, tmp_path, FakeBackend(answers=("yes", "no")),
                        out, "--source", "item", "--samples", "4")
    assert code == 0
    result = read(out / "by_source.json")
    num = den = 0.0
    for src, group in result["groups"].items():
        diag = read(out / f"source-{src}" / "diagnosis.json")
        for key in ("transfer", "overall_success", "agreement"):
            # recomputed from the run: the same figures as its fresh diagnosis
            assert group[key]["estimate"] == pytest.approx(diag["overall"][key]["estimate"],
                                                           abs=1e-6)
            assert group[key]["n"] == diag["overall"][key]["n"]
        parts = group["transfer_parts"]
        if parts["denominator"]:
            assert group["transfer"]["estimate"] == pytest.approx(
                parts["numerator"] / parts["denominator"], abs=1e-6)
        num, den = num + parts["numerator"], den + parts["denominator"]
    pooled = result["pooled"]
    assert pooled["transfer_parts"] == {"numerator": num, "denominator": den}
    assert den > 0 and 0 < num < den  # a case where pooling is not trivial
    assert pooled["transfer"]["estimate"] == pytest.approx(num / den)
    lo, hi = pooled["transfer"]["ci"]
    assert lo <= pooled["transfer"]["estimate"] <= hi
    assert pooled["n_items"] == sum(g["n_items"] for g in result["groups"].values()) == 12


def test_interrupted_run_resumes(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    # one model call per group (6 pairs < one chunk): the second call is the fr group
    with pytest.raises(RuntimeError, match="killed"):
        sample(capsys, monkeypatch, tmp_path, HomeBackend(("fr",), fail_at=2), out,
               "--source", "item", "--no-diagnose")
    assert (out / "source-en" / "samples.jsonl").exists()
    assert not (out / "by_source.json").exists()
    backend = HomeBackend(("fr",))
    code, _, _ = sample(capsys, monkeypatch, tmp_path, backend, out, "--source", "item")
    assert code == 0
    assert backend.generated == 1  # only the unfinished group was asked again
    clean = tmp_path / "clean"
    code, _, _ = sample(capsys, monkeypatch, tmp_path, HomeBackend(("fr",)), clean,
                        "--source", "item")
    assert code == 0
    for src in ("en", "fr"):
        rows = sorted((out / f"source-{src}" / "samples.jsonl").read_text().splitlines())
        assert rows == sorted((clean / f"source-{src}" / "samples.jsonl").read_text()
                              .splitlines())
    assert read(out / "by_source.json")["pooled"] == read(clean / "by_source.json")["pooled"]


def test_diagnose_pools_a_by_source_directory(capsys, monkeypatch, tmp_path):
    out = tmp_path / "run"
    code, _, _ = sample(capsys, monkeypatch, tmp_path, HomeBackend(("fr",)), out,
                        "--source", "item", "--no-diagnose")
    assert code == 0 and not (out / "by_source.json").exists()
    code, text, _ = run_cli(capsys, "diagnose", str(out), "--n-boot", "50")
    assert code == 0 and (out / "source-fr" / "diagnosis.json").exists()
    assert read(out / "by_source.json")["pooled"]["transfer"]["estimate"] == 0.25
    assert "pooled" in text


def test_source_item_needs_per_item_sources(capsys, monkeypatch, tmp_path):
    write_items(tmp_path / "eclektic.jsonl", {"q0": "en", "q1": ""})
    code, _, err = sample(capsys, monkeypatch, tmp_path, HomeBackend(), tmp_path / "run",
                          "--source", "item")
    assert code == 2 and "1 of 2 items" in err and "Traceback" not in err


def test_one_source_on_per_item_data_says_so(capsys, monkeypatch, tmp_path):
    code, _, err = sample(capsys, monkeypatch, tmp_path, HomeBackend(), tmp_path / "run",
                          "--source", "en", "--no-diagnose")
    assert code == 0 and "--source item" in err


def test_intervene_source_item_on_open_questions_says_what_it_needs(capsys, monkeypatch,
                                                                   tmp_path):
    write_items(tmp_path / "eclektic.jsonl")
    monkeypatch.setattr(workspace, "open_backend", lambda cfg: HomeBackend())
    code, _, err = run_cli(capsys, "intervene", "--data", str(tmp_path / "eclektic.jsonl"),
                           "--source", "item", "--out", str(tmp_path / "iv"))
    assert code == 2 and "no answer candidates" in err and "Traceback" not in err
    assert not (tmp_path / "iv").exists()


def test_stratified_bootstrap_and_macro_average():
    """Two source groups of different sizes, every item of one transferring and every
    item of the other not. Resampled within groups, each replicate keeps the groups'
    sizes, so the pooled transfer (weighted by source-correct pairs) cannot move: its CI
    is the point. The macro average weighs the two groups the same (0.5), not by size."""
    import numpy as np

    from xlgap.stats.by_source import stratified_summaries

    big = (np.ones((30, 2)), np.ones((30, 2)))  # 60 source-correct pairs, all transfer
    small = (np.zeros((10, 2)), np.ones((10, 2)))  # 20, none
    per, pooled, macro = stratified_summaries([big, small], n_boot=200, seed=1)
    assert [g["estimate"] for g in per] == [1.0, 0.0]
    assert pooled["estimate"] == pytest.approx(0.75) and pooled["n"] == 80
    assert pooled["ci"] == pytest.approx([0.75, 0.75])
    assert macro["estimate"] == pytest.approx(0.5) and macro["ci"] == pytest.approx([0.5, 0.5])
    # a missing pair leaves both parts (NaN in either)
    holed = (np.where(np.eye(10, 2) > 0, np.nan, 0.0), np.ones((10, 2)))
    per2, _, _ = stratified_summaries([holed], n_boot=50)
    assert per2[0]["n"] == 18
