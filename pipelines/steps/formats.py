"""Every input format by name, in one place. The planner tells a file's format from its name here
(``format_of``) and cuts a big file with its format's ``pieces``; the read step reads a source
with its format's ``records``; ``input.format`` may name any format here (or ``auto``), and
``fewtrunc run --help`` lists them.

A new format is one new module, with ``records(source, cfg, resumable)`` yielding
``sources.Record``s (and ``pieces(source, count)`` when a big file of it can be cut into
pieces), plus one ``register`` line at the end of this file. A reader imports
``pipelines.steps.sources``, never this registry nor the read step that calls it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipelines.steps import cut, read_files, read_hf, read_jsonl, read_parquet

AUTO = "auto"  # input.format: each file by its name, each directory as a tree or a dataset
FILES = "files"  # what a file of a directory tree, and a file no suffix claims, is read as
COMPRESSED = (".gz", ".zst", ".zstd")  # dropped from a name before its suffix is looked up


@dataclass(frozen=True)
class InputFormat:
    """What the planner and the reader need of a format. ``records(source, cfg, resumable)``
    yields the source's records in input order; ``resumable`` is the reader's
    ``read_piece.Resumable`` (a format that cuts may go on from the piece before; others ignore
    it)."""

    name: str
    summary: str  # one line: what ``fewtrunc run --help`` says of it
    records: Callable
    suffixes: tuple[str, ...] = ()  # file names that input.format=auto reads as this format
    # what ``Record.index`` counts, and what a reject names: "line" (from 1), "row" (from 0),
    # or "" (a file is one document: ``input.max_documents`` limits a tree's files instead)
    index: str = "line"
    # (source, count) -> its ``Piece``s, or [] to read it whole; None: never cut (``cut.py``)
    pieces: Callable | None = None
    # (directory) -> whether it is one dataset of this format (input.format=auto). A dataset
    # format reads through its own library: any directory, or a name that is not a path, is one
    # source and a unit of its own (no size on disk to group by), and it reads no URL
    dataset: Callable | None = None


FORMATS: dict[str, InputFormat] = {}


def register(fmt: InputFormat) -> InputFormat:
    """Add ``fmt`` (a plug-in, or a test's toy format); ``unregister`` takes it back."""
    if fmt.name in (AUTO, *FORMATS):
        raise ValueError(f"input format name {fmt.name!r} is taken")
    FORMATS[fmt.name] = fmt
    return fmt


def unregister(name: str) -> None:
    del FORMATS[name]


def choices() -> tuple[str, ...]:
    """What ``input.format`` may be, in the order help texts list them."""
    return (AUTO, *FORMATS)


def format_of(path: str, configured: str) -> str:
    """The format a file is read as: ``configured``, or under ``auto`` the format whose suffix
    its name ends with (``.gz``/``.zst``/``.zstd`` dropped first), else ``files``."""
    if configured != AUTO:
        return configured
    name = path.lower()
    for suffix in COMPRESSED:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for fmt in FORMATS.values():
        if fmt.suffixes and name.endswith(fmt.suffixes):
            return fmt.name
    return FILES


def dataset_format(directory: Path, configured: str) -> str | None:
    """The dataset format that reads ``directory`` whole, or None (it is a tree of files)."""
    fmt = FORMATS.get(configured)
    if fmt is not None:
        return configured if fmt.dataset is not None else None
    if configured != AUTO:
        return None
    return next((f.name for f in FORMATS.values() if f.dataset and f.dataset(directory)), None)


def is_dataset(name: str) -> bool:
    """Whether sources of format ``name`` are datasets read through their library."""
    fmt = FORMATS.get(name)
    return fmt is not None and fmt.dataset is not None


register(InputFormat("jsonl", "JSON lines, plain, gzip or zstd (detected from the first bytes)",
                     read_jsonl.records, (".jsonl", ".json", ".ndjson"), "line", cut.text_pieces))
register(InputFormat("parquet", "Parquet: the input.text_field column, a row group at a time",
                     read_parquet.records, (".parquet",), "row", cut.parquet_pieces))
register(InputFormat(FILES, "file trees: one file = one document (input.include / "
                     "input.exclude globs on a tree)", read_files.records, (), ""))
register(InputFormat("hf", "Hugging Face datasets: save_to_disk directories or load_dataset "
                     "specs (input.hf_*)", read_hf.records, (), "row", dataset=read_hf.is_saved))
