"""The paper's only cut: documents longer than the capacity become capacity-sized chunks plus a
remainder. Every other document stays whole."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from packing.validate import check_capacity


@dataclass(frozen=True)
class ChunkTable:
    """One row per chunk: chunk ``k`` is tokens ``[offset, offset+length)`` of document ``doc``."""

    doc: np.ndarray  # int64, index of the source document
    chunk: np.ndarray  # int32, 0 for the first chunk of each document
    offset: np.ndarray  # int64, token offset inside the document
    length: np.ndarray  # int64, in [1, capacity]

    def __len__(self) -> int:
        return int(self.doc.size)

    @property
    def n_split_documents(self) -> int:
        """Documents cut into more than one chunk."""
        return int(np.count_nonzero(self.chunk == 1))


def split_documents(doc_lengths, capacity: int) -> ChunkTable:
    """Split each document of length n > capacity into ⌊n/L⌋ chunks of L plus a remainder chunk.

    ``doc_lengths`` must be 1-D integers ≥ 1 (empty documents are rejected upstream).
    """
    capacity = check_capacity(capacity)
    n = np.asarray(doc_lengths)
    if n.ndim != 1:
        raise ValueError(f"doc_lengths must be a 1-D array, got shape {n.shape}")
    if n.size and (n.dtype == bool or not np.issubdtype(n.dtype, np.integer)):
        raise ValueError(f"doc_lengths must be integers (got dtype {n.dtype})")
    n = n.astype(np.int64, copy=False)
    bad = np.flatnonzero(n < 1)
    if bad.size:
        raise ValueError(f"doc_lengths[{int(bad[0])}] = {int(n[bad[0]])} must be at least 1")
    per_doc = -(-n // capacity)
    doc = np.repeat(np.arange(n.size, dtype=np.int64), per_doc)
    chunk = positions_within(per_doc)
    offset = chunk * capacity
    length = np.minimum(capacity, n[doc] - offset)
    return ChunkTable(doc=doc, chunk=chunk.astype(np.int32), offset=offset, length=length)


def positions_within(lengths: np.ndarray) -> np.ndarray:
    """For consecutive segments of ``lengths`` elements, each element's index inside its segment:
    ``[2, 3] -> [0, 1, 0, 1, 2]`` (vectorized; int64)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    return np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(starts, lengths)
