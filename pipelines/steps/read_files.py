"""File trees: each file is one document (a code corpus). Size is checked before reading."""
from __future__ import annotations

from typing import Iterator

from pipelines.steps.read import Record
from pipelines.storage import open_input, require


def records(source, cfg) -> Iterator[Record]:
    size = require(source.path).size  # a local file or an object (s3://, gs://)
    if size > cfg.max_document_bytes:
        yield Record(0, None, None, size, f"document of {size:,} bytes exceeds "
                     "input.max_document_bytes")
        return
    with open_input(source.path) as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Record(0, None, None, len(data), f"invalid UTF-8 at byte {exc.start}")
        return
    yield Record(0, text, None, len(data))
