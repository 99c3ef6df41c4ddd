"""Resolve ``input.paths`` into sources and group them into units, before any work starts.

A *unit* is the engine's task: consecutive sources in input order whose sizes add up to about
``input.unit_bytes``. A bigger JSON lines or Parquet file is cut into pieces of about that size,
each a unit of its own (``cut.py``), so that one big file spreads over the workers. Unit
boundaries depend only on the data, so every engine, at any worker count, produces the same
units, the same ids and the same bytes.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import ConfigError
from pipelines.storage.listing import not_regular
from pipelines.storage.urls import is_url, local_path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
_GLOB_CHARS = set("*?[")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_COMPRESSED = (".gz", ".zst", ".zstd")


@dataclass(frozen=True)
class Source:
    path: str  # where it is on this machine (used in error messages)
    key: str  # stable name, as written in the config + relative path: seeds document ids
    format: str  # jsonl | parquet | files | hf
    size: int  # bytes on disk (0 for hf)
    error: str = ""  # why it cannot be read (a directory that cannot be listed): a reject
    mtime_ns: int = 0  # modification time when planned; 0 = unknown (hf, unreadable)
    part: object = None  # a ``cut.Piece`` when this is one piece of a big file, else None


@dataclass(frozen=True)
class Unit:
    index: int
    sources: tuple[Source, ...]

    @property
    def bytes(self) -> int:
        """Its sources' sizes on disk (a piece's share of its file; 0 for a Hugging Face
        dataset): what a progress bar counts, and what orders units largest first."""
        return sum(s.part.disk if s.part is not None else s.size for s in self.sources)

    @property
    def continues(self) -> bool:
        """Whether the unit goes on from the unit before it: a piece of a big file other than
        its first (the partition layout cuts across them as across one unit)."""
        return bool(self.sources) and self.sources[0].part is not None \
            and self.sources[0].part.index > 0


def expand_placeholders(path: str) -> str:
    """``{stdlib}``: this Python's standard library; ``{assets}``: fewtrunc's shipped data."""
    return path.replace("{stdlib}", sysconfig.get_paths()["stdlib"]).replace(
        "{assets}", str(ASSETS)
    )


def format_of(path: str, configured: str) -> str:
    if configured not in ("auto", "files"):
        return configured
    if configured == "files":
        return "files"
    name = path.lower()
    for suffix in _COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    return "files"


def _is_hf_saved(directory: Path) -> bool:
    return (directory / "state.json").is_file() and (directory / "dataset_info.json").is_file()


def split_glob(pattern: str) -> tuple[str, str]:
    """``a/b/*.py`` -> (``a/b``, ``*.py``): the literal prefix and the glob part. The ``?`` of
    a URL's query string (``https://host/f.jsonl?X-Amz-Signature=...``) is not a glob."""
    base, mark, query = pattern.partition("?")
    if mark and "://" in base and "=" in query and not _GLOB_CHARS & set(base):
        return pattern, ""
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if _GLOB_CHARS & set(part):
            return "/".join(parts[:i]) or ".", "/".join(parts[i:])
    return pattern, ""


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


def resolve_sources(cfg) -> list[Source]:
    """Every source of ``cfg`` (an ``InputConfig``) in input order; a missing path is an error."""
    if not cfg.paths:
        raise ConfigError("input.paths is empty: give at least one file, directory or glob")
    sources: list[Source] = []
    seen: dict[str, int] = {}  # real path (or dataset name) -> the input.paths entry it came from
    for i, written in enumerate(cfg.paths):
        resolved = expand_placeholders(written)
        if is_url(resolved):  # s3://, gs://...: listed through pipelines.storage
            from pipelines.steps.plan_urls import url_sources

            for src in url_sources(i, written, resolved, cfg):
                sources.append(src)
                _once(seen, src.path, i, cfg.paths, src.path)
            continue
        resolved = local_path(resolved)  # file:///a/b is /a/b
        if cfg.format == "hf" and not os.path.exists(resolved):
            if _looks_like_path(written, resolved):
                raise ConfigError(f"input.paths[{i}] {written!r}: no such file or directory (a "
                                  "path, not a dataset name)")
            sources.append(Source(resolved, written, "hf", 0))  # a load_dataset name
            _once(seen, f"hf:{written}", i, cfg.paths)
            continue
        prefix_w, pattern = split_glob(written)
        if pattern:
            base = local_path(expand_placeholders(prefix_w))
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
            if p.is_dir() and (cfg.format == "hf" or (cfg.format == "auto" and _is_hf_saved(p))):
                sources.append(Source(match, key, "hf", 0))
                idents.append(None)
            elif p.is_dir():
                top = str(p) + os.sep
                for f, error in _tree_files(p, cfg.include, cfg.exclude, cfg.max_documents):
                    fs = str(f)  # below the tree root: cut the prefix (relpath is ~20 us a file)
                    frel = (fs[len(top):] if fs.startswith(top) else os.path.relpath(fs, p)
                            ).replace(os.sep, "/")
                    size, mtime, ident, special = (0, 0, None, "") if error else _stat(f)
                    sources.append(Source(str(f), f"{key}/{frel}", "files", size,
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


def _once(seen: dict, name, i: int, paths, shown: str = "") -> None:
    """The same input reached from two entries of input.paths would go in twice, with the
    same document ids: a ConfigError naming both."""
    j = seen.setdefault(name, i)
    if j != i:
        shown = shown or str(name).removeprefix("hf:")
        raise ConfigError(f"input.paths[{i}] {paths[i]!r} reaches {shown!r}, "
                          f"which input.paths[{j}] {paths[j]!r} already gives: every input must "
                          "be listed once")


def _looks_like_path(written: str, resolved: str) -> bool:
    """A format=hf entry that does not exist: a load_dataset name ("user/name", "json"), or a
    local path that is missing (absolute, ./ ../ ~, a placeholder, or under a local directory)?"""
    if written.startswith(("/", "./", "../", "~", "{")) or os.path.isabs(resolved):
        return True
    head = written.split("/", 1)[0]
    return "/" in written and os.path.isdir(head)


def group_units(sources: list[Source], unit_bytes: int) -> list[Unit]:
    """Consecutive sources up to ``unit_bytes``; a Hugging Face dataset and a piece of a big
    file are units of their own."""
    units, current, size = [], [], 0
    for src in sources:
        alone = src.format == "hf" or src.part is not None
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


def plan_units(cfg) -> list[Unit]:
    from pipelines.steps.cut import cut_sources

    return group_units(cut_sources(resolve_sources(cfg), cfg), cfg.unit_bytes)


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
