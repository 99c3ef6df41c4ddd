"""A zstandard stream (one frame or several) as chunks of decompressed bytes, for the JSON lines
reader: bounded in memory whatever the ratio, and keeping every block before a damaged one.

- Memory: ``decompressobj`` has no output limit, and a 64 KiB piece of RLE blocks (4 bytes
  each, 128 KiB out) inflates to 2 GiB in one call. Pieces of ``FEED`` bytes bound one call at
  ``FEED / 4 * 128 KiB`` = 64 MiB; their outputs are joined into chunks of about ``CHUNK``.
  (Smaller pieces cost nothing measurable: the decoder does the same work.)
- Damage: a block's output comes out whole when its last byte goes in, and a damaged block
  raises when it is decoded; the outputs of the call that raises are lost with it. A
  decompressor cannot be copied, so ``_salvage`` decodes the frame again from its start, skips
  what was given already, and feeds the damaged piece byte by byte: every block before the
  damaged one comes out, then the same error. One more decoding of the frame, only on damage.
"""
from __future__ import annotations

from itertools import repeat
from typing import Callable, Iterator

CHUNK = 1 << 20  # compressed bytes read at a time; decompressed bytes per chunk given
FEED = 1 << 11  # compressed bytes per decompress call


def zstd_chunks(f, reopen: Callable | None = None, frames: list | None = None
                ) -> Iterator[bytes]:
    """Decompressed chunks of the stream ``f``; ``reopen()`` opens it again from its start (for
    the salvage; without it a damaged piece's output is lost). ``frames``: each frame's (offset
    in ``f``, decompressed bytes before it) is appended as the frame starts (where a file may be
    cut, ``pipelines/steps/cut.py``). Raises ``zstandard.ZstdError`` at damage, ``EOFError``
    when the stream ends inside a frame."""
    pending, size = [], 0
    try:
        for out in _outputs(f, reopen, frames):
            pending.append(out)
            size += len(out)
            if size >= CHUNK:
                yield b"".join(pending)
                pending, size = [], 0
    except Exception:  # damage or truncation: what decoded before it goes first
        if pending:
            yield b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)


def _outputs(f, reopen, frames: list | None = None) -> Iterator[bytes]:
    import zstandard

    pos, data, before = 0, f.read(CHUNK), 0  # pos: the file offset of data[0]
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        start, made = pos, 0  # the frame's file offset; the bytes it gave so far
        if frames is not None:
            frames.append((start, before))
        while True:
            for at in range(0, len(data), FEED):
                piece = data[at : at + FEED]
                try:
                    out = d.decompress(piece)
                except zstandard.ZstdError:  # what this call decoded is lost with it
                    if reopen is not None:
                        yield from _salvage(reopen, start, pos + at, made)
                    raise
                if out:
                    made += len(out)
                    yield out
                if d.eof:  # another frame may follow
                    break
            if d.eof:
                used = at + len(piece) - len(d.unused_data)
                pos, data = pos + used, data[used:] or f.read(CHUNK)
                before += made
                break
            pos += len(data)
            data = f.read(CHUNK)
            if not data:
                raise EOFError("zstd stream ends inside a frame (truncated)")


def _salvage(reopen, start: int, damaged: int, made: int) -> Iterator[bytes]:
    """What the piece at file offset ``damaged`` decodes before its damaged block, from the
    frame decoded again from ``start`` with its first ``made`` bytes skipped; then the error
    (if the stream no longer fails there, the caller raises the first error)."""
    import zstandard

    d = zstandard.ZstdDecompressor().decompressobj()
    with reopen() as g:
        _skip(g, start)
        for n in _replay_sizes(damaged - start):
            piece = g.read(n)
            out = d.decompress(piece) if piece else b""
            if len(out) > made:
                yield out[made:]
            made = max(0, made - len(out))
            if d.eof or not piece:
                return


def _replay_sizes(n: int) -> Iterator[int]:
    """The ``n`` bytes before the damaged piece in ``FEED``s, then the piece byte by byte."""
    yield from repeat(FEED, n // FEED)
    if n % FEED:
        yield n % FEED
    yield from repeat(1, FEED)


def _skip(f, n: int) -> None:
    """Move a fresh stream ``n`` bytes forward (a stream from a store reads them)."""
    if f.seekable():
        f.seek(n)
        return
    while n > 0 and (got := len(f.read(min(CHUNK, n)))):
        n -= got
