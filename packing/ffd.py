"""First-Fit-Decreasing, the classic baseline: each item (largest first) goes into the
lowest-numbered bin that fits it.

Batched by size like ``packing.bfd``: the first bin that fits ``s`` stays the first while it has
room, so it takes ``⌊r/s⌋`` items at once. Bins whose room fell below the current size can never
be used again (no item is smaller than the smallest size) and are dropped from the candidate list.
"""
from __future__ import annotations

import numpy as np

from packing.order import SizeOrder


def ffd_assign(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64), 0
    L = capacity
    order = SizeOrder(lengths, L)
    counts = order.counts
    room = np.zeros(max(16, lengths.size), dtype=np.int64)  # room of each bin ever opened
    active = np.zeros(0, dtype=np.int64)  # bins that may still fit something, by number
    n_bins = 0
    slot_bins: list[np.ndarray] = []
    sizes = np.flatnonzero(counts)[::-1]
    smallest = int(sizes[-1])
    for s in sizes.tolist():
        c = int(counts[s])
        active = active[room[active] >= smallest]
        fits = active[room[active] >= s]
        if fits.size:
            per_bin = room[fits] // s
            cum = np.cumsum(per_bin)
            j = int(np.searchsorted(cum, c))  # bins fits[:j] fill up with s
            take = per_bin[: j + 1].copy() if j < fits.size else per_bin.copy()
            if j < fits.size:
                take[j] = c - (cum[j - 1] if j else 0)
            used = fits[: take.size]
            room[used] -= take * s
            slot_bins.append(np.repeat(used, take))
            c -= int(take.sum())
        if c > 0:
            k = L // s
            q, extra = divmod(c, k)
            new = np.arange(n_bins, n_bins + q + (extra > 0), dtype=np.int64)
            take = np.full(new.size, k, dtype=np.int64)
            if extra:
                take[-1] = extra
            room[new] = L - take * s
            slot_bins.append(np.repeat(new, take))
            active = np.concatenate([active, new])
            n_bins += new.size
    return order.items_to_bins(np.concatenate(slot_bins)), n_bins
