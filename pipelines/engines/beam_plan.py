"""What Beam's stages share through the work directory, without importing Beam: the row plan
(``.npy`` arrays the shard writers memory-map), the unit markers, and the part-file folder."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.errors import FatalError
from pipelines.steps import spill

PLAN = "beam-plan"
PARTS = "beam-parts"  # token batches, one file each, until their unit is committed


def save_plan(work: Path, docs, rows) -> None:
    """Write the plan's arrays (``.npy``, atomic) for the shard writers to memory-map."""
    d = Path(work) / PLAN
    d.mkdir(parents=True, exist_ok=True)
    for prefix, obj in (("docs", docs), ("rows", rows)):
        for f in dataclasses.fields(obj):
            with atomic_path(d / f"{prefix}.{f.name}.npy", suffix=".npy") as tmp:
                np.save(tmp, getattr(obj, f.name))


def load_plan(work: Path):
    from pipelines.steps.pack import RowPlan
    from pipelines.steps.write import DocTable

    d = Path(work) / PLAN

    def load(cls, prefix):
        return cls(**{f.name: np.load(d / f"{prefix}.{f.name}.npy", mmap_mode="r")
                      for f in dataclasses.fields(cls)})

    return load(DocTable, "docs"), load(RowPlan, "rows")


def unit_markers(ctx) -> list:
    markers = [spill.load_marker(ctx.work, u.index) for u in ctx.units]
    if any(m is None for m in markers):
        raise FatalError("a unit has no completion marker after the spill stage")
    return markers
