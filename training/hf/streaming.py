"""The streaming shard reader (``training.streaming``) as a Hugging Face Trainer's train set.

    rows = shard_rows("s3://bucket/run", streaming=True, per_device_batch_size=4, seed=0)
    trainer = PruningTrainer(model=model, args=args, train_dataset=rows, data_collator=PackedCollator(),
                             callbacks=[...])   # args.per_device_train_batch_size=4, num_workers=0

``shard_rows(..., streaming=True)`` gives a ``StreamingMapView`` of a ``StreamingShardDataset``
whose global batch is one global micro-batch (``per_device_batch_size`` x world size, the world
read from the launcher's ``RANK``/``WORLD_SIZE``). ``PruningTrainer`` sees it and wires:

- ``TrainerStreamingSampler``: this rank's share of every global micro-batch, in the reader's
  world-size-free order (so N ranks' k-th micro-batches together are one process's k-th), with
  accelerate's re-sharding of the batches turned off (the sampler is already this rank's);
- ``StreamingCallback``: Trainer epoch ``t`` is reader epoch ``t``; checkpoints carry the
  reader's state at the step (epoch, position; seed, streams and data set, which a resume checks);
  a resume starts the reader at the checkpoint's position, so prefetching starts there, and feeds
  the Trainer's skipped batches placeholders. Any world size or accumulation with the same global
  batch resumes exactly (``schedule.StepLayout``).

The reader drops an epoch's last micro-batch when it is short (``drop_last``), so every rank makes
the same number of steps.
"""
from __future__ import annotations

from pipelines.infra.errors import ConfigError
from training.hf.checkpoint_state import CheckpointedCallback
from training.hf.schedule import StepLayout
from training.streaming import StreamingMapView, StreamingSampler


class TrainerStreamingSampler(StreamingSampler):
    """``StreamingSampler`` for the Trainer: already this rank's share (``rank_aware``), and
    resumable at a step boundary (``resume_at``)."""

    rank_aware = True

    def __init__(self, source):
        super().__init__(source)
        self._resume = None  # (epoch, global position) to start the next pass at

    def resume_at(self, epoch: int, position: int) -> None:
        self._resume = (int(epoch), int(position))
        self.source.set_epoch(int(epoch))

    def set_epoch(self, epoch: int, allowed=None) -> None:
        if int(epoch) != self.source.epoch:
            self.source.set_epoch(int(epoch), allowed)

    def __iter__(self):
        c, skipped = self.source.cursor, 0
        if self._resume is not None and self._resume[0] == c.epoch:
            c.position = self._resume[1]
            skipped = self._resume[1] // c.world  # this rank's rows of the whole micro-batches before
        self._resume = None
        for _ in range(skipped):  # placeholders for the batches the resumed Trainer skips unseen
            yield 0
        yield from super().__iter__()


class StreamingCallback(CheckpointedCallback):
    """Keeps the reader's epoch, checkpoints and resume in step with the Trainer."""

    state_file = "fewtrunc-reader.pt"

    def __init__(self, sampler: TrainerStreamingSampler):
        super().__init__()
        self.sampler, self.source = sampler, sampler.source
        self.layout: StepLayout | None = None
        self._saved = None
        self._step = 0  # the global step of the checkpoint being written

    def _epoch_rows(self) -> int:
        c = self.source.cursor
        saved, c.position = c.position, 0
        try:
            return c.end()
        finally:
            c.position = saved

    def state_dict(self) -> dict:
        step = self._step
        state = dict(self.source.state_dict())
        epoch = self.layout.epoch_of(step)
        state.update(epoch=epoch, position=self.layout.position(step) - epoch * self.layout.samples_per_epoch,
                     global_batch=self.layout.global_batch)
        return state

    def load_state_dict(self, state: dict) -> None:
        self._saved = dict(state)
        self.source.load_state_dict(state)  # refuses another seed, stream count, window or data set

    def on_save(self, args, state, control, **kwargs):
        self._step = state.global_step
        super().on_save(args, state, control, **kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        c = self.source.cursor
        if args.per_device_train_batch_size * args.world_size != c.batch or args.world_size != c.world:
            raise ConfigError(f"the streaming rows were made for {c.world} processes x {c.batch // c.world} rows, "
                              f"the Trainer runs {args.world_size} x {args.per_device_train_batch_size}: give "
                              "shard_rows(per_device_batch_size=...) the Trainer's per_device_train_batch_size")
        if args.dataloader_num_workers:
            raise ConfigError("the streaming reader prefetches on its own thread: use dataloader_num_workers=0")
        self.layout = StepLayout.from_args(args, self._epoch_rows())
        if self._saved is not None and int(self._saved.get("global_batch", -1)) not in (-1, self.layout.global_batch):
            raise ConfigError(f"the checkpoint was made with a global batch of {self._saved['global_batch']} rows, "
                              f"this run has {self.layout.global_batch}: keep the global batch when resuming")
        step = state.global_step
        epoch = self.layout.epoch_of(step)
        self.sampler.resume_at(epoch, self.layout.position(step) - epoch * self.layout.samples_per_epoch)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.sampler.set_epoch(self.layout.epoch_of(state.global_step))


def streaming_wiring(dataset, sampler):
    """(sampler, extra callback or None) for ``PruningTrainer``: the streaming pair when the train
    set is a ``StreamingMapView`` and no sampler was given."""
    if sampler is None and isinstance(dataset, StreamingMapView):
        sampler = TrainerStreamingSampler(dataset.source)
        return sampler, StreamingCallback(sampler)
    return sampler, None
