"""Planning a study from a pilot (xlgap.stats.planning, plan_study, sequential)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from fake_backend import FakeBackend
from xlgap.data.loaders import load_builtin
from xlgap.errors import ConfigError
from xlgap.runs import USAGE_FILE, RunWriter, load_run
from xlgap.sampling import SamplingOptions, make_run
from xlgap.stats.bootstrap import paired_ratio_test, ratio_with_ci
from xlgap.stats.pairs import Part
from xlgap.stats.plan_study import plan, plan_cost, samples_per_item
from xlgap.stats.planning import (
    MIN_ITEMS,
    halfwidth_curve,
    items_needed,
    part_interval,
    power_halfwidth,
    predicted_halfwidth,
    strategy_differences,
)
from xlgap.stats.sequential import coverage, look_sizes, run_until_ci
from xlgap.stats.simulate import simulate_run


def write_exact_run(path: Path, probs: dict[str, np.ndarray], gold: np.ndarray,
                    strategy: str = "baseline") -> Path:
    """An exact-mode run from ``(Q, M)`` distributions per language (first = source)."""
    langs = list(probs)
    q, m = probs[langs[0]].shape
    ids = [f"q{i}" for i in range(q)]
    with RunWriter(path, {"source": langs[0], "languages": langs, "mode": "exact",
                          "strategy": strategy}) as w:
        w.add_items({"id": ids[i], "n_options": m, "gold": int(gold[i])} for i in range(q))
        w.add_distributions({"item": ids[i], "lang": lang, "probs": probs[lang][i].tolist()}
                            for lang in langs for i in range(q))
    return path


def one_hot(index: np.ndarray, m: int) -> np.ndarray:
    out = np.zeros((index.size, m))
    out[np.arange(index.size), index] = 1.0
    return out


# -- the curve and what it says ----------------------------------------------------------


def test_items_needed_reads_a_known_curve():
    """On a curve that is exactly c / sqrt(n), the items read off it are (c / h)^2, inside
    the drawn sizes and beyond them (flagged as extrapolated)."""
    ns = [10, 20, 40, 80, 160]
    curve = {"n": ns, "halfwidth": [0.5 / np.sqrt(n) for n in ns]}
    inside = items_needed(curve, 0.05)
    assert inside["items_needed"] == 100 and not inside["extrapolated"]
    assert inside["fit_error"] < 1e-9
    beyond = items_needed(curve, 0.02)
    assert beyond["items_needed"] == 625 and beyond["extrapolated"]
    assert items_needed(curve, 0.5)["items_needed"] == MIN_ITEMS
    with pytest.raises(ConfigError):
        items_needed(curve, 0.0)


def test_power_halfwidth_matches_the_normal_formula():
    z = NormalDist().inv_cdf
    want = 0.05 * z(0.975) / (z(0.975) + z(0.8))
    assert power_halfwidth(0.05, 0.8) == pytest.approx(want)
    assert power_halfwidth(0.05, 0.8) == pytest.approx(0.035, abs=5e-4)


def test_subsampled_curve_predicts_fresh_studies():
    """Ground truth: a population of items whose per-item accuracy is known. A 40-item
    pilot's curve, read at 160 items, predicts the half-width that fresh 160-item
    studies of that population give (within the pilot's own uncertainty), and so does
    the textbook binomial formula it never used."""
    rng = np.random.default_rng(4)
    population = rng.beta(2, 1, size=20_000)  # per-item accuracy, mean 2/3
    pilot = population[rng.integers(0, population.size, 40)]
    curve = halfwidth_curve(part_interval(Part.mean(pilot), 500, 0.05), 40,
                            [10, 20, 40, 80, 160, 320], reps=30)
    curve["n_pilot"] = 40
    pred = predicted_halfwidth(curve, 160)
    fresh = [(lambda c: (c[1] - c[0]) / 2)(ratio_with_ci(
        v, np.ones_like(v), n_boot=500, seed=s)["ci"])
        for s, v in enumerate(population[rng.integers(0, population.size, (40, 160))])]
    realised = float(np.mean(fresh))
    assert pred["range"][0] <= realised <= pred["range"][1]
    textbook = 1.96 * population.std() / np.sqrt(160)
    assert realised == pytest.approx(textbook, rel=0.08)
    assert pred["halfwidth"] == pytest.approx(textbook, rel=0.3)


# -- known answers ----------------------------------------------------------------------


def test_zero_variance_pilot_plans_a_minimal_run(tmp_path):
    """Every answer right in every language: no spread across items, so the smallest run
    measures transfer, agreement and accuracy."""
    gold = np.arange(30) % 4
    probs = {lang: one_hot(gold, 4) for lang in ("en", "fr", "de")}
    write_exact_run(tmp_path / "all-right", probs, gold)
    result = plan(tmp_path / "all-right", ci=0.01, pi=False, reps=4, n_boot=100)
    for name in ("transfer", "agreement", "accuracy"):
        entry = result["metrics"][name]
        assert entry["estimate"] == pytest.approx(1.0)
        assert entry["items_needed"] == MIN_ITEMS, name
        assert all(t["items_needed"] == MIN_ITEMS for t in entry["per_target"].values())
    assert result["run"]["items"] == MIN_ITEMS


def test_source_at_chance_cannot_measure_transfer(tmp_path):
    """A source that spreads its answers evenly over the candidates knows nothing: the
    plan says no number of items measures transfer (and still plans accuracy)."""
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 4, 40)
    probs = {"en": np.full((40, 4), 0.25),
             "fr": one_hot(rng.integers(0, 4, 40), 4)}
    write_exact_run(tmp_path / "chance", probs, gold)
    result = plan(tmp_path / "chance", ci=0.05, pi=False, reps=4, n_boot=100)
    assert result["checks"]["source_above_chance"] is False
    transfer = result["metrics"]["transfer"]
    assert transfer["items_needed"] is None and "chance" in transfer["why"]
    assert transfer["per_target"]["fr"]["items_needed"] is None
    assert result["metrics"]["accuracy"]["items_needed"] is not None
    assert result["run"]["driven_by"] != "transfer"


def test_unparseable_pilot_plans_nothing(tmp_path):
    """Every answer names no candidate: no metric measures the model, and the plan says
    so instead of proposing a minimal run for the all-zero agreement."""
    with RunWriter(tmp_path / "u", {"source": "en", "languages": ["en", "fr"],
                                    "mode": "sample", "samples": 3}) as w:
        w.add_items({"id": f"q{i}", "n_options": 4, "gold": 0} for i in range(20))
        w.add_samples({"item": f"q{i}", "lang": lang, "sample": k, "answer": -1}
                      for i in range(20) for lang in ("en", "fr") for k in range(3))
    result = plan(tmp_path / "u", ci=0.05, pi=True, reps=3, n_boot=100, ks=(2,), k_reps=1)
    for name in ("transfer", "agreement", "accuracy", "pi"):
        assert result["metrics"][name]["items_needed"] is None
        assert "no candidate" in result["metrics"][name]["why"]
    assert result["run"]["items"] is None


def test_source_equal_to_target_plans_agreement_minimally(tmp_path):
    """Source = target (the same distributions): agreement is 1 on every item."""
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 4, 30)
    answers = one_hot(np.where(rng.random(30) < 0.7, gold, (gold + 1) % 4), 4)
    write_exact_run(tmp_path / "same", {"en": answers, "fr": answers.copy()}, gold)
    result = plan(tmp_path / "same", ci=0.02, pi=False, reps=4, n_boot=100)
    assert result["metrics"]["agreement"]["items_needed"] == MIN_ITEMS
    assert result["metrics"]["accuracy"]["items_needed"] > MIN_ITEMS


# -- the plan file and the command -------------------------------------------------------


def test_plan_command_writes_plan_json_and_figure(tmp_path):
    from xlgap.cli.main import run as main

    run = simulate_run(tmp_path / "sim", questions=30, samples=8, targets=2, seed=2)
    assert main(["plan", str(run), "--ci", "0.1", "--effect", "0.1", "--no-pi", "--reps",
                 "5", "--n-boot", "150", "--out", str(tmp_path / "p")]) == 0
    saved = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert saved["format"] == "plan"
    assert saved["asked"]["ci"] == 0.1 and saved["asked"]["effect"] == 0.1
    transfer = saved["metrics"]["transfer"]
    assert transfer["items_needed"] >= MIN_ITEMS
    assert set(transfer["per_target"]) == {"t1", "t2"}
    assert transfer["per_target"]["t1"]["items_needed"] >= MIN_ITEMS
    # the effect needs a narrower CI (0.1 * 1.96 / 2.80 = 0.07) than the CI asked for
    assert transfer["for_effect"]["halfwidth"] < 0.1
    assert transfer["for_effect"]["items_needed"] >= transfer["for_ci"]["items_needed"]
    assert (tmp_path / "p" / "plan.png").stat().st_size > 1000
    assert saved["samples_per_item"] is None  # --no-pi


def test_plan_needs_a_goal(tmp_path):
    run = simulate_run(tmp_path / "sim", questions=12, samples=4, seed=0)
    with pytest.raises(ConfigError):
        plan(run)


def test_strategy_difference_is_the_paired_test(tmp_path):
    """An interventions pilot: the difference planned is paired_ratio_test's, on the
    items both runs hold."""
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 4, 40)
    src = one_hot(np.where(rng.random(40) < 0.8, gold, (gold + 1) % 4), 4)
    base = one_hot(np.where(rng.random(40) < 0.5, gold, (gold + 2) % 4), 4)
    better = one_hot(np.where(rng.random(40) < 0.7, gold, (gold + 2) % 4), 4)
    write_exact_run(tmp_path / "iv" / "baseline", {"en": src, "fr": base}, gold)
    write_exact_run(tmp_path / "iv" / "tren-1", {"en": src, "fr": better}, gold, "tren-1")
    (qty,) = strategy_differences(tmp_path / "iv", n_boot=300)
    assert qty.name == "difference:tren-1"
    est, half = qty.pooled(np.arange(40), 0)
    from xlgap.stats.metrics import transfer_parts
    a, b = transfer_parts(src, better, gold), transfer_parts(src, base, gold)
    ref = paired_ratio_test(a[0], a[1], b[0], b[1], n_boot=300, seed=0)
    assert est == pytest.approx(ref["estimate"])
    assert half == pytest.approx((ref["ci"][1] - ref["ci"][0]) / 2)
    result = plan(tmp_path / "iv", effect=0.2, pi=False, reps=3, n_boot=100)
    assert "difference:tren-1" in result["metrics"]
    assert result["strategies"] == str(tmp_path / "iv")


# -- samples per item and cost -----------------------------------------------------------


def test_exact_runs_say_k_does_not_apply(tmp_path):
    gold = np.zeros(10, dtype=int)
    write_exact_run(tmp_path / "x", {"en": one_hot(gold, 3), "fr": one_hot(gold, 3)}, gold)
    out = samples_per_item(load_run(tmp_path / "x"))
    assert out["applies"] is False and "does not apply" in out["why"]


def test_pi_k_curve_narrows_with_samples(tmp_path):
    """On the simulator fitted to a sampled pilot, pi's CI is wider with 2 answers per
    item than with 16, and the K chosen is one of those tried."""
    run = simulate_run(tmp_path / "sim", questions=60, samples=10, targets=1, seed=5)
    out = samples_per_item(load_run(run), ks=(2, 16), reps=2, n_items=80)
    assert out["applies"] is True
    by_k = {row["k"]: row for row in out["by_k"]}
    assert by_k[2]["halfwidth"] > by_k[16]["halfwidth"]
    assert out["k_needed"] in (2, 16) and out["coverage_at_k"] is not None


def test_usage_is_recorded_and_prices_the_plan(tmp_path):
    """make_run writes usage.jsonl (tokens by the backend's own encode); plan_cost scales
    it to the planned run and prices it."""
    class Tokenizing(FakeBackend):
        def encode(self, text: str) -> list[int]:
            return [0] * len(text.split())

    data = replace(load_builtin(), items=load_builtin().items[:6])
    make_run(Tokenizing(), data, tmp_path / "r", source="en", targets=["fr", "de"],
             options=SamplingOptions(samples=3, shots=0, chunk=5), progress=False)
    rows = [json.loads(x) for x in (tmp_path / "r" / USAGE_FILE).read_text().splitlines()]
    assert sum(r["pairs"] for r in rows) == 18
    assert sum(r["completions"] for r in rows) == 18 * 3
    assert all(r["prompt_tokens"] > 0 and r["backend"] == "fake" for r in rows)
    assert [r["first"] for r in rows] == [True] + [False] * (len(rows) - 1)
    cost = plan_cost(tmp_path / "r", items=60, languages=3, samples=6, pilot_samples=3,
                     price_in=1.0, price_out=2.0)["backends"]["fake"]
    tokens_in = sum(r["prompt_tokens"] for r in rows) * 10
    tokens_out = sum(r["answer_tokens"] for r in rows) * 10 * 2
    assert cost["calls"] == pytest.approx(sum(r["prompts"] for r in rows) * 10)
    assert cost["prompt_tokens"] == pytest.approx(tokens_in)
    assert cost["answer_tokens"] == pytest.approx(tokens_out)
    assert cost["cost"] == pytest.approx(tokens_in / 1e6 + 2 * tokens_out / 1e6)
    assert cost["expected_seconds"] >= 0
    assert plan_cost(tmp_path, items=10, languages=2)["recorded"] is False


# -- sequential sampling -----------------------------------------------------------------


def test_look_sizes_double_to_the_end():
    assert look_sizes(500) == [30, 60, 120, 240, 480, 500]
    assert look_sizes(20) == [20]


def test_stopping_rule_covers_on_the_simulator():
    """Many simulated studies that stop when the corrected interval is narrow: the
    interval at the stop holds the population's transfer at least 93% of the time."""
    out = coverage(target=0.07, runs=120, population=2000, data_items=600, n_boot=300,
                   rules=("bonferroni",))
    assert out["rules"]["bonferroni"]["coverage"] >= 0.93
    assert out["rules"]["bonferroni"]["reached"] > 0.9


def test_run_until_ci_stops_resumes_and_runs_out(tmp_path):
    data = load_builtin()
    backend = FakeBackend()

    def make(subset):
        return make_run(backend, subset, tmp_path / "seq", source="en", targets=["fr", "de"],
                        options=SamplingOptions(exact=True, shots=0), progress=False)

    rec = run_until_ci(data, tmp_path / "seq", target=0.5, make=make, metric="agreement",
                       n_boot=200)
    assert rec["reached"] and rec["items"] == 30 and len(rec["looks"]) == 1
    assert rec["looks"][0]["alpha"] == pytest.approx(0.05 / len(look_sizes(len(data))))
    calls = backend.calls
    again = run_until_ci(data, tmp_path / "seq", target=0.5, make=make, metric="agreement",
                         n_boot=200)
    assert again["ci"] == rec["ci"] and backend.calls == calls  # resumed: nothing new
    tight = run_until_ci(data, tmp_path / "seq", target=1e-4, make=make, metric="agreement",
                         n_boot=200)
    assert not tight["reached"] and tight["items"] == len(data)
    assert "ran out" in tight["why"]
    saved = json.loads((tmp_path / "seq" / "sequential.json").read_text())
    assert saved["format"] == "sequential" and saved["items"] == len(data)


def test_sample_until_ci_on_the_command_line(tmp_path):
    """`xlgap sample --until-ci` on the built-in set with a model-free backend: the run
    stops at a look, records it, and a pilot made so is planned (with its usage)."""
    from xlgap.cli.main import run as main
    from xlgap.models import register_backend

    register_backend("fake", "fake_backend:make")
    out = tmp_path / "seq"
    assert main(["sample", "--model", "fake:x", "--exact", "--targets", "fr,de",
                 "--until-ci", "0.5", "--metric", "agreement", "--no-diagnose",
                 "--no-progress", "--store", str(tmp_path / "store"), "--out", str(out)]) == 0
    rec = json.loads((out / "sequential.json").read_text())
    assert rec["reached"] and rec["items"] == 30 and rec["metric"] == "agreement"
    assert load_run(out).n_items == 30
    result = plan(out, ci=0.1, pi=False, reps=3, n_boot=100)
    assert result["cost"]["backends"]["fake"]["calls"] == pytest.approx(
        result["run"]["items"] * 3)  # exact: one scoring request per (item, language)


def test_expected_time_counts_the_warm_up_once(tmp_path):
    """A first chunk that carries loading (20 s for 10 pairs, then 1 s per 10 pairs):
    100 planned pairs take 100 / 10 per s + 19 s of warm-up, not 100 x 2.3 / 4 s."""
    rows = [{"pairs": 10, "prompts": 10, "completions": 10, "seconds": 20.0,
             "backend": "hf", "first": True}] + [
            {"pairs": 10, "prompts": 10, "completions": 10, "seconds": 1.0,
             "backend": "hf", "first": False}] * 3
    (tmp_path / USAGE_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    cost = plan_cost(tmp_path, items=50, languages=2)["backends"]["hf"]
    assert cost["pilot_pairs_per_second"] == pytest.approx(10.0)
    assert cost["startup_seconds"] == pytest.approx(19.0)
    assert cost["expected_seconds"] == pytest.approx(29.0)
    assert cost["prompt_tokens"] is None and "tokens_note" in cost


def test_an_api_pilot_is_priced_from_the_servers_own_token_counts(tmp_path, monkeypatch):
    """An API backend has no tokenizer: usage.jsonl records the tokens its server reported
    (the fake server counts whitespace tokens), also for responses read back from the
    store, so a plan prices an API pilot; a chunk whose responses carry no counts records
    null, never 0."""
    from fake_openai_server import FakeOpenAIServer, tokenize
    from xlgap.models.openai.backend import OpenAIBackend
    from xlgap.runs.usage import UsageLog
    from xlgap.store import Store

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    data = replace(load_builtin(), items=load_builtin().items[:4])
    options = SamplingOptions(samples=3, shots=0, chunk=4)
    with FakeOpenAIServer() as server:
        def api() -> OpenAIBackend:
            return OpenAIBackend("fake-model", server.base_url, store=Store(tmp_path / "s"),
                                 chat=False, max_retries=2, timeout=5.0)
        make_run(api(), data, tmp_path / "r1", source="en", targets=["fr"], options=options,
                 progress=False)
        make_run(api(), data, tmp_path / "r2", source="en", targets=["fr"], options=options,
                 progress=False)  # every response read back from the store
    rows = [json.loads(x) for x in (tmp_path / "r1" / USAGE_FILE).read_text().splitlines()]
    again = [json.loads(x) for x in (tmp_path / "r2" / USAGE_FILE).read_text().splitlines()]
    samples = [json.loads(x) for x in (tmp_path / "r1" / "samples.jsonl").read_text(
        ).splitlines()]
    assert all(r["prompt_tokens"] > 0 and r["backend"] == "openai" for r in rows)
    assert sum(r["answer_tokens"] for r in rows) >= sum(len(tokenize(s["text"]))
                                                       for s in samples)
    for key in ("prompt_tokens", "answer_tokens"):
        assert [r[key] for r in again] == [r[key] for r in rows]
    cost = plan_cost(tmp_path / "r1", items=40, languages=2, price_in=1.0,
                     price_out=1.0)["backends"]["openai"]
    assert cost["cost"] == pytest.approx(
        10 * sum(r["prompt_tokens"] + r["answer_tokens"] for r in rows) / 1e6)
    silent = {"responses": 2, "unreported": 1, "prompt_tokens": 5, "completion_tokens": 3}
    start = dict.fromkeys(silent, 0)
    assert UsageLog._reported(start, silent) == {"prompt_tokens": None,
                                                  "answer_tokens": None}
    assert UsageLog._reported(start, start) == {"prompt_tokens": None, "answer_tokens": None}
