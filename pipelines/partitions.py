"""Partitioned packing in a run: the pack and write stages, with driver memory O(units).

A corpus of at most ``pack.partition_chunks`` chunks (documents split at ``seq_len``) is packed
as one global pack, the paper's setting: one partition holding every unit, whose rows and shards
are those of a global pack. A larger one is cut by ``packing.partition.plan_partitions`` into
partitions of consecutive units of at most that many chunks each; a unit alone above it (one big
file) is first cut into runs of its documents of at most that many chunks, so a partition never
outgrows the bound. Each is split and packed on its own with the same ``plan_rows``. The cut
depends only on the documents' lengths and the config, never on the engine or the workers.

Stages (after tokenizing):

    partition (gather)  every unit's lengths, one unit at a time -> per-unit chunk counts, the
                        partitions (``partitions.json``) -> one item per partition
    pack                a partition's units' lengths -> its row plan (``part-P/plan/``) and
                        summary marker (``part-P.done.json``, ``pipelines.markers``: rows,
                        tokens, stats piece)
    shards (gather)     the summaries -> shard ranges: partition p's shards follow p-1's, each
                        shard holds rows of one partition only; stray shard files go
    write               (k, p, start, end) -> shard k from partition p's row plan only

The driver (and each gather stage) holds per-unit counts and per-partition summaries only; a
pack worker holds one partition's lengths and plan (~150 bytes per document), a writer one
partition's memory-mapped plan. ``finalize`` merges the summaries' stats pieces.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pipelines.duplicates import dropped, keep_mask, of_unit
from pipelines.infra.errors import FatalError
from pipelines.faults import crash_point
from pipelines.markers import PART, SHARD, count_markers, read_marker, write_marker
from pipelines.memory import trim
from pipelines.partition_layout import partition_items, partition_layout
from pipelines.row_plan import load_row_plan, save_row_plan
from pipelines.stages import worker_setup, write_shard_range
from pipelines.run_plan import RunPlan
from pipelines.infra.shard_format import list_shards, shard_name
from pipelines.steps import spill
from pipelines.steps.gather import SpillStore
from pipelines.steps.pack import plan_rows
from pipelines.steps.stats import merge_stats, stats_piece
from pipelines.steps.write import DocTable, shard_ranges
from pipelines.infra.storage.paths import as_path


def part_dir(plan: RunPlan, p: int):
    """Partition ``p``'s work directory (its row plan lies in ``plan/`` below it)."""
    return as_path(plan.work) / f"part-{p:05d}"


def _partition_docs(plan: RunPlan, span, drop: np.ndarray) -> DocTable:
    """The documents of a partition's span, from its units' docs files (only the span's part of
    a unit cut between partitions is read, and where it starts in the tokens file is the
    layout's), without those of ``drop`` (duplicates: ``pipelines/duplicates.py``)."""
    lo, lo_doc, hi, hi_doc, lo_token = span
    parts = []
    for u in range(lo, hi + 1 if hi_doc else hi):
        unit = plan.units[u].index
        a, b = (lo_doc if u == lo else 0), (hi_doc if u == hi else None)
        ids, lengths = spill.load_docs(plan.work, unit, a, b)
        lengths = lengths.astype(np.int64)
        base = lo_token if u == lo else 0
        start = np.cumsum(lengths) - lengths + base  # token offsets in the unit's file
        part = (ids.astype(np.int64), lengths, np.full(lengths.size, u, dtype=np.int32), start)
        keep = keep_mask(of_unit(drop, u), a, lengths.size) if drop.size else None
        parts.append(part if keep is None else tuple(x[keep] for x in part))
    cat = lambda k, dt: np.concatenate([x[k] for x in parts]) if parts else np.zeros(0, dt)  # noqa: E731
    return DocTable(cat(0, np.int64), cat(1, np.int64), cat(2, np.int32), cat(3, np.int64))


def pack_partition(plan: RunPlan, p: int, span, token_base: int) -> dict:
    """Split + pack partition ``p`` (its ``span`` of documents): its row plan, then its summary
    marker. A summary already there for this run is kept (the partition was packed before a
    restart)."""
    span = [int(x) for x in span]
    done = read_marker(plan.work, PART, p)
    if done is not None and done.get("fingerprint") == plan.fingerprint \
            and done.get("units") == span:
        return done
    docs = _partition_docs(plan, span, dropped(plan, partition_layout(plan)))
    rows = plan_rows(docs.length, plan.cfg.pack)
    tokens = int(docs.length.sum())
    if int(rows.seg_len.sum()) != tokens:
        raise FatalError(f"the row plan of partition {p} does not hold every token of its "
                         "accepted documents")
    save_row_plan(part_dir(plan, p), docs, rows)
    summary = {"fingerprint": plan.fingerprint, "partition": p, "units": span,
               "documents": int(docs.length.size), "tokens": tokens, "rows": rows.n_rows,
               "stats": stats_piece(docs.length, rows, plan.cfg.pack, token_base)}
    write_marker(plan.work, PART, p, summary)
    crash_point("partition", p)
    return summary


def summaries(plan: RunPlan) -> list[dict]:
    """Every partition's summary, in partition order (after the pack stage)."""
    layout = partition_layout(plan)
    out = []
    for p, span, _ in partition_items(layout):
        s = read_marker(plan.work, PART, p)
        if s is None or s.get("fingerprint") != plan.fingerprint or s.get("units") != list(span):
            raise FatalError(f"the pack stage left partition {p} without its summary")
        out.append(s)
    return out


def shard_items(plan: RunPlan, parts: list[dict]) -> list[tuple[int, int, int, int]]:
    """(k, p, start, end): partition p's rows cut every ``output.rows_per_shard``, numbered on
    from the shards of the partitions before it."""
    items = []
    for s in parts:
        for a, b in shard_ranges(s["rows"], plan.cfg.output.rows_per_shard):
            items.append((len(items), s["partition"], a, b))
    return items


def run_totals(plan: RunPlan) -> tuple[dict, int, int]:
    """(stats, rows, shards) of the whole run, merged from the partitions' summaries."""
    parts = summaries(plan)
    stats = merge_stats([s["stats"] for s in parts], plan.cfg.pack)
    return stats, sum(s["rows"] for s in parts), len(shard_items(plan, parts))


@dataclass(frozen=True)
class PlanPartitions:
    """After every unit: the partitions (a barrier, per-unit counts only) -> one item each."""

    plan: RunPlan
    name, gather, threaded, marker = "partition", True, False, None

    def work_size(self, items) -> tuple[int, None]:
        return 0, None

    def done_size(self, items, names) -> int:
        return 0  # leaves no marker, shows no bar: a barrier, over when the next stage starts

    def setup(self, threads: int):
        worker_setup(self.plan)

        def call(items, report=None) -> list:
            return partition_items(partition_layout(self.plan))
        return call


@dataclass(frozen=True)
class PackPartitions:
    """(p, span, token_base) -> partition p's row plan and summary; outputs p."""

    plan: RunPlan
    name, gather, threaded, marker = "pack", False, False, PART

    def work_size(self, items) -> tuple[int, str]:
        return len(items), "partition"

    def done_size(self, items, names) -> int:
        return count_markers(self.plan.work, self.marker, names)

    def setup(self, threads: int):
        worker_setup(self.plan)

        def call(items, report=None) -> list:
            out = []
            for p, span, base in items:  # one at a time: memory is one partition's
                try:
                    pack_partition(self.plan, p, span, base)
                finally:
                    spill.drop_docs_copy()  # on a store: the local copy of a docs file
                trim()  # the partition's arrays are below the mmap threshold: heap pages
                out.append(p)
                if report is not None:
                    report(1)
            return out
        return call


@dataclass(frozen=True)
class NumberShards:
    """After every partition: the shard ranges (k, p, start, end) from the summaries; shard
    files beyond them (an earlier, larger plan's) go."""

    plan: RunPlan
    name, gather, threaded, marker = "shards", True, False, None

    def work_size(self, items) -> tuple[int, None]:
        return 0, None

    def done_size(self, items, names) -> int:
        return 0  # leaves no marker, shows no bar: a barrier, over when the next stage starts

    def setup(self, threads: int):
        worker_setup(self.plan)

        def call(items, report=None) -> list:
            ranges = shard_items(self.plan, summaries(self.plan))
            planned = {shard_name(k) for k in range(len(ranges))}
            for extra in list_shards(self.plan.out):  # only inside a known run
                if extra.name not in planned:
                    extra.unlink()
            return ranges
        return call


@dataclass(frozen=True)
class WritePartitionShards:
    """(k, p, start, end) -> ``shard-K.arrow`` and its marker, from partition p's row plan (a
    writer maps one partition's plan at a time); ``threads`` shards at once."""

    plan: RunPlan
    name, gather, threaded, marker = "write", False, True, SHARD

    def work_size(self, items) -> tuple[int, str]:
        return len(items), "shard"

    def done_size(self, items, names) -> int:
        return count_markers(self.plan.work, self.marker, names)

    def setup(self, threads: int):
        worker_setup(self.plan)
        store = SpillStore(self.plan.work, len(self.plan.units))
        loaded: dict = {}  # the last partition's (docs, rows)
        spans = {p: span for p, span, _ in partition_items(partition_layout(self.plan))}

        def row_plan(p: int):
            if p not in loaded:
                loaded.clear()
                loaded[p] = load_row_plan(part_dir(self.plan, p))
                # a writer's local copies of spill files (a run on a store) hold one partition's
                # units at a time, not every unit the writer has touched
                lo, _, hi, hi_doc, _ = spans[p]
                store.retain(self.plan.units[u].index for u in range(lo, hi + 1 if hi_doc else hi))
            return loaded[p]

        def call(items, report=None) -> list:
            by_part: dict = {}
            for k, p, a, b in items:
                by_part.setdefault(p, []).append((k, a, b))
            for p in sorted(by_part):
                docs, rows = row_plan(p)
                with ThreadPoolExecutor(max(1, threads)) as pool:
                    for _ in pool.map(lambda j: write_shard_range(self.plan, rows, docs, store,
                                                                  *j), by_part[p]):
                        trim()  # a shard's buffers, freed on the writer threads' arenas
                        if report is not None:
                            report(1)
            return []
        return call


def stages(plan: RunPlan) -> list:
    """The stages after tokenizing."""
    return [PlanPartitions(plan), PackPartitions(plan), NumberShards(plan),
            WritePartitionShards(plan)]
