"""A map-style view and a ``Sampler`` over a ``StreamingShardDataset``, for loops that want
``dataset[i]`` plus a sampler (the HF Trainer's ``train_dataset`` and ``_get_train_sampler``).

    ds = StreamingShardDataset(location, global_batch_size=B, rank=rank, world_size=N, seed=0)
    loader = DataLoader(StreamingMapView(ds), sampler=StreamingSampler(ds),
                        batch_size=ds.local_batch_size, collate_fn=collator, num_workers=0)

The sampler yields this rank's global row ids in order (``EpochOrder.rank_rows``) and announces
them to the reader, so ``view[i]`` in that order is served from the prefetched blocks; it
advances the dataset's cursor as ids are handed out, so ``ds.state_dict()`` stays exact. It is
already this rank's share: a launcher must not shard it again (accelerate shards a DataLoader's
batch sampler across processes unless told otherwise). Reads outside the announced order work
too, as synchronous reads.
"""
from __future__ import annotations

from torch.utils.data import Dataset, Sampler


class StreamingMapView(Dataset):
    """``view[i]`` is global row ``i`` of the dataset's shards (a dict, as the dataset yields)."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return self.source.index.rows

    def __getitem__(self, i: int) -> dict:
        return self.source.rows.get(i)


class StreamingSampler(Sampler):
    """This rank's global row ids for the dataset's current epoch, from its cursor's position."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int, allowed=None) -> None:
        self.source.set_epoch(epoch, allowed)

    def __iter__(self):
        c = self.source.cursor
        rows, _, after = self.source._plan()
        for k, i in enumerate(rows.tolist()):
            if after[k] >= 0:
                c.position = int(after[k])
            yield i
        c.position = c.end()
        c.finish_epoch()
