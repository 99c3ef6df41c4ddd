"""The one place that sequences a run, whatever the engine:

    prepare (plan, lock, resume) -> tokenize pending units -> partition -> pack partitions
    -> number shards -> write shard ranges -> finalize (manifest last)

The middle ones are stages (``pipelines/stages.py``, ``pipelines/partitions.py``: a large corpus
is packed in partitions, so the driver holds per-unit and per-partition summaries only), each
stage's outputs the next one's items. An engine maps them: ``engine.run_stages(stages, items,
progress) -> timings``; local and Ray map one stage after the other (``map_in_turn``), Beam chains them in one pipeline. Results
are read back from the stages' markers, which are also what a resumed run skips by, and what
``MarkerProgress`` polls for the bars of an engine that reports nothing while it runs (Beam).
"""
from __future__ import annotations

import fnmatch
import json
import os
import threading
import time

from pipelines.errors import ConfigError, FatalError
from pipelines.finish import finalize_stats
from pipelines.output_lock import lock_output, release_output
from pipelines.resume import assess, resume
from pipelines.partitions import run_totals
from pipelines.partitions import stages as pack_stages
from pipelines.row_plan import unit_markers
from pipelines.run_plan import RunPlan, build_run_plan
from pipelines.shard_format import shard_name
from pipelines.stages import TokenizeUnits, keep_tokenizer, shard_marker
from pipelines.steps import spill
from pipelines.storage.paths import as_path
from pipelines.storage.urls import is_url


def prepare(cfg, check: str = "size"):
    """Validate everything before work starts; return (plan, tokenizer, manifest if complete).

    Takes the output directory's lock (released by ``finalize``, or ``release_output``). A
    finished run counts as complete only when every shard exists with its recorded size
    (``check="sha256"``: and hash); a damaged one is repaired from kept work files or refused.
    """
    from dataclasses import asdict

    from pipelines.storage import configure

    configure(**asdict(cfg.storage))  # before the plan lists inputs on a store
    plan, tokenize = build_run_plan(cfg)
    out = plan.out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {str(out)!r} exists and is not a directory")
    assess(plan)  # reads only: a run refused for what output.dir holds writes nothing
    created = _make_dirs(out)
    try:
        lock_output(out, plan.fingerprint)  # on a store: the first write, so a bucket that is
        # missing or read-only stops the run here, before any work
        try:
            return plan, tokenize, resume(plan, check)  # the same checks, holding the lock
        except BaseException:
            release_output(out)
            raise
    except BaseException:
        _remove_dirs(created)  # a refused run leaves no new (empty) directory behind
        raise


def _make_dirs(out) -> list[str]:
    """Create a local ``out`` and its missing parents; return those it created, deepest first
    (nothing on a store: a key's prefix needs no directory, and pyarrow's ``create_dir`` would
    write a zero-byte marker object)."""
    if is_url(out):
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
    return sorted(todo, key=lambda u: (-u.bytes, u.index))


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

    def __init__(self, progress: bool, total: int, desc: str, unit: str = "B", file=None):
        from tqdm import tqdm

        self.bar = tqdm(total=total or None, desc=desc, unit=unit, unit_scale=True,
                        unit_divisor=1000, disable=not progress, dynamic_ncols=True, leave=True,
                        file=file)
        self.docs = self.tokens = 0

    def set(self, n: int) -> None:
        self.bar.update(n - self.bar.n)

    def finish(self) -> None:
        """An open-ended bar (no total) ends at 100%: what it counted was all there was."""
        if self.bar.total is None:
            self.bar.total = self.bar.n
            self.bar.refresh()

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


class MarkerProgress:
    """A context manager for an engine that blocks until every stage is done (Beam): a daemon
    thread polls each stage's ``done_size(items, names)`` (its work done, from its markers, all
    stages from one listing per directory per poll) and shows one bar per stage, opened as the
    stage starts (the first at once, a later one when its count first moves). Only the first
    stage's items are known before the run: later stages count their markers, without a total
    until the end. A stage after a gather stage starting means the stages before are done."""

    LOCAL_S, URL_S = 0.5, 3.0  # seconds between polls (at least 5x the time a poll takes)

    def __init__(self, stages: list, items: list, progress: bool, file=None):
        self.progress, self.file, self.watched, barrier = progress, file, [], False
        for i, stage in enumerate(stages):
            barrier = barrier or stage.gather
            total, unit = stage.work_size(items if i == 0 else [])
            if unit is not None and hasattr(stage, "done_size"):
                self.watched.append({"stage": stage, "items": items if i == 0 else None,
                                     "total": total if i == 0 else None, "unit": unit,
                                     "after_gather": barrier, "bar": None, "done": False})
                barrier = False
        self.stop, self.thread, self.interval = threading.Event(), None, self.LOCAL_S

    def __enter__(self):
        if self.progress and self.watched:
            self.thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if self.thread is None:
            return
        self.stop.set()
        self.thread.join()
        try:
            if exc_type is None:  # the bars' final counts, at their ends
                self._poll(final=True)
        except Exception:  # noqa: BLE001 - a listing that failed costs the bars, never the run
            pass
        finally:
            for w in self.watched:
                if w["bar"] is not None:
                    w["bar"].__exit__()

    def _loop(self) -> None:
        while not self.stop.is_set():
            t = time.perf_counter()
            try:
                self._poll()
            except Exception:  # noqa: BLE001 - a store that fails a listing: the next poll
                pass
            self.stop.wait(max(self.interval, 5 * (time.perf_counter() - t)))

    def _names(self):
        """``names(dir, pattern)``: the names in ``dir`` matching ``pattern``; each directory
        listed once per poll."""
        listed: dict = {}

        def names(work, pattern: str) -> list[str]:
            path = as_path(work)
            key = str(path)
            if key not in listed:
                if is_url(key):
                    self.interval = self.URL_S
                    listed[key] = [p.name for p in path.glob("*")]
                else:
                    listed[key] = os.listdir(path) if path.is_dir() else []
            return fnmatch.filter(listed[key], pattern)
        return names

    def _poll(self, final: bool = False) -> None:
        names, watched = self._names(), self.watched
        done = [None if w["done"] else w["stage"].done_size(w["items"], names) for w in watched]
        last = len(watched) - 1 if final else max([i for i, d in enumerate(done) if d] + [0])
        for i, w in enumerate(watched):
            if i > last:
                break
            if w["bar"] is None:
                w["bar"] = Progress(True, w["total"], w["stage"].name, w["unit"], self.file)
            if done[i] is not None:
                w["bar"].set(done[i])
            # finished: its total reached, the end, or a stage after a barrier since started
            if final or (w["total"] is not None and done[i] is not None and done[i] >= w["total"]
                         ) or any(v["after_gather"] for v in watched[i + 1:last + 1]):
                w["bar"].finish()
                w["bar"].__exit__()  # closed as it ends, as ``map_in_turn`` closes its bars
                w["done"] = True
