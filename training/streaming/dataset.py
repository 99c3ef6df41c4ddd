"""``StreamingShardDataset``: a torch ``IterableDataset`` that yields this rank's rows of every
global batch, streamed from the shards, with ``state_dict``/``load_state_dict``.

    ds = StreamingShardDataset("s3://bucket/run", global_batch_size=64, rank=rank,
                               world_size=world, seed=0)
    loader = DataLoader(ds, batch_size=ds.local_batch_size, collate_fn=DocumentCollator(),
                        num_workers=0)          # the reader prefetches on its own thread
    for epoch in range(start_epoch, epochs):
        ds.set_epoch(epoch, allowed=None)       # or a bool mask / row ids (dynamic pruning)
        for batch in loader: ...                # checkpoint ds.state_dict() after a step

Rows are dicts like ``training.data.ShardDataset``'s items: ``input_ids`` (int64, through
``token_map``), ``doc_lens``, ``doc_ids``, ``chunk_index`` and ``index`` (the global row id).

Every rank must iterate in step: ``local_batch_size`` rows per global step. The epoch's last
global batch may be short; a rank can then get fewer rows or none (see ``order.py``), so under
DDP use ``drop_last=True`` (that batch is left out of the epoch), or iterate ``steps()``, which
yields one list per global step on every rank, empty ones included.
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from pipelines.infra.errors import ConfigError
from training.streaming.cursor import EpochCursor
from training.streaming.index import ShardIndex
from training.streaming.order import GlobalOrder
from training.streaming.rows import StreamingRows


class StreamingShardDataset(IterableDataset):
    """This rank's rows of the shards at ``location``; see the module docstring.

    ``canonical_streams`` fixes the global order for any world size (keep it across resumes; a
    multiple of every world size you use keeps each rank on its own blocks), ``window_blocks``
    the blocks of a stream shuffled together, ``cache_bytes`` the decoded blocks kept ahead,
    ``prefetch_blocks`` how many blocks are read ahead. ``index`` (a ``ShardIndex``) skips
    opening the directory again.
    """

    def __init__(self, location, global_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, *, canonical_streams: int = 8, window_blocks: int = 4,
                 cache_bytes: int = 1 << 30, prefetch_blocks: int = 8, drop_last: bool = False,
                 token_map: np.ndarray | None = None, index: ShardIndex | None = None):
        self.index = index if index is not None else ShardIndex.open(location)
        self.order = GlobalOrder(self.index, seed, canonical_streams, window_blocks)
        self.cursor = EpochCursor(self.order, global_batch_size, rank, world_size, drop_last)
        self.rows = StreamingRows(self.index, cache_bytes, prefetch_blocks, token_map)
        self.local_batch_size = global_batch_size // world_size

    @property
    def epoch(self) -> int:
        return self.cursor.epoch

    @property
    def bytes_read(self) -> int:
        """Bytes this process has read from the shards so far."""
        return self.rows.bytes_read

    def set_epoch(self, epoch: int, allowed=None) -> None:
        """Iterate ``epoch`` next, taking only the ``allowed`` rows (None: all)."""
        self.cursor.set_epoch(epoch, allowed)

    def __len__(self) -> int:
        """Rows this rank takes in the current epoch, from its start."""
        c = self.cursor
        saved, c.position = c.position, 0
        try:
            return int(c.plan()[0].size)
        finally:
            c.position = saved

    def steps_per_epoch(self) -> int:
        """Global steps in the current epoch (the last one short unless ``drop_last``)."""
        return -(-self.cursor.end() // self.cursor.batch)

    def _plan(self):
        if get_worker_info() is not None:
            raise ConfigError("StreamingShardDataset runs in the main process (DataLoader "
                              "num_workers=0): it prefetches on its own thread, and worker copies "
                              "would each read every row and lose the resume state")
        plan = self.cursor.plan()
        self.rows.plan(plan[0])
        return plan

    def __iter__(self):
        """This rank's rows from the cursor's position to the epoch's end; the cursor advances
        as each row is handed out, and to the next epoch at the end."""
        c = self.cursor
        rows, _, after = self._plan()
        for k in range(rows.size):
            row = self.rows.take()
            if after[k] >= 0:
                c.position = int(after[k])
            yield row
        c.position = c.end()
        c.finish_epoch()

    def steps(self):
        """One list of rows per global step, this rank's share, an empty list when it has none
        (so every rank makes the same number of steps)."""
        c = self.cursor
        start, end = c.position, c.end()
        _, step, _ = self._plan()
        counts = np.bincount(step, minlength=-(-(end - start) // c.batch))
        for t, n in enumerate(counts.tolist()):
            rows = [self.rows.take() for _ in range(n)]
            c.position = min(start + (t + 1) * c.batch, end)
            yield rows
        c.position = end
        c.finish_epoch()

    def state_dict(self) -> dict:
        """Epoch, global position, seed, canonical streams, window and data set identity."""
        return self.cursor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off, for any world size; refuses another seed/data."""
        self.cursor.load_state_dict(state)

    def close(self) -> None:
        self.rows.close()
