"""Progress bars for a run's stages, whichever engine maps them.

``map_in_turn`` maps the stages one after the other with a bar per stage, fed by the engine's
``report`` as items finish (the local engine per batch, Ray per item). ``MarkerProgress`` is for
an engine that blocks until every stage is done (Beam runs them as one pipeline): it polls each
stage's ``done_size`` from the markers its items leave (``pipelines.contracts.Stage``).
"""
from __future__ import annotations

import fnmatch
import os
import threading
import time

from pipelines.infra.storage.paths import as_path
from pipelines.infra.storage.location import Location


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
            if unit is not None:  # a stage with a bar: its markers say how far it got
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
                if not Location.of(path).has_directories:
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
