"""Stats step: everything the report plots, as plain JSON-ready numbers (no timings, so the file
is byte-identical between runs). The report is rebuilt from this file alone.

A run packed in partitions never holds every document's length in one process: each partition
leaves a ``stats_piece`` (counts and histograms on fixed power-of-two buckets, O(1) in the
documents) and ``merge_stats`` adds the pieces into the run's stats. ``run_stats`` is the merge
of one piece, so a one-partition run gives the same file as before.
"""
from __future__ import annotations

import numpy as np

from packing import lower_bound
from pipelines.steps.pack import RowPlan, segments_per_doc

BUCKETS = 63  # length buckets [2^j, 2^(j+1)) for j < 63: every int64 length has one
FILL_BINS = 20


def _pow2_edges(max_len: int) -> np.ndarray:
    top = max(1, int(np.ceil(np.log2(max(max_len, 2)))))
    return 2 ** np.arange(0, top + 1, dtype=np.int64)


def stats_piece(doc_lengths: np.ndarray, plan: RowPlan, pack_cfg, token_base: int = 0) -> dict:
    """The stats of some consecutive documents and their rows, to be merged (``merge_stats``).

    ``token_base``: the tokens of the run's documents before these, so the concatenation
    baseline cuts them where a concatenation of the whole run would."""
    L = pack_cfg.seq_len
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    n = int(lengths.size)
    cut = segments_per_doc(plan, n) > 1
    # concat: a document is cut when a multiple of seq_len falls strictly inside it
    starts = int(token_base) + np.cumsum(lengths) - lengths
    cut_concat = (starts // L + 1) * L < starts + lengths
    all_edges = 2 ** np.arange(0, BUCKETS + 1, dtype=np.int64)
    bucket = np.clip(np.searchsorted(all_edges, lengths, side="right") - 1, 0, BUCKETS - 1)
    per = lambda w: np.bincount(bucket, weights=w, minlength=BUCKETS).astype(int).tolist()  # noqa: E731
    fill_counts, _ = np.histogram(plan.row_tokens() / L, bins=FILL_BINS, range=(0.0, 1.0))
    return {
        "documents": n,
        "tokens": int(lengths.sum()),
        "max_length": int(lengths.max()) if n else 0,
        "rows": plan.n_rows,
        "segments": int(plan.seg_len.size),
        "documents_truncated": int(cut.sum()),
        "truncated_concat": int(cut_concat.sum()),
        "longer_than_seq_len": int((lengths > L).sum()),
        "length_counts": per(None),
        "truncated_counts": per(cut.astype(float)),
        "truncated_concat_counts": per(cut_concat.astype(float)),
        "fill_counts": fill_counts.tolist(),
    }


def merge_stats(pieces: list[dict], pack_cfg) -> dict:
    """The run's stats from the pieces of all its documents (in any grouping)."""
    L = pack_cfg.seq_len
    total = lambda key: sum(p[key] for p in pieces)  # noqa: E731
    add = lambda key, size: np.sum([p[key] for p in pieces], axis=0, dtype=np.int64) \
        if pieces else np.zeros(size, np.int64)  # noqa: E731
    n, tokens, rows = total("documents"), total("tokens"), total("rows")
    lb = lower_bound(tokens, L)
    concat_rows = -(-tokens // L)  # cut every seq_len tokens
    edges = _pow2_edges(max((p["max_length"] for p in pieces), default=0) if n else 1)
    top = edges.size - 2  # the last bucket also holds every longer one (and 2^top itself)

    def fold(key):
        c = add(key, BUCKETS)
        return [int(x) for x in c[:top]] + [int(c[top:].sum())]

    _, fill_edges = np.histogram(np.zeros(0), bins=FILL_BINS, range=(0.0, 1.0))
    return {
        "seq_len": L,
        "algorithm": pack_cfg.algorithm,
        "window_tokens": pack_cfg.window_tokens,
        "documents": n,
        "tokens": tokens,
        "rows": rows,
        "segments": total("segments"),
        "lower_bound": lb,
        "overhead": rows / lb - 1.0 if lb else 0.0,
        "mean_fill": tokens / (rows * L) if rows else 0.0,
        "documents_truncated": total("documents_truncated"),
        "longer_than_seq_len": total("longer_than_seq_len"),
        "concat": {
            "rows": concat_rows,
            "documents_truncated": total("truncated_concat"),
            "overhead": concat_rows / lb - 1.0 if lb else 0.0,
        },
        "length_histogram": {"edges": edges.tolist(), "counts": fold("length_counts")},
        "truncation_by_length": {
            "edges": edges.tolist(),
            "documents": fold("length_counts"),
            "truncated": fold("truncated_counts"),
            "truncated_concat": fold("truncated_concat_counts"),
        },
        "fill_histogram": {"edges": fill_edges.round(4).tolist(),
                           "counts": [int(x) for x in add("fill_counts", FILL_BINS)]},
    }


def run_stats(doc_lengths: np.ndarray, plan: RowPlan, pack_cfg) -> dict:
    """The stats of a run packed in one piece."""
    return merge_stats([stats_piece(doc_lengths, plan, pack_cfg)], pack_cfg)
