"""Where a JSON lines file (plain or zstd) can be cut into pieces, found in one pass over its
content: the planner's side of ``pipelines/steps/cut.py``.

A piece starts at a line start, so no line is ever split, and it knows how many lines come
before it, so its records get the line numbers (and so the document ids, and the line numbers of
its rejects) of the unsplit file. Positions are in the file's *content* (decompressed bytes for
zstd): the cuts depend on the bytes and the number of pieces only, never on how the stream was
read (chunk sizes, the decoder's output sizes), so a resumed run plans the same pieces.

Candidate points are every ``grid`` bytes of content and every zstd frame start; for each, the
pass records the first line start at or after it and the lines before that. Newlines are
counted with numpy, a chunk at a time (~0.25 s per GB here, less than reading the file).
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

NL = 10  # b"\n"


@dataclass
class Scan:
    """One pass over a file's content: its size, its zstd frames ``(offset in the file,
    content bytes before it)``, and ``marks``: candidate point -> (first line start at or after
    it, lines before that line start)."""

    grid: int
    size: int = 0
    frames: list = field(default_factory=list)
    marks: dict = field(default_factory=dict)


def _newlines(buf, a: int, b: int) -> int:
    return int(np.count_nonzero(np.frombuffer(buf, np.uint8, b - a, a) == NL)) if b > a else 0


def scan(chunks, grid: int, frames: list | None = None) -> Scan:
    """Read ``chunks`` (the content, in order) once. ``frames`` is filled by the zstd decoder
    while it runs (a frame's start is known before any of its output comes)."""
    out = Scan(grid, frames=frames if frames is not None else [])
    pending: list[int] = []  # candidate points whose line start is still ahead, ascending
    pos = lines = 0  # content bytes, and newlines, before the current chunk
    next_grid, n_frames, tail_nl = grid, 0, False
    for chunk in chunks:
        if not chunk:
            continue
        end = pos + len(chunk)
        added = False
        while next_grid <= end:  # p <= end: the byte before p is in this chunk or earlier
            pending.append(next_grid)
            next_grid += grid
            added = True
        while n_frames < len(out.frames) and out.frames[n_frames][1] <= end:
            start = out.frames[n_frames][1]
            if start > 0 and start % grid:
                pending.append(start)
                added = True
            n_frames += 1
        if added:
            pending.sort()
        counted_to = counted = 0  # newlines in chunk[:counted_to]
        keep = []
        for p in pending:
            if p - 1 < pos:  # its byte p-1 was in an earlier chunk
                if p == pos and tail_nl:
                    out.marks[p] = (p, lines)
                    continue
                at = 0
            else:
                at = p - 1 - pos
            i = chunk.find(b"\n", at)
            if i < 0:
                keep.append(p)
                continue
            counted += _newlines(chunk, counted_to, i + 1)
            counted_to = i + 1
            out.marks[p] = (pos + i + 1, lines + counted)
        pending = keep
        lines += counted + _newlines(chunk, counted_to, len(chunk))
        tail_nl = chunk[-1] == NL
        pos = end
    out.size = pos
    out.marks = {p: m for p, m in out.marks.items() if m[0] < pos}  # a line must start there
    return out


def choose_cuts(s: Scan, count: int, frames_only: bool) -> list[tuple[int, int]]:
    """(content offset, lines before it) of each piece after the first: for piece k the line
    start nearest after the candidate point nearest to k/count of the content (a frame start
    when ``frames_only``: a piece then decodes from its own frame). Pieces that would be empty
    (a line longer than a piece) merge."""
    if frames_only:
        points = sorted({d for _, d in s.frames if 0 < d < s.size})
    else:
        points = list(range(s.grid, s.size, s.grid))
    cuts = set()
    for k in range(1, count):
        target = k * s.size // count
        j = bisect.bisect_left(points, target)
        near = [points[i] for i in (j - 1, j) if 0 <= i < len(points)]
        if not near:
            continue
        best = min(near, key=lambda p: (abs(p - target), p))
        if best in s.marks:
            cuts.add(s.marks[best])
    return sorted(cuts)


def frame_at(frames: list, offset: int) -> tuple[int, int]:
    """(file offset, content offset) of the last frame that starts at or before ``offset``."""
    starts = [d for _, d in frames]
    i = bisect.bisect_right(starts, offset) - 1
    return frames[max(i, 0)]


def one_frame_size(f, size: int) -> int | None:
    """The content size of a zstd file of ``size`` bytes that is one frame whose header records
    it (as ``zstd`` writes a file); None otherwise (several frames, no size recorded). Walks the
    frame's block headers, 3 bytes a block, seeking past the blocks (a local file) or reading
    through them (a stream): nothing is decoded."""
    import zstandard

    head = f.read(18)  # a frame header is at most 18 bytes
    try:
        params = zstandard.get_frame_parameters(head)
        pos = zstandard.frame_header_size(head)
    except zstandard.ZstdError:
        return None
    if params.content_size == zstandard.CONTENTSIZE_UNKNOWN or not params.content_size:
        return None
    ahead = head[pos:]  # read already, past the header

    def take(n: int) -> bytes:
        nonlocal ahead
        got, ahead = ahead[:n], ahead[n:]
        return got + f.read(n - len(got)) if len(got) < n else got

    def skip(n: int) -> None:
        nonlocal ahead
        dropped = min(n, len(ahead))
        ahead, n = ahead[dropped:], n - dropped
        if n and f.seekable():
            f.seek(n, 1)
            return
        while n > 0 and (got := len(f.read(min(n, 1 << 20)))):
            n -= got

    while True:
        block = take(3)
        if len(block) < 3:
            return None
        word = int.from_bytes(block, "little")
        last, kind, length = word & 1, (word >> 1) & 3, word >> 3
        if kind == 3:  # reserved: not a valid frame
            return None
        n = 1 if kind == 1 else length  # an RLE block stores one byte
        skip(n)
        pos += 3 + n
        if last:
            break
    pos += 4 if params.has_checksum else 0
    return params.content_size if pos == size else None
