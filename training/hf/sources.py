"""Rows of fewtrunc shards for ``PackedCollator``: a directory, ``datasets`` over the files, or
the streaming reader (local, ``s3://``, ``gs://``) for the Trainer under N processes."""
from __future__ import annotations

import glob
import os
from pathlib import Path

from pipelines.infra.errors import ConfigError
from pipelines.infra.shard_format import SHARD_GLOB, list_shards
from training.data import ShardDataset
from training.shard_checks import open_shard_file, read_batch


def shard_rows(source, use_datasets: bool = False, *, streaming: bool = False, per_device_batch_size: int = 0,
               seed: int = 0, **reader):
    """The rows of a shard directory (``ShardDataset``: memory-mapped, one record batch decoded
    at a time), or with ``use_datasets=True`` (or a file, glob or list of files as ``source``)
    ``datasets.load_dataset("arrow", data_files=...)`` of them in numpy format. Both give
    ``PackedCollator`` the same rows in the same order (remap ids with its ``token_map``).

    Either way every shard is checked first (``training.shard_checks``): a damaged one ends in
    a ``ShardError`` naming the file, not in an Arrow error from inside ``datasets``.

    ``streaming=True``: the streaming reader (``training.hf.streaming``; ``source`` a directory,
    ``s3://`` or ``gs://`` location) for ``PruningTrainer``, this rank's share of every global
    micro-batch of ``per_device_batch_size`` x world size rows in the order of ``seed``. It reads
    the manifest only at start (no shard is checked up front; a damaged block fails when read).
    ``reader``: ``StreamingShardDataset``'s keyword arguments (``canonical_streams``, ``cache_bytes``,
    ``prefetch_blocks``, ``rank``, ``world_size``, ...).
    """
    if streaming:
        if per_device_batch_size < 1:
            raise ConfigError("shard_rows(streaming=True) needs per_device_batch_size: the Trainer's "
                              "per_device_train_batch_size")
        return streaming_rows(source, per_device_batch_size, seed, **reader)
    if reader:
        raise TypeError(f"shard_rows got reader arguments {sorted(reader)} without streaming=True")
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


def streaming_rows(location, per_device_batch_size: int, seed: int = 0, rank: int | None = None,
                   world_size: int | None = None, **reader):
    """A ``StreamingMapView`` of a ``StreamingShardDataset`` whose global batch is one global
    micro-batch (``per_device_batch_size`` x world size; rank and world from the launcher's
    ``RANK``/``WORLD_SIZE`` unless given), dropping an epoch's short last micro-batch so that
    every rank makes the same number of steps. ``PruningTrainer`` wires it (``streaming.py``)."""
    from training.streaming import StreamingMapView, StreamingShardDataset

    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    reader.setdefault("drop_last", True)
    ds = StreamingShardDataset(location, global_batch_size=int(per_device_batch_size) * world_size, rank=rank,
                               world_size=world_size, seed=seed, **reader)
    return StreamingMapView(ds)
