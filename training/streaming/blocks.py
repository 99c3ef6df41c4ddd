"""One record batch of a shard, by its number, through one ranged read: a shard's layout (its
footer) and schema are read once, on its first use; the batch is decoded and checked by
``training.shard_checks.decode_batch``.

A block here is one Arrow record batch (about 1M tokens in pipeline-written shards): the unit the
reader downloads, decompresses, caches and shuffles.
"""
from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from training.shard_checks import ShardError, check_schema, decode_batch
from training.streaming.files import ShardFiles
from training.streaming.ipc_layout import TAIL, Layout, LayoutError, batch_rows, footer_length, parse_footer

HINT = "rebuild the shards, or check that the directory holds the run its manifest describes"


class BlockReader:
    """Decoded record batches of the shards at ``paths`` (sizes ``sizes``), counting every byte
    read in ``files`` (a ``ShardFiles``, ``bytes_read``)."""

    def __init__(self, paths: list[str], sizes: list[int]):
        self.paths = [str(p) for p in paths]
        self.sizes = [int(s) for s in sizes]
        self.files = ShardFiles(self.paths)
        self._layouts: dict[int, Layout] = {}
        self._schemas: dict[int, pa.Schema] = {}
        self._lock = threading.Lock()
        self.decoded = 0  # record batches decompressed and decoded (start-up must leave it at 0)

    def layout(self, k: int) -> Layout:
        """Where shard ``k``'s record batches lie (two small reads: its tail and its footer)."""
        with self._lock:
            if k in self._layouts:
                return self._layouts[k]
        size = self.sizes[k]
        try:
            if size < TAIL + 8:
                raise LayoutError(f"{size} bytes is too short for an Arrow IPC file")
            n = footer_length(self.files.read(k, size - TAIL, TAIL), size)
            layout = parse_footer(self.files.read(k, size - TAIL - n, n), size)
        except LayoutError as exc:
            raise ShardError(self.paths[k], f"{exc}; {HINT}") from None
        with self._lock:
            self._layouts[k] = layout
        return layout

    def scan_rows(self, k: int) -> np.ndarray:
        """Rows of each record batch of shard ``k`` from the batches' message headers: one
        small read per batch, nothing decompressed (for shards whose manifest lacks the counts)."""
        layout = self.layout(k)
        rows = np.zeros(layout.offsets.size, np.int64)
        for b, (offset, meta) in enumerate(zip(layout.offsets.tolist(), layout.meta.tolist())):
            try:
                rows[b] = batch_rows(self.files.read(k, offset, meta))
            except LayoutError as exc:
                raise ShardError(f"{self.paths[k]} (record batch {b})", f"{exc}; {HINT}") from None
        return rows

    def schema(self, k: int) -> pa.Schema:
        with self._lock:
            if k in self._schemas:
                return self._schemas[k]
        start, length = self.layout(k).schema_span
        try:
            schema = ipc.read_schema(pa.py_buffer(self.files.read(k, start, length)))
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ShardError(self.paths[k], f"unreadable schema ({exc}); {HINT}") from None
        check_schema(schema, self.paths[k])
        with self._lock:
            self._schemas[k] = schema
        return schema

    def read(self, k: int, b: int, rows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Record batch ``b`` of shard ``k`` decoded (``decode_batch``'s columns), checked to
        hold the ``rows`` rows the index expects."""
        layout, schema = self.layout(k), self.schema(k)
        where = f"{self.paths[k]} (record batch {b})"
        if b >= layout.offsets.size:
            raise ShardError(self.paths[k], f"has {layout.offsets.size} record batches, the index "
                                            f"expects at least {b + 1}; {HINT}")
        data = self.files.read(k, int(layout.offsets[b]), int(layout.lengths[b]))
        try:
            batch = ipc.read_record_batch(ipc.read_message(pa.py_buffer(data)), schema)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise ShardError(where, f"cannot be decoded ({' '.join(str(exc).split())[:160]}); "
                                    f"{HINT}") from None
        with self._lock:
            self.decoded += 1
        if batch.num_rows != rows:
            raise ShardError(where, f"has {batch.num_rows} rows, the manifest records {rows}; {HINT}")
        return decode_batch(batch, where)

    def close(self) -> None:
        self.files.close()
