"""``as_path``: a local path stays a ``pathlib.Path``; a URL becomes a ``UrlPath``, which answers the
few ``Path`` calls a run makes on its output and work directories (``/``, ``name``, ``exists``,
``is_file``, ``is_dir``, ``mkdir``, ``iterdir``, ``glob``, ``read_text``, ``read_bytes``, ``stat``,
``unlink``) through ``pipelines.infra.storage``. Local runs keep ``pathlib`` and ``os``: nothing of a
local run goes through pyarrow."""
from __future__ import annotations

import fnmatch
from pathlib import Path

from pipelines.infra.storage.urls import is_url, join, local_path


def as_path(path):
    """``Path`` for a local path (``file://`` included), ``UrlPath`` for a URL."""
    if isinstance(path, (Path, UrlPath)):
        return path
    return UrlPath(str(path)) if is_url(path) else Path(local_path(path))


class UrlPath:
    """A file or prefix on an object store, spelled as its URL."""

    __slots__ = ("url",)

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"UrlPath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UrlPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def __lt__(self, other) -> bool:
        return self.url < str(other)

    def __truediv__(self, part) -> "UrlPath":
        return UrlPath(join(self.url, str(part)))

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "UrlPath":
        return UrlPath(self.url.rsplit("/", 1)[0])

    def _stat(self):
        from pipelines.infra.storage.listing import stat

        return stat(self.url)

    def exists(self) -> bool:
        return self._stat() is not None

    def is_file(self) -> bool:
        st = self._stat()
        return st is not None and not st.is_dir

    def is_dir(self) -> bool:
        st = self._stat()
        return st is not None and st.is_dir

    def stat(self):
        """An object with ``st_size`` and ``st_mtime_ns`` (``FileNotFoundError`` when absent)."""
        st = self._stat()
        if st is None:
            raise FileNotFoundError(self.url)
        return _FileStat(st.size, st.mtime_ns)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing: a key's prefix needs no directory."""

    def iterdir(self) -> list["UrlPath"]:
        """Files and prefixes right below this one, sorted (from a recursive listing: some
        stores, GCS among them, list the prefixes a key implies only recursively)."""
        from pipelines.infra.storage.listing import _listing

        names = sorted({rel.split("/", 1)[0] for _, rel, _ in _listing(self.url, True)})
        return [self / n for n in names]

    def glob(self, pattern: str) -> list["UrlPath"]:
        """Files right below this prefix whose name matches ``pattern`` (one level only), sorted."""
        from pipelines.infra.storage.listing import _listing

        return [UrlPath(url) for url, rel, st in _listing(self.url, False)
                if not st.is_dir and "/" not in rel and fnmatch.fnmatchcase(rel, pattern)]

    def read_bytes(self) -> bytes:
        from pipelines.infra.storage.reading import read_bytes

        return read_bytes(self.url)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def unlink(self, missing_ok: bool = False) -> None:
        """Delete the object (on S3 without leaving a ``prefix/`` marker: ``deleting.py``)."""
        from pipelines.infra.storage.deleting import remove_object

        if not remove_object(self.url) and not missing_ok:
            raise FileNotFoundError(self.url)


class _FileStat:
    __slots__ = ("st_size", "st_mtime_ns")

    def __init__(self, size: int, mtime_ns: int):
        self.st_size, self.st_mtime_ns = size, mtime_ns


def remove_tree(path) -> None:
    """``shutil.rmtree(path, ignore_errors=True)`` for a local path; every object below a URL
    (without leaving directory markers). Only for trees that are wholly fewtrunc's: a run's
    ``_work/`` goes through ``pipelines.work_dir.remove_work``, which keeps what it did not
    write."""
    if not is_url(path):
        import shutil

        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    from pipelines.infra.storage.deleting import remove_objects
    from pipelines.infra.storage.listing import list_files

    remove_objects([url for url, _ in list_files(str(path))])
