"""Open questions (free-text answers judged by alias or a judge model), the L2 variance
share, lettered multiple choice, and scored (exact) interventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fake_backend import FakeBackend
from xlgap.data import load_dataset
from xlgap.data.items import Item, LangEntry
from xlgap.judging import Judge
from xlgap.prompting.answers import OTHER
from xlgap.prompting.templates import PromptBuilder, option_order
from xlgap.runs import load_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.diagnose import diagnose, verdict
from xlgap.stats.ensembling import (
    fit_bias_variance,
    share_parts,
    variance_share,
    vector_curves,
)

# -- the variance share of the L2 distance ----------------------------------------------------


def simulated_vectors(rng: np.random.Generator, q: int, k: int, d: int, bias: float,
                      spread: float) -> tuple[np.ndarray, np.ndarray]:
    """(Q, K, d) answer embeddings: the target's centre is ``bias`` away from the source's
    (a random direction per item); answers scatter with ``spread`` around each centre."""
    centre = rng.normal(size=(q, 1, d))
    shift = rng.normal(size=(q, 1, d))
    shift *= bias / np.linalg.norm(shift, axis=-1, keepdims=True)
    src = centre + spread * rng.normal(size=(q, k, d))
    tgt = centre + shift + spread * rng.normal(size=(q, k, d))
    return src, tgt


@pytest.mark.parametrize(("bias", "spread", "truth"), [(2.0, 0.0, 0.0), (0.0, 1.0, 1.0),
                                                       (1.0, 0.5, None)])
def test_variance_share_recovers_its_truth(bias: float, spread: float, truth: float | None):
    rng = np.random.default_rng(7)
    q, k, d = 200, 10, 16
    src, tgt = simulated_vectors(rng, q, k, d, bias, spread)
    curves = vector_curves(src, tgt, repeats=20, seed=1)
    share = variance_share(*share_parts(src, tgt), n_boot=200, seed=0)
    if truth is None:  # both: variance 2 d spread^2 against bias^2
        truth = 2 * d * spread ** 2 / (2 * d * spread ** 2 + bias ** 2)
    assert share["estimate"] == pytest.approx(truth, abs=0.05)
    lo, hi = share["ci"]
    assert lo - 0.02 <= truth <= hi + 0.02
    # the curve really falls as bias^2 + variance / k
    bias2, var = fit_bias_variance(np.nanmean(curves["l2sq"], axis=0))
    assert bias2 == pytest.approx(bias ** 2, abs=0.1 + 0.05 * bias ** 2)
    assert var == pytest.approx(2 * d * spread ** 2, rel=0.1, abs=0.05)


def test_variance_share_matches_the_closed_form():
    """A naive reference: with K answers drawn without replacement the expected curve is
    ||mean_s - mean_t||^2 + (S_s^2 + S_t^2) (1/k - 1/K) exactly (S^2: trace of the sample
    covariance), so the fit gives variance = S_s^2 + S_t^2."""
    rng = np.random.default_rng(3)
    src, tgt = simulated_vectors(rng, 80, 6, 5, 1.0, 0.7)
    curves = vector_curves(src, tgt, repeats=400, seed=2)
    var_ref = np.mean(src.var(axis=1, ddof=1).sum(-1) + tgt.var(axis=1, ddof=1).sum(-1))
    gap = np.mean(((src.mean(1) - tgt.mean(1)) ** 2).sum(-1))
    bias2, var = fit_bias_variance(np.nanmean(curves["l2sq"], axis=0))
    assert var == pytest.approx(var_ref, rel=0.03)
    assert bias2 == pytest.approx(gap - var_ref / 6, abs=0.03)


# -- open questions end to end ------------------------------------------------------------------

OPEN_LANGS = {"en": ("Who wrote item {i}?", ["Author {i}", "Auth. {i}"]),
              "fr": ("Qui a écrit l'objet {i} ?", ["Auteur {i}"]),
              "ja": ("物{i}を書いたのは誰？", ["作者{i}"])}


def open_data(path: Path, n: int = 12) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            langs = {lang: {"prompt": q.format(i=i), "answers": [a.format(i=i) for a in ans]}
                     for lang, (q, ans) in OPEN_LANGS.items()}
            fh.write(json.dumps({"id": f"o{i}", "langs": langs}, ensure_ascii=False) + "\n")
    return path


class OpenAnswers(FakeBackend):
    """English answers right (an alias) on even items; French answers "Auteur i" on items
    divisible by 4; everything else a name of its own."""

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        self.calls += 1
        out = []
        for p in prompts:
            last = p.strip().split("\n")[-2] if "\n" in p.strip() else p
            i = int("".join(ch for ch in last.split("?")[0].split("？")[0] if ch.isdigit())
                    or 0)
            if "Who wrote" in last:
                text = f" the auth. {i}" if i % 2 == 0 else f" Someone {i}"
            elif "Qui" in last:
                text = f" Auteur {i}" if i % 4 == 0 else f" Quelqu'un {i}"
            else:
                text = " 誰か"
            out.append([text for _ in range(n)])
        return out


def test_open_questions_sampled_and_diagnosed(tmp_path: Path) -> None:
    data = load_dataset(open_data(tmp_path / "open.jsonl"))
    assert data.has_open_items
    out = make_run(OpenAnswers(), data, tmp_path / "run", source="en", targets=["fr", "ja"],
                   options=SamplingOptions(samples=4, shots=1), progress=False)
    items = [json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()]
    assert all(row["open"] and row["n_options"] == 1 and row["gold"] == 0 for row in items)
    run = load_run(out)
    assert run.is_open.all() and run.answer_vectors is not None
    assert run.answer_vectors["fr"].shape == (12, 4, 8)
    diag = diagnose(run, n_boot=100, fit_model=False)
    # alias match: English "the auth. 0" matches the alias "Auth. 0" (article, case, punctuation)
    assert diag["accuracy"]["en"]["estimate"] == pytest.approx(0.5)
    assert diag["accuracy"]["fr"]["estimate"] == pytest.approx(0.25)
    assert diag["accuracy"]["ja"]["estimate"] == 0.0
    # transfer: of the 6 items right in English, 3 are right in French, none in Japanese
    assert diag["pairs"]["fr"]["transfer"]["estimate"] == pytest.approx(0.5)
    assert diag["pairs"]["ja"]["transfer"]["estimate"] == 0.0
    assert diag["checks"]["chance_accuracy"] == 0.0 and diag["checks"]["source_above_chance"]
    # L2 between answer embeddings, its curve and the curve-based variance share
    l2 = diag["pairs"]["fr"]["l2"]
    assert l2["estimate"] > 0 and l2["n"] == 12
    assert diag["pairs"]["fr"]["ensembling"]["l2"] is not None
    share = diag["pairs"]["fr"]["variance_share_l2"]
    # each language repeats one answer K times: no spread, so the gap is all bias
    assert share["estimate"] == pytest.approx(0.0, abs=1e-6)
    # wrong free-text answers are answers: no "names no candidate" veto on open items
    assert not diag["checks"]["mostly_other"] and not diag["checks"]["mostly_no_answer"]
    assert diag["checks"]["no_answer_share"]["ja"] == 0.0
    assert "variance share" in verdict(diag)
    assert diag["l2_embedder"] == "self:2:mean_no_bos"  # the last of its 3 layers


class EmptyInJapanese(OpenAnswers):
    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        got = super().generate(prompts, n, temperature, max_new_tokens, seed, stop)
        return [["" for _ in outs] if outs[0] == " 誰か" else outs for outs in got]


def test_open_answers_mostly_empty_give_no_verdict(tmp_path: Path) -> None:
    data = load_dataset(open_data(tmp_path / "open.jsonl"))
    out = make_run(EmptyInJapanese(), data, tmp_path / "run", source="en",
                   targets=["fr", "ja"], options=SamplingOptions(samples=4, shots=1),
                   progress=False)
    diag = diagnose(load_run(out), n_boot=50, fit_model=False)
    assert diag["checks"]["no_answer_share"]["ja"] == 1.0
    assert diag["checks"]["no_answer_share"]["fr"] == 0.0
    assert diag["checks"]["mostly_no_answer"]
    assert verdict(diag).startswith("no verdict: most answers to the open questions are empty")


def test_another_embedder_embeds_every_answer_again(tmp_path: Path) -> None:
    from xlgap.sampling import write_sample_embeddings

    data = load_dataset(open_data(tmp_path / "open.jsonl", n=4))
    out = make_run(OpenAnswers(), data, tmp_path / "run", source="en", targets=["fr"],
                   options=SamplingOptions(samples=2, shots=1), progress=False)

    def constant(value: float, name: str):
        def embed(texts):
            return np.full((len(texts), 3), value)
        embed.name = name
        return embed

    write_sample_embeddings(constant(1.0, "a"), out)
    assert load_run(out).answer_embedder == "a"
    write_sample_embeddings(constant(2.0, "a"), out)  # same embedder: nothing redone
    assert np.all(load_run(out).answer_vectors["fr"] == 1.0)
    write_sample_embeddings(constant(2.0, "b"), out)  # another one: everything redone
    run = load_run(out)
    assert run.answer_embedder == "b" and np.all(run.answer_vectors["fr"] == 2.0)


def test_a_judge_decides_open_answers(tmp_path: Path) -> None:
    class YesForSomeone(FakeBackend):
        def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0,
                     stop=("\n",)):
            self.calls += 1
            return [[" yes" if "Answer: Someone" in p else " no"] for p in prompts]

    judge_backend = YesForSomeone()
    judge = Judge(judge_backend, "fake-judge")
    item = Item("o1", {"en": LangEntry("Who wrote item 1?", answers=("Author 1",))})
    assert judge.judge(item, "en", [" Someone 1", "Author 1", "", "Someone 1"]) == [
        0, OTHER, OTHER, 0]
    assert judge_backend.calls == 1  # one batched call, the repeated answer asked once


# -- lettered multiple choice ---------------------------------------------------------------------


def test_lettered_options_shuffle_per_language_and_map_back() -> None:
    entry = {lang: LangEntry(f"Capital of X ({lang})?", candidates=("Paris", "Rome", "Oslo",
                                                                     "Bern"),
                             gold=2, format="mc") for lang in ("en", "fr")}
    item = Item("m1", entry)
    plain = PromptBuilder(FakeBackend(), [item], shots=0)
    prompt = plain.generation_prompt(item, "en")
    assert "\nA. Paris\nB. Rome\nC. Oslo\nD. Bern\nA:" in prompt
    shuffled = PromptBuilder(FakeBackend(), [item], shots=0, shuffle_options=True)
    orders = {lang: option_order("m1", lang, 4, True) for lang in ("en", "fr")}
    assert sorted(orders["en"]) == [0, 1, 2, 3] and orders["en"] != orders["fr"]
    for lang in ("en", "fr"):
        letter = "ABCD"[orders[lang].index(2)]
        assert shuffled.map_generated(item, lang, f" {letter}") == 2
        assert shuffled.map_generated(item, lang, " Oslo") == 2  # the option's text too
        conts = shuffled.scoring_prompt(item, lang).continuations
        assert conts[2] == f" {letter}\n"  # continuations stay in candidate order


# -- scored interventions -----------------------------------------------------------------------


def test_intervene_exact_has_no_parse_failures(tmp_path, monkeypatch, tiny_backend) -> None:
    import xlgap.cli
    import xlgap.cli.workspace
    from test_interventions import write_data
    from xlgap.models.cached import CachedBackend
    from xlgap.store import Store

    data = write_data(tmp_path / "colors.jsonl", n=6, langs=["en", "fr", "ja"])
    cached = CachedBackend(tiny_backend, Store(tmp_path / "store"))
    cached.name = "tiny"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: cached)
    out = tmp_path / "iv"
    args = ["intervene", "--no-progress", "--data", str(data), "--targets", "fr,ja",
            "--strategies", "baseline,tren-1,tta-1,tea,vote-3", "--exact", "--shots", "1",
            "--n-boot", "50", "--out", str(out)]
    assert xlgap.cli.run(args) == 0
    result = json.loads((out / "interventions.json").read_text())
    for name, m in result["strategies"].items():
        assert m["parse_failures"]["total"] == 0
        run = load_run(out / name)
        assert run.mode == "exact" and not any(run.missing.values())
        assert np.allclose(run.probs["fr"].sum(axis=1), 1.0)
        assert m["transfer"]["estimate"] is None or 0 <= m["transfer"]["estimate"] <= 1
    # TEA in English is the baseline's English prompt: same distribution
    assert np.allclose(load_run(out / "tea").probs["en"], load_run(out / "baseline").probs["en"])
    # exact vote-3 sharpens the baseline distribution towards its mode and keeps the mode,
    # so the mode statistics are the baseline's and have no test
    base, vote = load_run(out / "baseline").probs["fr"], load_run(out / "vote-3").probs["fr"]
    assert (vote.max(axis=1) >= base.max(axis=1) - 1e-9).all()
    assert (vote.argmax(axis=1) == base.argmax(axis=1)).all()
    strat = result["strategies"]
    assert strat["vote-3"]["transfer"] == strat["baseline"]["transfer"]
    assert "transfer" not in strat["vote-3"]["vs_baseline"] and strat["vote-3"]["not_applicable"]
    computed = cached.computed
    assert xlgap.cli.run(args) == 0
    assert cached.computed == computed  # a complete exact run costs nothing


def test_candidate_items_asked_as_open_questions(tmp_path: Path) -> None:
    from test_interventions import write_data

    data = load_dataset(write_data(tmp_path / "c.jsonl", n=3, langs=["en", "fr"])).as_open()
    assert data.has_open_items and not data.has_candidates
    entry = data.items[1]["fr"]
    assert entry.is_open and entry.answers[0] == "Bleu001" and entry.candidates == ()
