"""Exact Best-Fit-Decreasing over the histogram of sizes.

BFD places items in non-increasing size order, each into the fullest open bin that still fits it.
Sizes are integers ≤ L, so bins can be kept in groups by remaining capacity ``r``. For a size
``s``, best fit means: the group with the smallest ``r ≥ s``. A bin taken from that group stays
the best fit while it still has room for ``s`` (its remaining capacity only shrinks, and no other
bin lies between), so it takes ``⌊r/s⌋`` items at once, and so does every bin of the group. All
items of one size are therefore placed by a cumulative sum over the groups ``r ≥ s`` — a few numpy
operations per distinct size, never a Python step per item. The result has exactly the bin fills
of an item-by-item BFD (tests compare against one); ties between bins of equal remaining capacity
go to the bin that reached that capacity first.

The small-input pass's loop also exists compiled (``packing/_bfd_kernel.c``, an optional
extension built by ``pip install``): it is used when it imports, same assignment step for step;
without it, or with ``FEWTRUNC_PURE_PYTHON=1`` in the environment, the loop runs in Python
(``packing.online`` follows the same switch for its rounds).
"""
from __future__ import annotations

import os
import warnings
from bisect import bisect_left, insort

import numpy as np

from packing.order import SizeOrder
from packing.validate import descending_order

# The histogram pass costs a few numpy calls per distinct size (~10 µs each, over arrays of L);
# the sorted-list pass costs ~0.3 µs per (size, bin) step. Measured crossover (2 cores, lognormal
# lengths): the list pass wins while n < ~SMALL_PER_SIZE * min(n, L) distinct sizes could occur.
# The compiled loop keeps the same rule. It would win beyond it (1M lognormal lengths at L = 2048:
# ~20 ms against ~45-85 ms, bins kept by room when L <= 4n), but where L is much larger than n it
# keeps a sorted array whose memmove per step grows with the open bins, so widening the rule
# needs measurements on both sides first.
SMALL_PER_SIZE = 40
TINY = 160  # below it, a dozen numpy calls cost more than a Python sort (measured)
SORT_IN_C = 128  # compiled loop: below it, insertion sort beats numpy's argsort (measured)

KERNEL_VERSION = 5  # the interface this module calls; bumped with every change to it
try:
    from packing import _bfd_kernel as kernel  # compiled loop; None: not built, or not wanted
except ImportError:
    kernel = None
if kernel is not None and getattr(kernel, "VERSION", None) != KERNEL_VERSION:
    warnings.warn("packing._bfd_kernel was built from an older source: BFD runs its Python loop "
                  "until it is rebuilt (pip install -e . or python setup.py build_ext --inplace)",
                  RuntimeWarning, stacklevel=2)
    kernel = None
if os.environ.get("FEWTRUNC_PURE_PYTHON", "") not in ("", "0"):
    kernel = None


def bfd_assign(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """Return (assignment, n_bins) for validated int64 ``lengths``; bins numbered by opening."""
    n = lengths.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if n < SMALL_PER_SIZE * min(n, capacity):
        return bfd_assign_small(lengths, capacity)
    return bfd_assign_histogram(lengths, capacity)


def bfd_assign_small(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """The small-input pass: compiled when the kernel is built, in Python otherwise."""
    if kernel is not None:
        return bfd_assign_compiled(lengths, capacity)
    return bfd_assign_small_python(lengths, capacity)


def bfd_assign_compiled(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """``bfd_assign_small_python``'s loop in C (``_bfd_kernel.assign``), which writes every
    item's bin itself (~0.02 µs per step, against ~0.3). The only numpy left is the radix sort,
    and below ``SORT_IN_C`` items not even that: the kernel's insertion sort is cheaper."""
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)  # a no-op for pack's arrays
    out = np.empty(lengths.size, dtype=np.int64)
    order = descending_order(lengths, capacity) if lengths.size >= SORT_IN_C else None
    return out, kernel.assign(lengths, order, capacity, out)


def bfd_assign_small_python(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """The same BFD, item runs through a sorted list of open bins: no state sized L.

    Keys are ``room * N + clock``, so ``bisect`` finds the smallest room that fits and, between
    equal rooms, the bin that reached it first (the clock counts events in time order). A run of
    ``c`` equal sizes fills the chosen bin with ``⌊room/s⌋`` of them at once (the histogram
    pass's argument), so the loop steps once per (size, bin), not per item. Items over L/2 open
    one bin each, in order: they are placed without the loop. Bins with less room than the
    smallest item are never stored. Below ``TINY`` items the preparation is plain Python: its
    dozen numpy calls would cost more than the packing.
    """
    n, L = lengths.size, capacity
    if n <= TINY:
        lens = lengths.tolist()
        order = sorted(range(n), key=lens.__getitem__, reverse=True)  # stable: ties by index
        run_size = [lens[i] for i in order]
        run_count, n_big, keys, smallest = [1] * n, 0, [], run_size[-1]
    else:
        order = descending_order(lengths, L)
        sizes = lengths[order]
        n_big = int(np.count_nonzero(2 * sizes > L))  # one bin each
        smallest = int(sizes[-1])
        big_rooms = L - sizes[:n_big]
        alive = big_rooms >= smallest
        keys = (big_rooms[alive] * (n + 1) + np.flatnonzero(alive)).tolist()  # rooms grow
        rest = sizes[n_big:]
        starts = np.flatnonzero(np.r_[True, rest[1:] != rest[:-1]]) if rest.size else rest
        run_size = rest[starts].tolist()
        run_count = np.diff(np.r_[starts, rest.size]).tolist()
    ev_bin, ev_take, n_bins = _place_runs(run_size, run_count, keys, n_big, L, n + 1, smallest)
    out = np.empty(n, dtype=np.int64)
    if n <= TINY:  # one item per event
        out[order] = ev_bin
    else:
        out[order] = np.concatenate([np.arange(n_big, dtype=np.int64),
                                     np.repeat(np.asarray(ev_bin, dtype=np.int64), ev_take)])
    return out, n_bins


def _place_runs(run_size: list, run_count: list, keys: list, n_bins: int, L: int, N: int,
                smallest: int) -> tuple[list, list, int]:
    """The loop of ``bfd_assign_small`` over runs (size, count), largest size first. ``keys``
    holds the open bins, bins ``0..n_bins-1`` being those opened so far, with clocks equal to
    their numbers. Returns events (bin, items taken) in slot order and the number of bins."""
    bin_at = list(range(n_bins))  # clock -> bin
    ev_bin: list[int] = []
    ev_take: list[int] = []
    pop, put_bin, put_take, stamp = keys.pop, ev_bin.append, ev_take.append, bin_at.append
    for s, c in zip(run_size, run_count):
        q = s * N
        while c:
            i = bisect_left(keys, q)
            if i < len(keys):
                r, u = divmod(pop(i), N)
                b, k = bin_at[u], r // s
            else:
                b, k, r = n_bins, L // s, L
                n_bins += 1
            if k > c:
                k = c
            r -= k * s
            put_bin(b)
            put_take(k)
            c -= k
            if r >= smallest:
                insort(keys, r * N + len(bin_at))
                stamp(b)
    return ev_bin, ev_take, n_bins


def bfd_assign_histogram(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    """The histogram pass described at the top: cost per distinct size, for large n."""
    L = capacity
    order = SizeOrder(lengths, L)
    counts = order.counts
    sizes = np.flatnonzero(counts)[::-1]  # distinct sizes, largest first

    # group[r]: bin-id arrays of open bins with remaining capacity r, oldest first
    group: list[list[np.ndarray]] = [[] for _ in range(L + 1)]
    gcount = np.zeros(L + 1, dtype=np.int64)  # bins per remaining capacity
    ev_ids: list[np.ndarray] = []  # placement events, in sorted-item order:
    ev_take: list[int] = []  # every bin of ev_ids[j] receives ev_take[j] items
    next_bin = 0

    def move(ids_list: list[np.ndarray], take: int, dest: int) -> None:
        for ids in ids_list:
            ev_ids.append(ids)
            ev_take.append(take)
        group[dest].extend(ids_list)

    for s in sizes.tolist():
        c = int(counts[s])
        avail = np.flatnonzero(gcount[s:L]) + s  # groups that fit s, fullest first
        if avail.size:
            per_bin = avail // s
            room = np.cumsum(gcount[avail] * per_bin)
            j = int(np.searchsorted(room, c))  # first group that cannot be emptied
            full = avail[: min(j, avail.size)]
            for r, k in zip(full.tolist(), per_bin[: full.size].tolist()):
                ids_list, group[r] = group[r], []
                move(ids_list, k, r - k * s)
            if full.size:
                moved = gcount[full].copy()
                gcount[full] = 0
                np.add.at(gcount, full - per_bin[: full.size] * s, moved)
                c -= int(room[full.size - 1])
            if j < avail.size and c > 0:  # a partly used group: its oldest bins go first
                r, k = int(avail[j]), int(per_bin[j])
                ids = np.concatenate(group[r]) if len(group[r]) > 1 else group[r][0]
                q, extra = divmod(c, k)
                used = q + (extra > 0)
                if q:
                    move([ids[:q]], k, r - k * s)
                    gcount[r - k * s] += q
                if extra:
                    move([ids[q:used]], extra, r - extra * s)
                    gcount[r - extra * s] += 1
                group[r] = [ids[used:]] if used < ids.size else []
                gcount[r] -= used
                c = 0
        if c > 0:  # open new bins, each taking as many items of size s as fit
            k = L // s
            q, extra = divmod(c, k)
            if q:
                ids = np.arange(next_bin, next_bin + q, dtype=np.int64)
                move([ids], k, L - k * s)
                gcount[L - k * s] += q
                next_bin += q
            if extra:
                move([np.array([next_bin], dtype=np.int64)], extra, L - extra * s)
                gcount[L - extra * s] += 1
                next_bin += 1

    sizes_of_events = np.fromiter((ids.size for ids in ev_ids), dtype=np.int64, count=len(ev_ids))
    bins_in_order = np.concatenate(ev_ids)
    takes = np.repeat(np.asarray(ev_take, dtype=np.int64), sizes_of_events)
    return order.items_to_bins(np.repeat(bins_in_order, takes)), next_bin
