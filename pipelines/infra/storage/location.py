"""``Location``: a local path or URL, parsed once, that answers what callers used to re-derive
from the text at every step (``is_url`` before each write, listing, stat or read).

A value is made where a location enters (the run plan from the config; ``Location.of`` where a
plain string still arrives from outside) and passed along. The callers ask it what they mean:
whether a written file needs fsync and a temporary name renamed into place, whether a killed
writer can leave temporaries, whether a FIFO may sit there, whether a piece can be read from its
middle, whether directories are real. The answers are this module's, in one place, so a new kind
of store changes them here and nowhere else.

It holds text only (two short strings): it pickles small and the same for the same location, so
a run plan that carries it keeps one parcel key on every worker (``engines/parcel.py``). The
file system behind a URL is per process and per environment, so it is never held: ``resolve``
asks ``filesystems.resolve`` (cached there) in the process that reads.
"""
from __future__ import annotations

import os
from pathlib import Path

from pipelines.infra.storage.paths import UrlPath
from pipelines.infra.storage.urls import local_path as _local_path
from pipelines.infra.storage.urls import scheme_of

# stores an object of which can be read from any offset without its bytes before: S3 (ranged
# requests). Arrow's random-access reads of GCS objects hang against the GCS emulator, so gs://
# streams from the start instead (``steps/cut.py``)
_RANGED = ("s3", "s3a")


class Location:
    """Where a file or directory is: ``text`` (the local path, ``file://`` removed, or the URL)
    and ``scheme`` (``""`` for a local path). Immutable and hashable; equal when both are.

    ``text`` is the spelling given, not normalised (``out/`` stays ``out/``): callers that used
    the string before get the same string, so keys, messages and listings stay as they were.
    ``as_path`` normalises as ``Path`` and ``UrlPath`` do; ``realpath`` (I/O) is the caller's."""

    __slots__ = ("text", "scheme")

    def __init__(self, text: str, scheme: str = ""):
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "scheme", scheme)

    @classmethod
    def of(cls, where) -> "Location":
        """The location of a str, ``Path``, ``UrlPath`` or ``Location`` (returned as is). A
        ``Path`` is local and a ``UrlPath`` remote by type: only a str is parsed."""
        if isinstance(where, Location):
            return where
        if isinstance(where, Path):
            return cls(str(where))
        if isinstance(where, UrlPath):
            return cls(where.url, scheme_of(where.url))
        text = where if isinstance(where, str) else os.fspath(where)
        scheme = scheme_of(text)
        if scheme in ("", "file"):
            return cls(_local_path(text))
        return cls(text, scheme)

    def __setattr__(self, name, value):
        raise AttributeError("a Location is immutable")

    def __reduce__(self):
        return (Location, (self.text, self.scheme))

    def __eq__(self, other) -> bool:
        return isinstance(other, Location) and other.text == self.text \
            and other.scheme == self.scheme

    def __hash__(self) -> int:
        return hash((self.text, self.scheme))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Location({self.text!r})"

    # -- what it is ------------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        """On an object store or in-memory file system (reached through pyarrow or fsspec), not
        through this machine's ``os`` calls. ``file://`` is local."""
        return bool(self.scheme)

    @property
    def local_path(self) -> str:
        """The path for ``os`` and ``open`` on this machine; a ``ValueError`` for a URL, whose
        bytes are only reached through ``pipelines.infra.storage``."""
        if self.scheme:
            raise ValueError(f"{self.text} is on a store, not a local path")
        return self.text

    @property
    def bucket(self) -> str:
        """The bucket (the URL's host part) of a URL; ``""`` for a local path."""
        if not self.scheme:
            return ""
        return self.text[len(self.scheme) + 3:].split("/", 1)[0]

    # -- what its store can do -------------------------------------------------------------
    @property
    def needs_fsync(self) -> bool:
        """A written file (and the directory that names it) is durable only once fsynced. A
        store holds an object once its upload returns."""
        return not self.scheme

    @property
    def uploads_whole(self) -> bool:
        """A file is written on local scratch and published in one upload, not written in place
        under a temporary name and renamed: a store has no rename, and an object is complete
        or absent."""
        return bool(self.scheme)

    @property
    def keeps_temporaries(self) -> bool:
        """A writer killed mid-write can leave its temporary file here (a local disk). Under a
        store's prefix it left nothing: its temporary was on local scratch."""
        return not self.scheme

    @property
    def has_directories(self) -> bool:
        """Directories are real: made before a file goes in, listed with ``os``, removed when
        empty. On a store a prefix is implied by its keys (and making one would write a
        zero-byte marker object)."""
        return not self.scheme

    @property
    def regular_file_check(self) -> bool:
        """A FIFO, device or socket may sit here, which ``stat`` tells before an open blocks on
        it. An object on a store is always a regular file."""
        return not self.scheme

    @property
    def ranged_reads(self) -> bool:
        """A file here can be read from any offset without its bytes before (a piece of a big
        file, a Parquet row group): a local file, or an S3 object."""
        return not self.scheme or self.scheme in _RANGED

    @property
    def cheap_reads(self) -> bool:
        """Reading a whole file back costs a local read, not a download (so a written file may
        be hashed again to check it, rather than trusted by its size)."""
        return not self.scheme

    # -- derived values --------------------------------------------------------------------
    def join(self, *parts: str) -> "Location":
        """``out.join("_work", "x")``: a location below this one (``os.path.join`` for a local
        path; for a URL, ``/`` between parts stripped of theirs, as ``urls.join`` does)."""
        if not parts:
            return self
        if not self.scheme:
            return Location(os.path.join(self.text, *parts))
        base = self.text if self.text.endswith("://") else self.text.rstrip("/") + "/"
        return Location(base + "/".join(p.strip("/") for p in parts), self.scheme)

    def as_path(self):
        """``Path`` for a local path, ``UrlPath`` for a URL, as ``paths.as_path`` gives them: for
        callers that use the ``Path`` calls (``/``, ``glob``, ``read_text``...)."""
        return UrlPath(self.text) if self.scheme else Path(self.text)

    def resolve(self):
        """(pyarrow filesystem, path in it), from ``filesystems.resolve`` (cached per process
        and environment there): only where bytes of a URL are read by random access."""
        from pipelines.infra.storage.filesystems import resolve

        return resolve(self.text)

