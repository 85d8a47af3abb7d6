"""Result objects: what every analysis returns to Python callers.

A :class:`Result` is the JSON-ready dict an analysis computed (so every existing
``result["pairs"]["fr"]`` keeps working) plus its kind, the ``format`` tag of its file. Every
kind has the same four conveniences:

* ``save(path)`` writes the tagged result file the CLI writes;
* :func:`load_result` reads any result file back, as the class registered for its tag;
* ``to_frame()`` gives every estimate in it as a row of one tidy table with the columns
  :data:`COLUMNS` (``kind, arm, target, metric, estimate, ci_low, ci_high, p, n``), the same
  for every kind, so ``pd.concat([r.to_frame() for r in results])`` works over a study;
* ``_repr_html_`` shows that table in a notebook.

An estimate is a node ``{estimate, ci, n, p?, p_floor?}``. A paired test is the estimate of
a difference: ``{estimate, ci, p, p_floor, n, a, b}``, or in files written before that shape
``{a, b, difference, ci, p}``; both read the same. An arm's paired test against its reference
sits in the arm's estimate as ``vs_base`` (or ``vs_control``) and is a row of its own. A
scalar ``x`` with a sibling ``x_ci`` (the diagnosis' ``pi_mismatch``) is an estimate too.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from xlgap.errors import DataError
from xlgap.io import dump_json
from xlgap.provenance import tagged
from xlgap.registry import Registry

# Older files carry "xlgap-<kind>/1" tags, newer ones the bare kind.
_LEGACY_PREFIX = "xlgap-"

#: the columns of every result's ``to_frame()``
COLUMNS = ("kind", "arm", "target", "metric", "estimate", "ci_low", "ci_high", "p", "n")

# Keys that describe how a result was made, not what it found.
_NOT_FINDINGS = frozenset({"provenance", "config", "format", "format_version", "metrics",
                           "plots", "checks", "sweep", "ensembling"})
# Where an arm's estimate holds its paired test against a reference arm.
_VERSUS = ("vs_base", "vs_control")
# The spellings of a p-value in files of older formats, best first.
_P_KEYS = ("p", "p_value", "p_vs_baseline")

R = TypeVar("R", bound="Result")
# kind -> its class, or "module:Class" for a class in a higher layer (imported on first use,
# so reading a diagnosis never imports torch for the steering class); other packages add
# kinds through the entry-point group "xlgap.results"
KINDS: Registry[type[Result]] = Registry("results")
KINDS.register("steering", "xlgap.api.experiments:SteeringRunResult")
KINDS.register("finetune", "xlgap.api.experiments:FinetuneRunResult")
KINDS.register("inside", "xlgap.representations.layerwise:InsideResult")


def kind_of(payload: Mapping[str, Any]) -> str | None:
    """The kind a result file's ``format`` tag names (None when it has no tag)."""
    fmt = payload.get("format")
    if not isinstance(fmt, str):
        return None
    if fmt.startswith(_LEGACY_PREFIX):
        return fmt[len(_LEGACY_PREFIX):].split("/", 1)[0]
    return fmt


def register_kind(kind: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: ``load_result`` reads files tagged ``kind`` as this class."""
    def deco(cls: type[R]) -> type[R]:
        cls.default_kind = kind
        KINDS.register(kind, cls)
        return cls
    return deco


def result_class(kind: str) -> type[Result]:
    """The class registered for ``kind`` (plain :class:`Result` for an unknown one)."""
    return KINDS.get(kind, Result)


def result_kinds() -> list[str]:
    """The registered kinds (format tags), sorted."""
    return KINDS.names()


class Result(dict[str, Any]):
    """A result of kind ``kind`` ("diagnosis", "interventions", "steering", ...)."""

    default_kind = "result"

    def __init__(self, kind: str | None = None, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(data or {})
        self.kind = kind or self.default_kind

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the result file (a directory, or a path without a suffix, gets
        ``<kind>.json`` inside it)."""
        target = Path(path)
        if target.is_dir() or not target.suffix:
            target = target / f"{self.kind}.json"
        return dump_json(tagged(self.kind, self), target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Any result file (see :func:`load_result`)."""
        return load_result(path)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], path: Path) -> Result:
        """The result a file of this kind holds (subclasses wrapping richer objects
        override it)."""
        return cls(kind_of(payload) or path.stem, payload)

    # -- the tidy table ------------------------------------------------------------------

    def default_arm(self) -> str | None:
        """The arm of rows whose path names none (a diagnosis: the run's strategy)."""
        arm = self.get("strategy")
        return arm if isinstance(arm, str) else None

    def estimates(self) -> Iterator[dict[str, Any]]:
        """One row per estimate, with the keys :data:`COLUMNS`."""
        arm0 = self.default_arm()
        for path, leaf in _leaves(self, ()):
            arm, target, metric = place(path)
            yield {"kind": self.kind, "arm": arm if arm is not None else arm0,
                   "target": target, "metric": metric, **leaf}

    def to_frame(self) -> Any:
        """Every estimate as a row of a pandas DataFrame with the columns :data:`COLUMNS`
        (pandas imported on use)."""
        import pandas as pd

        return pd.DataFrame(list(self.estimates()), columns=list(COLUMNS))

    def _repr_html_(self) -> str:
        rows = list(self.estimates())
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in COLUMNS)
                       + "</tr>" for r in rows[:200])
        more = f"<p>... {len(rows) - 200} more rows: use to_frame()</p>" if len(rows) > 200 else ""
        return (f"<p><b>{html.escape(self.kind)}</b> result, {len(rows)} estimates</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind}: {len(list(self.estimates()))} estimates>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def leaf_of(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """The estimate a node holds as ``{estimate, ci_low, ci_high, p, n}``, or None when it
    is no estimate."""
    value = node.get("estimate")
    if value is None and "difference" in node and "ci" in node:
        value = node["difference"]  # a paired test written before {estimate, ...}
    elif value is None and "estimate" not in node:
        return None
    if isinstance(value, Mapping | list):
        return None
    ci = node.get("ci") or [None, None]
    p = next((node[k] for k in _P_KEYS if isinstance(node.get(k), int | float)), None)
    n = node.get("n")
    return {"estimate": value, "ci_low": ci[0] if len(ci) > 0 else None,
            "ci_high": ci[1] if len(ci) > 1 else None, "p": p,
            "n": n if isinstance(n, int) else None}


def _leaves(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...],
                                                             dict[str, Any]]]:
    if isinstance(node, Mapping):
        leaf = leaf_of(node)
        if leaf is not None:
            yield path, leaf
            # an arm's paired test against its reference, in the one estimate shape: a row
            # of its own (the arm "... vs base"), the difference as its estimate
            for key in _VERSUS:
                if isinstance(node.get(key), Mapping):
                    yield from _leaves(node[key], (*path, key))
            return
        # files written before paired tests were kept (vs_baseline null) hold only the p of
        # two tests beside the metrics: it goes on that metric's row of the arm
        legacy_p = {} if isinstance(node.get("vs_baseline"), Mapping) else {
            "transfer": node.get("p_vs_baseline"),
            "overall_success": node.get("p_vs_baseline_overall_success")}
        for key, value in node.items():
            key = str(key)
            if key in _NOT_FINDINGS:
                continue
            p = legacy_p.get(key)
            if isinstance(p, int | float) and isinstance(value, Mapping):
                leaf = leaf_of(value)
                if leaf is not None and leaf["p"] is None:
                    yield (*path, key), {**leaf, "p": p}
                    continue
            ci = node.get(f"{key}_ci")
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and isinstance(ci, list):
                yield (*path, key), {"estimate": value, "ci_low": ci[0], "ci_high": ci[1],
                                     "p": None, "n": None}
                continue
            yield from _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, (*path, _list_step(value, i)))


def _list_step(value: Any, i: int) -> str:
    """A list element's place: its layer, its language pair, its comparison, or its index."""
    if isinstance(value, Mapping):
        if isinstance(value.get("layer"), int):
            return f"@layer {value['layer']}"
        if {"a", "b", "metric"} <= value.keys():  # a comparison row (a, b are arms)
            return f"@arm {value['a']} vs {value['b']}|{value['metric']}"
        if {"a", "b"} <= value.keys() and isinstance(value["a"], str):
            return f"@pair {value['a']}-{value['b']}"
    return str(i)


# Keys after which the next key names an arm, a target; keys that mean "pooled".
_ARM_KEYS = frozenset({"strategies", "runs", "arms", "groups"})
_TARGET_KEYS = frozenset({"pairs", "per_target", "by_target", "accuracy", "mode_accuracy",
                          "ilo", "bridge", "reach", "by_language"})
_POOLED = frozenset({"overall", "all", "pooled"})
_CONTAINERS = frozenset({"layers", "summary"})


def place(path: tuple[str, ...]) -> tuple[str | None, str, str]:
    """(arm, target, metric) of an estimate at ``path`` in a result's tree.

    The arm is the strategy, layer or comparison the path names (a paired test under
    ``vs_baseline`` is the arm "S vs baseline"); the target is the language (pair) after
    ``pairs``/``per_target``/``accuracy`` or "all" when pooled; the metric is what is left,
    joined with dots ("transfer", "pi.model", "mean")."""
    arm: list[str] = []
    target = "all"
    metric: list[str] = []
    i = 0
    while i < len(path):
        tok = path[i]
        nxt = path[i + 1] if i + 1 < len(path) else None
        if tok in _CONTAINERS:
            pass  # a list or summary that holds the estimates, not a name of them
        elif tok.startswith("@layer "):
            arm.append(tok[1:])  # "layer 6"
        elif tok.startswith("@arm "):
            body = tok.split(" ", 1)[1]
            if "|" in body:
                body, name = body.split("|", 1)
                metric.append(name)
            arm.append(body)
        elif tok.startswith("@pair "):
            target = tok.split(" ", 1)[1]
        elif tok in _ARM_KEYS and nxt is not None:
            arm.append(nxt)
            i += 1
        elif tok in ("vs_baseline", *_VERSUS):
            arm.append(tok.replace("_", " "))
        elif tok in _TARGET_KEYS and nxt is not None:
            if tok not in ("pairs", "per_target", "by_target"):
                metric.append(tok)  # accuracy.en: the metric, then its language
            target = nxt.removeprefix("@pair ")
            i += 1
        elif tok in _POOLED:
            target = "all"
        else:
            metric.append(tok)
        i += 1
    return (" ".join(arm) or None), target, ".".join(metric)


# -- reading any result file -------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read a result file ({exc})") from exc
    if not isinstance(payload, dict):
        raise DataError(f"{path}: a result file holds a JSON object")
    return payload


_INSIDE = ("ilo", "similarity", "logit_lens", "consistency")


def _in_directory(directory: Path) -> Path:
    """The one tagged result file of a directory (``study/steer`` -> its steering.json)."""
    found = []
    for p in sorted(directory.glob("*.json")):
        if p.name == "run.json":
            continue
        try:
            payload = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(payload, dict) and kind_of(payload):
            found.append(p)
    if len(found) > 1 and all(p.stem in _INSIDE for p in found):
        return directory  # the analyses of look_inside: one result of kind "inside"
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DataError(f"{directory}: load_result needs one result file, found {names}; "
                        "give the file")
    return found[0]


def load_result(path: str | os.PathLike[str]) -> Result:
    """Any result file (or a directory holding exactly one, or the analyses of
    ``look_inside``), as the class registered for its ``format`` tag (see
    :func:`register_kind`); an untagged or unknown kind loads as a plain :class:`Result`
    named after the file."""
    target = Path(path)
    if target.is_dir():
        target = _in_directory(target)
        if target.is_dir():
            return result_class("inside").from_payload({}, target)
    payload = _read(target)
    kind = kind_of(payload) or target.stem
    return result_class(kind).from_payload(payload, target)


@register_kind("logit_lens")
class LogitLensResult(Result):
    """The logit lens: per language, one value per layer of each curve (``p_gold``,
    ``top1_gold``, ``pivot_share``, ...), means over the items without an interval; a row
    per language, layer and curve."""

    def estimates(self) -> Iterator[dict[str, Any]]:
        layers = self.get("layers") or []
        for lang, curves in (self.get("languages") or {}).items():
            n = curves.get("n_items")
            for metric, values in curves.items():
                if not isinstance(values, list):
                    continue
                for layer, value in zip(layers, values, strict=False):
                    yield {"kind": self.kind, "arm": f"layer {layer}", "target": lang,
                           "metric": metric, "estimate": value, "ci_low": None,
                           "ci_high": None, "p": None, "n": n}


@register_kind("plan")
class PlanResult(Result):
    """A study plan (``xlgap plan``): per metric, pooled (target ``all``) and per target,
    the pilot's estimate (metric ``NAME``, ``n`` the pilot's items) and the items the plan
    needs (metric ``NAME:items_needed``, the count in ``estimate``; empty where no plan can
    measure the metric)."""

    def estimates(self) -> Iterator[dict[str, Any]]:
        pilot_items = self.get("pilot_items")
        for name, entry in (self.get("metrics") or {}).items():
            scopes = [("all", entry), *((entry.get("per_target") or {}).items())]
            for target, scope in scopes:
                base = {"kind": self.kind, "arm": "pilot", "target": target, "ci_low": None,
                        "ci_high": None, "p": None}
                yield {**base, "metric": name, "estimate": scope.get("estimate"),
                       "n": pilot_items}
                yield {**base, "arm": "planned", "metric": f"{name}:items_needed",
                       "estimate": scope.get("items_needed"), "n": None}


# The kinds whose files are plain trees of estimates.
for _kind in ("diagnosis", "interventions", "by_source", "ilo", "similarity",
              "consistency", "study"):
    register_kind(_kind)(type(f"{_kind.title().replace('_', '')}Result", (Result,),
                              {"__module__": __name__, "__doc__": f"A {_kind} result."}))
