"""Input checks shared by every packer: fail loudly, naming the offending item and the rule."""
from __future__ import annotations

import numpy as np


# The packers keep O(capacity) state (BFD: ~80 bytes per unit of capacity, and a scan of it per
# distinct length): 2**24 tokens is ~1.3 GB and minutes; beyond it a pack is not worth trying.
MAX_CAPACITY = 1 << 24


def check_capacity(capacity) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)):
        raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
    if capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity}")
    if capacity > MAX_CAPACITY:
        raise ValueError(f"capacity {capacity:,} exceeds the packers' limit of {MAX_CAPACITY:,} "
                         "tokens (their memory grows with the capacity)")
    return int(capacity)


def as_lengths(lengths, capacity: int, *, name: str = "lengths") -> np.ndarray:
    """Return ``lengths`` as a 1-D int64 array with every value in [1, capacity], or raise."""
    arr = np.asarray(lengths)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating):
            bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
            idx = int(bad[0]) if bad.size else 0
        else:
            idx = 0
        raise ValueError(
            f"{name}[{idx}] = {arr[idx].item()!r}: lengths must be integers (got dtype {arr.dtype})"
        )
    bad = np.flatnonzero((arr < 1) | (arr > capacity))
    if bad.size:
        idx = int(bad[0])
        rule = "must be at least 1" if arr[idx] < 1 else f"exceeds the capacity {capacity}"
        raise ValueError(f"{name}[{idx}] = {int(arr[idx])} {rule} ({bad.size} bad item(s))")
    return arr.astype(np.int64, copy=False)


def index_dtype(capacity: int):
    """The narrowest unsigned dtype that holds 0..capacity (radix sorts run on it)."""
    return np.uint16 if capacity < 2**16 else np.uint32 if capacity < 2**32 else np.uint64


def descending_order(lengths: np.ndarray, capacity: int) -> np.ndarray:
    """Item indices by non-increasing length, ties by index: a radix sort on a narrow key."""
    key = (capacity - lengths).astype(index_dtype(capacity))
    return np.argsort(key, kind="stable")
