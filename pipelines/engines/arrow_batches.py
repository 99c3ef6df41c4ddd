"""``TextBatch`` / ``TokenBatch`` <-> one-row Arrow tables, so that batches travel between Ray
workers as Arrow columns (zero-copy numpy views on the way back), never as pickled objects.

A row is one batch of the read step: ``unit`` and ``part`` (its position inside the unit, which
restores input order after any reordering), the batch's arrays as list columns, its counters, and
its rejects as JSON (their keys differ by input format).
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from pipelines.steps.read import TextBatch
from pipelines.steps.tokenize import TokenBatch

_META = [
    pa.field("unit", pa.int32()),
    pa.field("part", pa.int32()),
    pa.field("records", pa.int64()),
    pa.field("bytes", pa.int64()),
    pa.field("rejects", pa.large_string()),
    pa.field("info", pa.large_string()),  # JSON: the batch's other fields (_info)
]
TEXT_SCHEMA = pa.schema(
    _META
    + [
        pa.field("doc_ids", pa.large_list(pa.int64())),
        pa.field("texts", pa.large_list(pa.large_string())),
    ]
)
TOKEN_SCHEMA = pa.schema(
    _META
    + [
        pa.field("doc_ids", pa.large_list(pa.int64())),
        pa.field("lengths", pa.large_list(pa.int64())),
        pa.field("tokens", pa.large_list(pa.int32())),
    ]
)


def _one(values, type_) -> pa.Array:
    """A one-element large_list array holding ``values``."""
    inner = pa.array(values, type=type_)
    return pa.LargeListArray.from_arrays(pa.array([0, len(inner)], pa.int64()), inner)


_INFO = ("first", "index", "spans", "guard_docs", "special_docs")


def _info(batch) -> str:
    return json.dumps({k: getattr(batch, k) for k in _INFO if hasattr(batch, k)},
                      ensure_ascii=False)


def _meta(unit: int, part: int, batch) -> list:
    return [
        pa.array([unit], pa.int32()),
        pa.array([part], pa.int32()),
        pa.array([batch.records], pa.int64()),
        pa.array([batch.bytes], pa.int64()),
        pa.array([json.dumps(batch.rejects, ensure_ascii=False)], pa.large_string()),
        pa.array([_info(batch)], pa.large_string()),
    ]


def text_table(unit: int, part: int, batch: TextBatch) -> pa.Table:
    cols = _meta(unit, part, batch) + [
        _one(np.asarray(batch.doc_ids, dtype=np.int64), pa.int64()),
        _one(batch.texts, pa.large_string()),
    ]
    return pa.Table.from_arrays(cols, schema=TEXT_SCHEMA)


def token_table(unit: int, part: int, batch: TokenBatch) -> pa.Table:
    cols = _meta(unit, part, batch) + [
        _one(batch.doc_ids, pa.int64()),
        _one(batch.lengths, pa.int64()),
        _one(batch.tokens, pa.int32()),
    ]
    return pa.Table.from_arrays(cols, schema=TOKEN_SCHEMA)


def _rows(table: pa.Table):
    """(unit, part, the row's list columns by name, its counters) for every row of ``table``."""
    table = table.combine_chunks()  # one chunk per column
    for i in range(table.num_rows):
        meta = {"rejects": json.loads(table.column("rejects")[i].as_py()),
                "records": table.column("records")[i].as_py(),
                "bytes": table.column("bytes")[i].as_py(),
                **json.loads(table.column("info")[i].as_py())}
        values = lambda name, i=i: table.column(name).chunk(0)[i].values  # noqa: E731
        yield table.column("unit")[i].as_py(), table.column("part")[i].as_py(), values, meta


def text_batches(table: pa.Table):
    """(unit, part, TextBatch) for every row of ``table``."""
    for unit, part, values, meta in _rows(table):
        meta["spans"] = [tuple(s) for s in meta.get("spans", [])]
        yield unit, part, TextBatch(doc_ids=values("doc_ids").to_numpy().tolist(),
                                    texts=values("texts").to_pylist(), **meta)


def token_batches(table: pa.Table):
    """(unit, part, TokenBatch) for every row of ``table``; arrays are views when possible."""
    for unit, part, values, meta in _rows(table):
        arrays = {name: values(name).to_numpy(zero_copy_only=False)
                  for name in ("doc_ids", "lengths", "tokens")}
        yield unit, part, TokenBatch(**arrays, **meta)


# --- part files: one token batch per file, written by the worker that tokenized it -----------


def part_name(unit: int, part: int) -> str:
    return f"unit-{unit:05d}.part-{part:06d}.arrow"


def write_part(parts_dir, unit: int, part: int, batch: TokenBatch) -> None:
    """``batch`` to ``parts_dir/unit-U.part-P.arrow``: a temporary name, then a rename to the
    fixed one, so a retried task, a restarted actor or a replayed bundle overwrites."""
    from pathlib import Path

    import pyarrow.ipc as ipc

    from pipelines.atomic import atomic_path

    table = token_table(unit, part, batch)
    with atomic_path(Path(parts_dir) / part_name(unit, part)) as tmp:
        with ipc.new_file(str(tmp), table.schema) as writer:
            writer.write_table(table)


def read_part(parts_dir, unit: int, part: int) -> TokenBatch:
    """The batch ``write_part`` wrote (read whole: the file may be deleted right after)."""
    from pathlib import Path

    import pyarrow.ipc as ipc

    with pa.OSFile(str(Path(parts_dir) / part_name(unit, part))) as source:
        table = ipc.open_file(source).read_all()
    (_, _, batch), = token_batches(table)
    return batch
