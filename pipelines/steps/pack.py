"""Split + pack step: document lengths -> ``RowPlan`` (which token ranges form each row).

Works on lengths only (never on token ids), so a global pack of a large corpus needs ~40 bytes
per chunk. Modes:
- global (``pack.window_tokens: 0``): split documents longer than seq_len, then one
  ``packing.pack`` over every chunk of the run, as in the paper;
- windowed: chunks stream through ``packing.BufferedPacker`` with a buffer of ``window_tokens``;
  a window's part-filled rows are carried into the next window, and the last window is flushed,
  so nothing is dropped;
- ``concat``: the usual baseline: all documents concatenated in input order and cut every
  seq_len tokens (documents are cut at row boundaries).
Rows come in bin order; inside a row, segments keep input order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packing import BufferedPacker, pack, split_documents


@dataclass(frozen=True)
class RowPlan:
    seg_doc: np.ndarray  # int64 global document index (input order)
    seg_offset: np.ndarray  # int64 token offset inside the document
    seg_len: np.ndarray  # int64
    seg_chunk: np.ndarray  # int32 chunk index inside the document
    row_offsets: np.ndarray  # int64: row r = segments [row_offsets[r], row_offsets[r+1])

    @property
    def n_rows(self) -> int:
        return int(self.row_offsets.size - 1)

    def row_tokens(self) -> np.ndarray:
        csum = np.concatenate([[0], np.cumsum(self.seg_len)])
        return csum[self.row_offsets[1:]] - csum[self.row_offsets[:-1]]


def concat_plan(doc_lengths: np.ndarray, seq_len: int) -> RowPlan:
    """Concatenate-and-split: cuts at every document start and every multiple of seq_len."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    total = int(lengths.sum())
    starts = np.cumsum(lengths) - lengths
    cuts = np.union1d(starts, np.arange(0, total, seq_len, dtype=np.int64))
    seg_len = np.diff(np.append(cuts, total))
    seg_doc = np.searchsorted(starts, cuts, side="right") - 1
    seg_offset = cuts - starts[seg_doc]
    first = np.r_[True, seg_doc[1:] != seg_doc[:-1]]
    idx = np.arange(cuts.size)
    seg_chunk = idx - np.maximum.accumulate(np.where(first, idx, 0))
    row_offsets = np.searchsorted(cuts, np.arange(0, total, seq_len, dtype=np.int64))
    return RowPlan(seg_doc, seg_offset, seg_len, seg_chunk.astype(np.int32),
                   np.append(row_offsets, cuts.size).astype(np.int64))


def plan_rows(doc_lengths: np.ndarray, cfg) -> RowPlan:
    """The rows of a run from its documents' lengths and a ``PackConfig``."""
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    L = cfg.seq_len
    if cfg.algorithm == "concat":
        return concat_plan(lengths, L)
    chunks = split_documents(lengths, L)
    options = {"time_limit": cfg.optimal_time_limit} if cfg.algorithm == "optimal" else {}
    if cfg.window_tokens:
        packer = BufferedPacker(L, cfg.window_tokens, cfg.algorithm, **options)
        parts = [packer.push(chunks.length), packer.flush()]
        order = np.concatenate([p.items for p in parts])
        sizes = np.concatenate([np.diff(p.offsets) for p in parts])
    else:
        result = pack(chunks.length, L, cfg.algorithm, **options)
        order = result.bin_items
        sizes = np.diff(result.bin_offsets)
    row_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return RowPlan(chunks.doc[order], chunks.offset[order], chunks.length[order],
                   chunks.chunk[order], row_offsets)


def segments_per_doc(plan: RowPlan, n_docs: int) -> np.ndarray:
    """How many pieces each document was cut into (1 = whole)."""
    return np.bincount(plan.seg_doc, minlength=n_docs)
