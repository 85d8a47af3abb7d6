"""A run and its diagnosis (``run.json``, ``diagnosis.json``, ``truth.json``): the verdict
the diagnosis wrote, accuracy per language, source-target pairs, pi, and the four
diagnosis figures."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xlgap.data.languages import language_name
from xlgap.report.blocks import (
    Block,
    Cell,
    Details,
    Note,
    Para,
    Table,
    cell,
    count_cell,
    metric_columns,
    number_cell,
    pct_cell,
)
from xlgap.report.discover import Artifact
from xlgap.report.format import finite, fmt_estimate, mapping, pct, points, value
from xlgap.report.plots import diagnosis as plots
from xlgap.report.sections import CardLine, FigureSpec, Section, register

__all__ = ["RunSection", "lang_label", "pair_columns", "run_summary", "transfer_line",
           "verdict_text"]


def lang_label(code: str) -> str:
    """``fr (French)``; a code without a name (simulated ``t1``) as it is."""
    try:
        name = language_name(code)
    except Exception:  # unknown codes have no name, which is fine
        return code
    return f"{code} ({name})" if name and name != code else code


def verdict_text(diag: Mapping[str, Any]) -> str | None:
    """The verdict the diagnosis wrote (``"verdict"``: a sentence, or a mapping holding
    one); None for files written before diagnoses recorded it. Never recomputed here."""
    got = diag.get("verdict")
    if isinstance(got, Mapping):
        got = next((got[k] for k in ("text", "summary", "sentence", "verdict")
                    if isinstance(got.get(k), str)), None)
    return got.strip() if isinstance(got, str) and got.strip() else None


def _truth(truth: Any) -> str:
    """What a simulated run was made with (``truth.json``), for comparison with the fit."""
    truth = mapping(truth)
    nominal = finite(mapping(truth.get("params")).get("pi"))
    if nominal is None:
        nominal = finite(truth.get("pi"))
    if nominal is None:
        return ""
    real = [v for v in mapping(truth.get("pi_empirical")).values() if finite(v) is not None]
    tail = f", realised {', '.join(f'{v:.2f}' for v in real)}" if real else ""
    return f"simulated with true pi {nominal:.2f}{tail}"


def run_summary(art: Artifact) -> dict[str, Any] | None:
    """The headline numbers of a diagnosed run, or None when it has no diagnosis."""
    diag = art.get("diagnosis")
    if not isinstance(diag, Mapping):
        return None
    source = str(diag.get("source") or "")
    acc = mapping(diag.get("accuracy"))
    targets = [t for t in (diag.get("targets") or []) if isinstance(t, str)]
    tgt_acc = [v for t in targets if (v := value(acc.get(t))) is not None]
    overall = mapping(diag.get("overall"))
    pi = mapping(diag.get("pi"))
    src_acc = value(acc.get(source))
    mean_tgt = sum(tgt_acc) / len(tgt_acc) if tgt_acc else None
    return {"source": source, "targets": targets, "source_accuracy": acc.get(source),
            "target_accuracy": mean_tgt,
            "gap": src_acc - mean_tgt if mean_tgt is not None and src_acc is not None
            else None,
            "response_transfer": overall.get("response_transfer"),
            "transfer": overall.get("transfer"), "agreement": overall.get("agreement"),
            "overall_success": overall.get("overall_success"), "chi2": overall.get("chi2"),
            "drop": finite(mapping(overall.get("ensembling")).get("drop")),
            "pi": pi.get("model") if isinstance(pi.get("model"), Mapping) else None,
            "pi_mismatch": finite(pi.get("mismatch")), "verdict": verdict_text(diag),
            "n_items": diag.get("n_items"), "truth": _truth(art.get("truth"))}


# mode-based metrics are ensembles (the argmax in exact mode, the mode of K answers)
ENSEMBLED = ("transfer", "agreement", "overall_success")


def pair_columns(diag: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The pair table's metric columns: per-response ones first (one answer, the papers'
    quantity), then the rest in registry order, the mode-based ones labelled ensembled."""
    cols = metric_columns(diag)
    first = [c for c in cols if c[0].startswith("response_")]
    rest = [(k, label if k not in ENSEMBLED or "ensembled" in label else f"{label} (ensembled)")
            for k, label in cols if not k.startswith("response_")]
    return first + rest


def transfer_line(s: Mapping[str, Any]) -> str:
    """Per-response transfer, then the ensembled one (what ensembling recovers)."""
    one, ens = s.get("response_transfer"), s.get("transfer")
    if value(one) is None:
        return f"transfer (ensembled: mode answers) {fmt_estimate(ens)}"
    tail = ""
    if value(ens) is not None:
        diff = value(ens) - value(one)  # type: ignore[operator]
        tail = f"; ensembled (mode answers) {fmt_estimate(ens)}, {diff:+.3f} from ensembling"
    return f"transfer per response {fmt_estimate(one)}{tail}"


def _lang_rows(diag: Mapping[str, Any]) -> list[list[Cell]]:
    acc, mode = mapping(diag.get("accuracy")), mapping(diag.get("mode_accuracy"))
    source = diag.get("source")
    return [[Cell(lang_label(lang) + (" - source" if lang == source else "")),
             cell(acc.get(lang)), cell(mode.get(lang)),
             count_cell(mapping(acc.get(lang)).get("n"))] for lang in acc]


def _pair_rows(diag: Mapping[str, Any]) -> list[list[Cell]]:
    pairs = mapping(diag.get("pairs"))
    overall = {**mapping(diag.get("overall")), "pi_model": mapping(diag.get("pi")).get("model")}
    source = diag.get("source", "?")
    rows: list[list[Cell]] = []
    for name, pair in [*((f"{source}-{t}", pairs[t]) for t in pairs), ("overall", overall)]:
        if not isinstance(pair, Mapping):
            continue
        ens = mapping(pair.get("ensembling"))
        pim = mapping(pair.get("pi_model"))
        mism = {"estimate": pair.get("pi_mismatch"), "ci": pair.get("pi_mismatch_ci")}
        rows.append([Cell(name), *(cell(pair.get(key)) for key, _ in pair_columns(diag)),
                     pct_cell(ens.get("drop"), 0), cell(mism),
                     cell(pim or None, 2), count_cell(pim.get("n_likely_bias"))])
    return rows


def _bias_items(diag: Mapping[str, Any]) -> list[Block]:
    rows = [[Cell(str(t)), Cell(str(entry.get("id"))), number_cell(entry.get("p_variance"))]
            for t, pair in mapping(diag.get("pairs")).items()
            for entry in mapping(mapping(pair).get("pi_model")).get("likeliest_bias_items") or []
            if isinstance(entry, Mapping)]
    if not rows:
        return []
    return [Details("items most likely to be bias (the target believes something else)",
                    [Table(["target", "item", "P(variance)"], rows)])]


def _perm_p(p: Any, floor: Any) -> Cell:
    """A permutation p; at its floor (no relabelling as extreme) only the bound is known."""
    pv, fl = finite(p), finite(floor)
    if pv is None:
        return Cell("-", None, num=True)
    text = f"<= {fl:.3f}" if fl is not None and pv <= fl + 1e-12 else f"{pv:.3f}"
    return Cell(text, pv, num=True)


def _l2_share(diag: Mapping[str, Any]) -> list[Block]:
    """The L2 variance share per pair beside its language-label permutation null (never a
    bias/variance reading: see the verdict)."""
    pairs = mapping(diag.get("pairs"))
    scopes = [*((str(t), mapping(p)) for t, p in pairs.items()),
              ("overall", mapping(diag.get("overall")))]
    rows = [[Cell(name), cell(share, 2), cell(mapping(share.get("null")) or None, 2),
             _perm_p(share.get("p"), share.get("p_floor"))]
            for name, pair in scopes if (share := mapping(pair.get("variance_share_l2")))
            and value(share) is not None]
    if not rows:
        return []
    return [Table(["target", "L2 variance share [95% CI]",
                   "with language labels permuted [95% range]", "p (share as low)"], rows,
                  caption="L2 variance share against its null: a share below the null means "
                  "the languages' answers lie apart in the embedding space (other beliefs, "
                  "or the space's own language differences)")]


@register
class RunSection(Section):
    kind = "run"
    formats = ("run", "diagnosis", "truth")
    companions = ("truth",)
    order = 1
    title = "Run"
    card_label = "gap"
    command = "sample"

    def command_name(self, art: Artifact, config: Mapping[str, Any]) -> str:
        if "strategies" in config:
            return "intervene"
        return "demo" if "represent" in config else "sample"

    def card(self, art: Artifact) -> CardLine | None:
        s = run_summary(art)
        if s is None:
            return None
        strategy = mapping(art.get("run")).get("strategy")
        target = art.label + \
            (f" ({strategy})" if strategy and strategy != "baseline" else "")
        gap = ""
        if s["gap"] is not None:
            gap = (f"accuracy {pct(s['source_accuracy'])} in {s['source']} against "
                   f"{pct(s['target_accuracy'])} on average in {len(s['targets'])} target "
                   f"language(s), {points(s['gap'])}; ")
        return CardLine("gap", art.anchor, target, f"{gap}{transfer_line(s)}.",
                        s["verdict"] or "")

    def summary(self, art: Artifact) -> str | None:
        line = self.card(art)
        return None if line is None else f"{line.text} {line.strong}".strip()

    def body(self, art: Artifact) -> list[Block]:
        meta = mapping(art.get("run"))
        diag = art.get("diagnosis")
        out: list[Block] = []
        bits = [f"{k} {meta[k]}" for k in ("mode", "samples", "strategy") if meta.get(k)]
        if isinstance(meta.get("languages"), list):
            bits.append(f"languages {', '.join(map(str, meta['languages']))}")
        if bits:
            out.append(Para("; ".join(bits)))
        if not isinstance(diag, Mapping):
            out.append(Note(f"not diagnosed yet: run `xlgap diagnose {art.dir}` for "
                            "metrics, pi and figures"))
            return out
        s = run_summary(art) or {}
        truth = f" ({s['truth']})" if s.get("truth") else ""
        if s.get("verdict"):
            out.append(Para(s["verdict"] + truth, "verdict"))
        elif truth:
            out.append(Para(truth.strip(" ()")))
        out.append(Para(transfer_line(s) + "."))
        out.append(Table(["language", "accuracy [95% CI]", "mode accuracy [95% CI]", "items"],
                         _lang_rows(diag), caption="Accuracy per language"))
        out.append(Table(["pair", *(label for _, label in pair_columns(diag)),
                          "ensembling drop", "pi (mismatch)", "pi (model) [95% CI]",
                          "likely bias items"], _pair_rows(diag),
                         caption="Source-target pairs (95% bootstrap CIs over items)"))
        model = mapping(mapping(diag.get("pi")).get("model"))
        if model.get("tau"):
            edge = model.get("at_grid_edge") or []
            edge_txt = f" (at grid edge: {', '.join(map(str, edge))})" if edge else ""
            out.append(Para(f"model fit: tau {fmt_estimate(model.get('tau'), 2)}, eta "
                            f"{fmt_estimate(model.get('eta'), 2)}{edge_txt}; tau and eta "
                            "trade off, pi is the well-determined quantity."))
        out += _l2_share(diag)
        out += _bias_items(diag)
        warnings = diag.get("warnings")
        if isinstance(warnings, list) and warnings:
            out.append(Details(f"{len(warnings)} warning(s)", [Para(str(w), "") for w in
                                                               warnings]))
        return out

    def figures(self, art: Artifact) -> list[FigureSpec]:
        diag = art.get("diagnosis")
        if not isinstance(diag, Mapping):
            return []
        d = dict(diag)
        return [FigureSpec("accuracy.png", "Accuracy and transfer per language",
                           lambda: plots.draw_accuracy(d)),
                FigureSpec("ensembling.png", "Source-target distance as answers are pooled: "
                           "a variance gap shrinks towards 0, a bias gap levels off",
                           lambda: plots.draw_ensembling(d)),
                FigureSpec("pi.png", "pi: the share of variance-type gaps",
                           lambda: plots.draw_pi(d)),
                FigureSpec("confidence.png", "Agreement by source confidence",
                           lambda: plots.draw_confidence(d))]
