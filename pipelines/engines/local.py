"""The local engine: every step on this machine's cores, no cluster.

Per unit, three things overlap: a reader thread reads and parses batch k+2, the tokenizer's own
threads encode batch k+1 (the GIL is released while they run), and the main thread turns batch k
into numpy and spills it. Shards are built and written by a thread pool (zstd and the gather
release the GIL). Progress bars show documents, tokens and MB/s.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pipelines.engines import common
from pipelines.faults import crash_point
from pipelines.steps import spill
from pipelines.steps.read import Reader

_END = object()


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


def tokenize_unit(ctx, unit, reader: Reader, bar=None) -> dict:
    """Read, tokenize and spill one unit; returns its completion marker."""
    tok = ctx.tokenize
    out = spill.UnitSpill(ctx.work, unit.index)
    with ThreadPoolExecutor(1) as pool:
        pending = None

        def drain(item):
            batch, future = item
            tb = tok.assemble(batch, future.result())
            out.add(tb)
            if bar is not None:
                bar.update(tb.bytes)
                bar.docs += tb.records
                bar.tokens += int(tb.lengths.sum())
                bar.set_postfix_str(f"{bar.docs:,} docs, {bar.tokens:,} tokens", refresh=False)

        for batch in prefetch(reader(unit)):
            item = (batch, pool.submit(tok.encode, batch.texts))
            if pending is not None:
                drain(pending)
            pending = item
        if pending is not None:
            drain(pending)
    marker = out.finish()
    crash_point("unit", unit.index)
    return marker


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
    for unit in todo:
        tokenize_unit(ctx, unit, reader, bar)
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
        with ThreadPoolExecutor(max(1, min(os.cpu_count() or 1, 8))) as pool:
            futures = [pool.submit(common.write_shard_job, ctx, rows, docs, store, k, a, b)
                       for k, (a, b) in enumerate(ranges)]
            shards = []
            for f in futures:
                shards.append(f.result())
                bar.update(1)
    finally:
        bar.close()
        store.close()
    timings["write_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    manifest = common.finalize(ctx, docs, rows, markers, shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(ctx.out), "timings": timings}
