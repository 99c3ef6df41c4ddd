"""The on-disk contract between fewtrunc and training scripts: Arrow IPC *file* shards.

One row per training sequence (unpadded):

| column        | type          | meaning                                                        |
|---------------|---------------|----------------------------------------------------------------|
| `input_ids`   | list<int32>   | the token ids of the sequence, at most `seq_len`               |
| `doc_lens`    | list<int32>   | length of each document segment, in order; sums to len(ids)    |
| `doc_ids`     | list<int64>   | stable id of the source document of each segment               |
| `chunk_index` | list<int32>   | which seq_len-chunk of that document the segment is (0 = first)|

Shards are named ``shard-00000.arrow`` …, written to a temporary name and renamed. They open with
``pyarrow.ipc.open_file``, ``datasets.load_dataset("arrow", data_files=...)`` and the torch
wrapper in ``training``. zstd/lz4-compressed shards are decompressed on read; only
``compression: none`` shards are zero-copy under memory mapping.
"""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from pipelines.infra.atomic import atomic_path
from pipelines.infra.hashing import sha256_file

SCHEMA_VERSION = 1
SCHEMA = pa.schema(
    [
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_lens", pa.list_(pa.int32()), nullable=False),
        pa.field("doc_ids", pa.list_(pa.int64()), nullable=False),
        pa.field("chunk_index", pa.list_(pa.int32()), nullable=False),
    ],
    metadata={"fewtrunc.schema_version": str(SCHEMA_VERSION)},
)
SHARD_GLOB = "shard-*.arrow"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.arrow"


def write_shard(table: pa.Table, path: str | Path, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` atomically: a temporary name, fsync, then rename."""
    codec = None if compression in (None, "none") else compression
    options = ipc.IpcWriteOptions(compression=codec)
    with atomic_path(path, sync=True) as tmp:
        with ipc.new_file(str(tmp), table.schema, options=options) as writer:
            writer.write_table(table)


def write_shard_batches(batches, path: str | Path, compression: str = "zstd") -> tuple[int, str, list[int]]:
    """Like ``write_shard``, but from an iterable of tables/record batches written one by one,
    so a shard's memory is one batch, not the whole shard. Nothing is published on an error.
    Returns the file's size, its sha256 (hashed before it is published: on a store, the shard
    is not read back) and the rows of each record batch written, in file order (a streaming
    reader plans its reads from them without opening the shard)."""
    codec = None if compression in (None, "none") else compression
    options = ipc.IpcWriteOptions(compression=codec)
    batch_rows: list[int] = []
    with atomic_path(path, sync=True) as tmp:
        with ipc.new_file(str(tmp), SCHEMA, options=options) as writer:
            for batch in batches:
                writer.write(batch)
                # a table is written as its record batches (the same split as to_batches)
                parts = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
                batch_rows += [b.num_rows for b in parts]
        summary = os.path.getsize(tmp), sha256_file(tmp), batch_rows
    return summary


def open_shard(path: str | Path) -> pa.Table:
    """Memory-map one shard (zero-copy when uncompressed); a shard on a store is read whole.
    ``path``: a str, ``Path``, ``UrlPath`` or ``Location``."""
    from pipelines.infra.storage import read_bytes
    from pipelines.infra.storage.location import Location

    where = Location.of(path)
    if where.remote:
        return open_shard_bytes(read_bytes(where.text))
    source = pa.memory_map(where.local_path, "r")
    return ipc.open_file(source).read_all()


def open_shard_bytes(data: bytes) -> pa.Table:
    """A shard's table from its bytes."""
    return ipc.open_file(pa.py_buffer(data)).read_all()


def list_shards(directory: str | Path) -> list[Path]:
    """The shards of a run directory, sorted (``UrlPath``s when it is a URL)."""
    from pipelines.infra.storage.paths import as_path

    return sorted(as_path(directory).glob(SHARD_GLOB))
