"""File trees: each file is one document (a code corpus).

Only regular files are read: a FIFO, a device or a socket (or a link to one) is a reject, told
from ``stat`` without opening it. A file over ``input.max_document_bytes`` is rejected from its
size without being read; the read itself stops one byte past the limit, so a size that lies or
grows never holds more than that in memory."""
from __future__ import annotations

import os
from typing import Iterator

from pipelines.steps.sources import Record
from pipelines.infra.storage import open_input, require
from pipelines.infra.storage.listing import not_regular
from pipelines.infra.storage.location import Location


def records(source, cfg, resumable=None) -> Iterator[Record]:
    where = Location.of(source.path)
    if not where.regular_file_check:  # an object (s3://, gs://) is a regular file
        size, kind = require(source.path).size, ""
    else:
        st = os.stat(where.local_path)  # never blocks, unlike opening a FIFO
        size, kind = st.st_size, not_regular(where.local_path, st)
    if kind:
        yield Record(0, None, None, 0, f"not a regular file: {kind}")
        return
    if size > cfg.max_document_bytes:
        yield Record(0, None, None, size, f"document of {size:,} bytes exceeds "
                     "input.max_document_bytes")
        return
    with open_input(source.path, regular=True) as f:
        data = f.read(cfg.max_document_bytes + 1)
    if len(data) > cfg.max_document_bytes:  # it grew since its stat
        yield Record(0, None, None, len(data), f"document of more than "
                     f"{cfg.max_document_bytes:,} bytes exceeds input.max_document_bytes")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Record(0, None, None, len(data), f"invalid UTF-8 at byte {exc.start}")
        return
    yield Record(0, text, None, len(data))
