"""Engine-agnostic steps of the fewtrunc pipeline, the engines that run them, and the CLI.

``pipelines.run(config, overrides)`` runs a job from Python (see ``pipelines.api``).
"""


def run(config=None, overrides=(), *, progress: bool = False, engine_args=(),
        check: str = "size") -> dict:
    from pipelines.api import run as _run

    return _run(config, overrides, progress=progress, engine_args=engine_args, check=check)
