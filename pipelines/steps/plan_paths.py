"""An ``input.paths`` entry as written: its placeholders, and a glob's literal prefix.

Shared by the planner of local paths (``plan.py``), the planner of URLs (``plan_urls.py``) and
the run plan (which names an input's directories): a leaf, so neither planner imports the other
for it.
"""
from __future__ import annotations

import sysconfig
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"
_GLOB_CHARS = set("*?[")


def expand_placeholders(path: str) -> str:
    """``{stdlib}``: this Python's standard library; ``{assets}``: fewtrunc's shipped data."""
    return path.replace("{stdlib}", sysconfig.get_paths()["stdlib"]).replace(
        "{assets}", str(ASSETS)
    )


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
