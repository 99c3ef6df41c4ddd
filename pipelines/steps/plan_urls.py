"""``input.paths`` entries that are URLs (``s3://``, ``gs://``...): expanded into sources the way
``plan.resolve_sources`` expands local ones, through ``pipelines.infra.storage``.

The same entry gives the same sources in the same order as its copy on a local disk: a glob's
matches sorted, a directory (a prefix) as a file tree in ``os.walk`` order (a directory's files,
sorted, before its subdirectories), ``input.include``/``input.exclude`` on the path relative to
the tree's root. A missing bucket or object, denied access or an unreachable endpoint is a
``ConfigError`` naming the URL, before any work.
"""
from __future__ import annotations

import fnmatch

from pipelines.infra import storage
from pipelines.infra.errors import ConfigError
from pipelines.steps.formats import FILES, format_of, is_dataset
from pipelines.steps.plan_paths import expand_placeholders, split_glob
from pipelines.steps.sources import Source
from pipelines.infra.storage.listing import glob_stats


def url_sources(i: int, written: str, resolved: str, cfg) -> list[Source]:
    """The sources of ``input.paths[i]`` (``written``; ``resolved`` after placeholders)."""
    if is_dataset(cfg.format):
        raise ConfigError(f"input.paths[{i}] {written!r}: input.format={cfg.format} reads a local "
                          "saved dataset or a dataset name, not a URL")
    prefix_w, pattern = split_glob(written)
    base = expand_placeholders(prefix_w) if pattern else resolved
    try:
        if pattern:
            matches = glob_stats(resolved)
            if not matches:
                raise ConfigError(f"input.paths[{i}] {written!r} matches nothing")
        else:
            st = storage.stat(resolved)
            if st is None:
                raise ConfigError(f"input.paths[{i}] {written!r}: no such file or object")
            matches = [(resolved, st)]
        sources = []
        for url, st in matches:
            rel = url[len(base):].lstrip("/") if url != base else ""
            key = f"{prefix_w}/{rel}" if rel else written
            if not st.is_dir:
                sources.append(Source(url, key, format_of(url, cfg.format), st.size, "",
                                      st.mtime_ns))
                continue
            for furl, frel, fst in _tree(url, cfg.include, cfg.exclude, cfg.max_documents):
                sources.append(Source(furl, f"{key}/{frel}", FILES, fst.size, "",
                                      fst.mtime_ns))
        return sources
    except storage.StorageError as exc:
        raise ConfigError(f"input.paths[{i}] {written!r}: {exc.reason}") from None


def _walk_order(rel: str) -> tuple:
    """Sort key of ``os.walk`` top-down with sorted names: a directory's files, then its
    subdirectories."""
    names = rel.split("/")
    return tuple((1, n) for n in names[:-1]) + ((0, names[-1]),)


def _tree(root: str, include, exclude, limit: int) -> list:
    """(URL, path relative to ``root``, stat) of the tree's files, filtered as a local tree's."""
    out = []
    for url, st in storage.list_files(root):
        rel = url[len(root):].lstrip("/")
        if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
            continue
        if any(fnmatch.fnmatchcase(rel, g) for g in exclude):
            continue
        out.append((url, rel, st))
    out.sort(key=lambda item: _walk_order(item[1]))
    return out[:limit] if limit else out
