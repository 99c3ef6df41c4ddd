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


def _name(work: Path, unit: int, suffix: str) -> Path:
    return work / f"unit-{unit:05d}.{suffix}"


def write_json_atomic(path: Path, obj, *, sync: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


class UnitSpill:
    """Append ``TokenBatch``es of one unit, then ``finish`` publishes files and the marker.

    The temporary file is private to this writer (pid and a random suffix): a retried attempt on
    another worker, while a presumed-dead one still runs, writes the same bytes under fixed names.
    """

    def __init__(self, work: Path, unit: int):
        self.work, self.unit = Path(work), unit
        self.tmp = _name(self.work, unit, f"tokens.tmp-{os.getpid()}-{os.urandom(4).hex()}")
        self.f = open(self.tmp, "wb")
        self.doc_ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.rejects: list = []
        self.records = self.bytes = self.guard_docs = self.special_docs = 0

    def add(self, batch) -> None:
        self.f.write(batch.tokens.astype(np.int32, copy=False).tobytes())
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
        self.f.close()
        os.replace(self.tmp, _name(self.work, self.unit, "tokens"))
        ids = np.concatenate(self.doc_ids) if self.doc_ids else np.zeros(0, np.int64)
        lens = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        docs = _name(self.work, self.unit, "docs.npy")
        tmp = docs.with_name(f"{docs.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}.npy")
        np.save(tmp, np.stack([ids, lens.astype(np.int64)]))
        os.replace(tmp, docs)
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
        write_json_atomic(_name(self.work, self.unit, "done.json"), marker)
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
    ``os.preadv`` copies each run of adjacent segments straight from the page cache into a
    staging block, and one vectorized permutation puts the block in row order. Memory is the
    output plus one block; file descriptors are opened per call, so the store is thread-safe.
    """

    def __init__(self, work: Path, n_units: int):
        self.paths = [_name(Path(work), u, "tokens") for u in range(n_units)]

    def gather(self, unit: np.ndarray, start: np.ndarray, length: np.ndarray,
               block_tokens: int = 1 << 18) -> np.ndarray:
        """Tokens of segments ``[start, start+length)`` of ``unit``'s file, concatenated in order.

        Works in blocks of about ``block_tokens`` tokens, so index arrays stay small whatever the
        shard size; one read per run of segments adjacent in their file (not one per segment
        where documents follow each other, as chunks of a long document do).
        """
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
                    self._block(fds, unit[a:b], start[a:b], length[a:b],
                                out[base : base + int(ends[b - 1]) - base])
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    def _block(self, fds: dict, unit, start, length, dst: np.ndarray) -> None:
        order = np.lexsort((start, unit))  # file order: adjacent segments become one read
        u, s, n = unit[order], start[order], length[order]
        new_run = np.ones(u.size, dtype=bool)
        new_run[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1] + n[:-1])
        heads = np.flatnonzero(new_run)
        run_len = np.add.reduceat(n, heads)
        staging = np.empty(int(n.sum()), dtype=np.int32)
        view = memoryview(staging).cast("B")
        pos = 0
        for ru, rs, rn in zip(u[heads].tolist(), s[heads].tolist(), run_len.tolist()):
            fd = fds.get(ru)
            if fd is None:
                fd = fds[ru] = os.open(self.paths[ru], os.O_RDONLY)
            got = os.preadv(fd, [view[pos * 4 : (pos + rn) * 4]], rs * 4)
            if got != rn * 4:
                raise OSError(f"{self.paths[ru]}: short read at token {rs} "
                              f"({got} of {rn * 4} bytes): spill file truncated")
            pos += rn
        # staging holds the segments in file order; scatter them back to row order
        dst_start = (np.cumsum(length) - length)[order]
        dst[np.repeat(dst_start, n) + positions_within(n)] = staging
