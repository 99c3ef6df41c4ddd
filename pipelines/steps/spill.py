"""Spill step: a unit's token ids go to a flat int32 file on disk; packing needs only lengths.

Per unit ``u`` the work directory holds ``unit-u.tokens`` (int32 ids back to back),
``unit-u.docs.npy`` (doc ids, lengths) and, written last, the completion marker
``unit-u.done.json`` (counts and rejects). A unit without a marker is redone from scratch, so a
run killed at any moment resumes correctly. ``SpillStore`` gathers rows by bin with positioned
reads, so resident memory is bounded by the shard being built, not by the spill.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from packing.split import positions_within
from pipelines.atomic import atomic_path, temp_name, write_json


def _name(work: Path, unit: int, suffix: str) -> Path:
    return work / f"unit-{unit:05d}.{suffix}"


class UnitSpill:
    """Append ``TokenBatch``es of one unit, then ``finish`` publishes files and the marker.

    The temporary file is private to this writer (pid and a random suffix): a retried attempt on
    another worker, while a presumed-dead one still runs, writes the same bytes under fixed names.
    """

    def __init__(self, work: Path, unit: int):
        self.work, self.unit = Path(work), unit
        self.tmp = temp_name(_name(self.work, unit, "tokens"))
        self.f = open(self.tmp, "wb")
        self.doc_ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.rejects: list = []
        self.records = self.bytes = self.guard_docs = self.special_docs = 0

    def add(self, batch) -> None:
        self.f.write(np.ascontiguousarray(batch.tokens, dtype=np.int32).data)  # no copy
        self.doc_ids.append(batch.doc_ids)
        self.lengths.append(batch.lengths)
        self.rejects.extend(batch.rejects)
        self.records += batch.records
        self.bytes += batch.bytes
        self.guard_docs += batch.guard_docs
        self.special_docs += batch.special_docs

    def abort(self) -> None:
        """Drop an unfinished unit's temporary file (the unit is redone on the next run)."""
        self.f.close()
        self.tmp.unlink(missing_ok=True)

    def finish(self) -> dict:
        # data on disk before the names that point at it: after a power loss a marker never
        # stands for a tokens file that is shorter (resume trusts markers without a hash)
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, _name(self.work, self.unit, "tokens"))
        ids = np.concatenate(self.doc_ids) if self.doc_ids else np.zeros(0, np.int64)
        lens = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        with atomic_path(_name(self.work, self.unit, "docs.npy"), sync=True) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.stack([ids, lens.astype(np.int64)]))
        marker = {
            "unit": self.unit,
            "records": self.records,
            "accepted": int(ids.size),
            "rejected": len(self.rejects),
            "tokens": int(lens.sum()),
            "bytes": self.bytes,
            "guard_docs": self.guard_docs,
            "special_token_docs": self.special_docs,
            "rejects": self.rejects,
        }
        write_json(_name(self.work, self.unit, "done.json"), marker, sync=True)
        return marker


def load_marker(work: Path, unit: int) -> dict | None:
    path = _name(Path(work), unit, "done.json")
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def load_docs(work: Path, unit: int) -> tuple[np.ndarray, np.ndarray]:
    arr = np.load(_name(Path(work), unit, "docs.npy"))
    return arr[0], arr[1]


class SpillStore:
    """Gather token ranges from the units' spilled files with positioned reads.

    Nothing is memory-mapped: a page-cache folio faulted into a mapping can be up to megabytes,
    so gathering scattered documents through ``mmap`` made resident memory follow the corpus.
    Segments are read in file order, one ``os.preadv`` per run of file-adjacent segments. Long
    segments (code files, chunks of long documents) are read straight into their place in the
    output, each segment one buffer of the vector read. Short ones (a corpus of tweets) go
    through a staging block that one vectorized permutation puts in row order, so the Python
    work stays per run, not per segment. Memory is the output plus one block; file descriptors
    are opened per call, so the store is thread-safe.
    """

    # mean segment length from which segments are read in place: below it, scattered segments
    # cost a few us each as vector-read buffers, more than the staging copy's index per token
    DIRECT_MIN_TOKENS = 192
    IOV_MAX = 1024  # buffers per preadv (Linux's limit)

    def __init__(self, work: Path, n_units: int):
        self.paths = [_name(Path(work), u, "tokens") for u in range(n_units)]

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
                    in_place = (int(ends[b - 1]) - base) >= direct * (b - a)
                    block = self._direct if in_place else self._staged
                    block(fds, unit[a:b], start[a:b], length[a:b], dst)
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

    def _read(self, fds: dict, u: int, s: int, buffers: list, nbytes: int) -> None:
        fd = fds.get(u)
        if fd is None:
            fd = fds[u] = os.open(self.paths[u], os.O_RDONLY)
        got = os.preadv(fd, buffers, s * 4)
        if got != nbytes:
            raise OSError(f"{self.paths[u]}: short read at token {s} "
                          f"({got} of {nbytes} bytes): spill file truncated")

    def _direct(self, fds: dict, unit, start, length, dst: np.ndarray) -> None:
        order, u, s, n, heads = self._runs(unit, start, length)
        lo = (np.cumsum(length) - length)[order] * 4  # each segment's place in dst, in bytes
        hi = lo + n * 4
        view = memoryview(dst).cast("B")
        slices = [view[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
        filled = np.r_[0, np.cumsum(n * 4)].tolist()  # bytes read before each segment
        file_u, file_s = u.tolist(), s.tolist()
        for h, e in zip(heads.tolist(), np.r_[heads[1:], u.size].tolist()):
            pos = file_s[h]
            for k in range(h, e, self.IOV_MAX):
                k2 = min(e, k + self.IOV_MAX)
                nbytes = filled[k2] - filled[k]
                self._read(fds, file_u[h], pos, slices[k:k2], nbytes)
                pos += nbytes // 4

    def _staged(self, fds: dict, unit, start, length, dst: np.ndarray) -> None:
        order, u, s, n, heads = self._runs(unit, start, length)
        run_len = np.add.reduceat(n, heads) if heads.size else np.zeros(0, np.int64)
        staging = np.empty(int(n.sum()), dtype=np.int32)
        view = memoryview(staging).cast("B")
        pos = 0
        for ru, rs, rn in zip(u[heads].tolist(), s[heads].tolist(), run_len.tolist()):
            self._read(fds, ru, rs, [view[pos * 4 : (pos + rn) * 4]], rn * 4)
            pos += rn
        # staging holds the segments in file order; scatter them back to row order
        dst_start = (np.cumsum(length) - length)[order]
        dst[np.repeat(dst_start, n) + positions_within(n)] = staging
