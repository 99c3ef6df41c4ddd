"""The one place that sequences a run, whatever the engine:

    prepare (plan, lock, resume) -> tokenize pending units -> plan rows -> write shard ranges
    -> finalize (manifest last)

An engine only maps a stage over work items (``engine.map(stage, items, report)``); results are
read back from the stages' markers, which are also what a resumed run skips by.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipelines.errors import ConfigError, FatalError
from pipelines.finish import finalize
from pipelines.output_lock import lock_output, release_output
from pipelines.resume import resume
from pipelines.run_plan import RunPlan, build_run_plan
from pipelines.shard_format import list_shards, shard_name
from pipelines.stages import (TokenizeUnits, WriteShards, keep_tokenizer, save_row_plan,
                              shard_marker)
from pipelines.steps import spill
from pipelines.steps.pack import plan_rows
from pipelines.steps.write import DocTable, shard_ranges


def prepare(cfg, check: str = "size"):
    """Validate everything before work starts; return (plan, tokenizer, manifest if complete).

    Takes the output directory's lock (released by ``finalize``, or ``release_output``). A
    finished run counts as complete only when every shard exists with its recorded size
    (``check="sha256"``: and hash); a damaged one is repaired from kept work files or refused.
    """
    plan, tokenize = build_run_plan(cfg)
    out = plan.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    lock_output(out)
    try:
        return plan, tokenize, resume(plan, check)
    except BaseException:
        release_output(out)
        raise


def run(cfg, engine, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg``, mapping its stages with ``engine``
    (a context manager: it starts and stops its workers or cluster)."""
    t0 = time.perf_counter()
    plan, tokenize, finished = prepare(cfg, check)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(plan.out)}
    keep_tokenizer(tokenize)  # an in-process worker reuses it
    timings = {}
    with engine:
        todo = pending_units(plan)
        with Progress(progress, sum(_size(u) for u in todo), "tokenize") as bar:
            engine.map(TokenizeUnits(plan), [u.index for u in todo], bar.add)
        timings["tokenize_s"] = time.perf_counter() - t0
        if tokenize.guard is not None and tokenize.guard.seconds:  # encoded in this process
            timings["guard_thread_s"] = tokenize.guard.seconds
        t1 = time.perf_counter()
        docs, rows, markers = plan_all_rows(plan)
        save_row_plan(plan.work, docs, rows)
        timings["pack_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        ranges = plan_shards_and_remove_strays(plan, rows)
        with Progress(progress, len(ranges), "write", unit="shard") as bar:
            engine.map(WriteShards(plan), [(k, a, b) for k, (a, b) in enumerate(ranges)],
                       bar.add)
        shards = shard_entries(plan, len(ranges))
        timings["write_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    manifest = finalize(plan, docs, rows, markers, shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(plan.out), "timings": timings}


def _size(unit) -> int:
    return sum(s.size for s in unit.sources)


def pending_units(plan: RunPlan) -> list:
    """Units without a marker, largest first (in input order among equals): the last unit a
    worker takes is a small one. The order has no effect on the output (a unit's own files)."""
    todo = [u for u in plan.units if spill.load_marker(plan.work, u.index) is None]
    return sorted(todo, key=lambda u: (-_size(u), u.index))


def plan_all_rows(plan: RunPlan):
    """Split + pack every accepted document's length (after every unit is tokenized)."""
    markers = [spill.load_marker(plan.work, u.index) for u in plan.units]
    missing = [u.index for u, m in zip(plan.units, markers) if m is None]
    if missing:
        raise FatalError(f"planning rows before every unit is tokenized (units {missing[:10]} "
                         "have no marker)")
    docs = DocTable.from_units([spill.load_docs(plan.work, u.index) for u in plan.units])
    rows = plan_rows(docs.length, plan.cfg.pack)
    if int(rows.seg_len.sum()) != int(docs.length.sum()):
        raise FatalError("the row plan does not hold every token of the accepted documents")
    return docs, rows, markers


def plan_shards_and_remove_strays(plan: RunPlan, rows) -> list[tuple[int, int]]:
    """The row range of every shard; shard files beyond them (an earlier, larger plan's) go."""
    ranges = shard_ranges(rows.n_rows, plan.cfg.output.rows_per_shard)
    planned = {shard_name(k) for k in range(len(ranges))}
    for extra in list_shards(plan.out):  # only inside a known run (prepare refuses others)
        if extra.name not in planned:
            extra.unlink()
    return ranges


def shard_entries(plan: RunPlan, n: int) -> list[dict]:
    """Every shard's marker (file, rows, tokens, bytes, sha256), after the write stage."""
    entries = []
    for k in range(n):
        marker = shard_marker(plan.work, k)
        if not marker.is_file() or not (plan.out / shard_name(k)).is_file():
            raise FatalError(f"the write stage left shard {k} without its file or marker")
        entries.append(json.loads(marker.read_text()))
    return entries


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

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
