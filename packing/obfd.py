"""The paper's optimized BFD (Ding et al. 2024, Alg. 1), kept as a clear reference.

Counting sort of the items, then a segment tree over *remaining capacities* 1..L: leaf ``r`` holds
``r`` while some open bin has exactly ``r`` tokens of room (else 0), each node the max of its
children, so "the fullest bin that fits s" is the leftmost leaf whose value is ≥ s: O(log L) per
item. A table maps each remaining capacity to its bins. This is O(N log L) item-by-item Python —
the fast path is ``packing.bfd``; tests check that both give the same bin fills.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from packing.validate import descending_order


def obfd_assign(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, int]:
    L = capacity
    size = 1
    while size < L + 1:
        size *= 2
    tree = [0] * (2 * size)  # leaf size + r stands for remaining capacity r
    bins_with_room: list[deque] = [deque() for _ in range(L + 1)]

    def set_leaf(r: int, value: int) -> None:
        i = size + r
        tree[i] = value
        i //= 2
        while i:
            tree[i] = max(tree[2 * i], tree[2 * i + 1])
            i //= 2

    def smallest_fitting(s: int) -> int:
        """The smallest remaining capacity ≥ s held by an open bin, or -1."""
        if tree[1] < s:
            return -1
        i = 1
        while i < size:
            i = 2 * i if tree[2 * i] >= s else 2 * i + 1
        return i - size

    assignment = np.empty(lengths.size, dtype=np.int64)
    n_bins = 0
    for item in descending_order(lengths, L).tolist():
        s = int(lengths[item])
        r = smallest_fitting(s)
        if r < 0:
            b, r = n_bins, L
            n_bins += 1
        else:
            b = bins_with_room[r].popleft()  # the bin that reached r first
            if not bins_with_room[r]:
                set_leaf(r, 0)
        assignment[item] = b
        new_r = r - s
        if new_r > 0:
            if not bins_with_room[new_r]:
                set_leaf(new_r, new_r)
            bins_with_room[new_r].append(b)
    return assignment, n_bins
