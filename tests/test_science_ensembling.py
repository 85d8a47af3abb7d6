"""Exact-mode ensembling (vote-k) and translate-then-answer (TTA-k): what the design can
and cannot move (issue 18, points 1 and 2)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import xlgap.cli
import xlgap.cli.workspace
from fake_backend import FakeBackend
from test_interventions import KnowsEnglish, write_data
from test_strategy_prompts import DATA, ITEMS, ChatFake
from xlgap.interventions.strategies import StrategyOptions, get_strategy, vote_distribution
from xlgap.prompting.templates import question_text


def _brute_vote(p: np.ndarray, k: int) -> np.ndarray:
    """Every sequence of k draws, its probability, its plurality winner; a tie goes to the
    tied answer drawn first (the rule of ``majority`` on sampled answers)."""
    out = np.zeros(p.size)
    for seq in itertools.product(range(p.size), repeat=k):
        counts = np.bincount(seq, minlength=p.size)
        top = set(np.flatnonzero(counts == counts.max()))
        winner = next(a for a in seq if a in top)
        out[winner] += np.prod(p[list(seq)])
    return out


@pytest.mark.parametrize(("probs", "k"), [
    ([0.56, 0.276, 0.164], 3), ([0.4, 0.35, 0.25], 4), ([0.3, 0.3, 0.2, 0.2], 5),
    ([0.5, 0.5], 2), ([0.7, 0.1, 0.1, 0.05, 0.05], 4), ([1.0, 0.0, 0.0], 3),
    ([0.2, 0.2, 0.2, 0.2, 0.2], 1)])
def test_exact_vote_distribution_is_the_enumeration(probs: list[float], k: int) -> None:
    p = np.asarray(probs)
    got = np.asarray(vote_distribution(p, k))
    assert got == pytest.approx(_brute_vote(p, k), abs=1e-12)
    assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_exact_vote_never_moves_the_mode() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.dirichlet(np.ones(rng.integers(2, 7)))
        v = np.asarray(vote_distribution(p, int(rng.integers(1, 8))))
        assert np.argmax(v) == np.argmax(p)


@pytest.fixture
def knows(monkeypatch):
    backend = KnowsEnglish()
    backend.name = "knows-english"
    monkeypatch.setattr(xlgap.cli.workspace, "open_backend", lambda cfg: backend)
    return backend


def test_exact_vote_has_no_test_of_what_it_cannot_move(tmp_path: Path, knows) -> None:
    """Exact vote-k keeps every mode: transfer, overall success and agreement equal the
    baseline's by construction, so their p-values are not applicable (null, with a
    reason); the quantities it can move (accuracy = P(gold), chi-square) are reported."""
    data = write_data(tmp_path / "colors.jsonl", n=16)
    out = tmp_path / "iv"
    assert xlgap.cli.run(["intervene", "--no-progress", "--data", str(data), "--targets",
                          "fr,ja", "--strategies", "baseline,vote-5", "--exact", "--shots",
                          "1", "--n-boot", "50", "--out", str(out)]) == 0
    table = json.loads((out / "interventions.json").read_text())["strategies"]
    base, vote = table["baseline"], table["vote-5"]
    for key in ("transfer", "overall_success", "agreement"):
        assert vote[key]["estimate"] == base[key]["estimate"]
    for key in ("transfer", "overall_success", "agreement"):
        assert key not in vote["vs_baseline"]
    # what it can move is tested: one vote-5 answer against one baseline answer
    for key in ("response_transfer", "response_agreement", "response_success"):
        test = vote["vs_baseline"][key]
        assert 0 < test["p"] <= 1 and test["estimate"] == pytest.approx(
            vote[key]["estimate"] - base[key]["estimate"])
    assert vote["response_agreement"]["estimate"] != base["response_agreement"]["estimate"]
    na = vote["not_applicable"]
    assert set(na["metrics"]) == {"transfer", "overall_success", "agreement", "mode_accuracy"}
    assert "mode" in na["reason"]
    assert vote["chi2"]["estimate"] != base["chi2"]["estimate"]
    assert "not_applicable" not in base


class Recording(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, list[str]]] = []

    def score_batch(self, requests, normalize="none"):
        self.requests.extend((p, list(c)) for p, c in requests)
        return super().score_batch(requests, normalize)


class RecordingChat(Recording, ChatFake):
    pass


@pytest.mark.parametrize("chat", [False, True])
def test_exact_tta_answers_in_the_asked_language(chat: bool) -> None:
    """Each pair is answered in its own language: its own question is in the prompt and
    its own candidates are scored, the source included; tta-1 is not TEA."""
    backend = RecordingChat() if chat else Recording()
    opts = StrategyOptions(shots=1, exact=True)
    tta = get_strategy("tta-1", backend, DATA, opts)
    pairs = [(ITEMS[0], "en"), (ITEMS[0], "fr"), (ITEMS[1], "ja")]
    got = tta.score(pairs)
    assert len(backend.requests) == len(pairs)
    for (it, lang), (prompt, conts) in zip(pairs, backend.requests, strict=True):
        assert question_text(it[lang]) in prompt
        assert [c.strip() for c in conts] == list(it[lang].candidates)
    # the source's prompt holds the model's translation into French (the first of its
    # pool) on the line after its English question, and the answer is asked in English
    prompt = backend.requests[0][0]
    assert "French: " in prompt.split(question_text(ITEMS[0]["en"]))[-1]
    assert prompt.endswith("\nAnswer: " if chat else "\nAnswer (English):")
    assert backend.requests[1][0].endswith("\nAnswer: " if chat else "\nAnswer (French):")
    tea = get_strategy("tea", backend, DATA, opts).score(pairs)
    assert not np.allclose(got[1], tea[1])
