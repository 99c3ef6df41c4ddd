"""The content of one piece of a cut JSON lines file (``cut.py``), for ``read_jsonl``.

A piece opens its file at its own offset (plain) or frame (zstd) and drops the content before
its first line: ``Piece.skip`` bytes when the planner found the cuts; for a one-frame ``.zst``
cut without decoding it (``Piece.counted``), up to the first line start at or after
``Piece.at``, counting the lines on the way (the frame is decoded from its start: it cannot be
entered in the middle). It ends where the next piece starts (found the same way, so two
neighbours always meet at one line start); the last piece reads to the end, where damage or
truncation, if any, is met as in the unsplit file.

When the same reader read the piece just before (the local engine streams a file's pieces in
order; an actor may take consecutive pieces), the piece goes on from where that one stopped,
with its open file and decoder: the content before it is not read, nor decoded, again.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

from pipelines.steps import cut, read_zstd
from pipelines.steps.cut_text import _newlines


class Resumable:
    """A reader's stream left open by the piece it finished: (path, size, mtime, where the next
    piece's range starts) -> (file, chunk iterator, bytes of its current chunk not read yet,
    content offset, lines before it). One is kept (a reader reads one piece at a time)."""

    def __init__(self):
        self.kept: dict = {}
        self.lock = threading.Lock()

    def take(self, key):
        with self.lock:
            return self.kept.pop(key, None)

    def keep(self, key, stream) -> None:
        self.close()
        with self.lock:
            self.kept = {key: stream}

    def close(self) -> None:
        with self.lock:
            for stream in self.kept.values():
                stream[0].close()
            self.kept = {}


class _Pull:
    """Chunks pulled with ``next()`` (never a ``for`` loop or ``yield from``: closing a reader of
    them must not close the decoder, which the next piece may go on with), and put back."""

    def __init__(self, chunks, first: bytes = b""):
        self.chunks, self.back = chunks, first

    def next(self) -> bytes | None:
        if self.back:
            chunk, self.back = self.back, b""
            return chunk
        return next(self.chunks, None)


@contextmanager
def piece_chunks(source, resumable: Resumable | None = None):
    """A context giving (lines of the file before the piece, its content chunks); the file is
    closed at its end, or kept in ``resumable`` for the next piece when this one was read to its
    end."""
    part = source.part
    key = (source.path, source.size, source.mtime_ns)
    kept = resumable.take(key + (part.at,)) if resumable is not None else None
    if kept is None:
        f = cut.open_at(source.path, part.seek)
        reopen = lambda: cut.open_at(source.path, part.seek)  # noqa: E731 - zstd salvage
        chunks = _Pull(read_zstd.zstd_chunks(f, reopen) if part.codec == "zst" else _plain(f))
    else:
        f, raw, rest, pos, counted = kept
        chunks = _Pull(raw, rest)
        before = counted if part.counted else part.first - 1
    end: dict = {}
    try:
        if kept is None:
            try:
                pos, before = _start(chunks, part)
            except Exception as exc:  # noqa: BLE001 - sorted just below
                if not (part.counted and _damage(exc)):
                    raise
                # the frame breaks before this piece starts: the piece that holds the damage
                # reports it (as the unsplit file does, once), and nothing after it is read
                pos, before, chunks = 0, 0, _Pull(iter(()))
        yield before, _content(chunks, part, pos, before, end)
    except BaseException:
        f.close()
        raise
    if "pos" in end and resumable is not None:
        resumable.keep(key + (part.at + part.length,),
                       (f, chunks.chunks, chunks.back, end["pos"], end["lines"]))
    else:
        f.close()


def _plain(f) -> Iterator[bytes]:
    """A plain file's bytes, read ``read_zstd.CHUNK`` at a time, as a compressed one is."""
    while chunk := f.read(read_zstd.CHUNK):
        yield chunk


def _damage(exc: Exception) -> bool:
    """A damaged or truncated zstd stream (not a failing read, which is reported)."""
    return isinstance(exc, EOFError) or type(exc).__name__ == "ZstdError"


def _start(chunks: _Pull, part) -> tuple[int, int]:
    """Drop what comes before the piece; (its content offset, lines of the file before it)."""
    if not part.counted:
        drop = part.skip
        while drop:
            chunk = chunks.next()
            if chunk is None:
                break
            if len(chunk) > drop:
                chunks.back = chunk[drop:]
            drop -= min(drop, len(chunk))
        return part.at, part.first - 1
    pos = lines = 0  # the frame from its start: the first line start at or after part.at
    while part.at and (chunk := chunks.next()) is not None:
        i = chunk.find(b"\n", max(part.at - 1 - pos, 0)) if pos + len(chunk) >= part.at else -1
        if i >= 0:
            chunks.back = chunk[i + 1 :]
            return pos + i + 1, lines + _newlines(chunk, 0, i + 1)
        lines += _newlines(chunk, 0, len(chunk))
        pos += len(chunk)
    return pos, lines


def _content(chunks: _Pull, part, pos: int, before: int, end: dict) -> Iterator[bytes]:
    """The piece's chunks from content offset ``pos``, up to where the next piece starts
    (``end``: where that is, and the lines before it, for the next piece to go on from)."""
    target = None if part.last else part.at + part.length
    lines = before
    while (chunk := chunks.next()) is not None:
        if target is not None and pos + len(chunk) >= target:
            if part.counted:  # the first line start at or after the target
                i = chunk.find(b"\n", max(target - 1 - pos, 0))
                cut = i + 1 if i >= 0 else None
            else:
                cut = max(target - pos, 0)
            if cut is not None:
                chunks.back = chunk[cut:]
                if part.counted:
                    lines += _newlines(chunk, 0, cut)
                end.update(pos=pos + cut, lines=lines)
                if cut:
                    yield chunk[:cut]
                return
        if part.counted:
            lines += _newlines(chunk, 0, len(chunk))
        pos += len(chunk)
        yield chunk
