"""Where a run's partitions start and end (``partitions.json``), from every unit's lengths.

A corpus of at most ``pack.partition_chunks`` chunks is one partition (the global pack). A
larger one is cut by ``packing.partition.plan_partitions`` into partitions of consecutive units
of at most that many chunks each; a unit alone above it (one big file) is first cut into runs of
its documents of at most that many chunks. A big file cut into several units (its pieces,
``steps/cut.py``) is cut into runs as one unit, so its partitions, rows and shards are those of
the unsplit file. The driver reads one unit's lengths at a time, a
block of documents at a time, and keeps per-unit and per-partition counts only.
"""
from __future__ import annotations

import json

import numpy as np

from packing.partition import RunCutter, plan_partitions
from pipelines.infra.atomic import write_json
from pipelines.duplicates import DuplicateFinder, keep_mask, of_unit, with_lengths
from pipelines.duplicates import record as record_duplicates
from pipelines.infra.errors import FatalError
from pipelines.run_plan import RunPlan
from pipelines.steps import spill
from pipelines.infra.storage.paths import as_path

PARTITIONS = "partitions.json"


def read_json(path) -> dict | None:
    path = as_path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def choose_partitions(counts: np.ndarray, partition_chunks: int) -> tuple[list, list]:
    """(piece bounds, chunk bounds): one partition of every piece when the corpus's chunk count
    is at most ``partition_chunks`` (or it is 0), else ``plan_partitions``' cut."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not partition_chunks or total <= partition_chunks or counts.size <= 1:
        return [0, int(counts.size)], [0, total]
    cut = plan_partitions(counts, int(partition_chunks))
    return cut.unit_bounds.tolist(), cut.chunk_bounds.tolist()


BLOCK_DOCS = 1 << 20  # documents of a unit read at a time while laying partitions out


def unit_pieces(work, unit: int, seq_len: int, partition_chunks: int, ids_to=None, drop=None,
                cutter=None, continues: bool = False):
    """(first document, chunks, tokens, first token) of each piece of one unit: the whole unit,
    or, when it alone holds more than ``partition_chunks`` chunks (one big file), runs of its
    documents of at most that many chunks each (``plan_partitions``' cut over the documents: a
    document is never cut), so that no partition, and no pack worker's memory, follows the size
    of one file. The unit's lengths are read a block at a time: memory is one block's.

    ``ids_to(first, ids, lengths)`` is handed each block's ids (the duplicate check); ``drop``
    are the unit's documents left out (duplicates): they count no chunks and no tokens, but
    their tokens still lie in the unit's file, so a piece's first token counts them.

    A unit that ``continues`` the one before it (a later piece of a file cut into units,
    ``steps/cut.py``) is cut by that unit's ``cutter``, as if they were one unit: its first
    document starts a piece only where the cutter cuts there. Otherwise ``starts`` lacks 0 and
    the counts and offsets have one more, leading entry: its documents before its first piece
    start, which end the piece before it."""
    if cutter is None:
        cutter = RunCutter(partition_chunks) if partition_chunks else None
    starts = [] if continues else [np.zeros(1, np.int64)]
    chunk_at, token_at, file_at = [[0]], [[0]], [[0]]
    chunks = tokens = in_file = a = 0
    while True:
        ids, lengths = spill.load_docs(work, unit, a, a + BLOCK_DOCS, ids=ids_to is not None)
        if not lengths.size:
            break
        if ids_to is not None:
            ids_to(a, ids, lengths)
        lengths = lengths.astype(np.int64)
        keep = None if drop is None else keep_mask(drop, a, lengths.size)
        counted = lengths if keep is None else np.where(keep, lengths, 0)
        c = -(-counted // seq_len)
        if cutter is not None:
            cuts = cutter.cut(c)
            if continues and a == 0 and cuts.size and cuts[0] == 0:
                starts.append(np.zeros(1, np.int64))  # a piece starts right at its start
            cuts = cuts[cuts + a > 0]  # the unit's start is counted from 0 anyway
            before = lambda x: np.concatenate([[0], np.cumsum(x)])[cuts]  # noqa: E731
            starts.append(a + cuts)
            chunk_at.append(chunks + before(c))
            token_at.append(tokens + before(counted))
            file_at.append(in_file + before(lengths))
        chunks, tokens, a = chunks + int(c.sum()), tokens + int(counted.sum()), a + lengths.size
        in_file += int(lengths.sum())
    starts = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    return (starts, np.diff(np.concatenate([*chunk_at, [chunks]])),
            np.diff(np.concatenate([*token_at, [tokens]])), np.concatenate(file_at))


def partition_layout(plan: RunPlan) -> dict:
    """The run's partitions (``partitions.json``), computed once: every unit's docs file is read
    in turn (one unit in memory at a time) for its chunk and token counts, and its ids for the
    duplicate check (``pipelines/duplicates.py``); when there are duplicates they are recorded,
    and the counts taken again without them. Partition p runs from document ``doc_bounds[p]``
    of unit ``unit_bounds[p]`` to just before document ``doc_bounds[p+1]`` of unit
    ``unit_bounds[p+1]`` (0: to the end of the unit before it); its first document starts at
    token ``token_in_unit[p]`` of its unit's tokens file."""
    path = as_path(plan.work) / PARTITIONS
    saved = read_json(path)
    if saved is not None and saved.get("fingerprint") == plan.fingerprint \
            and "duplicates" in saved:  # (a layout of an older version: no duplicate check)
        return saved
    for u in plan.units:
        if not spill.is_done(plan.work, u.index):
            raise FatalError(f"planning rows before every unit is tokenized (unit {u.index} has "
                             "no marker)")
    finder = DuplicateFinder()
    layout = _layout(plan, finder=finder)
    found = finder.found()
    if found.size:
        found = with_lengths(plan, found)
        record_duplicates(plan, found)  # or the run stops, under input.on_error=fail
        drop = np.stack([found["unit"], found["pos"]])
        layout = _layout(plan, drop=drop)
    layout["duplicates"] = {"documents": int(found.size), "tokens": int(found["length"].sum())}
    write_json(path, layout)
    return layout


def _layout(plan: RunPlan, finder=None, drop=None) -> dict:
    L, limit = plan.cfg.pack.seq_len, plan.cfg.pack.partition_chunks
    chunks = np.zeros(len(plan.units), dtype=np.int64)
    piece_unit, piece_doc, piece_chunks, piece_tokens, piece_at = [], [], [], [], []
    cutter = None
    for i, u in enumerate(plan.units):
        ids_to = None if finder is None else (
            lambda first, ids, lengths, i=i: finder.add(i, first, ids))
        goes_on = i > 0 and u.continues  # a later piece of a cut file: cut as one unit with it
        if not goes_on:
            cutter = RunCutter(limit) if limit else None
        starts, c, t, at = unit_pieces(plan.work, u.index, L, limit, ids_to,
                                       None if drop is None else of_unit(drop, i), cutter,
                                       goes_on)
        spill.drop_docs_copy()  # on a store: the unit's local copy, read block by block
        chunks[i] = int(c.sum())
        if c.size > starts.size:  # its first documents end the piece open before it
            last = next(j for j in reversed(range(len(piece_chunks))) if piece_chunks[j].size)
            piece_chunks[last][-1] += c[0]
            piece_tokens[last][-1] += t[0]
            c, t, at = c[1:], t[1:], at[1:]
        piece_unit.append(np.full(starts.size, i, np.int64))
        piece_doc.append(starts)
        piece_chunks.append(c)
        piece_tokens.append(t)
        piece_at.append(at)  # where each piece starts in the unit's tokens file
    cat = lambda xs: np.concatenate(xs).astype(np.int64) if xs else np.zeros(0, np.int64)  # noqa: E731
    pc = cat(piece_chunks)
    bounds, chunk_bounds = choose_partitions(pc, limit)
    unit_of = np.append(cat(piece_unit), len(plan.units))  # the end: (units, 0)
    doc_of = np.append(cat(piece_doc), 0)
    at_of = np.append(cat(piece_at), 0)
    token_base = np.concatenate([[0], np.cumsum(cat(piece_tokens))])[bounds]
    return {"fingerprint": plan.fingerprint, "unit_bounds": unit_of[bounds].tolist(),
            "doc_bounds": doc_of[bounds].tolist(), "token_in_unit": at_of[bounds].tolist(),
            "chunk_bounds": chunk_bounds,
            "token_bounds": [int(t) for t in token_base], "unit_chunks": chunks.tolist()}


def partition_items(layout: dict) -> list[tuple[int, tuple, int]]:
    """(p, span, tokens before the partition) of every partition; span = (first unit, its first
    document, end unit, its end document, where the first document starts in its unit's tokens
    file): see ``partition_layout``."""
    ub, tb = layout["unit_bounds"], layout["token_bounds"]
    db = layout.get("doc_bounds") or [0] * len(ub)  # a layout saved before units could split
    at = layout.get("token_in_unit") or [0] * len(ub)
    return [(p, (ub[p], db[p], ub[p + 1], db[p + 1], at[p]), tb[p]) for p in range(len(ub) - 1)]
