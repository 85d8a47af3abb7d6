"""The one way xlgap makes and saves a matplotlib figure.

Figures are drawn with matplotlib's object API on an Agg canvas, so no display is needed
and pyplot's global state (which a user's notebook owns) is never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["new_figure", "save_figure"]


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
