"""Token sequences in memory -> packed rows, in one vectorized gather.

For callers that already hold every document's ids (tests, experiments, small in-memory jobs):
split with the paper's rule, pack the chunks, and gather the tokens of all rows at once — no
Python step per row or per document. Rows come in bin order; inside a row, segments are in
increasing chunk order (``PackResult.bin_items``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packing.api import pack
from packing.split import positions_within, split_documents


@dataclass(frozen=True)
class PackedRows:
    """CSR rows: row ``r`` holds tokens ``tokens[token_offsets[r]:token_offsets[r+1]]`` made of
    segments ``seg_offsets[r]:seg_offsets[r+1]`` (document ``seg_doc``, chunk ``seg_chunk``,
    ``seg_len`` tokens each)."""

    tokens: np.ndarray
    token_offsets: np.ndarray
    seg_offsets: np.ndarray
    seg_len: np.ndarray
    seg_doc: np.ndarray
    seg_chunk: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.seg_offsets.size - 1)


def pack_token_lists(docs: list, seq_len: int, algorithm: str = "bfd") -> PackedRows:
    """Best-fit pack ``docs`` (1-D id arrays, each non-empty) into rows of at most ``seq_len``."""
    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    chunks = split_documents(lengths, seq_len)
    result = pack(chunks.length, seq_len, algorithm)
    order = result.bin_items
    seg_len = chunks.length[order]
    doc_start = np.cumsum(lengths) - lengths
    seg_start = doc_start[chunks.doc[order]] + chunks.offset[order]
    within = positions_within(seg_len)
    flat = np.concatenate([np.asarray(d) for d in docs]) if docs else np.zeros(0, np.int64)
    tokens = flat[np.repeat(seg_start, seg_len) + within]
    token_ends = np.concatenate([[0], np.cumsum(seg_len)])
    return PackedRows(
        tokens=tokens,
        token_offsets=token_ends[result.bin_offsets],
        seg_offsets=result.bin_offsets,
        seg_len=seg_len,
        seg_doc=chunks.doc[order],
        seg_chunk=chunks.chunk[order],
    )
