"""Write step: rows ``[start, end)`` of a ``RowPlan`` -> one Arrow shard, built from flat buffers.

Shard boundaries are fixed by ``output.rows_per_shard`` alone, so shard k holds the same rows
whichever engine or worker writes it. ``DocTable`` maps a global document index to its unit
file and token offset there; ``build_shard`` gathers the tokens (vectorized) and assembles the
list columns from offsets, with no Python loop over rows or tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipelines.infra.shard_format import SCHEMA


@dataclass(frozen=True)
class DocTable:
    doc_id: np.ndarray  # int64 stable id of each document (global index order)
    length: np.ndarray  # int64 tokens
    unit: np.ndarray  # int32 unit whose spill file holds it
    start: np.ndarray  # int64 token offset inside that unit's file


def shard_ranges(n_rows: int, rows_per_shard: int) -> list[tuple[int, int]]:
    return [(s, min(s + rows_per_shard, n_rows)) for s in range(0, n_rows, rows_per_shard)]


_NUMPY = {pa.int32().id: np.int32, pa.int64().id: np.int64}


def _numeric(values: np.ndarray, value_type) -> pa.Array:
    """A zero-copy Arrow view of a numpy array (``pa.array`` would also import pandas, ~0.5 s)."""
    values = np.ascontiguousarray(values, dtype=_NUMPY[value_type.id])
    return pa.Array.from_buffers(value_type, values.size, [None, pa.py_buffer(values)])


def _list(offsets: np.ndarray, values: np.ndarray, value_type) -> pa.Array:
    return pa.ListArray.from_arrays(_numeric(offsets, pa.int32()), _numeric(values, value_type))


def packed_rows_table(rows, doc_ids: np.ndarray) -> pa.Table:
    """A shard table from in-memory ``packing.PackedRows``; ``doc_ids[d]`` is document d's id."""
    return pa.Table.from_arrays(
        [
            _list(rows.token_offsets, rows.tokens, pa.int32()),
            _list(rows.seg_offsets, rows.seg_len.astype(np.int32), pa.int32()),
            _list(rows.seg_offsets, np.asarray(doc_ids)[rows.seg_doc], pa.int64()),
            _list(rows.seg_offsets, rows.seg_chunk.astype(np.int32), pa.int32()),
        ],
        schema=SCHEMA,
    )


def build_shard(plan, row_start: int, row_end: int, docs: DocTable, store) -> pa.Table:
    """The Arrow table of rows ``[row_start, row_end)``; ``store`` is a ``SpillStore``."""
    s0, s1 = int(plan.row_offsets[row_start]), int(plan.row_offsets[row_end])
    seg_doc = plan.seg_doc[s0:s1]
    seg_len = plan.seg_len[s0:s1]
    tokens = store.gather(docs.unit[seg_doc], docs.start[seg_doc] + plan.seg_offset[s0:s1], seg_len)
    seg_offsets = plan.row_offsets[row_start : row_end + 1] - s0
    tok_offsets = np.concatenate([[0], np.cumsum(seg_len)])[seg_offsets]
    return pa.Table.from_arrays(
        [
            _list(tok_offsets, tokens, pa.int32()),
            _list(seg_offsets, seg_len.astype(np.int32), pa.int32()),
            _list(seg_offsets, docs.doc_id[seg_doc], pa.int64()),
            _list(seg_offsets, plan.seg_chunk[s0:s1].astype(np.int32), pa.int32()),
        ],
        schema=SCHEMA,
    )

