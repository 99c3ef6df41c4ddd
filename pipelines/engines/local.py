"""The local engine: each stage set up once in this process, all its items in one call.

So the tokenize stage streams every pending unit back to back on ``local.workers`` encoding
threads (the cores do not idle at file boundaries), and the write stage writes as many shards at
once (zstd and the gather release the GIL); single-threaded stages get one thread.
"""
from __future__ import annotations

from pipelines.engines.base import StageByStage
from pipelines.unit_stream import usable_cores


class LocalEngine(StageByStage):
    def __init__(self, workers: int = 0):
        self.threads = workers or usable_cores()  # for the stages that declare ``threaded``

    @classmethod
    def from_config(cls, cfg, engine_args=()):
        return cls(cfg.local.workers)

    def map(self, stage, items: list, report=None) -> list:
        threads = self.threads if stage.threaded else 1
        return stage.setup(threads)(items, report) if items else []
