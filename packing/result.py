"""``PackResult``: which bin each item went to, CSR views of the bins, and packing statistics."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class PackStats:
    items: int
    tokens: int
    bins: int
    capacity: int
    lower_bound: int  # ceil(tokens / capacity): no packer can use fewer bins
    overhead: float  # bins / lower_bound - 1 (0.0 when optimal or empty)
    mean_fill: float  # tokens / (bins * capacity)
    fill_histogram: tuple  # counts of bins by fill fraction in 20 equal buckets (0, 1]
    proven_optimal: bool | None = None  # set by the exact packer
    best_bound: int | None = None  # best lower bound the exact packer proved

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class PackResult:
    """``assignment[i]`` is the bin of item ``i``; bins are numbered densely 0..n_bins-1."""

    assignment: np.ndarray
    n_bins: int
    lengths: np.ndarray = field(repr=False)
    capacity: int
    algorithm: str
    extra: dict = field(default_factory=dict, repr=False)

    @cached_property
    def bin_items(self) -> np.ndarray:
        """Item indices grouped by bin; within a bin, in increasing item index."""
        return np.argsort(self.assignment, kind="stable")

    @cached_property
    def bin_offsets(self) -> np.ndarray:
        """``bin_items[bin_offsets[b]:bin_offsets[b+1]]`` are the items of bin ``b``."""
        counts = np.bincount(self.assignment, minlength=self.n_bins)
        out = np.zeros(self.n_bins + 1, dtype=np.int64)
        np.cumsum(counts, out=out[1:])
        return out

    @cached_property
    def fills(self) -> np.ndarray:
        """Tokens in each bin."""
        return np.bincount(self.assignment, weights=self.lengths, minlength=self.n_bins).astype(
            np.int64
        )

    def items_of(self, b: int) -> np.ndarray:
        return self.bin_items[self.bin_offsets[b] : self.bin_offsets[b + 1]]

    @cached_property
    def stats(self) -> PackStats:
        return make_stats(self.lengths, self.fills, self.capacity, **self.extra)


def lower_bound(total_tokens: int, capacity: int) -> int:
    return -(-int(total_tokens) // int(capacity))


def make_stats(lengths: np.ndarray, fills: np.ndarray, capacity: int, **extra) -> PackStats:
    hist, _ = np.histogram(fills / capacity, bins=20, range=(0.0, 1.0))
    return stats_of(int(lengths.size), int(lengths.sum()), int(fills.size), capacity, hist, **extra)


def stats_of(items: int, tokens: int, bins: int, capacity: int, fill_histogram,
             **extra) -> PackStats:
    """``PackStats`` from totals: also what summaries of several packs add up to."""
    lb = lower_bound(tokens, capacity)
    return PackStats(
        items=int(items),
        tokens=int(tokens),
        bins=int(bins),
        capacity=int(capacity),
        lower_bound=lb,
        overhead=(bins / lb - 1.0) if lb else 0.0,
        mean_fill=tokens / (bins * capacity) if bins else 0.0,
        fill_histogram=tuple(int(h) for h in fill_histogram),
        **extra,
    )
