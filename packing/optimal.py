"""Exact bin packing with OR-Tools CP-SAT, for windows of up to a few thousand items.

The cumulative model: item ``i`` is a unit-length interval at "time" ``bin[i]`` with demand
``length[i]``; a cumulative constraint of height L makes every bin feasible, and the objective is
the number of bins. Items larger than L/2 are pairwise incompatible, so they are pinned to bins
0, 1, … (symmetry breaking), and BFD's packing (which places them the same way) is the hint and
the upper bound. The x[i, b] assignment model does not scale; this one does. With ``workers=1``
the time limit is CP-SAT's deterministic time, so the result is reproducible byte for byte;
several workers race (faster proofs) and may return a different optimal assignment per run.
"""
from __future__ import annotations

import numpy as np

from packing.bfd import bfd_assign
from packing.result import lower_bound


def optimal_assign(
    lengths: np.ndarray,
    capacity: int,
    time_limit: float = 10.0,
    workers: int = 8,
) -> tuple[np.ndarray, int, dict]:
    """Return (assignment, n_bins, info) with ``info = {proven_optimal, best_bound}``."""
    hint, ub = bfd_assign(lengths, capacity)
    lb = lower_bound(int(lengths.sum()), capacity)
    if ub <= lb:
        return hint, ub, {"proven_optimal": True, "best_bound": lb}
    try:
        from ortools.sat.python import cp_model
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("algorithm='optimal' needs OR-Tools: pip install 'fewtrunc[optimal]'") from exc

    order = np.argsort(-lengths, kind="stable")
    size = lengths[order].tolist()
    n = len(size)
    model = cp_model.CpModel()
    n_bins = model.NewIntVar(lb, ub, "n_bins")
    where, intervals = [], []
    for i, s in enumerate(size):
        b = model.NewIntVar(0, ub - 1, f"b{i}")
        model.Add(b < n_bins)
        where.append(b)
        intervals.append(model.NewFixedSizeIntervalVar(b, 1, f"iv{i}"))
    model.AddCumulative(intervals, size, capacity)
    big = [i for i, s in enumerate(size) if 2 * s > capacity]
    for pinned, i in enumerate(big):
        model.Add(where[i] == pinned)
    hint_sorted = hint[order]
    for i in range(n):
        model.AddHint(where[i], int(hint_sorted[i]))
    model.AddHint(n_bins, ub)
    model.Minimize(n_bins)

    solver = cp_model.CpSolver()
    solver.parameters.num_workers = workers
    if workers == 1:
        solver.parameters.max_deterministic_time = float(time_limit)
    else:
        solver.parameters.max_time_in_seconds = float(time_limit)
    status = solver.Solve(model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return hint, ub, {"proven_optimal": False, "best_bound": lb}
    found = np.array([solver.Value(b) for b in where], dtype=np.int64)
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = found
    # renumber densely, in order of first use by item index
    _, first, dense = np.unique(assignment, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    assignment = rank[dense]
    bound = max(lb, int(np.ceil(solver.BestObjectiveBound() - 1e-9)))
    return assignment, int(first.size), {
        "proven_optimal": status == cp_model.OPTIMAL,
        "best_bound": bound,
    }
