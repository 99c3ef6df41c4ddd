"""Writing one object to a store in one request: bytes (``put_object``) or a complete local file
(``upload_file``). Until the request completes no reader sees the key, so an object is whole or
absent. Which files become objects, and when, is ``pipelines.infra.atomic``'s (it writes local paths
through a temporary name and a rename instead); the output lock writes its object here too."""
from __future__ import annotations

import os

from pipelines.infra.storage.filesystems import resolve
from pipelines.infra.storage.guard import guarded


def put_object(url: str, data: bytes) -> None:
    """``data`` as the object at ``url``: one PUT (one multipart upload when large)."""
    loc = resolve(url)
    with guarded(url, loc), loc.fs.open_output_stream(loc.path, compression=None) as out:
        out.write(data)


def upload_file(src, url: str) -> None:
    """The complete local file ``src`` as the object at ``url`` (``src`` stays)."""
    if not os.path.getsize(src):  # nothing to map
        put_object(url, b"")
        return
    import pyarrow as pa

    loc = resolve(url)
    # the whole file is mapped and handed over in one write: nothing of this process runs
    # between the first byte and the completing close, so no exception of ours can complete a
    # partial upload (a failed part makes the close fail, and the upload is never completed)
    with guarded(url, loc), pa.memory_map(str(src)) as data, \
            loc.fs.open_output_stream(loc.path, compression=None) as out:
        out.write(data.read_buffer())
