"""End-to-end ``xlgap intervene`` on a fake model whose knowledge we control, the metrics
against a brute-force count, resume, and a smoke run on a tiny Hugging Face model."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

import xlgap.cli
import xlgap.cli.workspace
from fake_backend import FakeBackend
from xlgap.data.languages import language_name
from xlgap.errors import ConfigError
from xlgap.interventions.evaluate import compare_runs
from xlgap.runs import load_run, parse_failures

LANGS = ["en", "fr", "ja", "ru"]
N_ITEMS = 40
COLORS = {"en": ["Red", "Blue", "Green", "Gold"], "fr": ["Rouge", "Bleu", "Vert", "Or"],
          "ja": ["赤", "青", "緑", "金"], "ru": ["Красный", "Синий", "Зелёный", "Золотой"]}
QUESTIONS = {"en": "What is the colour of thing {i:03d}?",
             "fr": "Quelle est la couleur de la chose {i:03d} ?",
             "ja": "物{i:03d}の色は何ですか？", "ru": "Какого цвета вещь {i:03d}?"}
P_ENGLISH, P_OTHER = 0.9, 0.3  # chance of a right answer with / without English in sight


def write_data(path: Path, n: int = N_ITEMS, langs: list[str] = LANGS) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            gold = i % 4
            langs_obj = {lang: {"prompt": QUESTIONS[lang].format(i=i),
                                "candidates": [f"{c}{i:03d}" for c in COLORS[lang]],
                                "gold": gold} for lang in langs}
            fh.write(json.dumps({"id": f"q{i:03d}", "langs": langs_obj},
                                ensure_ascii=False) + "\n")
    return path


def _u(*parts: object) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2**64


class KnowsEnglish(FakeBackend):
    """Answers right with chance 0.9 when the English question is in the block it answers
    (or the model itself translated into English), else 0.3; wrong answers are the next
    candidate. Greedy translation prompts are answered from the parallel data."""

    def __init__(self, n: int = N_ITEMS) -> None:
        super().__init__()
        self.n_generate_prompts = 0
        self.questions = {(i, lang): QUESTIONS[lang].format(i=i)
                          for i in range(n) for lang in LANGS}
        self.by_text = {q: key for key, q in self.questions.items()}
        self.cand = {f"{c}{i:03d}": (i, lang, j) for i in range(n) for lang in LANGS
                     for j, c in enumerate(COLORS[lang])}
        self.names = {language_name(lang): lang for lang in LANGS}

    def answer(self, i: int, lang: str, english: bool, prompt: str, seed: int, k: int) -> str:
        right = _u(prompt, seed, k) < (P_ENGLISH if english else P_OTHER)
        gold = i % 4
        return f"{COLORS[lang][gold if right else (gold + 1) % 4]}{i:03d}"

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        self.calls += 1
        self.n_generate_prompts += len(prompts)
        return [[self._one(p, seed, k, temperature) for k in range(n)] for p in prompts]

    def _one(self, prompt: str, seed: int, k: int, temperature: float) -> str:
        block = prompt.split("\n\n")[-1]
        lines = block.split("\n")
        if temperature == 0:  # a translation: "Src: text\nDst:"
            text = lines[0].split(": ", 1)[1]
            dst = self.names[lines[1].rstrip(":")]
            if text in self.by_text:
                i, _ = self.by_text[text]
                return " " + self.questions[(i, dst)]
            i, _, j = self.cand[text]
            return f" {COLORS[dst][j]}{i:03d}"
        if block.startswith("Question ("):  # TTA: translate, then answer
            i, lang = self.by_text[lines[0].split(": ", 1)[1]]
            first = self.names[lines[1].rstrip(":")]
            answer = self.answer(i, lang, first == "en" or lang == "en", prompt, seed, k)
            return f" {self.questions[(i, first)]}\nAnswer ({language_name(lang)}): {answer}"
        # Answering: the asked question is the one that occurs last in the block.
        found = [(block.rfind(q), key) for q, key in self.by_text.items() if q in block]
        (i, lang) = max(found)[1]
        english = lang == "en" or self.questions[(i, "en")] in block
        return " " + self.answer(i, lang, english, prompt, seed, k)


def modes(answers: list[int]) -> set[int]:
    counts = {a: answers.count(a) for a in set(answers)}
    return {a for a, c in counts.items() if c == max(counts.values())}


def mode_right(answers: list[int], gold: int) -> float:
    """Whether the most frequent answer is gold, ties split evenly (the definition that
    ``diagnose`` and ``intervene`` share)."""
    counts = {a: answers.count(a) for a in set(answers)}
    top = [a for a, c in counts.items() if c == max(counts.values())]
    return top.count(gold) / len(top)


def brute_force(run_dir: Path, ids: set[str] | None = None) -> tuple[float, float]:
    """Transfer and overall success counted by a loop over (item, target) pairs."""
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    items = {json.loads(line)["id"]: json.loads(line)["gold"]
             for line in (run_dir / "items.jsonl").read_text().splitlines()}
    ans = {(r["item"], r["lang"], r["sample"]): r["answer"] for r in rows}
    meta = json.loads((run_dir / "run.json").read_text())
    both = src = total = 0.0
    for item, gold in items.items():
        if ids is not None and item not in ids:
            continue
        s_ans = [ans[(item, meta["source"], r)] for r in range(meta["samples"])]
        s_ok = mode_right(s_ans, gold)
        for tgt in meta["targets"]:
            a, b = modes(s_ans), modes([ans[(item, tgt, r)] for r in range(meta["samples"])])
            both += (gold in a and gold in b) / len(a | b)  # ties: one shared draw
            src += s_ok
            total += 1
    return both / src, both / total


@pytest.fixture
def fake(monkeypatch):
    backend = KnowsEnglish()
    backend.name = "knows-english"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: backend)
    return backend


def run_cli(args: list[str]) -> int:
    return xlgap.cli.run(["intervene", "--no-progress", *args])


def test_intervene_end_to_end(tmp_path, fake, capsys):
    data = write_data(tmp_path / "colors.jsonl")
    out = tmp_path / "iv"
    strategies = "baseline,tren-1,tta-1,tea,vote-5"
    args = ["--data", str(data), "--targets", "fr,ja,ru", "--strategies", strategies,
            "--samples", "3", "--shots", "2", "--out", str(out), "--n-boot", "400"]
    assert run_cli(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "interventions.json").read_text())
    assert (out / "interventions.md").read_text().startswith("# Interventions")
    assert (out / "interventions.png").stat().st_size > 1000
    assert result["source"] == "en" and result["targets"] == ["fr", "ja", "ru"]
    assert result["n_items"] == N_ITEMS and result["samples"] == 3
    table = result["strategies"]
    assert list(table) == strategies.split(",")
    for name, m in table.items():
        assert "tren-1" in printed and name in printed
        # the run directory is a standard run, and the metrics match a brute-force count
        transfer, success = brute_force(out / name)
        assert m["transfer"]["estimate"] == pytest.approx(transfer)
        assert m["overall_success"]["estimate"] == pytest.approx(success)
        for key in ("transfer", "overall_success"):
            lo, hi = m[key]["ci"]
            assert lo <= m[key]["estimate"] <= hi
        assert m["parse_failures"] == {"total": 0,
                                       "by_language": {lang: 0 for lang in LANGS}}
        assert set(m["accuracy"]) == set(LANGS)
        assert m["chi2"]["estimate"] >= 0
    base, tren = table["baseline"], table["tren-1"]
    # the truth: an answer is right with chance 0.3 without English, 0.9 with it; a
    # language is right on an item when the majority of its 3 answers is (wrong answers
    # all name the same next candidate)
    def majority_of_3(p: float) -> float:
        return p ** 3 + 3 * p ** 2 * (1 - p)

    assert base["transfer"]["estimate"] == pytest.approx(majority_of_3(P_OTHER), abs=0.1)
    # TEA with exact translations asks every language the very same English prompt (same
    # seed, same samples), so a target is right exactly when the source is, ties included
    assert table["tea"]["transfer"]["estimate"] == 1.0
    assert table["tea"]["agreement"]["estimate"] == 1.0
    for name in ("tren-1", "tta-1", "tea"):
        if name != "tea":
            assert table[name]["transfer"]["estimate"] == pytest.approx(
                majority_of_3(P_ENGLISH), abs=0.08)
        assert table[name]["transfer"]["ci"][0] > base["transfer"]["ci"][1]
        assert table[name]["vs_baseline"]["transfer"]["p"] < 0.01
        assert table[name]["vs_baseline"]["overall_success"]["p"] < 0.01
        assert table[name]["chi2"]["estimate"] < base["chi2"]["estimate"]
    # a majority of 5 samples that are right 30% of the time is right ~16% of the time
    assert table["vote-5"]["accuracy"]["fr"]["estimate"] == pytest.approx(0.163, abs=0.1)
    assert table["vote-5"]["transfer"]["estimate"] < base["transfer"]["estimate"]
    assert table["vote-5"]["vs_baseline"]["transfer"]["p"] < 0.05
    assert base["vs_baseline"] is None
    assert tren["per_target"]["ja"]["transfer"]["estimate"] == pytest.approx(
        majority_of_3(P_ENGLISH), abs=0.12)
    # intermediate texts are kept for inspection
    rows = [json.loads(line) for line in (out / "tea" / "samples.jsonl").read_text().splitlines()]
    first_fr = next(r for r in rows if r["lang"] == "fr" and r["sample"] == 0)
    assert first_fr["intermediate"]["english_question"] == QUESTIONS["en"].format(
        i=int(first_fr["item"][1:]))
    assert load_run(out / "tren-1").meta["strategy"] == "tren-1"

    # resume: every run directory is complete, so the model is not called at all
    calls, files = fake.calls, {p: p.read_bytes() for p in out.glob("*/samples.jsonl")}
    assert run_cli(args) == 0
    assert fake.calls == calls
    assert {p: p.read_bytes() for p in out.glob("*/samples.jsonl")} == files
    assert json.loads((out / "interventions.json").read_text())["strategies"] == table


def test_resume_after_a_partial_run_and_other_scripts(tmp_path, fake):
    data = write_data(tmp_path / "colors.jsonl")
    out = tmp_path / "iv"
    common = ["--data", str(data), "--targets", "fr,ja", "--samples", "2", "--n-boot", "200"]
    assert run_cli([*common, "--strategies", "tren-1", "--limit", "10", "--out", str(out)]) == 0
    before = fake.n_generate_prompts
    # same items plus more: only the new pairs are asked
    assert run_cli([*common, "--strategies", "tren-1", "--limit", "20", "--out", str(out)]) == 0
    assert fake.n_generate_prompts - before == 2 * 10 * 3  # two strategies x 10 items x 3 langs
    # a smaller --limit reads the first items of the directories, asking nothing new
    before = fake.n_generate_prompts
    assert run_cli([*common, "--strategies", "tren-1", "--limit", "5", "--out", str(out)]) == 0
    assert fake.n_generate_prompts == before
    small = json.loads((out / "interventions.json").read_text())
    assert small["n_items"] == 5
    first5 = {f"q{i:03d}" for i in range(5)}
    for name in ("baseline", "tren-1"):
        transfer, success = brute_force(out / name, first5)
        assert small["strategies"][name]["transfer"]["estimate"] == pytest.approx(transfer)
        assert small["strategies"][name]["overall_success"]["estimate"] == pytest.approx(
            success)
    # another option in the same directory is refused instead of mixed in
    with pytest.raises(ConfigError, match="other_scripts"):
        run_cli([*common, "--strategies", "tren-1", "--other-scripts", "--limit", "20",
                 "--out", str(out)])
    # with --other-scripts the translation is Japanese or Russian: no English, no gain
    out2 = tmp_path / "iv2"
    assert run_cli([*common, "--strategies", "tren-1", "--other-scripts", "--limit", "40",
                    "--out", str(out2)]) == 0
    result = json.loads((out2 / "interventions.json").read_text())
    tren = result["strategies"]["tren-1"]
    assert tren["transfer"]["estimate"] == pytest.approx(P_OTHER, abs=0.12)
    assert tren["vs_baseline"]["transfer"]["p"] > 0.05
    assert result["strategies"]["baseline"]["vs_baseline"] is None


def test_metrics_match_a_loop_and_failures_are_counted(tmp_path):
    """compare_runs on hand-made runs: pooled ratios against a loop; failures counted."""
    from xlgap.runs import RunWriter

    rng = np.random.default_rng(3)
    q, r = 30, 4
    golds = rng.integers(0, 3, q)
    runs = {}
    for name, p in (("baseline", 0.4), ("better", 0.8)):
        w = RunWriter(tmp_path / name, {"source": "en", "targets": ["fr", "de"], "samples": r,
                                        "strategy": name})
        w.add_items([{"id": f"i{i}", "n_options": 3, "gold": int(golds[i])} for i in range(q)])
        rows = []
        for i in range(q):
            for lang in ("en", "fr", "de"):
                for s in range(r):
                    right = rng.random() < (0.7 if lang == "en" else p)
                    fail = not right and rng.random() < 0.2
                    ans = -1 if fail else int(golds[i] if right else (golds[i] + 1) % 3)
                    rows.append({"item": f"i{i}", "lang": lang, "sample": s, "answer": ans,
                                 "failed": fail})
        w.add_samples(rows)
        runs[name] = load_run(tmp_path / name)
    # naive reference: transfer = both right / source right, with mode_right
    better_run = runs["better"]
    loop_both = loop_src = 0.0
    for i in range(q):
        g = int(better_run.gold[i])
        s_right = mode_right(better_run.samples["en"][i].tolist(), g)
        for t in ("fr", "de"):
            loop_src += s_right
            loop_both += min(s_right, mode_right(better_run.samples[t][i].tolist(), g))
    failures = {name: parse_failures(tmp_path / name) for name in runs}
    res = compare_runs(runs, n_boot=300, seed=1, failures=failures)
    better = res["strategies"]["better"]
    assert better["transfer"]["estimate"] == pytest.approx(loop_both / loop_src)
    assert better["parse_failures"]["total"] == sum(failures["better"].values()) > 0
    assert better["vs_baseline"]["transfer"]["p"] < 0.01
    # a CI that covers the estimate and narrows with more replicates is the bootstrap's job;
    # here: the better strategy's interval lies above the baseline's
    assert better["transfer"]["ci"][0] > res["strategies"]["baseline"]["transfer"]["ci"][1]


def test_intervene_smoke_on_tiny_hf_model(tmp_path, monkeypatch, tiny_backend):
    from xlgap.models.cached import CachedBackend
    from xlgap.store import Store

    data = write_data(tmp_path / "tiny.jsonl", n=2, langs=["en", "fr"])
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "smoke"
    assert xlgap.cli.run(["intervene", "--no-progress", "--data", str(data), "--targets", "fr",
                          "--strategies", "baseline,tta-1,tea", "--samples", "2", "--shots",
                          "1", "--n-boot", "50", "--out", str(out)]) == 0
    result = json.loads((out / "interventions.json").read_text())
    assert set(result["strategies"]) == {"baseline", "tta-1", "tea"}
    for name in result["strategies"]:
        run = load_run(out / name)
        assert run.k == 2 and not run.missing["fr"] and not run.missing["en"]
        rows = (out / name / "samples.jsonl").read_text().splitlines()
        assert len(rows) == 2 * 2 * 2  # items x languages x replicates
        failed = parse_failures(out / name)
        assert result["strategies"][name]["parse_failures"]["total"] == sum(failed.values())
    # gibberish TTA output has no answer marker: counted as failed, mapped to OTHER
    tta_rows = [json.loads(line) for line in (out / "tta-1" / "samples.jsonl").read_text()
                .splitlines()]
    for row in tta_rows:
        assert row["failed"] == (not re.search(r"answer", row["raw"], re.IGNORECASE)
                                 or row["text"] == "")
        if row["failed"]:
            assert row["answer"] == -1
    computed = cached.computed
    assert xlgap.cli.run(["intervene", "--no-progress", "--data", str(data), "--targets", "fr",
                          "--strategies", "baseline,tta-1,tea", "--samples", "2", "--shots",
                          "1", "--n-boot", "50", "--out", str(out)]) == 0
    assert cached.computed == computed
