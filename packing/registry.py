"""Every packing algorithm by name, in one place: ``pack`` runs the one it is given, a run's
``pack.algorithm`` may name any of them (``pipelines.config``), and help texts list them with
their summaries.

A new algorithm is one new module with its ``assign`` function and one ``register`` line at the
end of this file. ``assign(lengths, capacity, **options)`` gets validated int64 lengths (each in
``[1, capacity]``; maybe none) and returns ``(assignment, n_bins)``: each item's bin, bins
numbered from 0 in the order they open; or ``(assignment, n_bins, info)`` with what the
``PackStats`` of its result records (``proven_optimal``, ``best_bound``).

The shipped algorithms' modules load when they first pack, not here: this registry is what a
config and ``fewtrunc --help`` read, and numpy and the compiled kernel stay out of those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Algorithm:
    name: str
    summary: str  # one line, for help texts
    assign: Callable
    options: tuple[str, ...] = ()  # the keyword options it takes (``pack`` refuses any for none)


ALGORITHMS: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Add ``algorithm`` (a plug-in, or a test's toy); ``unregister`` takes it back."""
    if algorithm.name in ALGORITHMS:
        raise ValueError(f"packing algorithm {algorithm.name!r} is registered already")
    ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def unregister(name: str) -> None:
    del ALGORITHMS[name]


def algorithm(name: str) -> Algorithm:
    """The algorithm called ``name``; a ``ValueError`` naming the choices when there is none."""
    found = ALGORITHMS.get(name)
    if found is None:
        raise ValueError(f"unknown packing algorithm {name!r}; choose one of {tuple(ALGORITHMS)}")
    return found


def _bfd(lengths, capacity: int):
    from packing.bfd import bfd_assign

    return bfd_assign(lengths, capacity)


def _obfd(lengths, capacity: int):
    from packing.obfd import obfd_assign

    return obfd_assign(lengths, capacity)


def _ffd(lengths, capacity: int):
    from packing.ffd import ffd_assign

    return ffd_assign(lengths, capacity)


def _optimal(lengths, capacity: int, **options):
    """OR-Tools is an optional extra: imported only when asked for."""
    import numpy as np

    from packing.optimal import optimal_assign

    if lengths.size == 0:
        return np.zeros(0, np.int64), 0, {"proven_optimal": True, "best_bound": 0}
    return optimal_assign(lengths, capacity, **options)


register(Algorithm("bfd", "exact Best-Fit-Decreasing, the paper's (fast)", _bfd))
register(Algorithm("obfd", "the paper's segment-tree Best-Fit-Decreasing (a reference)", _obfd))
register(Algorithm("ffd", "First-Fit-Decreasing, the classic baseline", _ffd))
register(Algorithm("optimal", "exact bin packing with CP-SAT, per window (pack.window_tokens)",
                   _optimal, ("time_limit", "workers")))
