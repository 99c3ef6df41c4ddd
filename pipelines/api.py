"""``pipelines.run``: the library entry point, the same job as ``fewtrunc run``."""
from __future__ import annotations

from typing import Sequence

from pipelines.config import load_run_config


def run(config=None, overrides: Sequence[str] = (), *, progress: bool = False) -> dict:
    """Run a job from a ``RunConfig``, a dict or a YAML path, plus dotted ``key=value`` overrides.

    Returns ``{"status": "complete" | "already complete", "manifest": {...}, "out": dir}``.
    Raises ``ConfigError`` before any work for a bad config or a missing input path.
    """
    cfg = load_run_config(config, overrides)
    if cfg.engine == "local":
        from pipelines.engines import local

        return local.run(cfg, progress=progress)
    raise AssertionError(f"unhandled engine {cfg.engine!r}")  # RunConfig validates engines
