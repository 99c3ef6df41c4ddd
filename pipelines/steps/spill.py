"""Spill step: a unit's token ids go to a flat int32 file on disk; packing needs only lengths.

Per unit ``u`` the work directory holds ``unit-u.tokens`` (int32 ids back to back),
``unit-u.docs.npy`` (doc ids, lengths) and, written last, the completion marker
``unit-u.done.json`` (counts and rejects). A unit without a marker is redone from scratch, so a
run killed at any moment resumes correctly. ``SpillStore`` memory-maps the token files to gather
rows by bin and drops mapped pages after each shard, so resident memory stays bounded.
"""
from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import numpy as np


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
    """Append ``TokenBatch``es of one unit, then ``finish`` publishes files and the marker."""

    def __init__(self, work: Path, unit: int):
        self.work, self.unit = Path(work), unit
        self.tmp = _name(self.work, unit, "tokens.tmp")
        self.f = open(self.tmp, "wb")
        self.doc_ids: list[np.ndarray] = []
        self.lengths: list[np.ndarray] = []
        self.rejects: list = []
        self.records = self.bytes = 0

    def add(self, batch) -> None:
        self.f.write(batch.tokens.astype(np.int32, copy=False).tobytes())
        self.doc_ids.append(batch.doc_ids)
        self.lengths.append(batch.lengths)
        self.rejects.extend(batch.rejects)
        self.records += batch.records
        self.bytes += batch.bytes

    def finish(self) -> dict:
        self.f.close()
        os.replace(self.tmp, _name(self.work, self.unit, "tokens"))
        ids = np.concatenate(self.doc_ids) if self.doc_ids else np.zeros(0, np.int64)
        lens = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        docs = _name(self.work, self.unit, "docs.npy")
        tmp = docs.with_name(docs.name + ".tmp.npy")
        np.save(tmp, np.stack([ids, lens.astype(np.int64)]))
        os.replace(tmp, docs)
        marker = {
            "unit": self.unit,
            "records": self.records,
            "accepted": int(ids.size),
            "rejected": len(self.rejects),
            "tokens": int(lens.sum()),
            "bytes": self.bytes,
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
    """Gather token ranges from the units' spilled files, memory-mapped."""

    def __init__(self, work: Path, n_units: int):
        self.maps: list = []
        self.arrays: list[np.ndarray] = []
        for u in range(n_units):
            path = _name(Path(work), u, "tokens")
            if path.stat().st_size == 0:
                self.maps.append(None)
                self.arrays.append(np.zeros(0, np.int32))
                continue
            with open(path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self.maps.append(m)
            self.arrays.append(np.frombuffer(m, dtype=np.int32))

    def gather(self, unit: np.ndarray, start: np.ndarray, length: np.ndarray,
               block_tokens: int = 1 << 16) -> np.ndarray:
        """Tokens of segments ``[start, start+length)`` of ``unit``'s file, concatenated in order.

        Vectorized over blocks of about ``block_tokens`` tokens, so the index arrays stay small
        whatever the shard size.
        """
        length = length.astype(np.int64, copy=False)
        out = np.empty(int(length.sum()), dtype=np.int32)
        ends = np.cumsum(length)
        bounds = np.searchsorted(ends, np.arange(block_tokens, int(ends[-1]) if ends.size else 0,
                                                 block_tokens), side="left") + 1
        for a, b in zip(np.r_[0, bounds], np.r_[bounds, length.size]):
            if a >= b:
                continue
            lens, base = length[a:b], int(ends[a] - length[a])
            step = np.arange(int(lens.sum()), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens,
                                                                          lens)
            src = np.repeat(start[a:b], lens) + step
            units = np.repeat(unit[a:b], lens)
            dst = out[base : base + src.size]
            order = np.argsort(units, kind="stable")  # one group per unit file
            cuts = np.flatnonzero(np.diff(units[order])) + 1
            for group in np.split(order, cuts):
                dst[group] = self.arrays[int(units[group[0]])][src[group]]
            self.release()  # each segment faults in up to 64 KB around it: drop them per block
        return out

    def release(self) -> None:
        """Drop mapped pages from this process's resident set (the page cache keeps them)."""
        for m in self.maps:
            if m is not None and hasattr(m, "madvise"):
                m.madvise(mmap.MADV_DONTNEED)

    def close(self) -> None:
        self.arrays.clear()
        for m in self.maps:
            if m is not None:
                m.close()
        self.maps.clear()
