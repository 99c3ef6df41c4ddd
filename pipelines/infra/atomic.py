"""Publish a file only when it is complete, on a local disk or an object store.

Local disk: write it under a private temporary name beside its final one, then rename.

The one way every file fewtrunc writes (shards, spill files, markers, the manifest, the report,
checkpoints) becomes visible. The temporary name is private to the writer (pid and a random
suffix), so a retried attempt on another worker, while a presumed-dead one still runs, never
shares it; on an error it is removed, so nothing half-written is left under any name; with
``sync`` the data reaches the disk before the name does (a marker written after it then never
stands for a shorter file, even after a power loss). Temporaries are ``.NAME.tmp-*`` files, which
a resumed run removes.

Object stores (``s3://``, ``gs://``; any URL, see ``pipelines.infra.storage``) have no rename. The same
calls write the file under a private temporary name on this machine's scratch disk
(``tempfile.gettempdir()``, i.e. ``TMPDIR``) and then upload it to its final key in one request
(``pipelines.infra.storage.writing``): one PUT, or one multipart upload that the store completes only
after the last part. Until then no reader sees the key; a killed writer leaves at most an
incomplete multipart upload, which is never visible (a bucket lifecycle rule
``AbortIncompleteMultipartUpload`` reclaims its parts). No temporary ever exists on the store, so
attempts cannot collide there; a killed writer's scratch file is removed by the next worker that
sets up on the machine (``sweep_scratch``); two attempts that both finish write the same bytes to
the same key, and either one is the file.

Every other scratch file or folder fewtrunc makes is named ``fewtrunc-KIND-PID-RANDOM``
(``scratch_prefix`` of ``pipelines.infra.storage.scratch``, ``scratch_dir``: a writer's copies of spill
files, a Parquet input's local copy, ...), so the same sweep finds those of killed processes too.
A call returns only once the store has the object, so a marker published after it is never seen
before its data (S3 and GCS are read-after-write consistent).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from pipelines.infra.storage.scratch import SCRATCH_NAME, scratch_prefix
from pipelines.infra.storage.location import Location
from pipelines.infra.storage.writing import put_object, upload_file

TMP_GLOB = ".*.tmp-*"
# what fewtrunc publishes through local scratch: a run's files and work files, by name
_OURS = (r"(?:unit|shard|part)-\d+\..+|(?:docs|rows)\.\w+\.npy|run\.json|partitions\.json"
         r"|duplicates\.(?:npy|jsonl)|manifest\.json|stats\.json|config\.yaml|timings\.json"
         r"|rejects\.jsonl|report\.html|(?:lengths|truncation|fill|overhead)\.png")
_SCRATCH = re.compile(rf"\.(?:{_OURS})\.tmp-(\d+)-[0-9a-f]{{8}}(?:\.\w+)?|{SCRATCH_NAME}")


def scratch_dir(kind: str) -> str:
    """A new private folder on local scratch (``TMPDIR``), named by ``scratch_prefix``."""
    return tempfile.mkdtemp(prefix=scratch_prefix(kind))


def temp_name(path: str | Path, suffix: str = "") -> Path:
    """A private temporary name beside ``path`` (``suffix`` keeps an extension some writers need,
    e.g. ``.npy``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}{suffix}")


def sweep_scratch(min_age_s: float = 600.0) -> list[Path]:
    """Remove the scratch files and folders (in ``tempfile.gettempdir()``) of fewtrunc processes
    that died (a writer killed while spilling or writing a shard for a run on a store, an actor
    ended with its copies of spill files): ``temp_name``'s of fewtrunc's own file names and
    ``scratch_prefix``'s, only when the pid in the name is gone and they are at least
    ``min_age_s`` old. Returns what it removed."""
    gone, now = [], time.time()
    scratch = Path(tempfile.gettempdir())
    try:
        names = os.listdir(scratch)
    except OSError:
        return gone
    for name in names:
        m = _SCRATCH.fullmatch(name)
        if m is None or _alive(int(m.group(1) or m.group(2))):
            continue
        path = scratch / name
        try:
            st = path.lstat()
            if now - st.st_mtime < min_age_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            gone.append(path)
        except OSError:
            continue
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process: alive
        return True
    return True


def fsync_path(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, *, sync: bool = False, suffix: str = "") -> Iterator[Path]:
    """``with atomic_path(p) as tmp:`` write ``tmp`` completely; on leaving the block it becomes
    ``p`` (fsynced first with ``sync``); on an exception it is removed and ``p`` is untouched.

    ``p`` may be a URL: ``tmp`` is then a private file on local scratch, uploaded to ``p`` in one
    request when the block ends (``sync`` is implied: the store has the object when this returns).
    """
    where = Location.of(path)
    if where.uploads_whole:
        tmp = Path(tempfile.gettempdir()) / temp_name(str(path).rsplit("/", 1)[-1], suffix).name
        try:
            yield tmp
            publish_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    path = Path(where.local_path)
    tmp = temp_name(path, suffix)
    try:
        yield tmp
        if sync:
            fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def publish_file(src: str | Path, path: str | Path, *, sync: bool = False) -> None:
    """Make the complete local file ``src`` the file at ``path``: a rename on the same local disk
    (``src`` is gone afterwards), else one upload (``src`` stays; the caller removes it)."""
    where = Location.of(path)
    if not where.uploads_whole:
        if sync:
            fsync_path(src)
        os.replace(src, where.local_path)
        return
    upload_file(src, str(path))


def write_bytes(path: str | Path, data: bytes, *, sync: bool = False) -> None:
    if Location.of(path).uploads_whole:
        put_object(str(path), data)
        return
    with atomic_path(path, sync=sync) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, *, sync: bool = False) -> None:
    write_bytes(path, text.encode("utf-8"), sync=sync)


def write_json(path: str | Path, obj, *, sync: bool = False) -> None:
    """``obj`` as indented JSON with sorted keys (the same bytes for the same object)."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n", sync=sync)
