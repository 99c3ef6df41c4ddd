"""JSON lines, plain, gzip or zstandard (detected from the first bytes), streamed in chunks, from
a local file or an object (``pipelines.infra.storage.open_input``; a local FIFO or device is refused).

A line longer than ``input.max_document_bytes`` is rejected without being held in memory. A line
that does not parse, for any reason (malformed, an integer over Python's digit limit, nesting
deeper than orjson's limit), is a reject on its own line number, and reading goes on. A
truncated or corrupt compressed stream raises ``InputError`` naming the line where it broke; the
records before it are kept: a gzip piece that fails is replayed byte by byte from the state
before it, so every byte decompressed before the damage is used; zstd keeps every block before
the damaged one (``read_zstd``).
"""
from __future__ import annotations

import json
import sys
import zlib
from contextlib import contextmanager
from typing import Iterator

import orjson

from pipelines.infra.errors import InputError
from pipelines.steps.sources import Record
from pipelines.steps.read_zstd import zstd_chunks
from pipelines.infra.storage import StorageError, open_input

CHUNK = 1 << 20  # bytes read from the file at a time
FEED = 1 << 16  # compressed bytes per decompress call: what a damaged piece is replayed from
MAX_DEPTH = 1024  # orjson's limit on nested arrays and objects (deeper is a reject)


def _raw_chunks(f) -> Iterator[bytes]:
    while chunk := f.read(CHUNK):
        yield chunk


def _pieces(data: bytes) -> Iterator[tuple[int, bytes]]:
    for i in range(0, len(data), FEED):
        yield i + FEED, data[i : i + FEED]


def _salvage(d, piece: bytes) -> Iterator[bytes]:
    """Replay a damaged piece byte by byte from the state before it: every byte of output that
    decompresses before the damage comes out, then the decompressor's error is raised."""
    for i in range(len(piece)):
        if out := d.decompress(piece[i : i + 1]):
            yield out
        if d.eof:
            return


def _gzip_chunks(f) -> Iterator[bytes]:
    data = f.read(CHUNK)
    while data:
        d = zlib.decompressobj(wbits=31)
        while True:
            for end, piece in _pieces(data):
                before = d.copy()
                try:
                    out = d.decompress(piece)
                except zlib.error:
                    yield from _salvage(before, piece)  # raises at the damaged byte
                    raise
                yield out
                if d.eof:  # another gzip member may follow
                    break
            if d.eof:
                data = d.unused_data + data[end:] or f.read(CHUNK)
                break
            data = f.read(CHUNK)
            if not data:
                raise EOFError("gzip stream ends before its end-of-stream marker (truncated)")


def _chunks(f, reopen=None) -> Iterator[bytes]:
    head = f.peek(4)[:4] if hasattr(f, "peek") else b""
    if head[:2] == b"\x1f\x8b":
        return _gzip_chunks(f)
    if head == b"\x28\xb5\x2f\xfd":
        return zstd_chunks(f, reopen)
    return _raw_chunks(f)


def lines(chunks: Iterator[bytes], max_bytes: int, before: int = 0
          ) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, line or None when longer than max_bytes, its size) for every line; the
    first is line ``before + 1``."""
    pending: list[bytes] = []
    pending_size, too_long, number = 0, False, before
    for chunk in chunks:
        parts = chunk.split(b"\n")
        for part in parts[:-1]:
            number += 1
            size = pending_size + len(part)
            if too_long or size > max_bytes:
                yield number, None, size
            else:
                yield number, b"".join(pending) + part if pending else part, size
            pending, pending_size, too_long = [], 0, False
        tail = parts[-1]
        pending_size += len(tail)
        if pending_size > max_bytes:
            pending, too_long = [], True
        elif tail:
            pending.append(tail)
    if pending_size:
        number += 1
        yield number, None if too_long else b"".join(pending), pending_size


def records(source, cfg, resumable=None) -> Iterator[Record]:
    """The file's lines as records; a piece of a big file (``source.part``, ``cut.py``) gives
    its own lines, numbered as in the whole file (``read_piece``; ``resumable``: the reader's
    streams that a next piece may go on from)."""
    limit = cfg.max_document_bytes * 2 + 1024  # JSON escapes can double a text's size
    if source.part is None:
        opened = _whole(source.path)
    else:
        from pipelines.steps.read_piece import piece_chunks

        opened = piece_chunks(source, resumable)
    number = 0
    with opened as (before, chunks):  # a local path or a URL; never a FIFO or a device
        number = before  # lines of the file before this piece
        try:
            for number, line, size in lines(chunks, limit, before):
                yield _parse(number, line, size, cfg)  # never raises: a bad line is a reject
        except StorageError:  # the store failed mid-read, not the data: "cannot read"
            raise
        except (EOFError, OSError, zlib.error, ValueError) as exc:  # the line being decoded
            raise InputError(f"{source.path}:line {number + 1}", f"corrupt or truncated: {exc}")
        except Exception as exc:  # zstandard.ZstdError
            if type(exc).__name__ != "ZstdError":
                raise
            raise InputError(f"{source.path}:line {number + 1}", f"corrupt zstd stream: {exc}")


@contextmanager
def _whole(path: str):
    reopen = lambda: open_input(path, regular=True)  # noqa: E731 - zstd salvage
    with reopen() as f:
        yield 0, _chunks(f, reopen)


def _parse(number: int, line: bytes | None, size: int, cfg) -> Record:
    if line is None:
        return Record(number, None, None, size, f"line of {size:,} bytes exceeds the size limit")
    if not line.strip():
        return Record(number, None, None, size + 1, "empty line")
    try:  # orjson parses and checks UTF-8 in one pass, ~2.5x json's speed
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:  # json, on the way to the exact reason (or to what
        obj = _slow_parse(line, exc)  # only it accepts: NaN, lone-surrogate escapes, big ints)
        if isinstance(obj, str):
            return Record(number, None, None, size + 1, obj)
    except Exception as exc:  # noqa: BLE001 - any failure is this line's reject, not the file's
        return Record(number, None, None, size + 1, f"cannot parse JSON: {exc!r}"[:200])
    if not isinstance(obj, dict):
        return Record(number, None, None, size + 1, "JSON value is not an object")
    key = obj.get(cfg.id_field) if cfg.id_field else None
    text = obj.get(cfg.text_field)
    if text is None and cfg.text_field in obj:
        return Record(number, None, key, size + 1, f"text field {cfg.text_field!r} is null")
    return Record(number, text, key, size + 1)


def _slow_parse(line: bytes, refused: Exception):
    """The value of a line orjson ``refused``, or the reason it is not usable JSON (a str)."""
    if "recursion" in str(refused):  # never handed to json: its limit is the call stack's
        return f"JSON nested deeper than {MAX_DEPTH} levels"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"invalid UTF-8 at byte {exc.start}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"malformed JSON: {exc.msg} (col {exc.colno})"
    except RecursionError:
        return "JSON nested too deeply for Python's json parser"
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            return f"integer with more than {sys.get_int_max_str_digits()} digits"
        return f"cannot parse JSON: {exc}"[:200]
    except Exception as exc:  # noqa: BLE001 - any failure is this line's reject, not the file's
        return f"cannot parse JSON: {exc!r}"[:200]
    return [obj] if isinstance(obj, str) else obj  # a bare JSON string is not a reason
