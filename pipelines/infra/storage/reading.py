"""Open a local path or URL for reading: a buffered stream (with ``peek``, which the JSON lines
reader uses to tell gzip and zstd from plain text) or a local copy (Parquet).

The input readers open local paths with ``regular=True``: a FIFO, a device or a socket is never
read (opening a FIFO blocks until a writer comes, ``/dev/zero`` never ends)."""
from __future__ import annotations

import io
import os
import shutil
import stat as _st
import tempfile
from contextlib import contextmanager
from typing import Iterator

from pipelines.infra.storage.filesystems import resolve
from pipelines.infra.storage.guard import guarded
from pipelines.infra.storage.listing import kind_of, not_regular
from pipelines.infra.storage.scratch import scratch_prefix
from pipelines.infra.storage.urls import is_url, local_path

BUFFER = 8 << 20  # bytes asked of a store per request: each read is a ranged GET (8 MiB, as
# AWS advises for throughput; 1 MiB reads ran at 16 MiB/s against moto, 8 MiB at 134 MiB/s)


class NotRegularFile(OSError):
    """A local input that is a FIFO, a device, a socket or a directory: not opened, not read."""

    def __init__(self, path: str, kind: str):
        super().__init__(f"not a regular file: {kind}")
        self.path, self.kind = path, kind

    def __str__(self) -> str:
        return f"not a regular file: {self.kind}"

    def __reduce__(self):  # pickled across processes (a Ray or Beam worker's error)
        return type(self), (self.path, self.kind)


def open_input(path, buffer_size: int = BUFFER, *, regular: bool = False):
    """A binary, buffered, forward-only stream of the file or object at ``path`` (bytes as
    stored: compressed data is not decompressed here). ``regular``: a local path that is not a
    regular file raises ``NotRegularFile`` without blocking (an object always is one)."""
    path = str(path)
    if not is_url(path):
        return _open_regular(local_path(path)) if regular else open(local_path(path), "rb")
    loc = resolve(path)
    with guarded(path, loc):
        raw = loc.fs.open_input_stream(loc.path, compression=None)
    return io.BufferedReader(_Raw(raw, path), buffer_size)


_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(
    os, "O_CLOEXEC", 0)


def _open_regular(path: str):
    """``open(path, "rb")`` for a regular file only: checked by ``stat`` before (never opens a
    FIFO or device), and by ``fstat`` of what was opened, non-blocking, in case it was swapped."""
    kind = not_regular(path)
    if kind:
        raise NotRegularFile(path, kind)
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not _st.S_ISREG(mode):
            raise NotRegularFile(path, kind_of(mode))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def local_copy(path) -> Iterator[str]:
    """A local path with the bytes of ``path``: itself when local, else a private copy on this
    machine's scratch disk (``TMPDIR``), downloaded in one streaming read and removed afterwards.

    For formats read by random access (Parquet): one sequential GET instead of a ranged request
    per column chunk (Arrow's GCS random-access reads also hang against gcp-storage-emulator)."""
    path = str(path)
    if not is_url(path):
        yield local_path(path)
        return
    # named by ``scratch_prefix``, so that the sweep finds a killed reader's
    fd, tmp = tempfile.mkstemp(prefix=scratch_prefix("copy"), suffix="-" + path.rsplit("/", 1)[-1])
    try:
        with os.fdopen(fd, "wb") as out, open_input(path) as f:
            shutil.copyfileobj(f, out, BUFFER)
        yield tmp
    finally:
        os.unlink(tmp)


def read_bytes(path) -> bytes:
    with open_input(path) as f:
        return f.read()


class _Raw(io.RawIOBase):
    """A pyarrow input stream as a ``RawIOBase`` whose errors name the URL."""

    def __init__(self, stream, url: str):
        self._stream, self._url = stream, url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with guarded(self._url):
            return self._stream.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()
