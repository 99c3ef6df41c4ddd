"""``pipelines.run``: the library entry point, the same job as ``fewtrunc run``."""
from __future__ import annotations

import importlib
from typing import Sequence

from pipelines.config import load_run_config
from pipelines.errors import ConfigError


ENGINES = {  # engine name -> module with ``run(cfg, progress=...)``
    "local": "pipelines.engines.local",
    "ray": "pipelines.engines.ray_engine",
    "beam": "pipelines.engines.beam_engine",
}


def run(config=None, overrides: Sequence[str] = (), *, progress: bool = False,
        engine_args: Sequence[str] = ()) -> dict:
    """Run a job from a ``RunConfig``, a dict or a YAML path, plus dotted ``key=value`` overrides.

    Returns ``{"status": "complete" | "already complete", "manifest": {...}, "out": dir}``.
    Raises ``ConfigError`` before any work for a bad config or a missing input path.
    """
    cfg = load_run_config(config, overrides)
    engine = importlib.import_module(ENGINES[cfg.engine])  # RunConfig validates the name
    if engine_args and cfg.engine != "beam":
        raise ConfigError(f"unknown arguments {' '.join(engine_args)} (only engine=beam passes "
                          "extra --flags on, to Beam's PipelineOptions)")
    kwargs = {"engine_args": tuple(engine_args)} if engine_args else {}
    return engine.run(cfg, progress=progress, **kwargs)
