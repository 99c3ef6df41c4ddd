"""The engines by name: ``engine: NAME`` in a config -> (engine class, config class).

Each engine class is imported by its loader on first use, so naming the engines (``names()``:
the config's choices and help) imports none of them, and a run imports only its own (Ray and
Beam load only for their runs). Each config class registers itself from ``pipelines/config.py``
(``@engine_config("ray")`` on ``RayConfig``, the section ``RunConfig.ray``): this module imports
nothing of fewtrunc at load time and never the config, so the config may import it.

A new engine (Spark, Dask): its module (an ``engines.base.EngineBase``), a loader and a
``register`` line below, and its config class, decorated, as a section of ``RunConfig``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple


class EngineEntry(NamedTuple):
    load: Callable[[], type]  # imports and returns the engine class (``contracts.Engine``)
    flags: str = ""  # where extra command-line --flags go; "" = the engine takes none


_ENGINES: dict[str, EngineEntry] = {}
_CONFIGS: dict[str, type] = {}  # engine name -> its config class, as config.py registers them


def register(name: str, load: Callable[[], type], flags: str = "") -> None:
    """Add (or replace) the engine ``name``, whose class ``load()`` imports and returns."""
    _ENGINES[name] = EngineEntry(load, flags)


def engine_config(name: str):
    """A class decorator: the config class of engine ``name`` (its section of ``RunConfig``)."""
    def add(cls: type) -> type:
        _CONFIGS[name] = cls
        return cls
    return add


def names() -> tuple[str, ...]:
    """Every engine's name, in registration order."""
    return tuple(_ENGINES)


def engine_class(name: str) -> type:
    """The engine class of ``name`` (a ``KeyError`` for an unknown one: the config refuses
    those before a run asks)."""
    return _ENGINES[name].load()


def config_class(name: str) -> type:
    return _CONFIGS[name]


def flag_takers() -> dict[str, str]:
    """The engines that take extra --flags: name -> where the flags go."""
    return {n: e.flags for n, e in _ENGINES.items() if e.flags}


def _local() -> type:
    from pipelines.engines.local import LocalEngine

    return LocalEngine


def _ray() -> type:
    from pipelines.engines.ray_engine import RayEngine

    return RayEngine


def _beam() -> type:
    from pipelines.engines.beam_engine import BeamEngine

    return BeamEngine


register("local", _local)
register("ray", _ray)
register("beam", _beam, flags="Beam's PipelineOptions")
