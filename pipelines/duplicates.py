"""Duplicate document ids: found where every unit's ids meet (the partition stage), never merged.

Two documents with one id (an ``input.id_field`` value repeated, or, without it, two records'
keys whose 63-bit hashes collide) would be one document to everything keyed by ``doc_ids``
(``score``, the pruning methods). The first in input order is kept; each later one is left out
of the rows and becomes a reject naming its file and line/row and where the id was first seen
(``input.on_error=fail``: the run stops with that line). Its tokens are spilled already, so the
manifest counts them as dropped (``totals.tokens_dropped``) and token conservation stays exact.

The ids are found in one pass over the units' docs files, beside the lengths the layout reads:
``DuplicateFinder`` holds them in memory up to ``HELD`` documents and beyond that in hash
buckets on local scratch, so memory stays bounded; a bucket's repeats are found with one stable
sort. Where a duplicate is (file and line) is not in the spill: the few units holding one are
read again (read only, not tokenized) to name them.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np

from pipelines.infra.atomic import scratch_dir
from pipelines.infra.errors import InputError
from pipelines.run_plan import RunPlan
from pipelines.steps import spill
from pipelines.infra.storage.paths import as_path

FOUND = "duplicates.npy"  # (2, k) int64: unit (its place in the plan) and document, input order
REJECTS = "duplicates.jsonl"  # their rejects, one JSON object a line, in the same order
_FOUND = np.dtype([("unit", "<i8"), ("pos", "<i8"), ("length", "<i8"), ("id", "<i8"),
                   ("first_unit", "<i8"), ("first_pos", "<i8")])


class DuplicateFinder:
    """``add`` every unit's ids in input order (a unit's blocks in order); ``found()``: each
    document whose id an earlier one has, with that earlier one's place (``length`` 0: see
    ``with_lengths``).

    A document is its id and its ordinal in the input (16 bytes): up to ``HELD`` of them stay in
    memory, then they go to ``2**BITS`` bucket files on local scratch by a hash of the id (one
    radix sort by bucket keeps input order within each), and each bucket is searched alone."""

    HELD = 1 << 20  # documents in memory (16 MB of ids) before they go to bucket files
    BITS = 8  # 256 buckets: 10^9 documents are ~4M (62 MB) a bucket

    def __init__(self):
        self.ids, self.n_held, self.count, self.dir = [], 0, 0, None
        self.units, self.starts = [], []  # each unit added, and its first document's ordinal

    def add(self, unit: int, first: int, ids: np.ndarray) -> None:
        if not self.units or self.units[-1] != unit:
            self.units.append(unit)
            self.starts.append(self.count - first)
        self.ids.append(np.asarray(ids, np.int64))
        self.n_held += ids.size
        self.count += ids.size
        if self.n_held >= self.HELD:
            self._flush()

    def _held(self) -> tuple[np.ndarray, int]:
        """The ids in memory, which leave it, and the ordinal of the first."""
        ids = np.concatenate(self.ids) if self.ids else np.zeros(0, np.int64)
        self.ids, self.n_held = [], 0
        return ids, self.count - ids.size

    def _flush(self) -> None:
        if self.dir is None:
            self.dir = scratch_dir("ids")
        ids, base = self._held()
        mixed = ids.view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # ids 0, 1, 2...: spread
        bucket = (mixed >> np.uint64(64 - self.BITS)).astype(np.uint8 if self.BITS <= 8
                                                              else np.uint16)
        order = np.argsort(bucket, kind="stable")  # a radix sort: input order within a bucket
        pairs = np.empty((ids.size, 2), np.int64)  # (id, ordinal) rows, one gather
        pairs[:, 0] = ids[order]
        pairs[:, 1] = order + base
        bounds = np.searchsorted(bucket[order], np.arange((1 << self.BITS) + 1))
        for k in np.flatnonzero(np.diff(bounds)).tolist():
            with open(os.path.join(self.dir, str(k)), "ab") as f:
                pairs[bounds[k] : bounds[k + 1]].tofile(f)

    def found(self) -> np.ndarray:
        """The repeats (``_FOUND`` records) in input order; scratch files removed."""
        try:
            if self.dir is None:
                ids, base = self._held()
                groups = [np.stack([ids, base + np.arange(ids.size)])]
            else:
                self._flush()
                groups = (np.fromfile(os.path.join(self.dir, n), np.int64).reshape(-1, 2).T
                          for n in sorted(os.listdir(self.dir), key=int))
            pairs = [_repeats(g) for g in groups]
        finally:
            self.ids = []
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
        dup, first, ids = (np.concatenate(x) for x in zip(*pairs)) if pairs else \
            (np.zeros(0, np.int64),) * 3
        order = np.argsort(dup)  # input order
        out = np.zeros(dup.size, _FOUND)
        out["id"] = ids[order]
        out["unit"], out["pos"] = self._place(dup[order])
        out["first_unit"], out["first_pos"] = self._place(first[order])
        return out

    def _place(self, ordinal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit, document in it) of input ordinals."""
        k = np.searchsorted(np.asarray(self.starts, np.int64), ordinal, side="right") - 1
        return np.asarray(self.units, np.int64)[k], ordinal - np.asarray(self.starts, np.int64)[k]


def _repeats(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ordinal, first ordinal of its id, id) of each document (rows: ids, ordinals in input
    order) whose id an earlier one has."""
    order = np.argsort(pairs[0], kind="stable")  # equal ids stay in input order
    ids = pairs[0][order]
    later = np.zeros(ids.size, bool)
    later[1:] = ids[1:] == ids[:-1]
    head = np.maximum.accumulate(np.where(later, 0, np.arange(ids.size)))  # its group's first
    return pairs[1][order[later]], pairs[1][order[head[later]]], ids[later]


def with_lengths(plan: RunPlan, found: np.ndarray) -> np.ndarray:
    """``found`` with each duplicate's length in tokens, read from its unit's docs file (only
    the units that hold one are read)."""
    for u in np.unique(found["unit"]).tolist():
        at = found["unit"] == u
        _, lengths = spill.load_docs(plan.work, plan.units[u].index, ids=False)
        found["length"][at] = lengths[found["pos"][at]]
    spill.drop_docs_copy()
    return found


def record(plan: RunPlan, found: np.ndarray) -> None:
    """Save the duplicates for the pack stage (``FOUND``) and their rejects for ``finalize``
    (``REJECTS``); under ``input.on_error=fail``, stop at the first one, naming it."""
    from pipelines.infra.atomic import write_bytes, atomic_path

    policy_fail = plan.cfg.input.on_error == "fail"
    shown = found[:1] if policy_fail else found
    wanted: dict = {}
    for u, p in zip(np.r_[shown["unit"], shown["first_unit"]].tolist(),
                    np.r_[shown["pos"], shown["first_pos"]].tolist()):
        wanted.setdefault(u, set()).add(p)
    places = {}
    for u in sorted(wanted):
        places.update(_locate(plan, u, sorted(wanted[u])))
    lines = []
    for d in shown.tolist():  # one line per duplicate: the rejects' own size
        unit, pos, _, doc_id, fu, fp = d
        where, info = places[(unit, pos)]
        field = plan.cfg.input.id_field
        reason = (f"duplicate id {doc_id} (input.id_field {field!r}), first seen at "
                  f"{places[(fu, fp)][0]}: left out" if field else
                  f"duplicate id {doc_id} (two records' keys hash to one id), first seen at "
                  f"{places[(fu, fp)][0]}: left out")
        if policy_fail:
            raise InputError(where, reason.removesuffix(": left out"))
        lines.append(json.dumps({**info, "reason": reason}, sort_keys=True) + "\n")
    work = as_path(plan.work)
    write_bytes(work / REJECTS, "".join(lines).encode("utf-8"))
    with atomic_path(work / FOUND, suffix=".npy") as tmp:
        np.save(tmp, np.stack([found["unit"], found["pos"]]).astype(np.int64))


def dropped(plan: RunPlan, layout: dict) -> np.ndarray:
    """(2, k) unit and document of each left-out duplicate (none: an empty array)."""
    if not layout.get("duplicates", {}).get("documents"):
        return np.zeros((2, 0), np.int64)
    from pipelines.row_plan import load_npy

    return np.asarray(load_npy(as_path(plan.work) / FOUND))


def of_unit(drop: np.ndarray, u: int) -> np.ndarray:
    """The documents of ``drop`` (``dropped``'s) in unit ``u`` (its place in the plan)."""
    return drop[1][drop[0] == u]


def keep_mask(pos: np.ndarray, first: int, n: int) -> np.ndarray | None:
    """Which of a unit's documents ``[first, first + n)`` stay, ``pos`` being its left-out ones
    (None: all of them)."""
    pos = pos[(pos >= first) & (pos < first + n)]
    if not pos.size:
        return None
    keep = np.ones(n, bool)
    keep[pos - first] = False
    return keep


def _locate(plan: RunPlan, u: int, positions: list) -> dict:
    """{(u, document): (where, reject fields)} for documents of unit ``u`` (its place in the
    plan), by reading the unit again: its accepted records, in order, are its spilled documents
    (those the tokenizer left without tokens aside, which a greedy match skips)."""
    from pipelines.steps.read import Reader

    unit = plan.units[u]
    want = np.asarray(positions, np.int64)
    out, at = {}, 0
    try:
        for batch in Reader(plan.cfg.input)(unit):
            ids = np.asarray(batch.doc_ids, np.int64)
            if not ids.size:
                continue
            acc, _ = spill.load_docs(plan.work, unit.index, at, at + ids.size)
            if acc.size == ids.size and np.array_equal(acc, ids):
                taken = np.arange(ids.size)
            else:  # rare: documents without tokens were rejected after reading
                taken, q = [], 0
                for j, v in enumerate(ids.tolist()):
                    if q < acc.size and v == acc[q]:
                        taken.append(j)
                        q += 1
                taken = np.asarray(taken, np.int64)
            hit = np.flatnonzero((want >= at) & (want < at + taken.size))
            for k in hit.tolist():
                j = int(taken[want[k] - at])
                out[(u, int(want[k]))] = (batch.locate(j), _fields(batch, j))
            at += taken.size
    except (OSError, InputError):  # changed or gone since it was read: named less precisely
        pass
    for p in positions:
        if (u, p) not in out:
            path = unit.sources[0].path if unit.sources else f"unit {unit.index}"
            out[(u, p)] = (f"{path} (document {p} of its unit)", {"file": path})
    return out


def _fields(batch, j: int) -> dict:
    """``{"file": path, "line" | "row": n}`` of document ``j`` of a ``TextBatch``."""
    _, path, word = next((s for s in reversed(batch.spans) if s[0] <= j), (0, "?", ""))
    return {"file": path, word: batch.index[j]} if word else {"file": path}
