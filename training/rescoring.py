"""EL2N scores of every example for dynamic pruning, computed by all ranks together.

The rows are cut into batches of ``batch_size`` at fixed global boundaries (0, B, 2B, ...) and
rank r of N scores the batches ``[r*K//N, (r+1)*K//N)`` of the K: each rank scores 1/N of the
rows, and each batch is the same rows, padded the same way, as in a 1-process run, so the scores
are the ones one process computes. The per-row and per-segment results are all-gathered in rank
order, so every rank holds every score and makes the same selection.
"""
from __future__ import annotations

import numpy as np

from training.evaluate import score_dataset
from training.feed import RowRange


def rescore(model, view, collator, batch_size: int, device, dist, unit: str,
            segment_document: np.ndarray | None, n_examples: int) -> np.ndarray:
    """One score per pruning example: a row's EL2N (``unit="row"``), or a document's, the mean
    over the scored targets of all its chunks (``unit="document"``); 0 where nothing is scored."""
    n = len(view)
    batches = -(-n // batch_size)
    start = min(dist.rank * batches // dist.world * batch_size, n)
    stop = min((dist.rank + 1) * batches // dist.world * batch_size, n)
    parts = dist.gather(lambda: score_dataset(model, RowRange(view, start, stop), collator, batch_size, device))
    s = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if unit == "row":
        scores = s["row_el2n"]
    else:  # a document's EL2N: the mean over all its chunks' scored targets
        weight = s["n_scored"].astype(np.float64)
        sums = np.bincount(segment_document, np.nan_to_num(s["el2n"], nan=0.0) * weight, n_examples)
        counts = np.bincount(segment_document, weight, n_examples)
        scores = np.divide(sums, counts, out=np.zeros(n_examples), where=counts > 0)
    return np.nan_to_num(scores, nan=0.0)  # nothing scored: no loss to lose
