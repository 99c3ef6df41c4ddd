"""A streaming reader of fewtrunc shards for N ranks: manifest-only start-up, block shuffles that
read each record batch about once per epoch, elastic (world-size-free) global order, background
prefetch into a bounded cache, and sample-level resume.

The pieces, each usable alone (import from ``training.streaming``):

- ``ShardIndex.open(location)`` (``index.py``): local directory, ``s3://`` or ``gs://``. Reads the
  listing and ``manifest.json`` only; ``.rows``, ``.blocks``, ``.block_rows``, ``.shard_bytes``,
  ``.fingerprint``. Directories without the per-batch counts fall back to the Arrow footers
  (small reads, no decompression) with a warning.
- ``GlobalOrder(index, seed, canonical_streams=8, window_blocks=4)`` (``order.py``): pure;
  ``.epoch(epoch, allowed=None)`` -> ``EpochOrder`` (``.rows`` int64 global ids in canonical order,
  ``.streams`` each row's canonical stream; ``.rank_rows(start, B, rank, N)``). ``rank_share(rows,
  rank, N, streams)`` is one rank's part of one global batch; the N parts of a batch are exactly
  the rows a 1-process run takes at that step, for any N dividing B.
- ``StreamingRows(index, cache_bytes=1 GiB, prefetch_blocks=8, token_map=None)`` (``rows.py``):
  ``.plan(rows)`` announces an order and starts the prefetch thread; ``.take()`` returns the next
  row; ``.get(i)`` any row; ``.bytes_read`` counts the bytes read from the shards.
- ``EpochCursor`` (``cursor.py``): epoch, global position, and ``state_dict``/``load_state_dict``.
- ``ShardFiles`` (``files.py``): every byte the reader reads, counted: ``pread`` locally, one
  ranged GET per record batch on ``s3://`` and on ``gs://`` (``gcs.py``: GCS's JSON API, as
  pyarrow's GCS file hangs against the emulator), a local copy (removed on ``close()``) on other
  stores.
- ``StreamingShardDataset(location, global_batch_size, rank, world_size, seed, ...)``
  (``dataset.py``): a torch ``IterableDataset`` of this rank's rows, ``.set_epoch(epoch,
  allowed)``, ``.steps()`` (one list per global step), ``.state_dict()``/``.load_state_dict()``.
- ``StreamingSampler`` with ``StreamingMapView`` (``sampler.py``): the same rows as a map-style
  dataset and a ``Sampler`` of this rank's global row ids, for loops (the HF Trainer) that want
  ``dataset[i]`` with a sampler.

Rows are dicts like ``training.data.ShardDataset``'s items: ``input_ids`` (int64), ``doc_lens``,
``doc_ids``, ``chunk_index``, ``index`` (the global row id, the same numbering as
``ShardDataset``).

Wiring it into a data-parallel loop:

    ds = StreamingShardDataset(cfg.data.dir, global_batch_size=B, rank=rank, world_size=N,
                               seed=cfg.seed, canonical_streams=8, drop_last=True)
    if resuming:
        ds.load_state_dict(checkpoint["data"])     # saved with any world size
    loader = DataLoader(ds, batch_size=ds.local_batch_size, collate_fn=collator, num_workers=0)
    while ds.epoch < epochs:
        ds.set_epoch(ds.epoch, allowed=kept_rows_or_None)
        for batch in loader:
            ...  # step; then checkpoint {"data": ds.state_dict(), ...} (any rank: they agree)

Every rank must see the same data: all-gather ``ds.index.fingerprint`` (a short hex string) and
refuse to start when the ranks disagree. Choose ``canonical_streams`` once per run as a multiple
of every world size you may use (8, 16, 64) and ``global_batch_size`` a multiple of it: then each
rank reads only its own streams' blocks, and all ranks together read the shards about once per
epoch (a few blocks more where streams of unequal length run out). ``cache_bytes``
must hold about ``window_blocks * canonical_streams / world_size`` decoded blocks (a
pipeline-written block is ~1M tokens, ~4 MB decoded) plus ``prefetch_blocks`` more.
"""
import importlib

_WHERE = {
    "ShardIndex": "index", "GlobalOrder": "order", "EpochOrder": "order", "rank_share": "order",
    "StreamingRows": "rows", "EpochCursor": "cursor", "StreamingShardDataset": "dataset",
    "StreamingSampler": "sampler", "StreamingMapView": "sampler",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Load on first use (PEP 562): the index and order need no torch."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
