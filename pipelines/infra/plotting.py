"""Headless matplotlib and atomic, reproducible PNG writes, for every plot fewtrunc makes
(the run report, the training curves, the benchmark experiments)."""
from __future__ import annotations

import sys

from pipelines.infra.atomic import atomic_path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: no display needed, imported only when plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(width: float, height: float, margins: tuple = (0.09, 0.12, 0.98, 0.9)):
    """One ``Figure`` with one ``Axes``, without pyplot (its import is ~0.5 s of a small run) and
    with fixed margins (left, bottom, right, top) instead of a layout engine (~0.15 s a figure)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(*margins)
    return fig, fig.add_subplot()


def save_png(fig, path, dpi: int = 110) -> None:
    """Write ``fig`` to a temporary name, rename it to ``path`` and close the figure. No software
    version in the metadata, so the same figure gives the same bytes."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
    if "matplotlib.pyplot" in sys.modules:  # a pyplot figure: release it
        sys.modules["matplotlib.pyplot"].close(fig)
