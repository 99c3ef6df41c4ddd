"""The local engine: every step on this machine's cores, no cluster.

Units stream through ``unit_stream.tokenize_units`` with ``local.workers`` encoding threads (a
reader thread ahead of them, spilling in input order behind them). Shards are built and written
by a thread pool (zstd and the gather release the GIL). Progress bars show documents, tokens and
MB/s.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from pipelines.engines import common
from pipelines.engines.unit_stream import tokenize_units, usable_cores
from pipelines.steps import spill
from pipelines.steps.read import Reader


class Progress:
    """A tqdm bar (bytes or shards) with the documents and tokens done so far beside it."""

    def __init__(self, progress: bool, total: int, desc: str, unit: str = "B"):
        from tqdm import tqdm

        self.bar = tqdm(total=total or None, desc=desc, unit=unit, unit_scale=True,
                        unit_divisor=1000, disable=not progress, dynamic_ncols=True, leave=True)
        self.docs = self.tokens = 0

    def add(self, n: int, docs: int = 0, tokens: int = 0) -> None:
        self.bar.update(n)
        if docs or tokens:
            self.docs += docs
            self.tokens += tokens
            self.bar.set_postfix_str(f"{self.docs:,} docs, {self.tokens:,} tokens", refresh=False)

    def close(self) -> None:
        self.bar.close()


def run(cfg, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) the job described by ``cfg``."""
    t0 = time.perf_counter()
    ctx, finished = common.prepare(cfg, check)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(ctx.out)}
    timings = {}
    todo = common.pending_units(ctx)
    reader = Reader(cfg.input, cfg.tokenizer.batch_bytes)
    total = sum(s.size for u in todo for s in u.sources)
    bar = Progress(progress, total, "tokenize")
    tokenize_units(ctx.work, ctx.tokenize, todo, reader, cfg.local.workers or usable_cores(), bar)
    bar.close()
    timings["tokenize_s"] = time.perf_counter() - t0
    if ctx.tokenize.guard is not None:  # CPU seconds re-encoding the guard's sample
        timings["guard_thread_s"] = ctx.tokenize.guard.seconds

    t1 = time.perf_counter()
    docs, rows, markers = common.plan(ctx)
    timings["pack_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    ranges = common.plan_shards_and_remove_strays(ctx, rows)
    store = spill.SpillStore(ctx.work, len(ctx.units))
    bar = Progress(progress, len(ranges), "write", unit="shard")
    try:
        with ThreadPoolExecutor(min(usable_cores(), 8)) as pool:
            futures = [pool.submit(common.write_shard_job, ctx, rows, docs, store, k, a, b)
                       for k, (a, b) in enumerate(ranges)]
            shards = []
            for f in futures:
                shards.append(f.result())
                bar.add(1)
    finally:
        bar.close()
    timings["write_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    manifest = common.finalize(ctx, docs, rows, markers, shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(ctx.out), "timings": timings}
