"""Stat, list and glob on local paths and URLs: listings are sorted, so every engine and every
attempt sees the inputs and markers in the same order (deleting is ``deleting.py``)."""
from __future__ import annotations

import fnmatch
import glob as _glob
import os
import stat as _st
from typing import NamedTuple

from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage.filesystems import resolve
from pipelines.infra.storage.guard import check_bucket, guarded
from pipelines.infra.storage.urls import is_url, local_path

_GLOB_CHARS = set("*?[")


class FileStat(NamedTuple):
    size: int
    mtime_ns: int  # modification time (an object's last write); 0 when the store has none
    is_dir: bool = False  # a directory, or a prefix that other objects' keys continue


def stat(path) -> FileStat | None:
    """Size and mtime of a file or object, ``is_dir`` for a directory or prefix; None when there
    is nothing at ``path``. Raises ``StorageError`` for a missing bucket, denied access or an
    unreachable endpoint."""
    path = str(path)
    if not is_url(path):
        try:
            st = os.stat(local_path(path))
        except FileNotFoundError:
            return None
        return FileStat(st.st_size, st.st_mtime_ns, _st.S_ISDIR(st.st_mode))
    import pyarrow.fs as pfs

    loc = resolve(path)
    with guarded(path):
        info = loc.fs.get_file_info(loc.path)
        if info.type == pfs.FileType.NotFound:
            check_bucket(loc, path)
            return None
    if info.type == pfs.FileType.Directory:
        return FileStat(0, 0, True)
    return FileStat(info.size or 0, info.mtime_ns or 0, False)


_SPECIAL = ((_st.S_ISFIFO, "a FIFO"), (_st.S_ISCHR, "a character device"),
            (_st.S_ISBLK, "a block device"), (_st.S_ISSOCK, "a socket"),
            (_st.S_ISDIR, "a directory"))


def kind_of(mode: int) -> str:
    """What a ``st_mode`` that is not a regular file's is ("a FIFO"...); "" for a regular file."""
    if _st.S_ISREG(mode):
        return ""
    return next((name for test, name in _SPECIAL if test(mode)), "not a file")


def not_regular(path, st=None) -> str:
    """Why a local ``path`` is no input to read ("a FIFO", "a symbolic link to a character
    device"...), or "" for a regular file or a path that cannot be stat'ed (reading it reports
    why). From ``stat``, which never opens it: opening a FIFO blocks, a device never ends."""
    try:
        st = st or os.stat(path)
    except OSError:
        return ""
    kind = kind_of(st.st_mode)
    if kind and os.path.islink(path):
        return "a symbolic link to " + kind
    return kind


def exists(path) -> bool:
    return stat(path) is not None


def require(path, what: str = "") -> FileStat:
    """``stat(path)``, or an error saying that nothing is there: the system's own
    ``FileNotFoundError`` for a local path, a ``StorageError`` for a URL."""
    if not is_url(path):
        st = os.stat(local_path(path))
        return FileStat(st.st_size, st.st_mtime_ns, _st.S_ISDIR(st.st_mode))
    st = stat(path)
    if st is None:
        raise StorageError(str(path), f"{what + ': ' if what else ''}no such file or object",
                           "missing")
    return st


def list_files(path, *, recursive: bool = True) -> list[tuple[str, FileStat]]:
    """(path or URL, stat) of every file below a directory or prefix, sorted by name; empty when
    there is none."""
    path = str(path)
    if not is_url(path):
        root, out = local_path(path), []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in filenames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                out.append((p, FileStat(st.st_size, st.st_mtime_ns)))
            if not recursive:
                break
        return sorted(out)
    return [(url, st) for url, _, st in _listing(path, recursive) if not st.is_dir]


def _listing(url: str, recursive: bool) -> list[tuple[str, str, FileStat]]:
    """(URL, path relative to ``url``, stat) of everything below ``url``, sorted."""
    import pyarrow.fs as pfs

    loc = resolve(url)
    with guarded(url):
        if loc.fs.get_file_info(loc.path).type == pfs.FileType.NotFound:
            check_bucket(loc, url)
            return []
        infos = loc.fs.get_file_info(pfs.FileSelector(loc.path, recursive=recursive,
                                                      allow_not_found=True))
    top = loc.path.rstrip("/") + "/"
    out = []
    for i in infos:
        if not i.path.startswith(top):
            continue
        out.append((loc.url(i.path), i.path[len(top):],
                    FileStat(i.size or 0, i.mtime_ns or 0, i.type == pfs.FileType.Directory)))
    return sorted(out)


def glob(pattern) -> list[str]:
    """Every file and directory matching ``pattern``, sorted, with ``glob.glob(recursive=True)``'s
    rules on URLs too: ``*`` stays within a name, ``**`` spans directories, and a name starting
    with a dot matches only a pattern part that does."""
    pattern = str(pattern)
    if not is_url(pattern):
        return sorted(_glob.glob(local_path(pattern), recursive=True))
    return [url for url, _ in glob_stats(pattern)]


def glob_stats(pattern: str) -> list[tuple[str, FileStat]]:
    """``glob`` of a URL with each match's stat, from the one listing."""
    parts = pattern.split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS & set(p) or i == len(parts) - 1)
    if not _GLOB_CHARS & set(parts[first]):
        st = stat(pattern)
        return [(pattern, st)] if st is not None else []
    base, wanted = "/".join(parts[:first]), parts[first:]
    # recursive even for one level: some stores (GCS) list the directories a prefix implies only
    # recursively, and a directory matched is a file tree to read
    found = {}
    for url, rel, st in _listing(base, True):
        names = rel.split("/")
        for depth in range(1, len(names)):  # the directories a key implies, listed or not
            if _match(names[:depth], wanted):
                found[url.rsplit("/", len(names) - depth)[0]] = FileStat(0, 0, True)
        if _match(names, wanted):
            found[url] = st
    return sorted(found.items())


def _match(names: list[str], parts: list[str]) -> bool:
    if not parts:
        return not names
    if parts[0] == "**":
        return _match(names, parts[1:]) or (
            bool(names) and not names[0].startswith(".") and _match(names[1:], parts))
    return (bool(names) and (not names[0].startswith(".") or parts[0].startswith("."))
            and fnmatch.fnmatchcase(names[0], parts[0]) and _match(names[1:], parts[1:]))


def makedirs(path) -> None:
    """Create a local directory and its parents; nothing on an object store (a key's prefix
    needs no directory)."""
    if not is_url(path):
        os.makedirs(local_path(path), exist_ok=True)

