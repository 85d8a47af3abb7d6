"""The one way xlgap makes and saves a matplotlib figure.

Figures are drawn with matplotlib's object API on an Agg canvas, so no display is needed
and pyplot's global state (which a user's notebook owns) is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["figure_svg", "new_figure", "save_figure"]


def new_figure(width: float, height: float, **kwargs: Any) -> Any:
    """A ``Figure`` of ``width`` x ``height`` inches on its own Agg canvas; ``kwargs`` go
    to ``Figure`` (``dpi``, ``layout``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 130) -> Path:
    """Write ``fig`` as an image at ``path`` (folders made as needed), trimmed to its
    content."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=dpi, bbox_inches="tight")
    return p


def figure_svg(fig: Any) -> str:
    """``fig`` as an SVG document (text kept as text, so it stays small and searchable),
    for inlining into the HTML report. The salt makes the element ids the same on every
    run, so two builds of one report are byte-identical where the data are."""
    import io

    from matplotlib import rc_context

    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "xlgap"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    return buf.getvalue()
