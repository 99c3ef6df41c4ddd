"""Rows of fewtrunc shards for ``PackedCollator``: a directory, or ``datasets`` over the files."""
from __future__ import annotations

import glob
from pathlib import Path

from pipelines.shard_format import SHARD_GLOB, list_shards
from training.data import ShardDataset
from training.shard_checks import open_shard_file, read_batch


def shard_rows(source, use_datasets: bool = False):
    """The rows of a shard directory (``ShardDataset``: memory-mapped, one record batch decoded
    at a time), or with ``use_datasets=True`` (or a file, glob or list of files as ``source``)
    ``datasets.load_dataset("arrow", data_files=...)`` of them in numpy format. Both give
    ``PackedCollator`` the same rows in the same order (remap ids with its ``token_map``).

    Either way every shard is checked first (``training.shard_checks``): a damaged one ends in
    a ``ShardError`` naming the file, not in an Arrow error from inside ``datasets``.
    """
    if isinstance(source, (str, Path)) and Path(source).is_dir() and not use_datasets:
        return ShardDataset(source)
    import datasets

    if isinstance(source, (str, Path)) and Path(source).is_dir():
        files = [str(p) for p in list_shards(source)]
        if not files:
            raise FileNotFoundError(f"no {SHARD_GLOB} in {str(source)!r}")
    elif isinstance(source, (str, Path)):
        files = str(source)
    else:
        files = [str(p) for p in source]
    check_files(sorted(glob.glob(files)) if isinstance(files, str) and glob.has_magic(files) else files)
    return datasets.load_dataset("arrow", data_files=files, split="train").with_format("numpy")


def check_files(files) -> None:
    """Open and check every record batch of each local shard file (``ShardError`` on damage)."""
    for name in [files] if isinstance(files, str) else files:
        reader = open_shard_file(name, name)
        for b in range(reader.num_record_batches):
            read_batch(reader, b, name)
