"""Ranged reads of shard bytes on a local disk, S3 or GCS, every byte counted.

``ShardFiles.read(k, offset, length)`` is the only way the streaming reader touches shard data,
so ``bytes_read`` is what one process actually read (the benchmark and the tests check it
against the shards' size). Per store:

- local: ``os.pread`` on a file descriptor kept open per shard (no memory map: the count is the
  bytes asked of the disk, not the pages the kernel happens to map);
- ``s3://``: pyarrow's S3 file, one ranged GET per read (a record batch is one read);
- ``gs://``: ``gcs.GcsObject``, one ranged GET per read over GCS's JSON API (pyarrow's GCS
  random-access file hangs against gcp-storage-emulator and starts a whole-object download on
  every open: ``gcs.py`` says why); nothing is copied to local disk;
- other stores (fsspec's ``memory://``, ``hf://``, ``az://``...): the shard is copied whole to
  local scratch on its first read, counted once, and read from there; ``close()`` (or the
  ``ShardFiles`` being collected) removes the copies.

Reads are thread-safe (the prefetch thread and the consumer may read at once).
"""
from __future__ import annotations

import os
import shutil
import threading
import weakref

from pipelines.infra.atomic import scratch_dir
from pipelines.infra.storage.filesystems import resolve
from pipelines.infra.storage.listing import guarded
from pipelines.infra.storage.reading import BUFFER, open_input
from training.shard_checks import ShardError
from training.streaming.gcs import GcsObject, is_gcs


class ShardFiles:
    """Counted ranged reads of the shards at ``paths`` (local paths or URLs)."""

    def __init__(self, paths: list[str]):
        self.paths = [str(p) for p in paths]
        self._handles: dict[int, object] = {}
        self._lock = threading.Lock()
        self._open_lock = threading.Lock()  # one shard opened (or copied) at a time, once
        self._count_lock = threading.Lock()
        self._scratch, self._cleanup = "", None
        self.bytes_read = 0  # every byte returned by ``read`` (and every byte a GCS copy fetched)
        self.requests = 0  # reads asked of the disk or the store

    def read(self, k: int, offset: int, length: int) -> bytes:
        """``length`` bytes of shard ``k`` from ``offset`` (fewer only at the end of the file)."""
        kind, handle = self._handle(k)
        if kind == "s3":
            with guarded(self.paths[k]):
                data = handle.read_at(length, offset)
            data = data.to_pybytes() if hasattr(data, "to_pybytes") else bytes(data)
            self._count(len(data))
        elif kind == "gcs":
            data = handle.read(offset, length)
            self._count(len(data))
        else:
            data = os.pread(handle, length, offset)
            if kind == "local":
                self._count(len(data))
        return data

    def _count(self, n: int) -> None:
        with self._count_lock:
            self.bytes_read += n
            self.requests += 1

    def _handle(self, k: int):
        with self._lock:
            if k in self._handles:
                return self._handles[k]
        with self._open_lock:
            if k not in self._handles:
                handle = self._open(self.paths[k])
                with self._lock:
                    self._handles[k] = handle
        with self._lock:
            return self._handles[k]

    def _open(self, path: str):
        if is_gcs(path):
            return "gcs", GcsObject(path)
        loc = resolve(path)
        if not loc.scheme:
            try:
                return "local", os.open(loc.path, os.O_RDONLY)
            except FileNotFoundError:
                raise ShardError(path, "missing (it was listed when the reader started)") from None
        if loc.scheme in ("s3", "s3a"):
            with guarded(path, loc):
                return "s3", loc.fs.open_input_file(loc.path)
        return "copy", os.open(self._copy(path), os.O_RDONLY)

    def _copy(self, url: str) -> str:
        if not self._scratch:
            self._scratch = scratch_dir("stream")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        local = os.path.join(self._scratch, url.rsplit("/", 1)[-1])
        with open(local + ".part", "wb") as out, open_input(url) as f:
            while chunk := f.read(BUFFER):
                out.write(chunk)
                self._count(len(chunk))
        os.replace(local + ".part", local)
        return local

    @staticmethod
    def _close(handle) -> None:
        kind, h = handle
        if kind == "s3":
            h.close()
        elif kind != "gcs":
            os.close(h)

    def close(self) -> None:
        """Close every open shard and remove the local copies (reads after this open them
        again)."""
        with self._open_lock, self._lock:
            handles, self._handles = list(self._handles.values()), {}
            cleanup, self._scratch, self._cleanup = self._cleanup, "", None
        for h in handles:
            self._close(h)
        if cleanup is not None:
            cleanup()  # the finalizer, run now (it runs once)
