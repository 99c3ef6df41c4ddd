"""What every engine shares: how ``pipelines.api`` builds one from the config, and the defaults of
``pipelines.contracts.Engine``. A new engine subclasses ``EngineBase`` (or ``StageByStage`` when
it maps one stage at a time), adds a line to ``registry.py`` and its config section to
``pipelines/config.py``; it never imports the driver (the driver is handed the engine).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager

from pipelines.progress import map_in_turn


class EngineBase(ABC):
    start_early = False  # True: started while the driver plans the run (``driver.run``)

    @classmethod
    @abstractmethod
    def from_config(cls, cfg, engine_args=()):
        """The engine of ``cfg`` (its own section: ``cfg.local``, ``cfg.ray``, ...)."""

    @classmethod
    @contextmanager
    def session(cls, cfg, engine_args=()):
        """The engine for one run, around the whole run (the driver's too): for what must wrap
        it, such as Beam's scratch log for its workers' stderr."""
        yield cls.from_config(cfg, engine_args)

    @classmethod
    def submit(cls, cfg) -> dict | None:
        """The run's result when this engine runs it elsewhere, driver included (a Ray job
        submitted to a dashboard URL); None: the driver runs here (``session``)."""
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    @abstractmethod
    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        """Every stage in turn over the items (``pipelines.contracts.Engine``); timings."""


class StageByStage(EngineBase):
    """An engine that maps one stage at a time with ``map(stage, items, report)``: each stage
    over the outputs of the one before, with a progress bar each."""

    def run_stages(self, stages: list, items: list, progress: bool) -> dict:
        return map_in_turn(self.map, stages, items, progress)

    @abstractmethod
    def map(self, stage, items: list, report=None) -> list:
        """The stage over ``items`` (a gather stage: one item, the list); its outputs."""
