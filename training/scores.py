"""The per-document score file written by ``fewtrunc score``: Arrow IPC, one row per document.

| column           | type    | meaning                                                         |
|------------------|---------|-----------------------------------------------------------------|
| `doc_id`         | int64   | the shards' `doc_ids` value (sorted ascending, unique)          |
| `n_segments`     | int32   | segments (chunks) of the document found in the shards          |
| `n_scored`       | int64   | targets scored (a segment's last token is never scored)         |
| `el2n`           | float64 | mean error norm over the scored targets (NaN if none)           |
| `error_norm_max` | float64 | largest error norm of any scored target (0 if none)             |

A document split into chunks is scored chunk by chunk (as it is trained) and its EL2N is the
mean over all its scored targets, i.e. the chunks' EL2N weighted by ``n_scored``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from pipelines.infra.atomic import atomic_path

SCORE_SCHEMA = pa.schema([
    pa.field("doc_id", pa.int64(), nullable=False),
    pa.field("n_segments", pa.int32(), nullable=False),
    pa.field("n_scored", pa.int64(), nullable=False),
    pa.field("el2n", pa.float64()),
    pa.field("error_norm_max", pa.float64(), nullable=False),
], metadata={"fewtrunc.scores_version": "1"})


def per_document(doc_id, n_scored, el2n, error_norm_max) -> pa.Table:
    """Aggregate per-segment scores (any order, repeated doc_ids) into the score table."""
    doc_id = np.asarray(doc_id, dtype=np.int64)
    n = np.asarray(n_scored, dtype=np.int64)
    mean = np.nan_to_num(np.asarray(el2n, dtype=np.float64), nan=0.0)
    emax = np.asarray(error_norm_max, dtype=np.float64)
    keys, inverse = np.unique(doc_id, return_inverse=True)
    segments = np.bincount(inverse, minlength=keys.size)
    scored = np.bincount(inverse, weights=n, minlength=keys.size).astype(np.int64)
    sums = np.bincount(inverse, weights=mean * n, minlength=keys.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        el2n_doc = np.where(scored > 0, sums / np.maximum(scored, 1), np.nan)
    mx = np.zeros(keys.size)
    np.maximum.at(mx, inverse, emax)
    return pa.table({"doc_id": keys, "n_segments": segments.astype(np.int32), "n_scored": scored,
                     "el2n": el2n_doc, "error_norm_max": mx}, schema=SCORE_SCHEMA)


def write_scores(table: pa.Table, path: str | Path) -> Path:
    """Write atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with ipc.new_file(str(tmp), SCORE_SCHEMA) as writer:
            writer.write_table(table.cast(SCORE_SCHEMA))
    return path


def read_scores(path: str | Path) -> pa.Table:
    table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    if table.schema.remove_metadata() != SCORE_SCHEMA.remove_metadata():
        raise ValueError(f"{path} is not a fewtrunc score file (schema {table.schema})")
    return table
