"""The one place that sequences a run, whatever the engine:

    prepare (plan, lock, resume) -> tokenize pending units -> partition -> pack partitions
    -> number shards -> write shard ranges -> finalize (manifest last)

The middle ones are stages (``pipelines/stages.py``, ``pipelines/partitions.py``: a large corpus
is packed in partitions, so the driver holds per-unit and per-partition summaries only), each
stage's outputs the next one's items. An engine maps them: ``engine.run_stages(stages, items,
progress) -> timings``; local and Ray map one stage after the other (``map_in_turn``), Beam chains them in one pipeline. Results
are read back from the stages' markers, which are also what a resumed run skips by.
"""
from __future__ import annotations

import json
import time

from pipelines.errors import ConfigError, FatalError
from pipelines.finish import finalize_stats
from pipelines.output_lock import lock_output, release_output
from pipelines.resume import resume
from pipelines.partitions import run_totals
from pipelines.partitions import stages as pack_stages
from pipelines.row_plan import unit_markers
from pipelines.run_plan import RunPlan, build_run_plan
from pipelines.shard_format import shard_name
from pipelines.stages import TokenizeUnits, keep_tokenizer, shard_marker, unit_bytes
from pipelines.steps import spill


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
    lock_output(out, plan.fingerprint)  # on a store: the first write, so a bucket that is
    # missing or read-only stops the run here, before any work
    try:
        return plan, tokenize, resume(plan, check)
    except BaseException:
        release_output(out)
        raise


def run(cfg, engine, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg``, its stages run by ``engine`` (a
    context manager: it starts and stops its workers or cluster)."""
    t0 = time.perf_counter()
    plan, tokenize, finished = prepare(cfg, check)
    if finished is not None:
        return {"status": "already complete", "manifest": finished, "out": str(plan.out)}
    keep_tokenizer(tokenize)  # an in-process worker reuses it
    stages = [TokenizeUnits(plan), *pack_stages(plan)]  # pipelines/partitions.py
    with engine:
        todo = [u.index for u in pending_units(plan)]
        timings = engine.run_stages(stages, todo, progress)
    if tokenize.guard is not None and tokenize.guard.seconds:  # encoded in this process
        timings["guard_thread_s"] = tokenize.guard.seconds
    stats, n_rows, n_shards = run_totals(plan)  # merged from per-partition summaries
    shards = shard_entries(plan, n_shards)
    timings["total_s"] = time.perf_counter() - t0
    manifest = finalize_stats(plan, stats, n_rows, unit_markers(plan), shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(plan.out), "timings": timings}


def map_in_turn(map_stage, stages: list, items: list, progress: bool) -> dict:
    """Each stage over the items the stage before returned (a ``gather`` stage: one call on all
    of them), with a progress bar; returns ``{name}_s`` timings."""
    timings = {}
    for stage in stages:
        t = time.perf_counter()
        total, unit = stage.work_size(items)
        with Progress(progress and unit is not None, total, stage.name, unit or "") as bar:
            items = map_stage(stage, [items] if stage.gather else items, bar.add)
        timings[f"{stage.name}_s"] = time.perf_counter() - t
    return timings


def pending_units(plan: RunPlan) -> list:
    """Units without a marker, largest first (in input order among equals): the last unit a
    worker takes is a small one. The order has no effect on the output (a unit's own files)."""
    todo = [u for u in plan.units if not spill.is_done(plan.work, u.index)]
    return sorted(todo, key=lambda u: (-unit_bytes(u), u.index))


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
