"""Publish a file only when it is complete: write it under a private temporary name beside its
final one, then rename.

The one way every file fewtrunc writes (shards, spill files, markers, the manifest, the report,
checkpoints) becomes visible. The temporary name is private to the writer (pid and a random
suffix), so a retried attempt on another worker, while a presumed-dead one still runs, never
shares it; on an error it is removed, so nothing half-written is left under any name; with
``sync`` the data reaches the disk before the name does (a marker written after it then never
stands for a shorter file, even after a power loss). Temporaries are ``.NAME.tmp-*`` files, which
a resumed run removes.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_GLOB = ".*.tmp-*"


def temp_name(path: str | Path, suffix: str = "") -> Path:
    """A private temporary name beside ``path`` (``suffix`` keeps an extension some writers need,
    e.g. ``.npy``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}{suffix}")


def fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, sync: bool = False, suffix: str = "") -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp`` completely; on leaving the block it becomes
    ``p`` (fsynced first with ``sync``); on an exception it is removed and ``p`` is untouched."""
    path = Path(path)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        if sync:
            fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_text(path: str | Path, text: str, *, sync: bool = False) -> None:
    with atomic_path(path, sync=sync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj, *, sync: bool = False) -> None:
    """``obj`` as indented JSON with sorted keys (the same bytes for the same object)."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", sync=sync)
