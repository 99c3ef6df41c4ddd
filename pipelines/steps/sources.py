"""The plain data that planning hands to reading: a ``Source`` (a file, or a piece of one), a
``Unit`` (the engine's task: consecutive sources), a ``Piece`` (where a source's piece of a big
file starts and ends) and a ``Record`` (what a format reader yields for each record).

A leaf module: the planner, the cutter, the format registry and every format reader import it,
and it imports none of them, so a reader never reaches back into its dispatcher.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class Source:
    path: str  # where it is on this machine (used in error messages)
    key: str  # stable name, as written in the config + relative path: seeds document ids
    format: str  # a name of the format registry (``pipelines.steps.formats``)
    size: int  # bytes on disk (0 for a dataset read through its library)
    error: str = ""  # why it cannot be read (a directory that cannot be listed): a reject
    mtime_ns: int = 0  # modification time when planned; 0 = unknown (a dataset, unreadable)
    part: Piece | None = None  # one piece of a big file (``cut.py``), else None


@dataclass(frozen=True)
class Unit:
    index: int
    sources: tuple[Source, ...]

    @property
    def bytes(self) -> int:
        """Its sources' sizes on disk (a piece's share of its file; 0 for a Hugging Face
        dataset): what a progress bar counts, and what orders units largest first."""
        return sum(s.part.disk if s.part is not None else s.size for s in self.sources)

    @property
    def continues(self) -> bool:
        """Whether the unit goes on from the unit before it: a piece of a big file other than
        its first (the partition layout cuts across them as across one unit)."""
        return bool(self.sources) and self.sources[0].part is not None \
            and self.sources[0].part.index > 0


@dataclass(frozen=True)
class Piece:
    """Piece ``index`` of the ``count`` a file is cut into (``Source.part``)."""

    index: int
    count: int
    first: int  # the line (1-based) or row (0-based) of its first record in the whole file
    seek: int  # jsonl: the file offset reading starts at (zstd: a frame's); parquet: row group
    skip: int  # content bytes dropped from ``seek`` before the piece's first line (zstd)
    length: int  # its content bytes (parquet: row groups); the last piece reads to the end
    disk: int  # the bytes of the file it stands for (progress bars, largest-first order)
    codec: str = ""  # "" (plain) or "zst"
    at: int = 0  # jsonl: where its content starts in the file's content (decompressed)
    # a one-frame .zst cut without the planner decoding it: ``at`` and ``at + length`` are
    # targets, the piece runs from the first line start at or after one to the first at or
    # after the other, and its reader counts the lines before it (``first`` is 0 then)
    counted: bool = False

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def digest(self) -> str:
        """What the inputs digest records of it (its place in the file)."""
        return (f"{self.index}/{self.count}:{self.first}:{self.at}:{self.seek}:{self.skip}:"
                f"{self.length}{':counted' if self.counted else ''}")


def disk_share(size: int, a: int, b: int, total: int) -> int:
    """The bytes of a file of ``size`` bytes that its content ``[a, b)`` of ``total`` stands for
    (``Piece.disk``)."""
    return size * b // total - size * a // total if total else 0


class Record(NamedTuple):
    index: int  # 1-based line (jsonl) or 0-based row (parquet, hf); 0 for a whole file
    text: object  # the text field's value (checked by the read step), or None if ``reason``
    doc_key: object  # the id field's value, or None
    nbytes: int  # input bytes this record took (for throughput)
    reason: str | None = None  # a record-level error found by the format reader
