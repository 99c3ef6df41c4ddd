"""``metrics.jsonl`` (one JSON object per logged step; also ``samples.jsonl``) and the PNG of the
curves. In a data-parallel run only rank 0 writes them."""
from __future__ import annotations

import json
from pathlib import Path

from pipelines.infra.plotting import pyplot, save_png


class MetricsLog:
    """Append-only JSON lines; on resume, lines after the checkpoint's step are discarded."""

    def __init__(self, path: str | Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step] \
            if resume_step > 0 and self.path.exists() else []
        with open(self.path, "w", encoding="utf-8") as fh:
            for record in kept:
                fh.write(json.dumps(record) + "\n")

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_metrics(metrics_path: str | Path, png_path: str | Path) -> None:
    """Loss (and the fraction of targets dropped, when any) against the step."""
    plt = pyplot()

    records = read_metrics(metrics_path)
    if not records:
        return
    steps = [r["step"] for r in records]
    dropped = [r.get("dropped_tokens", 0) / max(r.get("tokens", 1), 1) for r in records]
    panels = 2 if any(dropped) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
    axes[0][0].plot(steps, [r["loss"] for r in records], lw=1)
    axes[0][0].set(xlabel="step", ylabel="training loss", title="loss")
    if panels == 2:
        axes[0][1].plot(steps, dropped, lw=1, color="tab:red")
        axes[0][1].set(xlabel="step", ylabel="fraction of targets dropped", title="truncation")
    fig.tight_layout()
    save_png(fig, png_path, dpi=100)
