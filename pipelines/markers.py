"""Completion markers: the small JSON file a stage writes last for each item it has finished, in
the run's work directory. A marker stands for files written before it (publishing is atomic, so
it never stands for a half-written one); a resumed run skips the items that have one, the driver
reads results from them (no engine carries results back), and progress bars count them.

    unit-U.done.json    a unit's counts and rejects, after its spill files  (``steps/spill.py``)
    part-P.done.json    a partition's summary, after its row plan           (``partitions.py``)
    shard-K.done.json   a shard's entry of the manifest, after the shard    (``stages.py``)

This module alone names, writes and reads them: the rest of fewtrunc says which kind and which
item, never the file name.
"""
from __future__ import annotations

import json

from pipelines.infra.atomic import write_json
from pipelines.infra.storage.paths import as_path

UNIT, PART, SHARD = "unit", "part", "shard"
KINDS = (UNIT, PART, SHARD)
SUFFIX = ".done.json"
# every marker's name, as a regular expression (what of a work directory is fewtrunc's)
NAME_PATTERN = rf"(?:{'|'.join(KINDS)})-\d{{5,}}\.done\.json"


def marker_name(kind: str, index: int) -> str:
    """``unit-00007.done.json``: item ``index``'s marker (indices zero-padded to 5 digits, so
    sorted names are in item order)."""
    return f"{kind}-{index:05d}{SUFFIX}"


def marker_glob(kind: str) -> str:
    """The glob pattern of every marker of ``kind`` (``unit-*.done.json``)."""
    return f"{kind}-*{SUFFIX}"


def marker_path(work, kind: str, index: int):
    """The marker of item ``index`` in ``work`` (a ``Path``, or a ``UrlPath`` on a store)."""
    return as_path(work) / marker_name(kind, index)


def write_marker(work, kind: str, index: int, content: dict, *, sync: bool = False) -> None:
    """Publish item ``index``'s marker (JSON, sorted keys: the same bytes for the same content);
    ``sync``: on the disk before this returns (``pipelines.infra.atomic``)."""
    write_json(marker_path(work, kind, index), content, sync=sync)


def has_marker(work, kind: str, index: int) -> bool:
    """Whether item ``index`` is done (without reading its marker: a unit's carries its
    rejects)."""
    return marker_path(work, kind, index).is_file()


def read_marker(work, kind: str, index: int) -> dict | None:
    """Item ``index``'s marker; None when it has none."""
    path = marker_path(work, kind, index)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def count_markers(work, kind: str, names) -> int:
    """For a progress bar polled while an engine runs (a stage's ``done_size``): how many items
    of ``kind`` are done, from ``names(dir, pattern)`` (the file names in ``dir`` that match,
    one listing per poll)."""
    return len(names(work, marker_glob(kind)))


def done_among(work, kind: str, indices, names) -> list:
    """The items of ``indices`` whose marker ``names(dir, pattern)`` lists (as above)."""
    there = set(names(work, marker_glob(kind)))
    return [i for i in indices if marker_name(kind, i) in there]


def remove_markers(work, kind: str) -> None:
    """Remove every marker of ``kind`` in ``work`` (their items are to be done again)."""
    for path in as_path(work).glob(marker_glob(kind)):
        path.unlink()
