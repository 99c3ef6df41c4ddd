"""Big files cut into pieces, each a tokenize unit of its own, so that one big input spreads over
every worker (``plan.cut_sources`` asks a file's format for its pieces: ``text_pieces`` for JSON
lines, ``parquet_pieces`` for Parquet; docs/engines.md, "Few big units"); and a piece opened at
its own offset (``open_at``, for ``read_piece``).

A JSON lines or Parquet file larger than ``input.unit_bytes`` becomes ``ceil(size /
unit_bytes)`` pieces of about equal size (sizes on disk, as units of small files are counted;
never pieces under ``plan.MIN_PIECE``). Each piece starts at a record and knows the line (row)
number of its first record, so its document ids, its rejects' line numbers and everything after
them are those of the unsplit file, byte for byte:

- plain JSON lines: byte ranges that start at line starts; the planner reads the file once to
  find them and count the lines before each (``cut_text``);
- zstd with several frames: ranges that start at the first line start after a frame start, so a
  piece decodes from its own frame; the planner decodes the file once for the line counts;
- zstd in one frame whose header records its size (as ``zstd`` writes a file): a frame cannot
  be entered in the middle, so every piece decodes it from its start, finds its first line (the
  first line start at or after k/K of the content) and counts the lines before it on the way;
  the planner reads only the block headers. Piece k of K decodes (k+1)/K of the file, so there
  are at most ``ONE_FRAME_PIECES``. Without the size in its header, the planner decodes it once
  to find the cuts, and the pieces skip to them;
- Parquet: runs of consecutive row groups, from its footer.

Not cut: gzip (a member cannot be entered in the middle either), a file the planner cannot read
whole (damaged, truncated: read whole, and reported, as before), Parquet on a store without
ranged reads (``ranged``), and every file of a run with ``input.max_documents``.
"""
from __future__ import annotations

import io

from pipelines.steps.sources import Piece, disk_share

ONE_FRAME_PIECES = 4  # pieces of a one-frame .zst at most (the cost model: docs/engines.md)
GRID_MAX = 1 << 20  # candidate cut points at least every MiB of content
ZSTD_MAGIC, GZIP_MAGIC = b"\x28\xb5\x2f\xfd", b"\x1f\x8b"
CHUNK = 1 << 20


def text_pieces(src, count: int) -> list[Piece]:
    """A JSON lines file's pieces (plain or zstd; a gzip file is not cut)."""
    from pipelines.steps.cut_text import choose_cuts, frame_at, one_frame_size, scan
    from pipelines.steps.read_zstd import zstd_chunks
    from pipelines.infra.storage import open_input

    grid = max(64, min(GRID_MAX, src.size // (64 * count)))
    with open_input(src.path, regular=True) as f:
        head = f.peek(4)[:4] if hasattr(f, "peek") else b""
        if head[:2] == GZIP_MAGIC:
            return []  # a gzip member cannot be entered in the middle: not cut
        total = one_frame_size(f, src.size) if head == ZSTD_MAGIC else None
    if total is not None:  # one frame of a known size: its readers find the cuts
        return _counted_pieces(src, min(count, ONE_FRAME_PIECES), total)
    with open_input(src.path, regular=True) as f:
        codec, frames = ("zst", []) if head == ZSTD_MAGIC else ("", None)
        chunks = zstd_chunks(f, None, frames) if codec else iter(lambda: f.read(CHUNK), b"")
        s = scan(chunks, grid, frames)
    several = bool(codec) and len({d for _, d in s.frames if d < s.size}) > 1  # with text
    if codec and not several:
        count = min(count, ONE_FRAME_PIECES)
    cuts = [(0, 0)] + choose_cuts(s, count, several) + [(s.size, None)]
    n = len(cuts) - 1
    pieces = []
    for k in range(n):
        (a, before), (b, _) = cuts[k], cuts[k + 1]
        seek, skip = a, 0
        if codec:
            seek, start = frame_at(s.frames, a)
            skip = a - start
        pieces.append(Piece(k, n, before + 1, seek, skip, b - a,
                            disk_share(src.size, a, b, s.size), codec, a))
    return pieces


def _counted_pieces(src, count: int, total: int) -> list[Piece]:
    """A one-frame file of ``total`` content bytes in ``count`` pieces around ``k/count`` of its
    content: each reader decodes the frame from its start anyway, so it finds its first line
    and counts the lines before it on the way, and the planner reads 3 bytes a block."""
    at = [k * total // count for k in range(count + 1)]
    return [Piece(k, count, 0 if k else 1, 0, at[k], at[k + 1] - at[k],
                  disk_share(src.size, at[k], at[k + 1], total), "zst", at[k], counted=True)
            for k in range(count)]


def parquet_pieces(src, count: int) -> list[Piece]:
    """A Parquet file's pieces: runs of row groups (none where it cannot be read by ranges)."""
    import numpy as np

    from pipelines.steps.read_parquet import open_parquet

    if not ranged(src.path):
        return []
    meta = open_parquet(src.path).metadata
    groups = meta.num_row_groups
    sizes = np.array([sum(meta.row_group(g).column(c).total_compressed_size
                          for c in range(meta.num_columns)) for g in range(groups)], np.int64)
    rows = np.array([meta.row_group(g).num_rows for g in range(groups)], np.int64)
    ends = np.cumsum(sizes)
    total = int(ends[-1]) if groups else 0
    cuts = {0}
    for k in range(1, min(count, groups)):
        target = k * total / min(count, groups)
        j = int(np.searchsorted(ends, target))  # the boundary after group j or before it
        near = [g for g in (j, j + 1) if 0 < g < groups]
        if near:
            cuts.add(min(near, key=lambda g: (abs(int(ends[g - 1]) - target), g)))
    bounds = sorted(cuts) + [groups]
    first_rows = np.concatenate([[0], np.cumsum(rows)])
    n = len(bounds) - 1
    return [Piece(k, n, int(first_rows[bounds[k]]), bounds[k], 0, bounds[k + 1] - bounds[k],
                  disk_share(src.size, int((ends[bounds[k] - 1]) if bounds[k] else 0),
                             int(ends[bounds[k + 1] - 1]), total))
            for k in range(n)]


def ranged(path) -> bool:
    """Whether a piece of ``path`` can be read without its bytes before: a local file, or an
    S3 object (ranged requests; ``Location.ranged_reads``). Elsewhere (gs://) a text piece
    streams from the object's start and skips (more bytes read, the same records) and a Parquet
    file is not cut."""
    from pipelines.infra.storage.location import Location

    return Location.of(path).ranged_reads


def open_at(path, offset: int):
    """A buffered binary stream of the file or object at ``path`` (a str or ``Location``) from
    byte ``offset`` (an S3 object: ranged requests from there, never its bytes before)."""
    from pipelines.infra.storage import open_input
    from pipelines.infra.storage.listing import guarded
    from pipelines.infra.storage.location import Location
    from pipelines.infra.storage.reading import BUFFER

    where = Location.of(path)
    if not where.remote:
        f = open_input(path, regular=True)
        f.seek(offset)
        return f
    if not where.ranged_reads:
        f = open_input(where.text)
        while offset > 0 and (got := len(f.read(min(offset, BUFFER)))):
            offset -= got
        return f
    resolved = where.resolve()
    with guarded(where.text, resolved):
        raw = resolved.fs.open_input_file(resolved.path)
        raw.seek(offset)
    return io.BufferedReader(_Ranged(raw, where.text), BUFFER)


class _Ranged(io.RawIOBase):
    """A pyarrow random-access file as a ``RawIOBase`` whose errors name the URL."""

    def __init__(self, f, url: str):
        self._f, self._url = f, url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from pipelines.infra.storage.listing import guarded

        with guarded(self._url):
            data = self._f.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()
