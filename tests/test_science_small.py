"""The smaller points of issue 18: the tie rule of overall success / transfer, judge
parsing, and empty open answers (not one shared " " vector in every language)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fake_backend import FakeBackend
from test_open_questions import OpenAnswers, open_data
from xlgap.data import load_dataset
from xlgap.data.items import Item, LangEntry
from xlgap.judging import Judge
from xlgap.prompting.answers import OTHER
from xlgap.runs import load_run
from xlgap.sampling import SamplingOptions, make_run, write_sample_embeddings
from xlgap.stats.ensembling import vector_curves
from xlgap.stats.metrics import agreement_per_item, overall_success_per_item, transfer_parts


def test_overall_success_uses_the_shared_draw_of_agreement() -> None:
    """Modes {g, x} in the source and {g, y} in the target: one shared random order of
    the candidates picks the first of each mode set; both are gold when g comes first
    among {g, x, y}: 1/3 (|A & B| / |A | B| with g in both), not min(1/2, 1/2)."""
    p = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    q = np.array([[0.5, 0.0, 0.5], [0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    gold = np.array([0, 0, 0, 0])
    both = overall_success_per_item(p, q, gold)
    assert both == pytest.approx([1 / 3, 1 / 2, 1 / 2, 0.0])
    # a target identical to its source is right exactly when the source is (transfer 1)
    num, den = transfer_parts(p, p, gold)
    assert num.sum() / den.sum() == pytest.approx(1.0)
    # the same coupling as agreement: both right never exceeds agreeing
    assert np.all(both <= agreement_per_item(p, q) + 1e-12)


def test_judge_reads_the_first_word_whatever_surrounds_it() -> None:
    replies = {"a1": "Yes,", "a2": "**Yes**", "a3": "Yes;", "a4": " yes.", "a5": "No, it",
               "a6": "\n Correct!", "a7": "no", "a8": "Yesterday"}

    class Replies(FakeBackend):
        def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0,
                     stop=("\n",)):
            return [[next(v for k, v in replies.items() if f"Answer: {k}\n" in p)]
                    for p in prompts]

    judge = Judge(Replies(), "replies")
    item = Item("o1", {"en": LangEntry("Who wrote item 1?", answers=("Author 1",))})
    got = judge.judge(item, "en", list(replies))
    assert got == [0, 0, 0, 0, OTHER, 0, OTHER, OTHER]


class SomeEmpty(OpenAnswers):
    """Every first answer of a prompt is empty."""

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        got = super().generate(prompts, n, temperature, max_new_tokens, seed, stop)
        return [["", *outs[1:]] for outs in got]


def test_empty_open_answers_are_not_embedded(tmp_path: Path) -> None:
    data = load_dataset(open_data(tmp_path / "open.jsonl", n=4))
    out = make_run(SomeEmpty(), data, tmp_path / "run", source="en", targets=["fr"],
                   options=SamplingOptions(samples=3, shots=1), progress=False)
    seen: list[str] = []

    def embed(texts):
        seen.extend(texts)
        return np.ones((len(texts), 2))
    embed.name = "ones"

    write_sample_embeddings(embed, out)
    assert all(t.strip() for t in seen)  # nothing empty was embedded
    vec = load_run(out).answer_vectors
    assert vec is not None
    assert np.isnan(vec["fr"][:, 0]).all() and np.isfinite(vec["fr"][:, 1:]).all()


def test_ensembling_curve_drops_missing_answers_per_subset() -> None:
    """An empty answer (NaN vector) is left out of the subsets it falls in; the item
    keeps its curve, computed from the answers it has."""
    src = np.array([[[0.0, 0.0], [0.0, 0.0], [np.nan, np.nan]]])
    tgt = np.array([[[3.0, 4.0], [np.nan, np.nan], [3.0, 4.0]]])
    curves = vector_curves(src, tgt, repeats=8, seed=0)
    assert np.isfinite(curves["l2"][0]).all()
    assert curves["l2"][0] == pytest.approx([5.0, 5.0, 5.0])


def test_ilo_reference_is_the_language_mixed_one_and_zero_means_apart() -> None:
    """Known answer: four languages in four far-apart clusters mix with nobody (ILO 0);
    the label-shuffled figure is the fully language-mixed reference, well above 0, under
    its own name (and the old one, for older readers)."""
    from xlgap.representations.ilo import MIXED_REFERENCE, ilo_uncertainty

    rng = np.random.default_rng(0)
    vecs = {lang: rng.normal(size=(40, 6)) + 50.0 * np.eye(6)[j]
            for j, lang in enumerate(["en", "fr", "ru", "ja"])}
    res = ilo_uncertainty(vecs, k=5, t=2, n_boot=20, n_shuffles=3)
    mean = res["summary"]["mean"]
    assert mean["estimate"] == 0.0
    assert mean["mixed_reference"] == mean["chance"] > 0.5
    assert res["mixed_reference_method"] == MIXED_REFERENCE
    assert "0 means no language mixes" in MIXED_REFERENCE


def test_exact_runs_are_not_described_with_a_sample_count(tmp_path: Path) -> None:
    """An exact run has distributions: run.json and interventions.json carry no sample
    count for the report to print as "samples 10" or "R = 0 final answers"."""
    import json

    from test_interventions import write_data
    from xlgap.data import load_dataset
    from xlgap.interventions.evaluate import evaluate_dirs, run_strategy
    from xlgap.interventions.strategies import StrategyOptions, get_strategy

    data = load_dataset(write_data(tmp_path / "colors.jsonl", n=6))
    out = make_run(FakeBackend(), data, tmp_path / "run", source="en", targets=["fr"],
                   options=SamplingOptions(samples=10, exact=True, shots=1), progress=False)
    assert json.loads((out / "run.json").read_text())["samples"] is None
    opts = StrategyOptions(exact=True, shots=1)
    for name in ("baseline", "vote-3"):
        run_strategy(get_strategy(name, FakeBackend(), data, opts), data,
                     tmp_path / "iv" / name, source="en", targets=["fr"], progress=False)
    result = evaluate_dirs(tmp_path / "iv", ["baseline", "vote-3"], n_boot=20)
    assert result["samples"] is None and result["mode"] == "exact"
    assert json.loads((tmp_path / "iv" / "vote-3" / "run.json").read_text())["samples"] is None


def test_an_exact_run_of_older_code_resumes(tmp_path: Path) -> None:
    """Older exact runs recorded the --samples option as "samples"; resuming one with
    today's code (no sample count) is not refused."""
    import json

    from test_interventions import write_data
    from xlgap.data import load_dataset

    data = load_dataset(write_data(tmp_path / "colors.jsonl", n=4))
    opts = SamplingOptions(samples=3, exact=True, shots=1)
    out = make_run(FakeBackend(), data, tmp_path / "run", source="en", targets=["fr"],
                   options=opts, progress=False)
    meta = json.loads((out / "run.json").read_text())
    meta["samples"] = 3
    (out / "run.json").write_text(json.dumps(meta))
    make_run(FakeBackend(), data, out, source="en", targets=["fr", "ja"], options=opts,
             progress=False)
    assert load_run(out).targets == ["fr", "ja"]
