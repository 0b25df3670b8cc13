"""The one way every stage draws a figure: a bare Matplotlib figure, saved atomically as a PNG. Its own module so that
a stage drawing a figure (score, the theory stages) does not depend on Table 1's code: editing the report reruns the
report, not them."""

from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sgilo.io import atomic_path


def new_figure(size: tuple[float, float]) -> Figure:
    # A bare Figure on the Agg canvas: no pyplot state, no backend switch for whoever imports this module.
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
