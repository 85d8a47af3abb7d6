"""The L2 variance share on open questions (issue 18, point 3): language-centred answer
embeddings, per-target shares pooled with equal weights, and no bias/variance verdict
from the model's own embeddings without centring; each verdict on a run whose answer is
known."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from fake_backend import FakeBackend
from test_open_questions import open_data
from xlgap.data import load_dataset
from xlgap.runs import load_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.diagnose import diagnose, verdict
from xlgap.stats.ensembling import variance_share

# How each language writes the right answer and a wrong guess n (the same n means the
# same thing in every language).
RIGHT = {"en": "Author {n}", "fr": "Auteur {n}", "ja": "作者{n}"}
WRONG = {"en": "Mr {n}", "fr": "M. {n}", "ja": "{n}さん"}
QUESTION = {"en": "Who wrote item", "fr": "Qui a écrit", "ja": "を書いたのは誰"}


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


class SameBeliefs(FakeBackend):
    """Every language answers item i from one distribution: right (n = i) with chance
    ``p_right``, else a guess n in {i+1, i+2}, each written in the asked language."""

    def __init__(self, p_right: float) -> None:
        super().__init__()
        self.p_right = p_right

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        out = []
        for p in prompts:
            last = p.strip().split("\n")[-2] if "\n" in p.strip() else p
            lang = next(lang for lang, q in QUESTION.items() if q in last)
            i = int(re.findall(r"\d+", last)[0])
            texts = []
            for k in range(n):
                u = (_h(p, seed, k) % 10_000) / 10_000
                if u < self.p_right:
                    texts.append(" " + RIGHT[lang].format(n=i))
                else:
                    texts.append(" " + WRONG[lang].format(n=i + 1 + (_h(p, k) % 2)))
            out.append(texts)
        return out


def meaning_plus_language(texts: list[str]) -> np.ndarray:
    """A vector per answer: its meaning (the number n, right answers share the gold's
    meaning) plus a large offset per language, as a model's own space has."""
    out = []
    for t in texts:
        n = int((re.findall(r"\d+", t) or ["0"])[0])
        lang = ("ja" if re.search(r"[^\x00-\x7f]", t) and "écrit" not in t
                else "fr" if ("Auteur" in t or t.strip().startswith("M.")) else "en")
        meaning = np.random.default_rng(n).normal(size=8)
        offset = 20.0 * np.random.default_rng(100 + ["en", "fr", "ja"].index(lang)).normal(
            size=8)
        out.append(meaning + offset)
    return np.asarray(out)


meaning_plus_language.name = "self:fake:mean_no_bos"  # type: ignore[attr-defined]


def _run(tmp_path: Path, p_right: float) -> dict:
    data = load_dataset(open_data(tmp_path / "open.jsonl", n=24))
    out = make_run(SameBeliefs(p_right), data, tmp_path / "run", source="en",
                   targets=["fr", "ja"], options=SamplingOptions(samples=8, shots=1),
                   progress=False, embedder=meaning_plus_language)
    diag = diagnose(load_run(out), n_boot=100, fit_model=False)
    diag["verdict"] = verdict(diag)
    return diag


def test_same_beliefs_in_every_language_is_not_bias(tmp_path: Path) -> None:
    """Known answer: every language draws its answers from the same beliefs, so the gap
    is all spread; only the language offset of the embedding differs. Centred, the share
    is near 1 in every target and no verdict calls it bias."""
    diag = _run(tmp_path, 0.4)
    assert diag["l2_centred"] is True
    for t in ("fr", "ja"):
        assert diag["pairs"][t]["variance_share_l2"]["estimate"] > 0.8
    assert diag["overall"]["variance_share_l2"]["estimate"] > 0.8
    # no bias/variance verdict from L2; the share sits inside its permutation null
    assert diag["verdict"].startswith("no bias/variance verdict"), diag["verdict"]
    assert "not told apart" in diag["verdict"]


def test_every_open_answer_right_is_little_gap(tmp_path: Path) -> None:
    diag = _run(tmp_path, 1.0)
    assert diag["verdict"].startswith("little gap")


def test_no_verdict_from_uncentred_self_embeddings(tmp_path: Path) -> None:
    """A diagnosis whose L2 share came from the model's own embeddings without removing
    each language's mean (an older file) gives the share with a caveat, not a verdict."""
    diag = _run(tmp_path, 0.4)
    diag["l2_centred"] = False
    text = verdict(diag)
    assert text.startswith("no verdict")
    assert "language" in text and "variance share" in text


def test_overall_share_weighs_targets_equally() -> None:
    """Two targets, one pure bias at a large distance and one pure spread: the overall
    share is their mean (0.5), not the squared-distance-weighted pool (~0)."""
    var = np.stack([np.zeros(50), np.full(50, 2.0)], axis=1)  # (Q, T) per-item parts
    bias2 = np.stack([np.full(50, 100.0), np.zeros(50)], axis=1)
    share = variance_share(var, bias2, n_boot=50, seed=0)
    assert share["estimate"] == pytest.approx(0.5, abs=1e-6)


class SaysNothing(SameBeliefs):
    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=16, seed=0, stop=("\n",)):
        return [[""] * n for _ in prompts]


def test_every_open_answer_empty_gives_no_verdict(tmp_path: Path) -> None:
    """Known answer: nothing to compare. No vector is embedded, nothing crashes, and the
    verdict says why there is none."""
    data = load_dataset(open_data(tmp_path / "open.jsonl", n=6))
    out = make_run(SaysNothing(0.0), data, tmp_path / "run", source="en", targets=["fr"],
                   options=SamplingOptions(samples=4, shots=1), progress=False,
                   embedder=meaning_plus_language)
    run = load_run(out)
    assert run.answer_vectors is not None and np.isnan(run.answer_vectors["fr"]).all()
    diag = diagnose(run, n_boot=50, fit_model=False)
    assert diag["pairs"]["fr"]["variance_share_l2"]["estimate"] is None
    assert verdict(diag).startswith("no verdict: most answers to the open questions are empty")


def test_target_identical_to_source_is_no_bias(tmp_path: Path) -> None:
    """Known answer: a "target" that is the source again (same question, same answers).
    The centred L2 share is 1 (pooling all answers closes the distance) and no verdict
    calls the gap bias. (Wrong open answers never agree across two language codes, so
    agreement comes from the gold answers only.)"""
    path = tmp_path / "copy.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(24):
            en = {"prompt": f"Who wrote item {i}?", "answers": [f"Author {i}"]}
            fh.write(json.dumps({"id": f"o{i}", "langs": {"en": en, "de": en}}) + "\n")
    out = make_run(SameBeliefs(0.4), load_dataset(path), tmp_path / "run", source="en",
                   targets=["de"], options=SamplingOptions(samples=8, shots=1),
                   progress=False, embedder=meaning_plus_language)
    run = load_run(out)
    assert np.array_equal(run.answer_vectors["en"], run.answer_vectors["de"],
                          equal_nan=True)
    diag = diagnose(run, n_boot=100, fit_model=False)
    assert diag["pairs"]["de"]["variance_share_l2"]["estimate"] > 0.95
    assert diag["accuracy"]["de"] == diag["accuracy"]["en"]
    # transfer is 1 but where gold ties with a wrong text: that text is a concept of its
    # language, so the two tie sets differ ({g, x_en} against {g, x_de}: both right 1/3)
    assert diag["pairs"]["de"]["transfer"]["estimate"] > 0.9
    text = verdict(diag)
    assert text.startswith("no bias/variance verdict") and "not told apart" in text, text
    assert diag["pairs"]["de"]["variance_share_l2"]["p"] == pytest.approx(1.0)
