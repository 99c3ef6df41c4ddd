"""Telling URLs from local paths, and joining them (no I/O, no third-party imports)."""
from __future__ import annotations

import os
import re
from urllib.parse import unquote

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def scheme_of(path: str) -> str:
    """``s3`` for ``s3://b/k``; ``""`` for a local path (``C:/x`` and ``./a:b`` included)."""
    m = _SCHEME.match(str(path))
    return m.group(1).lower() if m else ""


def is_url(path) -> bool:
    """A path on a remote or in-memory store (``file://`` is a local path, not a URL)."""
    return scheme_of(str(path)) not in ("", "file")


def local_path(path) -> str:
    """``file:///a/b`` -> ``/a/b``; a local path unchanged."""
    path = str(path)
    if scheme_of(path) == "file":
        rest = path[len("file://"):]
        if rest.startswith("localhost/"):
            rest = rest[len("localhost"):]
        return unquote(rest)
    return path


def split(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``s3``, ``bucket/a/b``), trailing slashes dropped."""
    scheme = scheme_of(url)
    return scheme, url[len(scheme) + 3:].rstrip("/")


def join(base, *parts: str) -> str:
    """``join("s3://b/out", "_work", "x")`` -> ``s3://b/out/_work/x``; local paths use os.path."""
    base = str(base)
    if not is_url(base):
        return os.path.join(local_path(base), *parts)
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])

