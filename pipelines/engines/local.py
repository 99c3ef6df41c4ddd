"""The local engine: each stage set up once in this process, all its items in one call.

So the tokenize stage streams every pending unit back to back on ``local.workers`` encoding
threads (the cores do not idle at file boundaries), and the write stage writes shards on a
thread per core (up to 8: zstd and the gather release the GIL).
"""
from __future__ import annotations

from pipelines import driver
from pipelines.unit_stream import usable_cores


class LocalEngine:
    def __init__(self, workers: int = 0):
        self.threads = {"tokenize": workers or usable_cores(), "write": min(usable_cores(), 8)}

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        return driver.map_in_turn(self.map, stages, items, progress)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, stage, items: list, report=None) -> list:
        return stage.setup(self.threads.get(stage.name, 1))(items, report) if items else []


def run(cfg, progress: bool = False, check: str = "size") -> dict:
    """Run (or resume, or recognize as finished) the job described by ``cfg``."""
    return driver.run(cfg, LocalEngine(cfg.local.workers), progress, check)
