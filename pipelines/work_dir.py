"""What of an ``output.dir/_work/`` is fewtrunc's: the run record, and the files a run writes.

A ``_work/`` counts as a run's only when it holds the run record (``run.json`` with a
``run_fingerprint``): any other ``_work/`` (a user's folder that happens to have that name) is
foreign, and the run refuses the directory (``pipelines/resume.py``). At the end of a run, only
the entries whose names follow the patterns below are removed, the record last (so that a run
killed while removing still finds the record of what is left); anything else stays where it is
and the run says so in one line.
"""
from __future__ import annotations

import json
import logging
import os
import re

from pipelines.markers import NAME_PATTERN as MARKER
from pipelines.infra.storage.location import Location

RECORD = "run.json"
_D = r"\d{5,}"
_TOP = "|".join((  # file names right in the work directory
    r"run\.json|partitions\.json|duplicates\.npy|duplicates\.jsonl",
    rf"unit-{_D}\.(?:tokens|tokens16|docs\.npy)",  # spill files
    MARKER,  # completion markers: units, partition summaries, shards
))
_PLAN = r"(?:docs|rows)\.\w+\.npy"  # a row plan's arrays, in ``part-P/plan/`` (older: ``plan/``)
_TMP = r"\.tmp-\d+-[0-9a-f]{8}(?:\.\w+)?"  # ``pipelines.infra.atomic.temp_name``'s suffix
# a temporary a killed writer left beside its final name: ``.NAME.tmp-PID-RANDOM``
TEMPORARY = re.compile(rf"\.[^/]+{_TMP}")
# what a run writes below its work directory (a name relative to it), temporaries included
WORK_FILE = re.compile(rf"(?:{_TOP})|\.(?:{_TOP}){_TMP}"
                       rf"|(?:part-{_D}/)?plan/(?:{_PLAN}|\.{_PLAN}{_TMP})")
_RECORD_TMP = re.compile(rf"\.run\.json{_TMP}")


def has_record(work) -> bool:
    """Whether ``work`` holds a fewtrunc run record (``run.json`` naming a fingerprint)."""
    from pipelines.infra.storage.paths import as_path

    path = as_path(work) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and isinstance(record.get("run_fingerprint"), str)


def unrecorded(work) -> list[str]:
    """The files of a ``work`` that holds no run record, but a temporary of one (a run killed
    while writing its record wrote nothing else): what makes it someone else's folder."""
    return [e for e in work_entries(work) if not _RECORD_TMP.fullmatch(e)]


def work_entries(work) -> list[str]:
    """Every file below ``work``, as paths relative to it with ``/``, sorted."""
    from pipelines.infra.storage.listing import _listing, list_files

    where = Location.of(work)
    if not where.has_directories:
        return [rel for _, rel, st in _listing(str(work), True) if not st.is_dir]
    base = where.local_path
    return sorted(os.path.relpath(path, base).replace(os.sep, "/")
                  for path, _ in list_files(base))


def remove_work(work) -> list[str]:
    """Remove what fewtrunc wrote in ``work`` (nothing when it holds no run record); return what
    is left there, which the run reports in one line."""
    from pipelines.infra.storage.deleting import remove_objects
    from pipelines.infra.storage.urls import join

    where = Location.of(work)
    if where.has_directories and not os.path.isdir(where.local_path):
        return []
    entries = work_entries(work)
    if not entries or not has_record(work):
        kept = entries  # not a run's: nothing of it is touched
    else:
        ours = [e for e in entries if WORK_FILE.fullmatch(e) and e != RECORD]
        kept = [e for e in entries if not WORK_FILE.fullmatch(e)]
        remove_objects([join(work, e) for e in ours])
        remove_objects([join(work, RECORD)])  # last: it says the rest was this run's
        if where.has_directories:
            _remove_empty_dirs(where.local_path)
    if kept:
        shown = ", ".join(kept[:3]) + (", …" if len(kept) > 3 else "")
        logging.getLogger(__name__).warning(
            "%s: left %d file%s that fewtrunc did not write (%s)", work, len(kept),
            "" if len(kept) == 1 else "s", shown)
    return kept


_DIRS = re.compile(rf"(?:part-{_D}/)?plan|part-{_D}")  # the directories a run makes in it


def _remove_empty_dirs(root: str) -> None:
    """``root`` and the directories a run made below it, where they are empty now (deepest
    first; an empty folder of someone else's stays)."""
    for dirpath, _, _ in os.walk(root, topdown=False):
        rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
        if rel == "." or _DIRS.fullmatch(rel):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass  # not empty: something was kept
