"""``pack``: one entry point over every packing algorithm."""
from __future__ import annotations

import numpy as np

from packing.bfd import bfd_assign
from packing.ffd import ffd_assign
from packing.obfd import obfd_assign
from packing.result import PackResult
from packing.validate import as_lengths, check_capacity

ALGORITHMS = ("bfd", "obfd", "ffd", "optimal")


def pack(lengths, capacity: int, algorithm: str = "bfd", **options) -> PackResult:
    """Pack items of the given lengths into bins of ``capacity`` tokens.

    ``algorithm``: ``"bfd"`` (exact Best-Fit-Decreasing, fast), ``"obfd"`` (the paper's segment
    tree, a reference), ``"ffd"`` (first-fit-decreasing) or ``"optimal"`` (CP-SAT; options
    ``time_limit`` in deterministic seconds and ``workers``). Every length must be an integer in
    [1, capacity]; anything else raises ``ValueError`` naming the item.
    """
    capacity = check_capacity(capacity)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown packing algorithm {algorithm!r}; choose one of {ALGORITHMS}")
    arr = as_lengths(lengths, capacity)
    extra: dict = {}
    if algorithm == "optimal":
        assignment, n_bins, extra = optimal_assign_lazy(arr, capacity, **options)
    else:
        if options:
            raise ValueError(f"algorithm {algorithm!r} takes no options, got {sorted(options)}")
        fn = {"bfd": bfd_assign, "obfd": obfd_assign, "ffd": ffd_assign}[algorithm]
        assignment, n_bins = fn(arr, capacity) if arr.size else (np.zeros(0, np.int64), 0)
    return PackResult(
        assignment=assignment,
        n_bins=int(n_bins),
        lengths=arr,
        capacity=capacity,
        algorithm=algorithm,
        extra=extra,
    )


def optimal_assign_lazy(arr: np.ndarray, capacity: int, **options):
    """Import the CP-SAT packer only when asked for: OR-Tools is an optional extra."""
    from packing.optimal import optimal_assign

    if arr.size == 0:
        return np.zeros(0, np.int64), 0, {"proven_optimal": True, "best_bound": 0}
    return optimal_assign(arr, capacity, **options)
