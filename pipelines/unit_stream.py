"""Read -> tokenize -> spill whole units in one process: the tokenize stage's loop, on whatever
worker an engine runs it (the local process, a Ray actor, a Beam worker).

Three things overlap: a reader thread reads and parses the next batches, ``workers`` threads each
encode a whole batch (the tokenizer releases the GIL and runs on the calling thread), and the
calling thread turns the oldest encoded batch into numpy and spills it, in input order. Units
follow each other in the same stream, so the cores do not idle at file boundaries. The files are
the spill step's (``UnitSpill``): whoever runs this loop, the bytes are the same.
"""
from __future__ import annotations

import os
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.faults import crash_point
from pipelines.steps import spill
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import Tokenize, one_thread_per_call

_END = object()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity: a container's or taskset's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prefetch(iterator, depth: int = 2):
    """Run ``iterator`` in a thread, ``depth`` items ahead; its exceptions re-raise here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put(exc)

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _batches(units, reader: Reader):
    """Every unit's text batches in order, each unit closed by ``(unit, None)``."""
    for unit in units:
        for batch in reader(unit):
            yield unit, batch
        yield unit, None


def tokenize_units(work: Path, tok: Tokenize, units, reader: Reader, workers: int,
                   report=None) -> list[dict]:
    """Read, tokenize and spill ``units`` (in order) into ``work``; returns their markers.

    ``workers`` batches encode at once; with 1 the encoding of one batch still overlaps the
    reading of the next and the spilling of the last. ``report(bytes, documents, tokens)`` is
    called after each batch is spilled (a progress bar).
    """
    spills: dict[int, spill.UnitSpill] = {}
    markers = []
    shown: dict[int, list] = {}  # unit in progress -> [its size on disk, bytes reported]

    def progress(unit, nbytes: int | None, docs: int = 0, tokens: int = 0) -> None:
        """Report read bytes, counted against the unit's size on disk (what a bar's total
        adds up): a compressed unit reads more bytes than it holds, so it reports at most its
        size, and the rest of it when it ends (``nbytes`` None). A unit of unknown size (a
        Hugging Face dataset) reports what it reads."""
        seen = shown.setdefault(unit.index, [unit.bytes, 0])
        size, done = seen
        if nbytes is None:
            step = size - done
        else:
            step = min(nbytes, size - done) if size else nbytes
        seen[1] = done + step
        report(step, docs, tokens)

    def drain(unit, batch, future):
        out = spills.get(unit.index)
        if out is None:
            out = spills[unit.index] = spill.UnitSpill(work, unit.index)
        if batch is None:  # the unit's last batch is in: publish it
            markers.append(spills.pop(unit.index).finish())
            crash_point("unit", unit.index)
            if report is not None:
                progress(unit, None)
                shown.pop(unit.index, None)
            return
        tb = tok.assemble(batch, future.result())
        out.add(tb)
        if report is not None:
            progress(unit, tb.bytes, tb.records, int(tb.lengths.sum()))

    workers = max(1, workers)
    inflight: deque = deque()
    try:
        with one_thread_per_call(), ThreadPoolExecutor(workers) as pool:
            for unit, batch in prefetch(_batches(units, reader), depth=workers):
                future = None if batch is None else pool.submit(tok.encode, batch)
                inflight.append((unit, batch, future))
                # keep ``workers`` batches encoding; a unit's end is drained once it is oldest
                while inflight and (inflight[0][2] is None or len(inflight) > workers):
                    drain(*inflight.popleft())
            while inflight:
                drain(*inflight.popleft())
    finally:
        for out in spills.values():  # a failed unit leaves no temporary file behind
            out.abort()
    return markers
