"""``sha256_file``: the digest a manifest records for every file a run writes, and what
``fewtrunc verify`` and a resumed run check them against.

Its own module because both sides of the shard contract need it: ``shard_format`` hashes a
shard as it writes it, and the write, finish, resume and verify steps hash finished files.
"""
from __future__ import annotations

import hashlib


def sha256_file(path, block: int = 1 << 22) -> str:
    """sha256 of a local file or an object (``pipelines.infra.storage``)."""
    from pipelines.infra.storage import open_input

    h = hashlib.sha256()
    with open_input(path) as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
