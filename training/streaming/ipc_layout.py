"""Where each record batch of an Arrow IPC file lies and how many rows it has, read from the
file's footer and the batches' message headers: a few small reads, nothing decompressed.

pyarrow exposes neither the footer's block offsets nor a batch's row count without decoding the
batch (``RecordBatchFileReader.get_batch`` decompresses it), so this reads the two flatbuffers
it needs directly. The layout is Arrow's stable IPC file format:

    "ARROW1\\0\\0" | schema message | record batch messages ... | footer | int32 len | "ARROW1"

A message is ``0xFFFFFFFF``, an int32 metadata length, the metadata flatbuffer (``Message``, whose
``RecordBatch`` header holds ``length``, the row count), padding, then the body. The footer's
``recordBatches`` vector lists each message's (offset, metadata length, body length).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"ARROW1"
TAIL = 10  # int32 footer length + magic
_BLOCK = np.dtype([("offset", "<i8"), ("meta", "<i4"), ("pad", "<i4"), ("body", "<i8")])
_RECORD_BATCH = 3  # MessageHeader union tag of RecordBatch


class LayoutError(ValueError):
    """The bytes are not an Arrow IPC file as this module reads it (the caller names the file)."""


@dataclass(frozen=True)
class Layout:
    """The record batches of one shard: message ``i`` is ``[offsets[i], offsets[i] + lengths[i])``
    (metadata and body together: one ranged read fetches the whole batch)."""

    offsets: np.ndarray  # int64
    lengths: np.ndarray  # int64
    meta: np.ndarray  # int64 bytes of each message's prefix and metadata (the rest is its body)

    @property
    def schema_span(self) -> tuple[int, int]:
        """Bytes of the schema message (it lies between the magic and the first batch)."""
        end = int(self.offsets[0]) if self.offsets.size else 8
        return 8, end - 8


def footer_length(tail: bytes, size: int) -> int:
    """The footer's length from the file's last ``TAIL`` bytes."""
    if len(tail) != TAIL or tail[4:] != MAGIC:
        raise LayoutError("no Arrow IPC file footer (the file does not end with ARROW1)")
    n = struct.unpack_from("<i", tail, 0)[0]
    if n <= 0 or n + TAIL + 8 > size:
        raise LayoutError(f"footer length {n} does not fit a file of {size} bytes")
    return n


def parse_footer(footer: bytes, size: int) -> Layout:
    """The record batches listed in a footer flatbuffer, checked to lie inside the file."""
    try:
        root = _u32(footer, 0)
        pos = _field(footer, root, 3)  # Footer.recordBatches
        if pos is None:
            blocks = np.zeros(0, _BLOCK)
        else:
            vec = pos + _u32(footer, pos)
            n = _u32(footer, vec)
            blocks = np.frombuffer(footer, _BLOCK, count=n, offset=vec + 4)
    except (struct.error, ValueError) as exc:
        raise LayoutError(f"unreadable footer ({exc})") from None
    offsets = blocks["offset"].astype(np.int64)
    lengths = blocks["meta"].astype(np.int64) + blocks["body"]
    end = size - TAIL - len(footer)
    if (offsets < 8).any() or (lengths <= 0).any() or (offsets + lengths > end).any():
        raise LayoutError("the footer lists a record batch outside the file")
    return Layout(offsets, lengths, blocks["meta"].astype(np.int64))


def batch_rows(message_head: bytes) -> int:
    """The row count of a record batch from the first ``Layout.meta`` bytes of its message
    (the prefix and the metadata flatbuffer)."""
    try:
        cont, n = struct.unpack_from("<Ii", message_head, 0)
        start = 8 if cont == 0xFFFFFFFF else 4  # the pre-1.0 format has no continuation marker
        metadata = message_head[start:start + (n if cont == 0xFFFFFFFF else cont)]
        root = _u32(metadata, 0)
        kind = _field(metadata, root, 1)  # Message.header_type
        if kind is None or metadata[kind] != _RECORD_BATCH:
            raise LayoutError("a footer block is not a record batch message")
        pos = _field(metadata, root, 2)  # Message.header
        header = pos + _u32(metadata, pos)
        length = _field(metadata, header, 0)  # RecordBatch.length
        return 0 if length is None else struct.unpack_from("<q", metadata, length)[0]
    except (struct.error, IndexError, TypeError) as exc:
        raise LayoutError(f"unreadable record batch header ({exc})") from None


def _u32(buf: bytes, pos: int) -> int:
    return struct.unpack_from("<I", buf, pos)[0]


def _field(buf: bytes, table: int, index: int) -> int | None:
    """Absolute position of field ``index`` of the flatbuffer table at ``table`` (None: absent)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot + 2 > size:
        return None
    off = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + off if off else None
