"""Gather a shard's tokens from the units' spill files (``pipelines.steps.spill``) with
positioned reads; on an object store, from local copies of the unit files.

The copies are a writer's scratch (``TMPDIR/fewtrunc-spill-PID-*``): up to one copy of the units
its shards read. They go when the store does, when an engine ends a writer's stage or the
writer itself (``release_copies``), for units it no longer needs (``SpillStore.retain``), and,
for a killed writer, in the next worker's ``sweep_scratch``."""
from __future__ import annotations

import os
import shutil
import threading
import weakref
from pathlib import Path

import numpy as np

from packing.split import positions_within
from pipelines.infra.atomic import scratch_dir
from pipelines.steps.spill import SUFFIX, unit_path
from pipelines.infra.storage.paths import UrlPath, as_path

_CACHE_LOCK = threading.Lock()
_STORES: "weakref.WeakSet[SpillStore]" = weakref.WeakSet()  # this process's, for release_copies


def release_copies() -> None:
    """Remove every local copy of spill files this process holds (the stage that read them is
    over, or the worker ends); a later gather copies what it needs again."""
    for store in list(_STORES):
        store.release()


class SpillStore:
    """Gather token ranges from the units' spilled files with positioned reads.

    Nothing is memory-mapped: a page-cache folio faulted into a mapping can be up to megabytes,
    so gathering scattered documents through ``mmap`` made resident memory follow the corpus.
    Segments are read in file order, one ``os.preadv`` per run of file-adjacent segments. Long
    segments (code files, chunks of long documents) are read straight into their place in the
    output (for 16-bit units, in a 16-bit copy of it, widened in one pass), each segment one
    buffer of the vector read. Short ones (a corpus of tweets) go through a staging block that
    one vectorized permutation puts in row order, so the Python work stays per run, not per
    segment. Memory is the output plus one block; file descriptors are opened per call, so the
    store is thread-safe.
    """

    # mean segment length from which segments are read in place: below it, scattered segments
    # cost a few us each as vector-read buffers, more than the staging copy's index per token
    DIRECT_MIN_TOKENS = 192
    IOV_MAX = 1024  # buffers per preadv (Linux's limit)

    def __init__(self, work: Path, n_units: int):
        self.work, self.n_units = as_path(work), n_units
        self._files: dict[int, tuple[Path, np.dtype]] = {}  # unit -> (its file, its dtype)
        self._cache = None  # a store's unit files, copied to local scratch on first use
        self._copied: set[int] = set()  # the units copied there
        _STORES.add(self)

    def release(self) -> None:
        """Remove the local copies (the store stays usable: a later gather copies again)."""
        with _CACHE_LOCK:
            cache, self._cache = self._cache, None
            self._copied.clear()
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)

    def retain(self, units) -> None:
        """Keep the local copies of ``units`` only (a writer moving to the next partition no
        longer reads the units of the last one)."""
        keep = {int(u) for u in units}
        with _CACHE_LOCK:
            for u in sorted(self._copied - keep):
                try:
                    os.unlink(os.path.join(self._cache, self._file(u)[0].name))
                except OSError:
                    pass
                self._copied.discard(u)

    def _file(self, u: int) -> tuple[Path, np.dtype]:
        found = self._files.get(u)
        if found is None:
            if not 0 <= u < self.n_units:
                raise IndexError(f"unit {u} outside the store's {self.n_units} units")
            narrow = unit_path(self.work, u, SUFFIX[np.dtype(np.uint16)])
            found = ((narrow, np.dtype(np.uint16)) if narrow.exists()
                     else (unit_path(self.work, u, SUFFIX[np.dtype(np.int32)]), np.dtype(np.int32)))
            self._files[u] = found  # a benign race: threads would store the same pair
        return found

    def _local(self, u: int):
        """The unit's file on this machine: itself on a local disk; on a store, a copy on local
        scratch downloaded in one streaming read the first time a write uses the unit (ranged
        reads would be one request per run of adjacent segments, thousands per shard), removed
        with the store."""
        path = self._file(u)[0]
        if not isinstance(path, UrlPath):
            return path
        with _CACHE_LOCK:
            if self._cache is None:
                self._cache = scratch_dir("spill")
                weakref.finalize(self, shutil.rmtree, self._cache, True)
            local = os.path.join(self._cache, path.name)
            if not os.path.exists(local):
                from pipelines.infra.storage import open_input

                tmp = local + ".part"
                try:
                    with open(tmp, "wb") as out, open_input(str(path)) as f:
                        shutil.copyfileobj(f, out, 8 << 20)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                os.replace(tmp, local)
                self._copied.add(u)
        return local

    def _dtypes(self, unit: np.ndarray) -> np.ndarray:
        """Each segment's itemsize (2 or 4), looked up once per distinct unit."""
        units, inverse = np.unique(unit, return_inverse=True)
        sizes = np.array([self._file(int(u))[1].itemsize for u in units.tolist()], np.int64)
        return sizes[inverse.reshape(-1)]

    def gather(self, unit: np.ndarray, start: np.ndarray, length: np.ndarray,
               block_tokens: int = 1 << 18, direct_min_tokens: int | None = None) -> np.ndarray:
        """Tokens of segments ``[start, start+length)`` of ``unit``'s file, concatenated in order.

        Works in blocks of about ``block_tokens`` tokens, so index arrays stay small whatever the
        shard size; one read per run of segments adjacent in their file (not one per segment
        where documents follow each other, as chunks of a long document do).
        """
        direct = self.DIRECT_MIN_TOKENS if direct_min_tokens is None else direct_min_tokens
        length = length.astype(np.int64, copy=False)
        out = np.empty(int(length.sum()), dtype=np.int32)
        ends = np.cumsum(length)
        bounds = np.searchsorted(ends, np.arange(block_tokens, int(ends[-1]) if ends.size else 0,
                                                 block_tokens), side="left") + 1
        fds: dict[int, int] = {}
        try:
            for a, b in zip(np.r_[0, bounds], np.r_[bounds, length.size]):
                if a < b:
                    base = int(ends[a] - length[a])
                    dst = out[base : base + int(ends[b - 1]) - base]
                    u, st, n = unit[a:b], start[a:b], length[a:b]
                    sizes = self._dtypes(u)
                    if sizes.min() != sizes.max():  # units of both widths (a resumed run)
                        self._mixed(fds, u, st, n, sizes, dst)
                    elif dst.size >= direct * (b - a):
                        self._direct(fds, u, st, n, dst, int(sizes[0]))
                    else:
                        self._staged(fds, u, st, n, np.cumsum(n) - n, dst, int(sizes[0]))
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    @staticmethod
    def _runs(unit, start, length):
        """File order of the segments, and where each run of file-adjacent segments begins."""
        order = np.lexsort((start, unit))  # file order: adjacent segments become one read
        u, s, n = unit[order], start[order], length[order]
        new_run = np.ones(u.size, dtype=bool)
        new_run[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1] + n[:-1])
        return order, u, s, n, np.flatnonzero(new_run)

    def _read(self, fds: dict, u: int, s: int, buffers: list, nbytes: int, size: int) -> None:
        fd = fds.get(u)
        if fd is None:
            fd = fds[u] = os.open(self._local(u), os.O_RDONLY)
        got = os.preadv(fd, buffers, s * size)
        if got != nbytes:
            raise OSError(f"{self._file(u)[0]}: short read at token {s} "
                          f"({got} of {nbytes} bytes): spill file truncated")

    def _direct(self, fds: dict, unit, start, length, dst: np.ndarray, size: int) -> None:
        order, u, s, n, heads = self._runs(unit, start, length)
        into = dst if size == dst.itemsize else np.empty(dst.size, f"u{size}")
        lo = (np.cumsum(length) - length)[order] * size  # each segment's place, in bytes
        hi = lo + n * size
        view = memoryview(into).cast("B")
        slices = [view[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
        filled = np.r_[0, np.cumsum(n * size)].tolist()  # bytes read before each segment
        file_u, file_s = u.tolist(), s.tolist()
        for h, e in zip(heads.tolist(), np.r_[heads[1:], u.size].tolist()):
            pos = file_s[h]
            for k in range(h, e, self.IOV_MAX):
                k2 = min(e, k + self.IOV_MAX)
                nbytes = filled[k2] - filled[k]
                self._read(fds, file_u[h], pos, slices[k:k2], nbytes, size)
                pos += nbytes // size
        if into is not dst:
            dst[:] = into  # widen: one pass

    def _staged(self, fds: dict, unit, start, length, dst_at, dst: np.ndarray,
                size: int) -> None:
        """Segments ``i`` go to ``dst[dst_at[i] : dst_at[i] + length[i]]``."""
        order, u, s, n, heads = self._runs(unit, start, length)
        run_len = np.add.reduceat(n, heads) if heads.size else np.zeros(0, np.int64)
        staging = np.empty(int(n.sum()), dtype=np.int32 if size == 4 else np.uint16)
        view = memoryview(staging).cast("B")
        pos = 0
        for ru, rs, rn in zip(u[heads].tolist(), s[heads].tolist(), run_len.tolist()):
            self._read(fds, ru, rs, [view[pos * size : (pos + rn) * size]], rn * size, size)
            pos += rn
        # staging holds the segments in file order; scatter them back to row order
        dst[np.repeat(dst_at[order], n) + positions_within(n)] = staging

    def _mixed(self, fds: dict, unit, start, length, sizes, dst: np.ndarray) -> None:
        dst_at = np.cumsum(length) - length
        for size in (2, 4):
            pick = sizes == size
            self._staged(fds, unit[pick], start[pick], length[pick], dst_at[pick], dst, size)
