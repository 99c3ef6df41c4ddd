"""Checks that turn a damaged shard into one line naming the file, the record batch and the damage.

Arrow does not validate what it reads: a flipped byte in a compressed shard fails deep inside
pyarrow (``OSError: ZSTD decompression failed``), a truncated file fails as ``Not an Arrow file``,
and in an uncompressed shard a damaged offset or length is read as it is, so training fails later
with a ``ValueError`` or an ``IndexError`` that names no file. Every reader of shards on the
training side opens them with ``open_shard_file`` and decodes record batches with
``read_batch``/``decode_batch``, which check, with a few numpy passes per column (no loop over
rows), everything the readers rely on. ``fewtrunc verify`` checks a run's checksums as well.
"""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from pipelines.infra.errors import InputError

COLUMNS = ("input_ids", "doc_lens", "doc_ids", "chunk_index")
_HINT = "the file is damaged or truncated: rebuild the shards (`fewtrunc verify DIR` checks a run)"


class ShardError(InputError):
    """A shard that is not a readable fewtrunc shard: ``where`` is the file (and record batch)."""


def _short(exc: BaseException, limit: int = 160) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def open_shard_file(source, where: str) -> ipc.RecordBatchFileReader:
    """An Arrow IPC file reader over ``source`` (a path, a pyarrow ``NativeFile`` or memory map)
    whose schema has the four shard columns as lists of integers."""
    try:
        if isinstance(source, (str, os.PathLike)):
            source = pa.memory_map(os.fspath(source), "r")
        reader = ipc.open_file(source)
    except FileNotFoundError:
        raise ShardError(where, "no such file") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardError(where, f"not a readable Arrow IPC file ({_short(exc)}); {_HINT}") from None
    check_schema(reader.schema, where)
    return reader


def check_schema(schema: pa.Schema, where: str) -> None:
    for name in COLUMNS:
        index = schema.get_field_index(name)
        if index < 0:
            raise ShardError(where, f"not a fewtrunc shard: no column {name!r} (it has {schema.names[:8]})")
        kind = schema.field(index).type
        if not ((pa.types.is_list(kind) or pa.types.is_large_list(kind)) and pa.types.is_integer(kind.value_type)):
            raise ShardError(where, f"not a fewtrunc shard: column {name!r} is {kind}, not a list of integers")


def read_batch(reader: ipc.RecordBatchFileReader, index: int, where: str, check: bool = True) -> dict:
    """``decode_batch`` of record batch ``index``; decompression and read errors become a
    ``ShardError`` naming ``where`` and the batch. ``check=False`` skips the checks of the values
    (for a batch already checked: a zero-copy read then costs no pass over it)."""
    at = f"{where} (record batch {index})"
    try:
        batch = reader.get_batch(index)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ShardError(at, f"cannot be decoded ({_short(exc)}); {_HINT}") from None
    return decode_batch(batch, at, check)


def decode_batch(record_batch: pa.RecordBatch, where: str,
                 check: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every shard column of ``record_batch`` as ``(offsets starting at 0, values)``, after
    checking that the offsets are monotone and within the values, that each row's ``doc_lens``
    are positive and sum to its number of tokens, that ``doc_ids`` and ``chunk_index`` have one
    entry per document, and that token ids and chunk indices are not negative. ``check=False``
    keeps only the O(1) checks (schema, buffer sizes)."""
    check_schema(record_batch.schema, where)
    n_rows = record_batch.num_rows
    cols = {}
    try:
        record_batch.validate()  # buffer sizes against lengths (O(1) per column): nothing read out of bounds
        for name in COLUMNS:
            cols[name] = _column(record_batch.column(name), name, n_rows, where, check)
    except (pa.ArrowException, OSError) as exc:  # inconsistent buffers, or a lazily read one
        raise ShardError(where, f"cannot be decoded ({_short(exc)}); {_HINT}") from None
    if not check:
        return cols
    tokens = np.diff(cols["input_ids"][0])
    empty = np.flatnonzero(tokens == 0)
    if empty.size:
        raise ShardError(where, f"row {int(empty[0])} has no tokens; {_HINT}")
    lens_offsets, lens = cols["doc_lens"]
    if lens.size and lens.min() < 1:
        raise ShardError(where, f"row {_row_of(lens_offsets, int(np.argmin(lens)))}: a document length of "
                                f"{int(lens.min())} (doc_lens must be positive); {_HINT}")
    ends = np.concatenate([[0], np.cumsum(lens, dtype=np.int64)])
    sums = ends[lens_offsets[1:]] - ends[lens_offsets[:-1]]
    bad = np.flatnonzero(sums != tokens)
    if bad.size:
        r = int(bad[0])
        raise ShardError(where, f"row {r}: doc_lens sum to {int(sums[r])} but the row has {int(tokens[r])} "
                                f"tokens; {_HINT}")
    docs = np.diff(lens_offsets)
    for name in ("doc_ids", "chunk_index"):
        bad = np.flatnonzero(np.diff(cols[name][0]) != docs)
        if bad.size:
            r = int(bad[0])
            raise ShardError(where, f"row {r}: {int(np.diff(cols[name][0])[r])} {name} for {int(docs[r])} "
                                    f"documents; {_HINT}")
    for name in ("input_ids", "chunk_index"):
        offsets, values = cols[name]
        if values.size and values.min() < 0:
            raise ShardError(where, f"row {_row_of(offsets, int(np.argmin(values)))}: negative {name} value "
                                    f"{int(values.min())}; {_HINT}")
    return cols


def _column(arr: pa.Array, name: str, n_rows: int, where: str, check: bool = True) -> tuple[np.ndarray, np.ndarray]:
    if len(arr) != n_rows:
        raise ShardError(where, f"column {name!r} has {len(arr)} rows, the batch {n_rows}; {_HINT}")
    if arr.null_count or arr.values.null_count:
        raise ShardError(where, f"column {name!r} has null entries; {_HINT}")
    offsets = arr.offsets.to_numpy()
    values = arr.values.to_numpy(zero_copy_only=False)
    if not check:
        return offsets - offsets[0], values[offsets[0]:offsets[-1]]
    steps = np.diff(offsets)
    if steps.size and steps.min() < 0:
        r = int(np.argmin(steps))
        raise ShardError(where, f"column {name!r}: offsets decrease at row {r} ({int(offsets[r])} -> "
                                f"{int(offsets[r + 1])}); {_HINT}")
    if offsets[0] < 0 or offsets[-1] > values.size:
        raise ShardError(where, f"column {name!r}: offsets {int(offsets[0])}..{int(offsets[-1])} lie outside its "
                                f"{values.size} values; {_HINT}")
    return offsets - offsets[0], values[offsets[0]:offsets[-1]]


def _row_of(offsets: np.ndarray, value_index: int) -> int:
    """The row that holds value ``value_index`` (offsets start at 0)."""
    return int(np.searchsorted(offsets, value_index, side="right") - 1)
