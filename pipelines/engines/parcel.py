"""A stage goes to a worker as a *shell* (the stage without its run plan: a few bytes) and a
*parcel* (the plan, pickled and compressed once per run), which a worker opens once and keeps.

The plan holds every input source: for a tree of 55k files it pickles to ~10 MB and costs ~0.12
CPU-s to unpickle. Inside every stage it was paid per item on Ray (an actor call unpickles its
ObjectRef arguments on every call: ~270 write calls of a 1 GB corpus, ~30 CPU-s) and per stage
on Beam (its pickler bz2-compresses each DoFn at level 9: ~1 s of the driver per stage before
any worker starts, then once more per worker to open it). Now the plan is pickled once (zlib
level 1: 10 MB -> 0.9 MB in ~50 ms) and opened once per worker process, whatever the number of
stages and items. A stage is split only when it is a dataclass with a ``plan`` field (every
stage of ``pipelines/stages.py`` and ``pipelines/partitions.py``); any other goes whole.
"""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import threading
import zlib
from typing import Callable, NamedTuple

_LOCK = threading.Lock()
_PACKED: list = []  # [(plan, Parcel)]: the plans this process packed last (the driver's)
_OPENED: dict = {}  # parcel key -> plan: the plans this worker opened last
KEEP = 2  # plans kept on each side (a worker serves one run at a time)


class Parcel(NamedTuple):
    key: str  # sha256 of ``blob``: the same plan, the same key, on every worker
    blob: bytes  # zlib(pickle(plan))


def split(stage) -> tuple[object, Parcel | None]:
    """(the stage without its plan, the plan's parcel), or (the stage, None) when it has none."""
    plan = getattr(stage, "plan", None)
    if plan is None or not dataclasses.is_dataclass(stage):
        return stage, None
    return dataclasses.replace(stage, plan=None), pack(plan)


def pack(plan) -> Parcel:
    """The plan's parcel, made once per plan object in this process."""
    with _LOCK:
        for packed, parcel in _PACKED:
            if packed is plan:
                return parcel
    parcel = from_blob(zlib.compress(pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL), 1))
    with _LOCK:
        _PACKED[:] = [(plan, parcel), *_PACKED[: KEEP - 1]]
    return parcel


def from_blob(blob: bytes) -> Parcel:
    """A parcel from its bytes alone (as a Beam side input carries it)."""
    return Parcel(hashlib.sha256(blob).hexdigest(), blob)


def from_file(path: str) -> Parcel:
    """A parcel from the file its bytes were written to (``beam_direct.parcel_file``)."""
    with open(path, "rb") as f:
        return from_blob(f.read())


def join(shell, key: str | None, fetch: Callable[[], Parcel] | None = None):
    """The whole stage again: ``shell`` with the plan of parcel ``key`` (opened once per
    process; ``fetch()`` gives the parcel when this process has not opened it yet)."""
    if key is None:
        return shell
    with _LOCK:  # a worker in the driver's own process (Beam in_memory) finds the driver's plan
        plan = _OPENED.get(key) or next((p for p, c in _PACKED if c.key == key), None)
    if plan is None:
        parcel = fetch()
        if parcel.key != key:
            raise ValueError("internal: a stage's plan parcel does not match its key")
        plan = pickle.loads(zlib.decompress(parcel.blob))
        with _LOCK:
            for old in list(_OPENED)[: max(0, len(_OPENED) - KEEP + 1)]:
                del _OPENED[old]
            _OPENED[key] = plan
    return dataclasses.replace(shell, plan=plan)
