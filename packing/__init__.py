"""Best-fit Packing (Ding et al., 2024): split only over-long documents, then pack the chunks with
Best-Fit-Decreasing. Pure numpy: no I/O, no engines (OR-Tools is imported only for
``algorithm="optimal"``)."""
from packing.api import ALGORITHMS, pack
from packing.online import BufferedPacker, OnlinePacker, PackedRow
from packing.partition import PartitionPlan, merge_stats, pack_partition, plan_partitions
from packing.rows import PackedRows, pack_token_lists
from packing.result import PackResult, PackStats, lower_bound
from packing.split import ChunkTable, split_documents

__all__ = ["ALGORITHMS", "pack", "PackResult", "PackStats", "lower_bound", "ChunkTable",
           "split_documents", "PackedRows", "pack_token_lists", "BufferedPacker", "OnlinePacker", "PackedRow",
           "PartitionPlan", "plan_partitions", "pack_partition", "merge_stats"]
