"""Items in non-increasing size order, computed in parallel chunks.

Packers that place items by size work on the histogram of sizes and emit one bin id per *slot*:
slot ``j`` is the ``j``-th item in non-increasing size order (ties by item index). ``SizeOrder``
maps those slots back to items. A stable radix argsort of a uint16 key per chunk (numpy releases
the GIL while sorting, so chunks run on all cores), plus per-chunk histograms, give every item its
slot without one global sort.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from packing.validate import index_dtype

_MIN_CHUNK = 1 << 20  # below this, one chunk: threads cost more than they save


class SizeOrder:
    def __init__(self, lengths: np.ndarray, capacity: int, workers: int | None = None):
        self.lengths = lengths
        self.capacity = capacity
        n = lengths.size
        workers = workers or os.cpu_count() or 1
        n_chunks = max(1, min(4 * workers, n // _MIN_CHUNK))
        self.bounds = np.linspace(0, n, n_chunks + 1).astype(np.int64)
        self._pool = ThreadPoolExecutor(workers) if n_chunks > 1 else None
        parts = self._map(self._sort_chunk, range(n_chunks))
        self.orders = [p[0] for p in parts]
        self.chunk_counts = np.stack([p[1] for p in parts])  # (chunks, L+1)
        self.counts = self.chunk_counts.sum(axis=0)  # items of each size

    def _map(self, fn, items):
        if self._pool is None:
            return [fn(i) for i in items]
        return list(self._pool.map(fn, items))

    def _sort_chunk(self, c: int):
        x = self.lengths[self.bounds[c] : self.bounds[c + 1]]
        key = (self.capacity - x).astype(index_dtype(self.capacity))
        return np.argsort(key, kind="stable"), np.bincount(x, minlength=self.capacity + 1)

    def items_to_bins(self, slot_bins: np.ndarray) -> np.ndarray:
        """``assignment[i] = slot_bins[slot of item i]``."""
        L = self.capacity
        desc = np.arange(L, -1, -1)
        counts_desc = self.counts[desc]
        slot_start = np.cumsum(counts_desc) - counts_desc  # first slot of each size
        before = np.cumsum(self.chunk_counts, axis=0) - self.chunk_counts  # earlier chunks
        out = np.empty(self.lengths.size, dtype=np.int64)

        def place(c: int) -> None:
            cnt = self.chunk_counts[c][desc]
            in_chunk_start = np.cumsum(cnt) - cnt
            delta = slot_start + before[c][desc] - in_chunk_start
            pos = np.arange(cnt.sum(), dtype=np.int64)
            pos += np.repeat(delta, cnt)
            out[self.bounds[c] + self.orders[c]] = slot_bins[pos]

        self._map(place, range(len(self.orders)))
        if self._pool is not None:
            self._pool.shutdown()
        return out
