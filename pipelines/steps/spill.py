"""Spill step: a unit's token ids go to a flat file on disk; packing needs only lengths.

Per unit ``u`` the work directory holds its ids back to back, ``unit-u.tokens16`` (uint16) when
every id of the tokenizer fits in 16 bits (GPT-2's 50,257 do) and ``unit-u.tokens`` (int32)
otherwise, ``unit-u.docs.npy`` (doc ids, lengths) and, written last, the completion marker
``unit-u.done.json`` (counts and rejects). Half the bytes is half the page-cache writes while
tokenizing and half the reads while gathering. A unit without a marker is redone from scratch, so
a run killed at any moment resumes correctly. ``SpillStore`` gathers rows by bin with positioned
reads (``pipelines.steps.gather``), so resident memory is bounded by the shard being built, not
by the spill.
"""
from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np

from pipelines.infra.atomic import atomic_path, publish_file, temp_name
from pipelines.markers import UNIT, has_marker, read_marker, write_marker
from pipelines.infra.storage.paths import UrlPath, as_path


def unit_path(work: Path, unit: int, suffix: str) -> Path:
    """``work/unit-U.suffix``: a unit's spill file or docs file (its marker is
    ``pipelines.markers``')."""
    return work / f"unit-{unit:05d}.{suffix}"


# the spilled ids' file suffix by dtype, so the name says how to read the file (work files kept
# from an older version hold int32 units only, and a resumed run reads them beside new ones)
SUFFIX = {np.dtype(np.int32): "tokens", np.dtype(np.uint16): "tokens16"}


def spill_dtype(id_bound: int) -> np.dtype:
    """The narrowest dtype for ids below ``id_bound`` (the vocabulary size, added tokens in)."""
    return np.dtype(np.uint16 if id_bound <= 1 << 16 else np.int32)


class UnitSpill:
    """Append ``TokenBatch``es of one unit, then ``finish`` publishes files and the marker.

    The temporary file is private to this writer (pid and a random suffix): a retried attempt on
    another worker, while a presumed-dead one still runs, writes the same bytes under fixed names.
    """

    def __init__(self, work: Path, unit: int):
        self.work, self.unit = as_path(work), unit
        self.dtype: np.dtype | None = None  # fixed by the first batch's id bound
        self.tmp = self.f = None  # opened with the first batch, named by its dtype
        # doc ids and lengths stream to anonymous scratch files (gone with the process, however
        # it ends), so a unit of 10^7 documents (one big file) holds no per-document arrays
        self.doc_ids = tempfile.TemporaryFile()
        self.lengths = tempfile.TemporaryFile()
        self.rejects: list = []
        self.records = self.bytes = self.guard_docs = self.special_docs = 0
        self.accepted = self.tokens = 0

    def _open(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        final = unit_path(self.work, self.unit, SUFFIX[dtype])
        if isinstance(final, UrlPath):  # written on local scratch, uploaded by ``finish``
            self.tmp = Path(tempfile.gettempdir()) / temp_name(final.name).name
        else:
            self.tmp = temp_name(final)
        self.f = open(self.tmp, "wb")

    def add(self, batch) -> None:
        dtype = spill_dtype(batch.id_bound)
        if self.f is None:
            self._open(dtype)
        elif dtype != self.dtype:  # one tokenizer per run: cannot happen unless misused
            raise ValueError(f"unit {self.unit}: batches with {dtype} and {self.dtype} ids")
        self.f.write(np.ascontiguousarray(batch.tokens, dtype=dtype).data)  # no copy for int32
        lengths = np.ascontiguousarray(batch.lengths, dtype=np.int64)
        self.doc_ids.write(np.ascontiguousarray(batch.doc_ids, dtype=np.int64).data)
        self.lengths.write(lengths.data)
        self.accepted += int(lengths.size)
        self.tokens += int(lengths.sum())
        self.rejects.extend(batch.rejects)
        self.records += batch.records
        self.bytes += batch.bytes
        self.guard_docs += batch.guard_docs
        self.special_docs += batch.special_docs

    def abort(self) -> None:
        """Drop an unfinished unit's temporary file (the unit is redone on the next run)."""
        self.doc_ids.close()
        self.lengths.close()
        if self.f is not None:
            self.f.close()
            self.tmp.unlink(missing_ok=True)

    def finish(self) -> dict:
        if self.f is None:  # a unit without batches: an empty int32 file
            self._open(np.dtype(np.int32))
        # data on disk before the names that point at it: after a power loss a marker never
        # stands for a tokens file that is shorter (resume trusts markers without a hash)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        publish_file(self.tmp, unit_path(self.work, self.unit, SUFFIX[self.dtype]))
        if isinstance(self.work, UrlPath):
            self.tmp.unlink(missing_ok=True)  # an upload leaves the local file
        with atomic_path(unit_path(self.work, self.unit, "docs.npy"), sync=True) as tmp:
            with open(tmp, "wb") as f:  # what np.save writes for the (2, n) int64 array
                np.lib.format.write_array_header_1_0(f, {
                    "descr": "<i8", "fortran_order": False, "shape": (2, self.accepted)})
                for part in (self.doc_ids, self.lengths):
                    part.seek(0)
                    shutil.copyfileobj(part, f, 1 << 20)
                    part.close()
        marker = {
            "unit": self.unit,
            "records": self.records,
            "accepted": self.accepted,
            "rejected": len(self.rejects),
            "tokens": self.tokens,
            "bytes": self.bytes,
            "guard_docs": self.guard_docs,
            "special_token_docs": self.special_docs,
            "rejects": self.rejects,
            "worker": worker_identity(),  # where it was tokenized (no count depends on it)
        }
        write_marker(self.work, UNIT, self.unit, marker, sync=True)
        return marker


def worker_identity() -> dict:
    """The process that wrote a marker: host, pid and mount namespace (two nodes of one machine
    differ there), so a run's work directory says which worker did which unit."""
    try:
        mnt = os.readlink("/proc/self/ns/mnt")
    except OSError:
        mnt = ""
    return {"host": socket.gethostname(), "pid": os.getpid(), "mnt": mnt}


def is_done(work: Path, unit: int) -> bool:
    """Whether the unit's marker is there (without reading it: markers carry the rejects)."""
    return has_marker(work, UNIT, unit)


def load_marker(work: Path, unit: int) -> dict | None:
    """The unit's marker (counts, rejects, worker); None when it is not done."""
    return read_marker(work, UNIT, unit)


_DOCS_COPY: dict = {}  # {"url", "size", "path"}: the last docs file of a store, copied to scratch
_DOCS_LOCK = threading.Lock()


def _local_docs(path: UrlPath) -> Path:
    """A local copy of a unit's docs file on a store, downloaded once in one streaming read and
    kept until another one is asked for or ``drop_docs_copy`` (after the partition layout, and
    after each pack call): the layout reads a unit's lengths a block at a time, and each block
    no longer downloads the whole object again. The copy is under a scratch name that
    ``sweep_scratch`` removes should its process be killed."""
    from pipelines.infra.storage import open_input

    size = path.stat().st_size  # the same key rewritten (a retried unit) is the same bytes
    with _DOCS_LOCK:
        if _DOCS_COPY.get("url") == str(path) and _DOCS_COPY.get("size") == size:
            return _DOCS_COPY["path"]
        drop_docs_copy()
        local = Path(tempfile.gettempdir()) / temp_name(path.name).name
        try:
            with open(local, "wb") as out, open_input(str(path)) as f:
                shutil.copyfileobj(f, out, 8 << 20)
        except BaseException:
            local.unlink(missing_ok=True)
            raise
        _DOCS_COPY.update(url=str(path), size=size, path=local)
        if not _DOCS_COPY.get("hooked"):
            atexit.register(drop_docs_copy)
            _DOCS_COPY["hooked"] = True
        return local


def drop_docs_copy() -> None:
    """Remove the local copy of a store's docs file, if any (its readers are done)."""
    old = _DOCS_COPY.pop("path", None)
    _DOCS_COPY.pop("url", None)
    _DOCS_COPY.pop("size", None)
    if old is not None:
        old.unlink(missing_ok=True)


def load_docs(work: Path, unit: int, start: int = 0, stop: int | None = None, ids: bool = True
              ) -> tuple[np.ndarray | None, np.ndarray]:
    """(doc ids, lengths) of the unit's documents ``[start, stop)``: positioned reads of just
    those, so a slice of a unit of millions of documents costs its own size (on a store, of a
    local copy of the file: ``_local_docs``). ``ids=False``: the lengths only (None for the
    ids)."""
    path = unit_path(as_path(work), unit, "docs.npy")
    if isinstance(path, UrlPath):
        path = _local_docs(path)
    with open(path, "rb") as f:
        read_header = (np.lib.format.read_array_header_1_0 if np.lib.format.read_magic(f)
                       == (1, 0) else np.lib.format.read_array_header_2_0)
        (_, n), _, dtype = read_header(f)
        header = f.tell()
    stop = n if stop is None else min(stop, n)
    start = min(start, stop)
    rows = [np.fromfile(path, dtype=dtype, count=stop - start,
                        offset=header + (row * n + start) * dtype.itemsize) if row or ids
            else None for row in (0, 1)]
    return rows[0], rows[1]
