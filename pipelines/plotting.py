"""Headless matplotlib and atomic, reproducible PNG writes, for every plot fewtrunc makes
(the run report, the training curves, the benchmark experiments)."""
from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: no display needed, imported only when plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path, dpi: int = 110) -> None:
    """Write ``fig`` to a temporary name, rename it to ``path`` and close the figure. No software
    version in the metadata, so the same figure gives the same bytes."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=dpi, metadata={"Software": None})
    os.replace(tmp, path)
    plt.close(fig)
