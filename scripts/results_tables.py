"""Write every table of docs/results.md from the committed result files.

Each table sits between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` markers and
is rewritten from the files under ``docs/results/`` (and ``bench/results/``), so the page
and the files cannot disagree; ``tests/test_science_docs.py`` fails when they do.

A number quoted in the prose is written the same way, inline:
``<!-- at:FILE#KEY.PATH|FORMAT -->0.545<!-- /at -->`` is rewritten from the value at the
dotted ``KEY.PATH`` (list indices are numbers) of the JSON file ``FILE`` under the root.
``FORMAT`` is a Python format spec (``.3f``), ``pct1`` (a share in percent, one decimal),
``pts1`` (a difference in signed percentage points), ``ci2`` (``est [lo, hi]`` of an
estimate-with-CI entry, two decimals; also ``ci3``, ``pctci1``), ``p`` (a bootstrap p,
shown as a bound at its floor, the file's ``n_boot`` read from the top level or its
``config``) or ``holm`` (KEY names a strategy's test, ``STRATEGY.vs_baseline.METRIC``:
its Holm-adjusted p from the strategy's ``p_holm``, a bound where the raw p is).

    python scripts/results_tables.py            # rewrite the tables in docs/results.md
    python scripts/results_tables.py --check    # exit 1 (and show the diff) if stale

Only the standard library is used, so the script runs without the package installed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path("docs/results.md")
_BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)",
                    re.DOTALL)
_INLINE = re.compile(r"(<!-- at:(?P<file>[^#>]+)#(?P<key>[^|>]+)\|(?P<fmt>[\w.]+) -->)"
                     r"(?P<body>(?:(?!<!--).)*?)(<!-- /at -->)", re.DOTALL)


def _load(root: Path, rel: str) -> dict[str, Any]:
    return json.loads((root / rel).read_text(encoding="utf-8"))


def _num(x: float | None, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _ci(fig: Mapping[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    """``est [lo, hi]`` of a ``{"estimate", "ci"}`` figure (blank when absent)."""
    if not fig or fig.get("estimate") is None:
        return ""
    est = fig["estimate"] * scale
    ci = fig.get("ci") or [None, None]
    if None in ci:
        return f"{est:.{digits}f}"
    return f"{est:.{digits}f} [{ci[0] * scale:.{digits}f}, {ci[1] * scale:.{digits}f}]"


def _p(p: float | None, n_boot: int | None = None) -> str:
    """A bootstrap p-value; at the smallest value ``n_boot`` draws can give (2/(n+1)),
    only the bound is known."""
    if p is None:
        return ""
    if n_boot and p <= 2.0 / (n_boot + 1) + 1e-12:
        return f"< {2.0 / (n_boot + 1) + 5e-4:.3f}"
    return f"{p:.2g}" if p >= 0.01 else f"{p:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# -- the tables -------------------------------------------------------------------------


def bmlama_exact(root: Path) -> str:
    d = _load(root, "docs/results/bmlama-exact/diagnosis.json")
    src = d["source"]
    rows = [[f"{src} (source)", _ci(d["accuracy"][src]), "", "", "", "", "", "", ""]]

    def cells(pair: Mapping[str, Any], ci: bool) -> list[str]:
        fig = _ci if ci else (lambda x: _num((x or {}).get("estimate")))
        drop = (pair.get("ensembling") or {}).get("drop")
        return [fig(pair["response_transfer"]), fig(pair["transfer"]),
                fig(pair.get("ensembling_recovers")), fig(pair["response_agreement"]),
                fig(pair["agreement"])], "" if drop is None else f"{drop:.0%}"

    for t in d["targets"]:
        figs, drop = cells(d["pairs"][t], ci=False)
        rows.append([t, _ci(d["accuracy"][t]), *figs, _ci(d["pairs"][t].get("pi_model"), 2),
                     drop])
    figs, drop = cells(d["overall"], ci=True)
    rows.append(["overall", "", *figs, _ci((d.get("pi") or {}).get("model"), 2), drop])
    return _table(["language", "accuracy (P(gold)) [95% CI]", "per-response transfer",
                   "ensembled transfer (modes, ECLeKTic)", "recovered by ensembling",
                   f"per-response agreement with {src}", "ensembled agreement (modes)",
                   "pi (model) [95% CI]", "ensembling drop"], rows)


_STRATEGY_NAMES = {"tea": "TEA", "baseline": "baseline"}
_NA = "n/a (mode unchanged)"


def _floored(test: Mapping[str, Any]) -> bool:
    p, floor = test.get("p"), test.get("p_floor")
    return p is not None and floor is not None and p <= floor * (1 + 1e-9)


def _p_test(m: Mapping[str, Any], metric: str, n_boot: int | None) -> str:
    """A strategy's p against baseline on ``metric``, its Holm-adjusted p in brackets
    (a bound where the raw p is at the floor)."""
    if metric in ((m.get("not_applicable") or {}).get("metrics") or []):
        return _NA
    test = (m.get("vs_baseline") or {}).get(metric) or {}
    if test.get("p") is None:
        return ""
    text = _p(test["p"], n_boot)
    holm = (m.get("p_holm") or {}).get(metric)
    if holm is not None:  # a raw p at the floor is a bound, and so is its Holm p
        text += (f" (Holm < {holm + 5e-4:.3f})" if _floored(test)
                 else f" (Holm {_p(holm, n_boot)})")
    return text


def interventions_exact(root: Path) -> str:
    d = _load(root, "docs/results/interventions-exact/interventions.json")
    langs = list(d["languages"])
    n_boot = d.get("n_boot")
    rows = []
    for name, m in d["strategies"].items():
        rec = m.get("ensembling_recovers") or {}
        fixed = m.get("on_baseline_source_correct") or {}
        rows.append([_STRATEGY_NAMES.get(name, name), _ci(m["response_transfer"], 1, 100),
                     _p_test(m, "response_transfer", n_boot), _ci(m["transfer"], 1, 100),
                     _p_test(m, "transfer", n_boot), _ci(rec, 1, 100),
                     _num(m["response_success"]["estimate"] * 100, 1),
                     "differ" if m.get("source_differs") else "as baseline's",
                     _ci(fixed.get("response_transfer"), 1, 100),
                     _num(m["chi2"]["estimate"]),
                     *(_num(m["accuracy"][lang]["estimate"] * 100, 1) for lang in langs)])
    header = ["strategy", "per-response transfer % [95% CI]", "p vs baseline (Holm)",
              "ensembled transfer % [95% CI]", "p vs baseline (Holm)",
              "recovered by ensembling, points [95% CI]", "per-response overall success %",
              "source answers", "per-response transfer on baseline's source-correct %",
              "chi-square s-t", f"acc {langs[0]}", *langs[1:]]
    return _table(header, rows)


def interventions_per_target(root: Path) -> str:
    d = _load(root, "docs/results/interventions-exact/interventions.json")

    def both(v: Mapping[str, Any]) -> str:
        return (f"{_num(v['response_transfer']['estimate'] * 100, 1)} / "
                f"{_num(v['transfer']['estimate'] * 100, 1)}")

    rows = [[_STRATEGY_NAMES.get(name, name), *(both(m["per_target"][t]) for t in d["targets"])]
            for name, m in d["strategies"].items()]
    return _table(["transfer % per target: per response / ensembled", *d["targets"]], rows)


def open_bmlama(root: Path) -> str:
    last = _load(root, "docs/results/open-bmlama/diagnosis.json")
    mid_path = root / "docs/results/open-bmlama/diagnosis-layer9.json"
    mid = json.loads(mid_path.read_text(encoding="utf-8")) if mid_path.exists() else None
    src, targets = last["source"], list(last["targets"])
    cols = [src, *targets, "overall"]

    def per(get: Callable[[dict[str, Any], str], str], diag: dict[str, Any]) -> list[str]:
        return ["" if c == src else get(diag, c) for c in cols]

    def pair(diag: dict[str, Any], c: str) -> dict[str, Any]:
        return diag["overall"] if c == "overall" else diag["pairs"][c]

    def curve(diag: dict[str, Any], c: str) -> str:
        l2 = (pair(diag, c).get("ensembling") or {}).get("l2")
        return "" if not l2 else f"{l2[0]:.1f} -> {l2[-1]:.1f}"

    k = last.get("k")

    def share(diag: dict[str, Any], c: str) -> str:
        return _ci(pair(diag, c).get("variance_share_l2"), 2)

    def null(diag: dict[str, Any], c: str) -> str:
        fig = pair(diag, c).get("variance_share_l2") or {}
        p, floor = fig.get("p"), fig.get("p_floor")
        if not fig.get("null") or p is None:
            return ""
        pv = f"<= {floor:.3f}" if floor is not None and p <= floor + 1e-12 else f"{p:.2g}"
        return f"{_ci(fig['null'], 2)}, p {pv}"

    rows = [["accuracy (strict alias match)",
             *(_ci(last["accuracy"][c]) if c != "overall" else "" for c in cols)]]
    if (last["overall"].get("response_transfer") or {}).get("estimate") is not None:
        rows.append(["transfer from " + src + ", per response",
                     *per(lambda d, c: _ci(pair(d, c)["response_transfer"]), last)])
    rows += [["transfer from " + src + ", ensembled (mode answers)",
              *per(lambda d, c: _ci(pair(d, c)["transfer"]), last)],
             [f"L2 of 1-answer means -> {k}-answer means, last layer (centred)",
              *per(curve, last)],
             ["L2 variance share, last layer", *per(share, last)],
             ["the same, language labels permuted (null)", *per(null, last)]]
    if mid is not None:
        rows += [["L2 variance share, layer 9", *per(share, mid)],
                 ["the same, language labels permuted (null)", *per(null, mid)]]
    return _table(["", *cols], rows)


def _steer_cell(fig: Mapping[str, Any] | None, n_boot: int | None) -> str:
    if not fig:
        return ""
    p = (fig.get("vs_base") or {}).get("p")
    return _ci(fig) + ("" if p is None else f", p {_p(p, n_boot)}")


def steering(root: Path) -> str:
    s = _load(root, "docs/results/steering/steering.json")
    metrics = ["accuracy", "agreement", "transfer", "rankc"]
    n_boot = (s.get("config") or {}).get("n_boot")
    base = s["baseline"]["test"]
    best = s["best"]["test"]
    holm = (s["best"].get("holm") or {}).get("p") or {}

    def steered(fig: Mapping[str, Any] | None, target: str, m: str) -> str:
        cell = _steer_cell(fig, n_boot)
        p = (holm.get(target) or {}).get(m)
        return cell + ("" if p is None or not cell else f" (Holm {_p(p, n_boot)})")

    rows = [["no steering, pooled", *(_num((base["all"].get(m) or {}).get("estimate"))
                                      for m in metrics)],
            ["steered, pooled", *(steered(best["all"].get(m), "all", m) for m in metrics)]]
    control = s.get("control") or {}
    draws = control.get("draws")
    if control.get("test") and control["test"].get("all"):
        label = (f"random directions (control, mean of {draws}), pooled" if draws
                 else "random direction (control), pooled")
        rows.append([label, *(_steer_cell(control["test"]["all"].get(m), n_boot)
                              for m in metrics)])
    rank = control.get("rank") or {}
    if rank:
        def pct(m: str) -> str:
            r = rank.get(m) or {}
            if r.get("percentile") is None:
                return ""
            lo, hi = r.get("random_range") or [None, None]
            return (f"{r['percentile']:.0f}th (steered {r['estimate']:+.3f}; random "
                    f"{_num(lo)} to {_num(hi)})")
        rows.append([f"steered effect among {draws} random, percentile",
                     *(pct(m) for m in metrics)])
    for t in s["targets"]:
        cells = []
        for m in metrics:
            before = (base["per_target"][t].get(m) or {}).get("estimate")
            after = best["per_target"][t].get(m) or {}
            p = (after.get("vs_base") or {}).get("p")
            ph = (holm.get(t) or {}).get(m)
            cells.append(f"{_num(before)} -> {_num(after.get('estimate'))}"
                         + ("" if p is None else f", p {_p(p, n_boot)}")
                         + ("" if ph is None else f" (Holm {_p(ph, n_boot)})"))
        rows.append([f"{t}: none -> steered", *cells])
    return _table(["test split", "accuracy", f"agreement with {s['source']}", "transfer",
                   "RankC"], rows)


def finetune(root: Path) -> str:
    f = _load(root, "docs/results/finetune/finetune.json")
    langs = list(f["languages"])
    n_boot = (f.get("config") or {}).get("n_boot")
    if not f.get("settings"):  # one training run per setting (files before issue 24)
        rows = [["base model", *(_num(f["base"]["accuracy"][lang]["estimate"])
                                 for lang in langs), _ci(f["base"]["transfer"]["all"]), ""]]
        for run in f["runs"]:
            n = run["freeze_first"]
            label = f"N = {n} " + ("(nothing frozen)" if n == 0 else f"(first {n} frozen)")
            after = run["transfer_after"]
            rows.append([label, *(_num(run["accuracy_after"][lang]["estimate"])
                                  for lang in langs), _ci(after["all"]),
                         _p((after["all"].get("vs_base") or {}).get("p"), n_boot)])
        return _table(["", f"accuracy {langs[0]}", *langs[1:], "transfer (pooled) [95% CI]",
                       "p"], rows)
    base_pairs = f["base"]["pairs"]["all"]
    rows = [["base model", *(_num(f["base"]["accuracy"][lang]["estimate"]) for lang in langs),
             _ci(base_pairs["transfer"]), _ci(base_pairs["transfer"]), "", "",
             _ci(base_pairs["overall_success"]), ""]]
    for st in f["settings"]:
        n = st["freeze_first"]
        label = (f"N = {n} " + ("(nothing frozen)" if n == 0 else f"(first {n} frozen)")
                 + f", mean of {len(st['seeds'])} seeds")
        pa = st["pairs_after"]
        fixed, success = pa["transfer_base_items"], pa["overall_success"]
        rows.append([label, *(_num(st["accuracy_after"][lang]["estimate"]) for lang in langs),
                     _ci(pa["transfer"]), _ci(fixed),
                     _p((fixed.get("vs_base") or {}).get("p"), n_boot),
                     _num((fixed.get("seed_spread") or {}).get("sd")), _ci(success),
                     _p((success.get("vs_base") or {}).get("p"), n_boot)])
    return _table(["", f"accuracy {langs[0]}", *langs[1:], "transfer [95% CI]",
                   "transfer on base source-correct items [95% CI]", "p", "SD between seeds",
                   "overall success [95% CI]", "p"], rows)


def _ratio(x: float) -> str:
    return f"{x:.0f}x" if x >= 10 else f"{x:.1f}x" if x >= 1 else f"{x:.2f}x"


def speed(root: Path) -> str:
    b = _load(root, "bench/results/backend.json")
    e = _load(root, "bench/results/representations_extract.json")
    ilo = _load(root, "bench/results/representations_ilo.json")
    target = b.get("targets") or {}
    n = b.get("n")
    rows = [["`generate` vs naive `model.generate(num_return_sequences=20)` per prompt, "
             "tokens/s", _ratio(b["sampling_throughput_ratio"]),
             f">= {target.get('sampling_throughput_ratio', 15):g}x"],
            ["`generate`, share of the measured decoding compute bound",
             f"{b['share_of_compute_bound']:.0%}",
             f">= {target.get('share_of_compute_bound', 0.6):.0%}"],
            [f"exact scoring vs the naive sampling loop (n={n}), time",
             _ratio(b["score_vs_naive_sampling_speedup"]), ""],
            [f"exact scoring vs xlgap's batched sampling (n={n}), time",
             _ratio(b["score_vs_sampling_speedup"]), ""],
            ["hidden-state extraction vs a bare batched forward pass",
             _ratio(e["throughput_ratio"]), f">= {e.get('target_ratio', 0.8):g}x"]]
    convert = root / "bench/results/convert.json"
    if convert.exists():
        c = _load(root, "bench/results/convert.json")
        same = "bit-identical" if c["weights_bit_identical"] else "WEIGHTS DIFFER"
        rows.append(["embedded model's first-start conversion vs transformers' GGUF loader, "
                     "time", f"{_ratio(c['time_ratio'])} ({same})",
                     f"<= {_ratio(c['target_time_ratio'])}"])
    setup = ilo["setup"]
    chunked = next((r for r in ilo["rows"] if r.get("chunk") == 2048), None)
    if chunked:
        rows.append([f"chunked k-NN for ILO vs brute force, {setup['n_languages']} x "
                     f"{setup['n_per_language']} x {setup['dim']} (synthetic)",
                     f"{_ratio(chunked['time_ratio_vs_brute'])} time, "
                     f"{_ratio(chunked['memory_ratio_vs_brute'])} peak memory", ""])
    return _table(["benchmark", "measured", "target"], rows)


TABLES: dict[str, Callable[[Path], str]] = {
    "bmlama-exact": bmlama_exact,
    "interventions-exact": interventions_exact,
    "interventions-per-target": interventions_per_target,
    "open-bmlama": open_bmlama,
    "steering": steering,
    "finetune": finetune,
    "speed": speed,
}


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _n_boot(data: Mapping[str, Any]) -> int | None:
    n = data.get("n_boot")
    return n if n is not None else (data.get("config") or {}).get("n_boot")


def inline(root: Path, file: str, key: str, fmt: str) -> str:
    """One number of the prose (see the module docstring), from ``file`` at ``key``."""
    data = _load(root, file)
    try:
        x = _lookup(data, key)
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise KeyError(f"{file} has no {key!r} (quoted in {PAGE})") from exc
    if fmt == "p":
        return _p(x, _n_boot(data))
    if fmt == "holm":  # KEY is a strategy's test: STRATEGY.vs_baseline.METRIC
        head, _, metric = key.rpartition(".vs_baseline.")
        holm = (_lookup(data, head).get("p_holm") or {}).get(metric)
        if holm is None:
            raise KeyError(f"{file}#{head} has no p_holm of {metric!r} (quoted in {PAGE})")
        return (f"< {holm + 5e-4:.3f}" if _floored(x) else _p(holm, _n_boot(data)))
    if fmt.startswith(("ci", "pctci")):
        pct = fmt.startswith("pct")
        return _ci(x, int(fmt[-1]), 100.0 if pct else 1.0)
    if isinstance(x, Mapping):
        x = x.get("estimate")
    if x is None:
        raise KeyError(f"{file}#{key} is null (quoted in {PAGE})")
    if fmt.startswith("pct"):
        return f"{100 * x:.{int(fmt[3:])}f}"
    if fmt.startswith("pts"):
        return f"{100 * x:+.{int(fmt[3:])}f}"
    return format(x, fmt)


def update(text: str, root: Path = ROOT) -> str:
    """``text`` with every marked table and every marked number of the prose rewritten
    from the files under ``root``; a marker naming no known table is an error."""
    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r} in the page; known: {sorted(TABLES)}")
        return match.group(1) + TABLES[name](root) + match.group(4)

    def number(match: re.Match[str]) -> str:
        return (match.group(1) + inline(root, match.group("file").strip(),
                                        match.group("key").strip(), match.group("fmt"))
                + match.group(6))

    return _INLINE.sub(number, _BLOCK.sub(one, text))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if the page is stale")
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args(argv)
    page = args.root / PAGE
    old = page.read_text(encoding="utf-8")
    new = update(old, args.root)
    if args.check:
        if new != old:
            sys.stdout.writelines(difflib.unified_diff(
                old.splitlines(True), new.splitlines(True), str(page), "from the files"))
            return 1
        return 0
    if new != old:
        page.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
