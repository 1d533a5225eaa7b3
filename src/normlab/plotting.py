"""Figures for every package: a matplotlib Figure on the Agg canvas and its atomic PNG write.

    fig = figure(4.5, 3.2)        # no pyplot: no display, no global backend switch, no window
    ax = fig.add_subplot(); ...
    save_figure(fig, path)        # written to a temporary file, then renamed over `path`

matplotlib is the [plot] extra; it is imported when a figure is made, never at import time.
"""
from __future__ import annotations

from pathlib import Path

from normlab._io import atomic_open

__all__ = ["figure", "save_figure"]


def figure(width: float = 4.5, height: float = 3.2):
    """A matplotlib Figure of width × height inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """fig as a PNG at `path`, atomically: a reader never sees half a file."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    return Path(path)
