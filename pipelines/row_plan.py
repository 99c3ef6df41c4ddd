"""The row plan's arrays saved for the shard writers (a partition's, under its directory in the
work directory), and the units' markers the plan is built from."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipelines.infra.atomic import atomic_path
from pipelines.infra.errors import FatalError
from pipelines.run_plan import RunPlan
from pipelines.steps import spill
from pipelines.steps.pack import RowPlan
from pipelines.steps.write import DocTable
from pipelines.infra.storage.paths import UrlPath, as_path

PLAN = "plan"  # the row plan's arrays in the work directory


def unit_markers(plan: RunPlan) -> list[dict]:
    """Every unit's marker, its counts only: the rejects it lists are left on disk (rejects.jsonl
    streams them one unit at a time), so the driver holds O(units), however many documents are
    rejected. A unit without a marker stops the run (it is not tokenized)."""
    markers = []
    for u in plan.units:
        m = spill.load_marker(plan.work, u.index)
        if m is None:
            missing = [v.index for v in plan.units if not spill.is_done(plan.work, v.index)]
            raise FatalError(f"planning rows before every unit is tokenized (units "
                             f"{missing[:10]} have no marker)")
        m.pop("rejects", None)
        markers.append(m)
    return markers


def save_row_plan(work: Path, docs, rows) -> None:
    """The plan's arrays as ``.npy`` (atomic), for every shard writer to memory-map."""
    d = as_path(work) / PLAN
    d.mkdir(parents=True, exist_ok=True)
    for prefix, obj in (("docs", docs), ("rows", rows)):
        for f in dataclasses.fields(obj):
            with atomic_path(d / f"{prefix}.{f.name}.npy", suffix=".npy") as tmp:
                np.save(tmp, getattr(obj, f.name))


def load_npy(path) -> np.ndarray:
    """An ``.npy`` memory-mapped; from a store, a copy on local scratch, unlinked once mapped
    (the mapping outlives the file's name)."""
    path = as_path(path)
    if not isinstance(path, UrlPath):
        return np.load(path, mmap_mode="r")
    from pipelines.infra.storage import local_copy

    with local_copy(str(path)) as local:
        return np.load(local, mmap_mode="r")


def load_row_plan(work: Path) -> tuple[DocTable, RowPlan]:
    d = as_path(work) / PLAN

    def load(cls, prefix):
        return cls(**{f.name: load_npy(d / f"{prefix}.{f.name}.npy")
                      for f in dataclasses.fields(cls)})

    return load(DocTable, "docs"), load(RowPlan, "rows")
