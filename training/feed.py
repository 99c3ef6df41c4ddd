"""The rows of every training step, from the streaming reader (``training.streaming``), for one
process or for each of N.

The order is the reader's global order, a function of (``data.seed``, epoch, canonical streams,
allowed rows), never of the number of processes; each global batch of ``data.batch_size`` rows is
split by ``rank_share``, and a 1-process run takes the shares concatenated (rank 0's first). So N
processes train, step for step, on exactly the batch one process trains on, and the reader's
state (epoch, global sample position) resumes a run with any number of processes.

An epoch's last global batch may be short (batches never span epochs): a rank may then get fewer
rows than the others, or none, and still takes part in the step (``Trainer`` gives it a batch with
nothing to learn). ``subset(epoch)`` (dynamic pruning) gives the rows allowed in an epoch, after
``on_epoch_start(epoch)`` re-scored the data; a resumed epoch is not re-scored (the pruner's state
holds its selection).
"""
from __future__ import annotations

import numpy as np

from pipelines.infra.errors import ConfigError
from training.streaming import StreamingRows, StreamingShardDataset, rank_share


class StepFeed:
    """This rank's rows of every global step. ``epoch`` is the epoch of the step last returned."""

    def __init__(self, index, data_cfg, rank: int, world: int, token_map=None, subset=None,
                 on_epoch_start=None):
        self.ds = StreamingShardDataset(
            data_cfg.dir, data_cfg.batch_size, rank, world, data_cfg.seed, index=index,
            canonical_streams=data_cfg.canonical_streams, window_blocks=data_cfg.window_blocks,
            cache_bytes=data_cfg.cache_mb << 20, prefetch_blocks=data_cfg.prefetch_blocks,
            token_map=token_map)
        self.batch = int(data_cfg.batch_size)
        self.subset, self.on_epoch_start = subset, on_epoch_start
        self._steps = None
        self._resumed = False

    @property
    def epoch(self) -> int:
        return self.ds.epoch

    def next_step(self) -> tuple[list[dict], np.ndarray]:
        """(this rank's rows of the next global step, that step's global row ids in the order a
        1-process run trains them: the concatenation of the ranks' shares)."""
        empty_epochs = 0
        while True:
            if self._steps is None:
                self._start_epoch()
            c = self.ds.cursor
            start = c.position
            try:
                rows = next(self._steps)
            except StopIteration:  # the epoch is done; the cursor moved to the next one
                self._steps = None
                empty_epochs += 1  # one when a resumed epoch had no step left; more: no rows at all
                if empty_epochs > 2:
                    raise ConfigError(f"{self.ds.index.location!r} has no rows to train on") from None
                continue
            step_rows, streams = c.epoch_order().step(start, min(self.batch, c.end() - start))
            return rows, rank_share(step_rows, 0, 1, streams)  # the shares of rank 0, 1, ... in turn

    def _start_epoch(self) -> None:
        epoch = self.ds.epoch
        if self.on_epoch_start is not None and not self._resumed:
            self.on_epoch_start(epoch)
        self._resumed = False
        allowed = None if self.subset is None else self.subset(epoch)
        if allowed is not None and np.asarray(allowed).size == 0:
            raise ConfigError(f"epoch {epoch} has no rows to train on: pruning keeps none "
                              "(raise pruning.keep_fraction)")
        self.ds.set_epoch(epoch, allowed)
        self._steps = self.ds.steps()

    def state_dict(self) -> dict:
        return self.ds.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off (saved with any number of processes)."""
        self.ds.load_state_dict(state)
        self._steps, self._resumed = None, True

    def close(self) -> None:
        self.ds.close()


class RowView:
    """``view[i]``: global row ``i`` of the shards (a dict, as ``ShardDataset`` gives it), read
    through a ``StreamingRows`` of its own (a synchronous read, a small cache of blocks: in order,
    each block is read once), for scoring and inspection. ``longest_row`` and ``max_token_id``
    are the shards' (what ``training.preflight`` checks); ``directory`` is ``data.dir``."""

    def __init__(self, index, summary, token_map=None):
        self.index, self.directory = index, summary.directory
        self.longest_row, self.max_token_id = summary.longest_row, summary.max_token_id
        self.rows = StreamingRows(index, cache_bytes=64 << 20, prefetch_blocks=1, token_map=token_map)

    @property
    def token_map(self):
        return self.rows.token_map

    def __len__(self) -> int:
        return self.index.rows

    def __getitem__(self, i: int) -> dict:
        if not 0 <= int(i) < self.index.rows:
            raise IndexError(f"row {int(i)} out of range (the shards have {self.index.rows} rows)")
        return self.rows.get(int(i))

    def close(self) -> None:
        self.rows.close()


class RowRange:
    """Rows ``[start, stop)`` of a view, renumbered from 0 (their ``index`` stays global)."""

    def __init__(self, view, start: int, stop: int):
        self.view, self.start, self.stop = view, int(start), int(stop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> dict:
        return self.view[self.start + int(i)]


def nothing_to_learn(collator) -> dict:
    """A batch of one 1-token row with no target: what a rank whose share of a short last batch
    is empty trains on, so that it still runs the forward, the collectives and the backward
    (every parameter gets a zero gradient) with the others."""
    row = {"input_ids": np.zeros(1, np.int64), "doc_lens": np.ones(1, np.int64), "doc_ids": np.full(1, -1),
           "chunk_index": np.zeros(1, np.int64), "index": -1}
    batch = collator([row])
    batch["index"] = batch["index"][:0]
    return batch
