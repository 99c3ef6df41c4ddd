"""Resolve ``input.paths`` into sources and group them into units, before any work starts.

A *unit* is the engine's task: consecutive sources in input order whose sizes add up to about
``input.unit_bytes``. A bigger file whose format can be cut (JSON lines, Parquet: its
``InputFormat.pieces``, ``cut.py``) is cut into pieces of about that size, each a unit of its
own, so that one big file spreads over the workers. Unit boundaries depend only on the data, so
every engine, at any worker count, produces the same units, the same ids and the same bytes.
What is format-specific (a file's format from its name, a dataset directory, pieces) is asked
of the format registry (``formats.py``).
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from pipelines.infra.errors import ConfigError
from pipelines.steps.formats import FILES, FORMATS, dataset_format, format_of, is_dataset
# ASSETS: the tests and benchmarks take it from here
from pipelines.steps.plan_paths import ASSETS, expand_placeholders, split_glob  # noqa: F401
from pipelines.steps.plan_urls import url_sources
from pipelines.steps.sources import Source, Unit
from pipelines.infra.storage.listing import not_regular
from pipelines.infra.storage.location import Location

# no piece below 64 KiB on disk: under that, what a unit costs besides tokenizing (its files and
# marker, a task, requests to a store) outweighs what it spreads
MIN_PIECE = 1 << 16


def _tree_files(root: Path, include, exclude, limit: int) -> list[tuple[Path, str]]:
    """(path, "") for every file of the tree in walk order, and (directory, reason) where a
    directory cannot be listed: the reader turns that into a reject (or the error under fail)."""
    # a directory that an exclude glob "PREFIX/*" covers whole is never walked (site-packages/*)
    pruning = [g[:-2] for g in exclude if g.endswith("/*")]
    top = str(root)
    out = []

    def unlisted(exc: OSError) -> None:
        reason = exc.strerror or type(exc).__name__
        out.append((Path(exc.filename or top), f"cannot list directory: {reason}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
        rel_dir = dirpath[len(top) + 1 :].replace(os.sep, "/")
        prefix = rel_dir + "/" if rel_dir else ""
        dirnames[:] = sorted(
            d for d in dirnames if not any(fnmatch.fnmatchcase(prefix + d, g) for g in pruning)
        )
        for name in sorted(filenames):
            rel = prefix + name
            if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
                continue
            if any(fnmatch.fnmatchcase(rel, g) for g in exclude):
                continue
            out.append((Path(dirpath) / name, ""))
            if limit and len(out) >= limit:
                return out
    return out


def _stat(path: Path) -> tuple[int, int, tuple | None, str]:
    """(size, mtime_ns, identity, why it is not a regular file or "") when planned: the reader
    checks size and mtime again after reading the source; the identity (device, inode) tells a
    file reached twice. A FIFO, device or socket is never opened (a FIFO blocks, a device never
    ends): it is a reject, or refused when ``input.paths`` names it."""
    try:
        st = path.stat()
    except OSError:
        return 0, 0, None, ""  # an unreadable file: the reader reports it under input.on_error
    kind = not_regular(path, st)
    if kind:
        return 0, 0, (st.st_dev, st.st_ino), f"not a regular file: {kind}"
    return st.st_size, st.st_mtime_ns, (st.st_dev, st.st_ino), ""


def input_locations(cfg) -> tuple[Location, ...]:
    """Where each entry of ``cfg.paths`` is (placeholders expanded, ``file://`` removed): found
    once, by the run plan, for the planner and the check that output.dir is outside them."""
    return tuple(Location.of(expand_placeholders(written)) for written in cfg.paths)


def resolve_sources(cfg, where: tuple[Location, ...] | None = None) -> list[Source]:
    """Every source of ``cfg`` (an ``InputConfig``) in input order; a missing path is an error.
    ``where``: ``input_locations(cfg)``, when the caller has them."""
    if not cfg.paths:
        raise ConfigError("input.paths is empty: give at least one file, directory or glob")
    sources: list[Source] = []
    seen: dict[str, int] = {}  # real path (or dataset name) -> the input.paths entry it came from
    for i, (written, loc) in enumerate(zip(cfg.paths, where or input_locations(cfg))):
        if loc.remote:  # s3://, gs://...: listed through pipelines.infra.storage
            for src in url_sources(i, written, loc.text, cfg):
                sources.append(src)
                _once(seen, src.path, i, cfg.paths, src.path)
            continue
        resolved = loc.local_path  # file:///a/b is /a/b
        if is_dataset(cfg.format) and not os.path.exists(resolved):
            if _looks_like_path(written, resolved):
                raise ConfigError(f"input.paths[{i}] {written!r}: no such file or directory (a "
                                  "path, not a dataset name)")
            sources.append(Source(resolved, written, cfg.format, 0))  # e.g. a load_dataset name
            _once(seen, f"{cfg.format}:{written}", i, cfg.paths, written)
            continue
        prefix_w, pattern = split_glob(written)
        if pattern:
            base = Location.of(expand_placeholders(prefix_w)).local_path
            matches = sorted(glob.glob(resolved, recursive=True))
            if not matches:
                raise ConfigError(f"input.paths[{i}] {written!r} matches nothing")
        else:
            base, matches = resolved, [resolved]
            if not os.path.exists(resolved):
                raise ConfigError(f"input.paths[{i}] {written!r}: no such file or directory")
            if not os.path.isdir(resolved) and (kind := not_regular(resolved)):
                raise ConfigError(f"input.paths[{i}] {written!r}: not a regular file ({kind}): "
                                  "give files, directories or globs")
        first, idents = len(sources), []
        for match in matches:
            p = Path(match)
            rel = os.path.relpath(match, base).replace(os.sep, "/")
            key = written if rel == "." else f"{prefix_w}/{rel}"
            dataset = dataset_format(p, cfg.format) if p.is_dir() else None
            if dataset:
                sources.append(Source(match, key, dataset, 0))
                idents.append(None)
            elif p.is_dir():
                top = str(p) + os.sep
                for f, error in _tree_files(p, cfg.include, cfg.exclude, cfg.max_documents):
                    fs = str(f)  # below the tree root: cut the prefix (relpath is ~20 us a file)
                    frel = (fs[len(top):] if fs.startswith(top) else os.path.relpath(fs, p)
                            ).replace(os.sep, "/")
                    size, mtime, ident, special = (0, 0, None, "") if error else _stat(f)
                    sources.append(Source(str(f), f"{key}/{frel}", FILES, size,
                                          error or special, mtime))
                    idents.append(ident)
            else:
                size, mtime, ident, special = _stat(p)
                sources.append(Source(match, key, format_of(match, cfg.format), size, special,
                                      mtime))
                idents.append(ident)
        for src, ident in zip(sources[first:], idents):
            # the same file by (device, inode): through a symlink, a hard link, two globs; a
            # realpath per file cost an lstat per path component (2 s on a 55k-file tree)
            _once(seen, ident or os.path.realpath(src.path), i, cfg.paths, src.path)
    if not sources:
        raise ConfigError("input.paths match no files (check input.include / input.exclude)")
    return sources


def _once(seen: dict, name, i: int, paths, shown: str) -> None:
    """The same input reached from two entries of input.paths would go in twice, with the
    same document ids: a ConfigError naming both."""
    j = seen.setdefault(name, i)
    if j != i:
        raise ConfigError(f"input.paths[{i}] {paths[i]!r} reaches {shown!r}, "
                          f"which input.paths[{j}] {paths[j]!r} already gives: every input must "
                          "be listed once")


def _looks_like_path(written: str, resolved: str) -> bool:
    """A dataset format's entry that does not exist: a load_dataset name ("user/name", "json"),
    or a local path that is missing (absolute, ./ ../ ~, a placeholder, or under a local
    directory)?"""
    if written.startswith(("/", "./", "../", "~", "{")) or os.path.isabs(resolved):
        return True
    head = written.split("/", 1)[0]
    return "/" in written and os.path.isdir(head)


def group_units(sources: list[Source], unit_bytes: int) -> list[Unit]:
    """Consecutive sources up to ``unit_bytes``; a dataset (Hugging Face) and a piece of a big
    file are units of their own."""
    units, current, size = [], [], 0
    for src in sources:
        alone = is_dataset(src.format) or src.part is not None
        if current and (alone or size + src.size > unit_bytes):
            units.append(Unit(len(units), tuple(current)))
            current, size = [], 0
        current.append(src)
        size += src.size
        if alone:
            units.append(Unit(len(units), tuple(current)))
            current, size = [], 0
    if current:
        units.append(Unit(len(units), tuple(current)))
    return units


def plan_units(cfg, where: tuple[Location, ...] | None = None) -> list[Unit]:
    return group_units(cut_sources(resolve_sources(cfg, where), cfg), cfg.unit_bytes)


def pieces_wanted(size: int, unit_bytes: int) -> int:
    return max(1, math.ceil(size / max(unit_bytes, MIN_PIECE)))


def cut_sources(sources: list[Source], cfg) -> list[Source]:
    """``sources`` with every file above ``cfg.unit_bytes`` whose format cuts replaced by its
    pieces (in order); the files are read in parallel (decoding and reading release the GIL)."""
    if cfg.max_documents:  # "the first N records of each file": nothing to spread
        return sources
    big = [i for i, s in enumerate(sources) if pieces_wanted(s.size, cfg.unit_bytes) > 1
           and not s.error and FORMATS[s.format].pieces is not None]
    if not big:
        return sources
    with ThreadPoolExecutor(min(len(big), 4)) as pool:
        cut = dict(zip(big, pool.map(lambda i: cut_source(sources[i], cfg.unit_bytes), big)))
    out = []
    for i, s in enumerate(sources):
        out.extend(cut.get(i, (s,)))
    return out


def cut_source(src: Source, unit_bytes: int) -> tuple[Source, ...]:
    """The pieces of ``src`` (itself alone when it stays whole)."""
    pieces = FORMATS[src.format].pieces
    try:
        parts = pieces(src, pieces_wanted(src.size, unit_bytes)) if pieces else []
    except Exception:  # noqa: BLE001 - unreadable or damaged: read whole, the reader reports it
        return (src,)
    if len(parts) < 2:
        return (src,)
    return tuple(replace(src, part=p) for p in parts)


def inputs_digest(units: list[Unit]) -> str:
    """Names and sizes of every source, and where big files are cut: a resumed run must see
    the same input and the same units (their markers are by unit)."""
    h = hashlib.sha256()
    for unit in units:
        for s in unit.sources:
            line = f"{unit.index}\0{s.key}\0{s.format}\0{s.size}"
            line += f"\0{s.part.digest()}\n" if s.part is not None else "\n"  # where cut
            h.update(line.encode("utf-8", "surrogateescape"))  # a file name may not be UTF-8
    return h.hexdigest()
