"""The two contracts of a run: a ``Stage`` (what workers run) and an ``Engine`` (what maps the
stages over their items). The driver (``pipelines/driver.py``) holds the sequence and knows
neither a stage's internals nor an engine's; engines (``pipelines/engines/``) know no stage by
name. ``problems`` checks a class against a protocol (``test_engines_contracts.py`` does, for
every stage and engine).

A stage is a frozen, picklable config (the run plan and nothing that holds a process's state):
an engine ships it to any worker, calls ``setup`` once there, then the call on items. Its
results live in marker files, not in what the call returns, so no engine carries results back
and a resumed run skips by them: ``marker`` names them, ``done_size`` reads them for a progress
bar while an engine that reports nothing runs (``pipelines.progress.MarkerProgress``).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol, runtime_checkable

Names = Callable[[Any, str], list]  # names(dir, glob): the file names in dir matching glob


@runtime_checkable
class Stage(Protocol):
    name: str  # its key in timings.json (``{name}_s``) and its progress bar
    gather: bool  # one call on the list of every output of the stage before (a barrier)
    threaded: bool  # its call keeps several threads busy: give it the worker's cores, else 1
    marker: str | None  # the kind of marker its items leave (``pipelines.markers``); None: none

    def work_size(self, items: list) -> tuple[int, str | None]:
        """(total, unit) of these items for a progress bar; unit None: the stage has no bar."""

    def done_size(self, items: list | None, names: Names) -> int:
        """Its work done so far, in ``work_size``'s unit, read from its markers with ``names``
        (one listing per poll); ``items`` None for a stage whose items are not known yet. Asked
        only of a stage with a bar."""

    def setup(self, threads: int) -> Callable[..., list]:
        """Once per worker: load what the items need, and return ``call(items, report=None)``,
        which does them (``report(n, docs=0, tokens=0)`` as work finishes) and returns the
        next stage's items."""


@runtime_checkable
class Engine(Protocol):
    """Maps stages over items. A context manager: entering starts its workers (or joins a
    cluster), leaving stops them, whatever happened."""

    start_early: bool  # started while the driver plans the run (nothing written until both end)

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc) -> None: ...

    def run_stages(self, stages: list[Stage], items: list, progress: bool) -> dict:
        """Every stage in turn, each over the outputs of the one before (a ``gather`` stage:
        one call on all of them); the first over ``items``. Returns timings for timings.json."""


@runtime_checkable
class StageMapper(Engine, Protocol):
    """An engine that maps one stage at a time (local, Ray); ``run_stages`` is then
    ``progress.map_in_turn(self.map, ...)``. Beam chains every stage in one pipeline instead:
    a pipeline per stage would start every worker process again (~3 s each)."""

    def map(self, stage: Stage, items: list, report=None) -> list:
        """The stage over ``items`` (for a gather stage: one item, the list); its outputs."""


def problems(cls: type, protocol: type) -> list[str]:
    """What the class ``cls`` lacks of ``protocol``: members missing, attributes of the wrong
    type, methods whose parameters differ. Empty when it conforms (what the test asserts)."""
    found = []
    bases = [b for b in reversed(protocol.__mro__) if b.__module__ == __name__]
    hints = {k: v for base in bases for k, v in getattr(base, "__annotations__", {}).items()}
    methods = {k: v for base in bases for k, v in vars(base).items() if callable(v) and (
        not k.startswith("_") or k in ("__enter__", "__exit__"))}
    for name, hint in hints.items():
        if not hasattr(cls, name):
            found.append(f"{cls.__name__}.{name} is missing")
        elif "bool" == hint and not isinstance(getattr(cls, name), bool):
            found.append(f"{cls.__name__}.{name} is not a bool")
        elif hint.startswith("str") and not isinstance(getattr(cls, name), str) and not (
                "None" in hint and getattr(cls, name) is None):
            found.append(f"{cls.__name__}.{name} is not {hint}")
    for name, want in methods.items():
        have = getattr(cls, name, None)
        if not callable(have):
            found.append(f"{cls.__name__}.{name}() is missing")
        elif list(inspect.signature(have).parameters) != list(
                inspect.signature(want).parameters):
            found.append(f"{cls.__name__}.{name}{inspect.signature(have)} is not "
                         f"{name}{inspect.signature(want)}")
    return found
