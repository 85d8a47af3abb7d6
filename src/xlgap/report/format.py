"""One way to print a number of a result: an estimate with its interval, a percentage, a
p-value. The terminal, Markdown and HTML all use these, so one figure reads the same
everywhere.

A figure in a result file is a plain number or an estimate-with-CI entry
``{"estimate": x, "ci": [lo, hi], "chance": c}`` (``chance`` optional); every function here
takes either, and prints ``-`` for a missing or non-finite value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "chance_of",
    "ci_of",
    "finite",
    "fmt_adjusted_p",
    "fmt_estimate",
    "fmt_number",
    "fmt_p",
    "mapping",
    "p_floor",
    "pct",
    "points",
    "value",
]


def finite(x: Any) -> float | None:
    """``x`` as a float if it is a finite number (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def value(x: Any) -> float | None:
    """A number, or the estimate of an estimate-with-CI entry."""
    if isinstance(x, Mapping):
        return finite(x.get("estimate"))
    return finite(x)


def ci_of(x: Any) -> tuple[float | None, float | None]:
    """The interval of an estimate-with-CI entry, ``(None, None)`` when it has none."""
    if isinstance(x, Mapping):
        ci = x.get("ci")
        if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) >= 2:
            return finite(ci[0]), finite(ci[1])
    return None, None


def chance_of(x: Any) -> float | None:
    return finite(x.get("chance")) if isinstance(x, Mapping) else None


def mapping(x: Any) -> Mapping[str, Any]:
    """``x`` if it is a mapping, else an empty one (partial files lack whole blocks)."""
    return x if isinstance(x, Mapping) else {}


def fmt_number(x: Any, digits: int = 3) -> str:
    """``0.812``; a count stays a count (``120``, ``1,200``); ``-`` when missing."""
    v = value(x)
    if v is None:
        return "-"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}" if abs(x) >= 1000 else str(x)
    if abs(v) >= 1000 and float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:.{digits}f}"


def fmt_estimate(x: Any, digits: int | None = None, *, percent: bool = False,
                 chance: bool = True) -> str:
    """``0.812 [0.746, 0.870]``: an estimate with its 95% interval, just the estimate when
    there is no interval, ``-`` when there is no estimate.

    ``percent`` prints in percent without the sign (``81.2 [74.6, 87.0]``, one decimal by
    default, for tables whose header says "%"); ``chance`` appends the chance level
    (``, chance 0.250``) when the entry has one."""
    v = value(x)
    if v is None:
        return "-"
    scale = 100.0 if percent else 1.0
    d = (1 if percent else 3) if digits is None else digits
    text = f"{scale * v:.{d}f}" if percent else fmt_number(x, d)
    lo, hi = ci_of(x)
    if lo is not None and hi is not None:
        text += f" [{scale * lo:.{d}f}, {scale * hi:.{d}f}]"
    c = chance_of(x)
    if chance and c is not None:
        # ILO's reference is the fully language-mixed value, not a floor (see ilo.py)
        label = "mixed reference" if isinstance(x, Mapping) and "mixed_reference" in x \
            else "chance"
        text += f", {label} {scale * c:.{d}f}"
    return text


def pct(x: Any, digits: int = 1) -> str:
    """``81.2%`` (an estimate-with-CI entry prints its estimate)."""
    v = value(x)
    return "-" if v is None else f"{100 * v:.{digits}f}%"


def points(diff: float | None, digits: int = 1) -> str:
    """A difference of two shares in percentage points: ``+11.0 points``."""
    return "-" if diff is None or not math.isfinite(diff) else \
        f"{100 * diff:+.{digits}f} points"


def p_floor(n_boot: Any) -> float | None:
    """The smallest p-value a paired bootstrap of ``n_boot`` resamples can give,
    ``2 / (n_boot + 1)`` (two-sided, with the observed statistic counted once)."""
    n = finite(n_boot)
    return None if n is None or n < 1 else 2.0 / (n + 1.0)


def _ceil_2sig(x: float) -> str:
    """``x`` rounded up to two significant digits, as short text (0.001998 -> 0.002), so
    that ``< text`` stays true."""
    mag = 10.0 ** (math.floor(math.log10(x)) - 1)
    return f"{math.ceil(x / mag - 1e-9) * mag:.6g}"


def fmt_p(p: Any, n_boot: Any = None, digits: int = 3) -> str:
    """A p-value: ``0.034``; ``< 0.002`` where it sits at the resolution floor of a
    bootstrap of ``n_boot`` resamples (``p <= 2 / (n_boot + 1)``: the test cannot say more
    than that); ``< 0.001`` for smaller values when ``n_boot`` is not known; ``-`` when
    missing. A paired test's mapping is read for its ``p``."""
    if isinstance(p, Mapping):
        p = p.get("p")
    v = finite(p)
    if v is None:
        return "-"
    floor = p_floor(n_boot)
    if floor is not None and v <= floor * (1 + 1e-9):
        return f"< {_ceil_2sig(floor)}"
    smallest = 10.0 ** -digits
    if v < smallest:
        return f"< {smallest:.{digits}f}"
    return f"{v:.{digits}f}"


def fmt_adjusted_p(adjusted: Any, raw: Any, raw_floor: Any, n_boot: Any = None) -> str:
    """An adjusted p (Holm) of a test whose raw p may sit at the bootstrap's floor: then
    only a bound is known for it too, printed ``< bound`` (rounded up)."""
    v, r = finite(adjusted), finite(raw)
    floor = finite(raw_floor)
    if floor is None:
        floor = p_floor(n_boot)
    if v is None:
        return "-"
    if r is not None and floor is not None and r <= floor * (1 + 1e-9):
        return f"< {_ceil_2sig(max(v, 1e-12))}"
    return fmt_p(v, n_boot)


NOT_APPLICABLE = "n/a (mode unchanged)"


def moot(strategy: Mapping[str, Any], metric: str) -> bool:
    """Whether a strategy's result says ``metric`` cannot move by construction (exact
    vote-k keeps the baseline's modes), so it has no test against baseline."""
    na = strategy.get("not_applicable")
    return isinstance(na, Mapping) and metric in (na.get("metrics") or [])
