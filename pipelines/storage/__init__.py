"""Paths as URLs: ``s3://``, ``gs://``, ``file://`` and local paths (``memory://`` and other
fsspec protocols where fsspec has them), behind one small API.

- ``resolve`` (``filesystems.py``): a path or URL -> (pyarrow filesystem, path in it), with
  credentials and endpoints from the standard environment;
- ``stat``, ``exists``, ``list_files``, ``glob``, ``remove`` (``listing.py``): sorted listings and
  the size/mtime a run fingerprints inputs with;
- ``open_input``, ``read_bytes``, ``local_copy`` (``reading.py``): streaming reads, and a local
  copy for formats read by random access (Parquet);
- ``StorageError`` (``errors.py``): one line naming the URL for a missing bucket or key, denied
  access or an unreachable endpoint;
- publishing (a file becomes visible only when complete) is ``pipelines.atomic``, which writes
  local paths and URLs alike.

Local paths never go through pyarrow: they keep the ``os`` calls and the buffered ``open`` the
readers used before, so local runs are unchanged.
"""
from pipelines.storage.errors import StorageError
from pipelines.storage.filesystems import configure, resolve
from pipelines.storage.listing import (FileStat, exists, glob, list_files, makedirs, remove,
                                      require, stat)
from pipelines.storage.reading import local_copy, open_input, read_bytes
from pipelines.storage.urls import is_url, join, local_path, scheme_of

__all__ = [
    "FileStat", "StorageError", "configure", "exists", "glob", "is_url", "join",
    "list_files", "local_copy", "local_path", "makedirs", "open_input", "read_bytes", "remove",
    "require", "resolve", "scheme_of", "stat",
]
