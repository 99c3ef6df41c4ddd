"""The local engine: every step on this machine's cores, no cluster.

Three things overlap: a reader thread reads and parses the next batches, ``local.workers``
threads each encode a whole batch (the tokenizer releases the GIL and runs on the calling thread),
and the main thread turns the oldest encoded batch into numpy and spills it, in input order;
units (input files) follow each other in the same stream. Shards are built and written by a
thread pool (zstd and the gather release the GIL). Progress bars show documents, tokens and MB/s.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from pipelines.engines import common
from pipelines.faults import crash_point
from pipelines.steps import spill
from pipelines.steps.read import Reader
from pipelines.steps.tokenize import one_thread_per_call

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


def tokenize_units(ctx, units, reader: Reader, bar=None) -> list[dict]:
    """Read, tokenize and spill ``units``; returns their completion markers.

    Units stream back to back: the next unit is read and encoded while the last batches of the
    previous one are assembled, so the cores do not idle at file boundaries.
    """
    tok = ctx.tokenize
    spills: dict[int, spill.UnitSpill] = {}
    markers = []

    def drain(unit, batch, future):
        out = spills.get(unit.index)
        if out is None:
            out = spills[unit.index] = spill.UnitSpill(ctx.work, unit.index)
        if batch is None:  # the unit's last batch is in: publish it
            markers.append(spills.pop(unit.index).finish())
            crash_point("unit", unit.index)
            return
        tb = tok.assemble(batch, future.result())
        out.add(tb)
        if bar is not None:
            bar.update(tb.bytes)
            bar.docs += tb.records
            bar.tokens += int(tb.lengths.sum())
            bar.set_postfix_str(f"{bar.docs:,} docs, {bar.tokens:,} tokens", refresh=False)

    workers = ctx.cfg.local.workers or usable_cores()
    inflight: deque = deque()
    with one_thread_per_call(), ThreadPoolExecutor(workers) as pool:
        for unit, batch in prefetch(_batches(units, reader), depth=workers):
            future = None if batch is None else pool.submit(tok.encode, batch.texts)
            inflight.append((unit, batch, future))
            # keep ``workers`` batches encoding; a unit's end marker is drained once it is oldest
            while inflight and (inflight[0][2] is None or len(inflight) > workers):
                drain(*inflight.popleft())
        while inflight:
            drain(*inflight.popleft())
    return markers


def _bar(progress: bool, total: int, desc: str, unit: str = "B"):
    from tqdm import tqdm

    bar = tqdm(total=total or None, desc=desc, unit=unit, unit_scale=True, unit_divisor=1000,
               disable=not progress, dynamic_ncols=True, leave=True)
    bar.docs = bar.tokens = 0
    return bar


def run(cfg, progress: bool = False) -> dict:
    """Run (or resume, or recognize as finished) the job described by ``cfg``."""
    t0 = time.perf_counter()
    ctx, finished = common.prepare(cfg)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(ctx.out)}
    timings = {}
    todo = common.pending_units(ctx)
    reader = Reader(cfg.input, cfg.tokenizer.batch_bytes)
    total = sum(s.size for u in todo for s in u.sources)
    bar = _bar(progress, total, "tokenize")
    tokenize_units(ctx, todo, reader, bar)
    bar.close()
    timings["tokenize_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    docs, rows, markers = common.plan(ctx)
    timings["pack_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    ranges = common.shard_plan(ctx, rows)
    store = spill.SpillStore(ctx.work, len(ctx.units))
    bar = _bar(progress, len(ranges), "write", unit="shard")
    try:
        with ThreadPoolExecutor(min(usable_cores(), 8)) as pool:
            futures = [pool.submit(common.write_shard_job, ctx, rows, docs, store, k, a, b)
                       for k, (a, b) in enumerate(ranges)]
            shards = []
            for f in futures:
                shards.append(f.result())
                bar.update(1)
    finally:
        bar.close()
    timings["write_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    manifest = common.finalize(ctx, docs, rows, markers, shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(ctx.out), "timings": timings}
