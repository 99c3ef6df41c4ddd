"""``pack``: one entry point over every packing algorithm of the registry."""
from __future__ import annotations

from packing.registry import algorithm as find
from packing.result import PackResult
from packing.validate import as_lengths, check_capacity


def pack(lengths, capacity: int, algorithm: str = "bfd", **options) -> PackResult:
    """Pack items of the given lengths into bins of ``capacity`` tokens.

    ``algorithm``: a name of ``packing.registry``: ``"bfd"`` (exact Best-Fit-Decreasing, fast),
    ``"obfd"`` (the paper's segment tree, a reference), ``"ffd"`` (first-fit-decreasing),
    ``"optimal"`` (CP-SAT; options ``time_limit`` in deterministic seconds and ``workers``), or
    one registered since. Every length must be an integer in [1, capacity]; anything else
    raises ``ValueError`` naming the item.
    """
    capacity = check_capacity(capacity)
    algo = find(algorithm)
    arr = as_lengths(lengths, capacity)
    if options and not algo.options:
        raise ValueError(f"algorithm {algorithm!r} takes no options, got {sorted(options)}")
    assignment, n_bins, *info = algo.assign(arr, capacity, **options)
    return PackResult(
        assignment=assignment,
        n_bins=int(n_bins),
        lengths=arr,
        capacity=capacity,
        algorithm=algorithm,
        extra=info[0] if info else {},
    )
