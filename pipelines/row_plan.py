"""The row plan: every accepted document's length split and packed into rows (after every unit is
tokenized), the shards' row ranges, and the plan's arrays saved for the shard writers."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_path
from pipelines.errors import FatalError
from pipelines.run_plan import RunPlan
from pipelines.shard_format import list_shards, shard_name
from pipelines.steps import spill
from pipelines.steps.pack import RowPlan, plan_rows
from pipelines.steps.write import DocTable, shard_ranges
from pipelines.storage.paths import UrlPath, as_path

PLAN = "plan"  # the row plan's arrays in the work directory


def unit_markers(plan: RunPlan) -> list[dict]:
    """Every unit's marker; a unit without one stops the run (it is not tokenized)."""
    markers = [spill.load_marker(plan.work, u.index) for u in plan.units]
    missing = [u.index for u, m in zip(plan.units, markers) if m is None]
    if missing:
        raise FatalError(f"planning rows before every unit is tokenized (units {missing[:10]} "
                         "have no marker)")
    return markers


def plan_all_rows(plan: RunPlan):
    """(documents, rows, unit markers): split + pack every accepted document's length."""
    markers = unit_markers(plan)
    docs = DocTable.from_units([spill.load_docs(plan.work, u.index) for u in plan.units])
    rows = plan_rows(docs.length, plan.cfg.pack)
    if int(rows.seg_len.sum()) != int(docs.length.sum()):
        raise FatalError("the row plan does not hold every token of the accepted documents")
    return docs, rows, markers


def planned_shard_ranges(plan: RunPlan, rows) -> list[tuple[int, int]]:
    """The row range of every shard (fixed by the row count and ``output.rows_per_shard``)."""
    return shard_ranges(rows.n_rows, plan.cfg.output.rows_per_shard)


def plan_shards_and_remove_strays(plan: RunPlan, rows) -> list[tuple[int, int]]:
    """The row range of every shard; shard files beyond them (an earlier, larger plan's) go."""
    ranges = planned_shard_ranges(plan, rows)
    planned = {shard_name(k) for k in range(len(ranges))}
    for extra in list_shards(plan.out):  # only inside a known run (prepare refuses others)
        if extra.name not in planned:
            extra.unlink()
    return ranges


def save_row_plan(work: Path, docs, rows) -> None:
    """The plan's arrays as ``.npy`` (atomic), for every shard writer to memory-map."""
    d = as_path(work) / PLAN
    d.mkdir(parents=True, exist_ok=True)
    for prefix, obj in (("docs", docs), ("rows", rows)):
        for f in dataclasses.fields(obj):
            with atomic_path(d / f"{prefix}.{f.name}.npy", suffix=".npy") as tmp:
                np.save(tmp, getattr(obj, f.name))


def load_row_plan(work: Path) -> tuple[DocTable, RowPlan]:
    d = as_path(work) / PLAN

    def npy(path):  # memory-mapped; from a store, a copy on local scratch, unlinked once mapped
        if not isinstance(path, UrlPath):
            return np.load(path, mmap_mode="r")
        from pipelines.storage import local_copy

        with local_copy(str(path)) as local:
            return np.load(local, mmap_mode="r")  # the mapping outlives the file's name

    def load(cls, prefix):
        return cls(**{f.name: npy(d / f"{prefix}.{f.name}.npy") for f in dataclasses.fields(cls)})

    return load(DocTable, "docs"), load(RowPlan, "rows")
