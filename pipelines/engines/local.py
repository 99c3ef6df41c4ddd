"""The local engine: each stage set up once in this process, all its items in one call.

So the tokenize stage streams every pending unit back to back on ``local.workers`` encoding
threads (the cores do not idle at file boundaries), and the write stage writes as many shards at
once (zstd and the gather release the GIL); single-threaded stages get one thread.
"""
from __future__ import annotations

from pipelines import driver
from pipelines.unit_stream import usable_cores


class LocalEngine:
    def __init__(self, workers: int = 0):
        self.threads = workers or usable_cores()  # for the stages that declare ``threaded``

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        return driver.map_in_turn(self.map, stages, items, progress)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, stage, items: list, report=None) -> list:
        threads = self.threads if stage.threaded else 1
        return stage.setup(threads)(items, report) if items else []


def run(cfg, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) the job described by ``cfg``."""
    return driver.run(cfg, LocalEngine(cfg.local.workers), progress, check)
