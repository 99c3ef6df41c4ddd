"""Best-fit Packing (Ding et al., 2024): split only over-long documents, then pack the chunks with
Best-Fit-Decreasing. Pure numpy: no I/O, no engines (OR-Tools is imported only for
``algorithm="optimal"``). Every algorithm is a ``packing.registry`` entry.

Names load on first use (PEP 562), not here: the registry (what a run's config and the help
texts read) costs no numpy, and an ``__init__`` that imports its submodules can deadlock two
threads that import them at the same time.
"""
import importlib

# name -> the submodule that defines it
_WHERE = {
    **dict.fromkeys(["ALGORITHMS", "Algorithm", "register", "unregister"], "registry"),
    "pack": "api",
    **dict.fromkeys(["BufferedPacker", "OnlinePacker", "PackedRow"], "online"),
    **dict.fromkeys(["PartitionPlan", "merge_stats", "pack_partition", "plan_partitions"],
                    "partition"),
    **dict.fromkeys(["PackedRows", "pack_token_lists"], "rows"),
    **dict.fromkeys(["PackResult", "PackStats", "lower_bound"], "result"),
    **dict.fromkeys(["ChunkTable", "split_documents"], "split"),
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
