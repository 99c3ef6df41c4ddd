"""Partitioned packing: consecutive units grouped into partitions of a bounded number of chunks,
each packed on its own with exact BFD.

A corpus too large for one global pack is cut into partitions that a worker can split and pack
alone; the driver keeps per-unit chunk counts and per-partition summaries (``PackStats``), so its
memory is O(units), not O(documents). The cut depends only on the units' chunk counts and
``max_chunks`` (never on the engine or the number of workers), so every engine writes the same
rows. When the whole corpus fits in ``max_chunks`` there is one partition: the paper's global
pack.

Cost: each partition ends with at most a few part-filled bins that a global pack could have
merged. With ~10^6 documents per partition that is ~10^-5 of the bins
(``benchmarks/bench_packing_partitions.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packing.api import pack
from packing.result import PackResult, PackStats, stats_of
from packing.validate import check_capacity


@dataclass(frozen=True)
class PartitionPlan:
    """Partition ``p`` is units ``[unit_bounds[p], unit_bounds[p+1])``, whose chunks are global
    chunks ``[chunk_bounds[p], chunk_bounds[p+1])`` (chunks numbered in unit order)."""

    unit_bounds: np.ndarray  # int64, P + 1
    chunk_bounds: np.ndarray  # int64, P + 1
    max_chunks: int

    @property
    def n_partitions(self) -> int:
        return int(self.unit_bounds.size - 1)

    def units(self, p: int) -> range:
        return range(int(self.unit_bounds[p]), int(self.unit_bounds[p + 1]))

    def chunks(self, p: int) -> range:
        return range(int(self.chunk_bounds[p]), int(self.chunk_bounds[p + 1]))


def plan_partitions(unit_chunks, max_chunks: int) -> PartitionPlan:
    """Greedy cut of consecutive units: each partition takes units while its chunk count stays
    ≤ ``max_chunks``; a unit alone above the bound is a partition of its own (this function
    never splits an item; a run first cuts such a unit into runs of its documents with the same
    rule, ``RunCutter``). Units with no chunks join the current partition.

    O(P log U) with P partitions: one binary search per cut over the chunk count prefix sums.
    """
    counts = np.asarray(unit_chunks)
    if counts.ndim != 1:
        raise ValueError(f"unit_chunks must be a 1-D array, got shape {counts.shape}")
    if counts.size and (counts.dtype == bool or not np.issubdtype(counts.dtype, np.integer)):
        raise ValueError(f"unit_chunks must be integers (got dtype {counts.dtype})")
    negative = np.flatnonzero(counts < 0)
    if negative.size:  # the first bad unit, as every length check names it
        raise ValueError(f"unit_chunks[{int(negative[0])}] is negative")
    if isinstance(max_chunks, bool) or not isinstance(max_chunks, (int, np.integer)) \
            or max_chunks < 1:
        raise ValueError(f"max_chunks must be a positive integer, got {max_chunks!r}")
    ends = np.cumsum(counts, dtype=np.int64)  # ends[u]: chunks in units 0..u
    cuts = [0]
    while cuts[-1] < counts.size:
        start = cuts[-1]
        base = int(ends[start - 1]) if start else 0
        stop = int(np.searchsorted(ends, base + max_chunks, side="right"))
        cuts.append(max(stop, start + 1))
    unit_bounds = np.asarray(cuts, dtype=np.int64)
    chunk_bounds = np.concatenate([[0], ends])[unit_bounds]
    return PartitionPlan(unit_bounds, chunk_bounds.astype(np.int64), int(max_chunks))


@dataclass
class RunCutter:
    """``plan_partitions``' greedy cut, fed its counts block by block (the documents of one big
    unit, read a block at a time): ``cut(block)`` returns where new runs start inside the block
    (block-relative); the cuts of all blocks are those of one ``plan_partitions`` call."""

    max_chunks: int
    total: int = 0  # chunks in the open run
    has_items: bool = False  # the open run holds an item (a zero-count one included)

    def cut(self, counts) -> np.ndarray:
        ends = np.cumsum(np.asarray(counts, dtype=np.int64))
        n, cuts, i, base = int(ends.size), [], 0, 0
        while i < n:
            room = self.max_chunks - self.total
            stop = max(int(np.searchsorted(ends, base + room, side="right")), i)
            if stop == i:  # item i does not fit in the open run
                if self.has_items:
                    cuts.append(i)
                    self.total, self.has_items = 0, False
                    continue
                stop = i + 1  # alone above the bound: a run of its own
            if stop == n:
                self.total += int(ends[-1]) - base
                self.has_items = True
                break
            cuts.append(stop)
            base, i, self.total, self.has_items = int(ends[stop - 1]), stop, 0, False
        return np.asarray(cuts, dtype=np.int64)


def pack_partition(chunk_lengths, capacity: int, algorithm: str = "bfd", **options) -> PackResult:
    """Pack one partition's chunk lengths (in global chunk order) exactly as ``pack`` packs the
    whole corpus: the result's items are the partition's chunks, numbered from 0, bins from 0.
    A worker calls it; the driver keeps only ``result.stats``."""
    return pack(chunk_lengths, capacity, algorithm, **options)


def merge_stats(parts: list[PackStats], capacity: int) -> PackStats:
    """One ``PackStats`` for the rows of all partitions (what a report of the run shows): sums,
    the fill histograms added, and the lower bound of the whole corpus."""
    hist = np.sum([s.fill_histogram for s in parts], axis=0) if parts else np.zeros(20, np.int64)
    return stats_of(sum(s.items for s in parts), sum(s.tokens for s in parts),
                    sum(s.bins for s in parts), check_capacity(capacity), hist)
