"""Every figure xlgap draws, with matplotlib (one engine): the commands save them as PNG,
the HTML report inlines the same figure (the PNG a command wrote, or the figure drawn here
from the JSON as SVG when there is none).

Each module has ``draw_*(result) -> Figure`` and ``plot_*(result, path) -> Path``.
"""
