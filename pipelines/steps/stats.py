"""Stats step: everything the report plots, as plain JSON-ready numbers (no timings, so the file
is byte-identical between runs). The report is rebuilt from this file alone."""
from __future__ import annotations

import numpy as np

from packing import lower_bound
from pipelines.steps.pack import RowPlan, concat_plan, segments_per_doc


def _pow2_edges(max_len: int) -> np.ndarray:
    top = max(1, int(np.ceil(np.log2(max(max_len, 2)))))
    return 2 ** np.arange(0, top + 1, dtype=np.int64)


def run_stats(doc_lengths: np.ndarray, plan: RowPlan, pack_cfg) -> dict:
    L = pack_cfg.seq_len
    n = int(doc_lengths.size)
    tokens = int(doc_lengths.sum())
    lb = lower_bound(tokens, L)
    fills = plan.row_tokens()
    cut = segments_per_doc(plan, n) > 1
    concat = plan if pack_cfg.algorithm == "concat" else concat_plan(doc_lengths, L)
    cut_concat = segments_per_doc(concat, n) > 1
    edges = _pow2_edges(int(doc_lengths.max()) if n else 1)
    bucket = np.clip(np.searchsorted(edges, doc_lengths, side="right") - 1, 0, edges.size - 2)
    per = lambda w: np.bincount(bucket, weights=w, minlength=edges.size - 1).astype(int).tolist()  # noqa: E731
    fill_counts, fill_edges = np.histogram(fills / L, bins=20, range=(0.0, 1.0))
    return {
        "seq_len": L,
        "algorithm": pack_cfg.algorithm,
        "window_tokens": pack_cfg.window_tokens,
        "documents": n,
        "tokens": tokens,
        "rows": plan.n_rows,
        "segments": int(plan.seg_len.size),
        "lower_bound": lb,
        "overhead": plan.n_rows / lb - 1.0 if lb else 0.0,
        "mean_fill": tokens / (plan.n_rows * L) if plan.n_rows else 0.0,
        "documents_truncated": int(cut.sum()),
        "longer_than_seq_len": int((doc_lengths > L).sum()),
        "concat": {
            "rows": concat.n_rows,
            "documents_truncated": int(cut_concat.sum()),
            "overhead": concat.n_rows / lb - 1.0 if lb else 0.0,
        },
        "length_histogram": {"edges": edges.tolist(), "counts": per(None)},
        "truncation_by_length": {
            "edges": edges.tolist(),
            "documents": per(None),
            "truncated": per(cut.astype(float)),
            "truncated_concat": per(cut_concat.astype(float)),
        },
        "fill_histogram": {"edges": fill_edges.round(4).tolist(),
                           "counts": fill_counts.tolist()},
    }
