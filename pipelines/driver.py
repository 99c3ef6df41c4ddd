"""The one place that sequences a run, whatever the engine:

    prepare (plan, lock, resume) -> tokenize pending units -> partition -> pack partitions
    -> number shards -> write shard ranges -> finalize (manifest last)

The middle ones are stages (``pipelines/stages.py``, ``pipelines/partitions.py``: a large corpus
is packed in partitions, so the driver holds per-unit and per-partition summaries only), each
stage's outputs the next one's items. The engine it is handed (``pipelines.api`` builds it from
``pipelines/engines/registry.py``) maps them: ``engine.run_stages(stages, items, progress) ->
timings`` (``pipelines.contracts``: ``Stage``, ``Engine``). Results are read back from the
stages' markers, which are also what a resumed run skips by. The driver knows no engine and
draws no progress bar (``pipelines/progress.py``).
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack

from pipelines.contracts import Engine
from pipelines.infra.errors import ConfigError, FatalError
from pipelines.finish import finalize_stats
from pipelines.markers import SHARD, read_marker
from pipelines.output_lock import holding
from pipelines.resume import assess, resume
from pipelines.partitions import run_totals
from pipelines.partitions import stages as pack_stages
from pipelines.row_plan import unit_markers
from pipelines.run_plan import RunPlan, build_run_plan
from pipelines.infra.shard_format import shard_name
from pipelines.stages import TokenizeUnits, keep_tokenizer
from pipelines.steps import spill
from pipelines.infra.storage.location import Location


def prepare(cfg, lock: ExitStack, check: str = "size"):
    """Validate everything before work starts; return (plan, tokenizer, manifest if complete).

    Takes the output directory's lock into ``lock``, which the caller closes as the run ends. A
    finished run counts as complete only when every shard exists with its recorded size
    (``check="sha256"``: and hash); a damaged one is repaired from kept work files or refused.
    """
    return take_output(*plan_run(cfg), lock, check)


def plan_run(cfg):
    """The part of ``prepare`` that only reads: (plan, tokenizer), or the refusal."""
    from dataclasses import asdict

    from pipelines.infra.storage import configure

    configure(**asdict(cfg.storage))  # before the plan lists inputs on a store
    plan, tokenize = build_run_plan(cfg)
    out = plan.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {str(out)!r} exists and is not a directory")
    assess(plan)  # reads only: a run refused for what output.dir holds writes nothing
    return plan, tokenize


def take_output(plan: RunPlan, tokenize, lock: ExitStack, check: str = "size"):
    """The part of ``prepare`` that writes: the output directory, its lock (held in ``lock``),
    the resume."""
    out = plan.out
    created = _make_dirs(out)
    try:
        with ExitStack() as held:
            # on a store: the first write, so a missing or read-only bucket stops the run here
            held.enter_context(holding(out, plan.fingerprint))
            finished = resume(plan, check)  # the same checks, holding the lock
            lock.enter_context(held.pop_all())  # held on until the caller closes ``lock``
    except BaseException:
        _remove_dirs(created)  # a refused run leaves no new (empty) directory behind
        raise
    return plan, tokenize, finished


def _make_dirs(out) -> list[str]:
    """Create a local ``out`` and its missing parents; return those it created, deepest first
    (nothing on a store: a key's prefix needs no directory, and pyarrow's ``create_dir`` would
    write a zero-byte marker object)."""
    if not Location.of(out).has_directories:
        return []
    created, path = [], os.path.abspath(out)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(out, exist_ok=True)
    return created


def _remove_dirs(created: list[str]) -> None:
    """Remove the directories ``_make_dirs`` created, where they are still empty."""
    for path in created:
        try:
            os.rmdir(path)
        except OSError:
            return  # not empty (or gone): neither are its parents


def run(cfg, engine: Engine, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) ``cfg``, its stages run by ``engine`` (a
    context manager: it starts and stops its workers or cluster). An engine whose
    ``start_early`` is true is started while the run is planned (see ``start_preparing``)."""
    t0 = time.perf_counter()
    with ExitStack() as lock:  # the output lock: released as the run ends, however it ends
        with ExitStack() as running:
            if engine.start_early:
                plan, tokenize, finished = start_preparing(engine, running, lock, cfg, check)
            else:
                plan, tokenize, finished = prepare(cfg, lock, check)
            if finished is not None:
                return {"status": "already complete", "manifest": finished, "out": str(plan.out)}
            keep_tokenizer(tokenize)  # an in-process worker reuses it
            stages = [TokenizeUnits(plan), *pack_stages(plan)]  # pipelines/partitions.py
            t1 = time.perf_counter()
            if not engine.start_early:
                running.enter_context(engine)  # its start and stop count in engine_s
            todo = [u.index for u in pending_units(plan)]
            timings = engine.run_stages(stages, todo, progress)
        timings["prepare_s"], timings["engine_s"] = t1 - t0, time.perf_counter() - t1
        if tokenize.guard is not None and tokenize.guard.seconds:  # encoded in this process
            timings["guard_thread_s"] = tokenize.guard.seconds
        stats, n_rows, n_shards = run_totals(plan)  # merged from per-partition summaries
        shards = shard_entries(plan, n_shards)
        timings["total_s"] = time.perf_counter() - t0
        manifest = finalize_stats(plan, stats, n_rows, unit_markers(plan), shards, timings)
    return {"status": "complete", "manifest": manifest, "out": str(plan.out), "timings": timings}


def start_preparing(engine, running: ExitStack, lock: ExitStack, cfg, check: str):
    """``prepare`` with ``engine`` started (``running`` stops it) while the run is planned on a
    thread: joining a cluster, starting its workers or importing Beam take seconds that listing
    the inputs then hides. Nothing is written before both are done: an engine that fails to
    start (bad runner flags) leaves no output directory or lock behind; its error wins."""
    with ThreadPoolExecutor(1, thread_name_prefix="fewtrunc-plan") as pool:
        planning = pool.submit(plan_run, cfg)
        try:
            running.enter_context(engine)
        except BaseException:
            wait([planning])  # its own error, if any, is the engine's to hide
            raise
        plan, tokenize = planning.result()
    return take_output(plan, tokenize, lock, check)


def pending_units(plan: RunPlan) -> list:
    """Units without a marker, largest first (in input order among equals): the last unit a
    worker takes is a small one. The order has no effect on the output (a unit's own files)."""
    todo = [u for u in plan.units if not spill.is_done(plan.work, u.index)]
    return sorted(todo, key=lambda u: (-u.bytes, u.index))


def shard_entries(plan: RunPlan, n: int) -> list[dict]:
    """Every shard's marker (file, rows, tokens, bytes, sha256), after the write stage."""
    entries = []
    for k in range(n):
        entry = read_marker(plan.work, SHARD, k)
        if entry is None or not (plan.out / shard_name(k)).is_file():
            raise FatalError(f"the write stage left shard {k} without its file or marker")
        entries.append(entry)
    return entries
