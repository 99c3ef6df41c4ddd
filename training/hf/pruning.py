"""Dynamic EL2N pruning (``pruning_data.DynamicPruner``) for the Hugging Face ``Trainer`` or a plain loop.

``PruningSampler`` is a torch ``Sampler`` over row indices. It draws a stream of *pruning
epochs*: epoch ``e`` is the pruner's subset for ``e`` (all rows during ``full_epochs``, then
``keep_fraction`` of them, skipping the ``offset_fraction`` hardest), shuffled from ``(seed, e)``.
A rescore epoch needs one score per row (EL2N with the current model, ``el2n_row_scores``)
before it is drawn; the subset is taken right when the scores arrive.

The ``Trainer`` sees epochs of a fixed ``len(sampler)`` samples (default: all rows); Trainer
epoch ``t`` is the stream's samples ``[t * len, (t + 1) * len)``, so pruned epochs make the same
number of steps cover more pruning epochs. A batch may hold the end of one pruning epoch and the
start of the next.

``PruningCallback`` (``Trainer(callbacks=[...])``) scores at optimizer-step boundaries, never
from inside the data loader: at the boundary before global step ``s`` it scores every pruning
epoch that starts before the stream position of step ``s + 2`` (``schedule.StepLayout``). Step
``s``'s fetch, with the loader's one micro-batch of look-ahead, never reaches that far, and the
position depends on the global batch only, so one process and N processes score at the same
step with the same model. Under ``torchrun`` / ``accelerate launch`` each rank scores ``1/N`` of
the rows and the scores are summed across ranks (``all_reduce``), so every rank holds the same
scores and subset. The callback also saves the pruner's state with every checkpoint (rank 0) and
on resume restores it and skips the stream positions the checkpoint's steps took, for any world
size and accumulation with the same global batch (another global batch is refused). It needs
``dataloader_num_workers=0`` (workers prefetch further ahead than the look-ahead above) and, under
N processes, ``len(sampler)`` a multiple of ``per_device_train_batch_size * N`` (else accelerate
pads the epoch's last batches with rows from its start); both are refused with one line.

The Trainer has no argument for a sampler: ``PruningTrainer`` (a ``Trainer`` that takes
``train_sampler=``) plugs it in; it also takes ``shard_rows(..., streaming=True)`` as
``train_dataset`` (``training.hf.streaming``). With ``datasets`` or torch datasets alike, keep
``remove_unused_columns=False`` so ``doc_lens`` reaches the collator.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import Trainer

from pipelines.infra.errors import ConfigError
from pruning_data import DynamicPruner, el2n
from training.hf.checkpoint_state import CheckpointedCallback
from training.hf.collator import IGNORE_INDEX, PackedCollator
from training.hf.distributed import all_sum, world
from training.hf.schedule import StepLayout

KEEP_SUBSETS = 8  # subsets of recent rescore epochs kept (an epoch being drawn may be older than the latest)


class PruningSampler(Sampler):
    def __init__(self, pruner: DynamicPruner, seed: int = 0, samples_per_epoch: Optional[int] = None,
                 scorer: Optional[Callable[[int], np.ndarray]] = None):
        self.pruner = pruner
        self.seed = int(seed)
        self.samples_per_epoch = int(samples_per_epoch or pruner.n_examples)
        self.scorer = scorer
        self.epoch = 0  # Trainer epoch (set_epoch)
        self.scored_epoch = -1  # latest pruning epoch whose scores were given to the pruner
        self.skip_until = 0  # stream positions before this are only counted (a resumed run skips them)
        self.rescored: list = []  # pruning epochs rescored by this sampler, in order (for logs and tests)
        self.managed = False  # True under PruningCallback: scoring happens at step boundaries only
        self._subsets: dict = {}  # rescore epoch -> its subset, taken when its scores arrived

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_size(self, pruning_epoch: int) -> int:
        p = self.pruner
        return p.n_examples if pruning_epoch < p.full_epochs else p.n_keep

    def epoch_start(self, pruning_epoch: int) -> int:
        """Stream position of a pruning epoch's first sample."""
        p, e = self.pruner, int(pruning_epoch)
        if e <= p.full_epochs:
            return e * p.n_examples
        return p.full_epochs * p.n_examples + (e - p.full_epochs) * p.n_keep

    def locate(self, position: int) -> tuple:
        """(pruning epoch, offset inside it) of a stream position."""
        p, full = self.pruner, self.pruner.n_examples * self.pruner.full_epochs
        if position < full:
            return position // p.n_examples, position % p.n_examples
        if p.n_keep == 0:
            raise ValueError("keep_fraction keeps no example")
        return p.full_epochs + (position - full) // p.n_keep, (position - full) % p.n_keep

    def score(self, pruning_epoch: int) -> None:
        """Give the pruner the scorer's scores for ``pruning_epoch`` and take its subset now."""
        if self.scorer is None:
            raise RuntimeError(f"pruning epoch {pruning_epoch} needs EL2N scores: give the sampler a scorer "
                               "(PruningCallback does, in a Trainer)")
        self.pruner.update(self.scorer(pruning_epoch))
        self.scored_epoch = int(pruning_epoch)
        self.rescored.append(int(pruning_epoch))
        self._subsets[int(pruning_epoch)] = self.pruner.indices(pruning_epoch)
        for old in sorted(self._subsets)[:-KEEP_SUBSETS]:
            del self._subsets[old]

    def score_before(self, position: int) -> None:
        """Score every rescore epoch that starts before stream ``position`` and has no scores yet."""
        if self.pruner.strategy != "el2n" or self.pruner.n_keep == 0:
            return
        e = self.scored_epoch + 1
        while self.epoch_start(e) < position:
            if self.pruner.needs_scores(e):
                self.score(e)
            e += 1

    def order(self, pruning_epoch: int) -> np.ndarray:
        """The rows of a pruning epoch in drawing order (rescoring first when it is due)."""
        if self.pruner.needs_scores(pruning_epoch) and self.scored_epoch < pruning_epoch:
            if self.managed:
                raise RuntimeError(f"the data loader reached pruning epoch {pruning_epoch} before its scores: "
                                   "PruningCallback scores at step boundaries, so keep dataloader_num_workers=0 "
                                   "and do not iterate the sampler outside the Trainer")
            self.score(pruning_epoch)
        rescore = self.pruner.rescore_epoch(pruning_epoch)
        kept = self._subsets.get(rescore) if rescore is not None else None
        if kept is None:
            kept = self.pruner.indices(pruning_epoch)
        rng = np.random.default_rng([self.seed, pruning_epoch])
        return kept[rng.permutation(kept.size)]

    def __iter__(self):
        start = self.epoch * self.samples_per_epoch
        end = start + self.samples_per_epoch
        position = start
        skipped = min(max(self.skip_until - start, 0), self.samples_per_epoch)
        for _ in range(skipped):  # placeholders for the batches a resumed Trainer skips unseen
            yield 0
        position += skipped
        while position < end:
            e, offset = self.locate(position)
            order = self.order(e)
            take = order[offset:offset + (end - position)]
            yield from take.tolist()
            position += take.size

    def state_dict(self) -> dict:
        return {"seed": self.seed, "samples_per_epoch": self.samples_per_epoch, "scored_epoch": self.scored_epoch,
                "rescored": torch.tensor(self.rescored, dtype=torch.int64), "pruner": self.pruner.state_dict(),
                "subsets": {str(e): torch.from_numpy(kept.copy()) for e, kept in self._subsets.items()}}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "samples_per_epoch"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"checkpoint has {key}={state[key]}, this sampler {getattr(self, key)}")
        self.pruner.load_state_dict(state["pruner"])
        self.scored_epoch = int(state["scored_epoch"])
        self.rescored = state["rescored"].tolist()
        self._subsets = {int(e): t.numpy().copy() for e, t in state.get("subsets", {}).items()}


@torch.no_grad()
def el2n_row_scores(model, dataset, collator: PackedCollator, batch_size: int = 8,
                    rows: Optional[range] = None) -> np.ndarray:
    """EL2N of every row of ``dataset`` (mean error norm over its scored targets; 0 if none), or
    of ``rows`` only (the others stay 0).

    Rows are scored stacked, with ``collator``'s attention settings, so documents stay apart as in
    training. The model is put in eval mode for the pass and restored.
    """
    stacked = PackedCollator(layout="stack", position_ids=collator.position_ids, mask=collator.mask,
                             mask_dtype=collator.mask_dtype, pad_id=collator.pad_id, token_map=collator.token_map,
                             flash_attn_kwargs=collator.flash_attn_kwargs, seq_idx=collator.seq_idx,
                             use_cache=collator.use_cache)
    rows = range(len(dataset)) if rows is None else rows
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(len(dataset), dtype=np.float64)
    try:
        for start in range(rows.start, rows.stop, batch_size):
            idx = range(start, min(start + batch_size, rows.stop))
            batch = stacked([dataset[i] for i in idx])
            labels = batch.pop("labels")
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            logits = model(**inputs).logits
            scores = el2n(logits[:, :-1], labels[:, 1:].to(device), reduce="sequence", ignore_index=IGNORE_INDEX)
            out[start:start + len(idx)] = np.nan_to_num(scores.double().cpu().numpy(), nan=0.0)
    finally:
        model.train(was_training)
    return out


def shared_el2n_scores(model, dataset, collator: PackedCollator, batch_size: int = 8) -> tuple[np.ndarray, int]:
    """(EL2N of every row, rows this rank scored): rank ``r`` of ``N`` scores rows
    ``[r*n//N, (r+1)*n//N)`` and the ranks' vectors are summed (each row is non-zero on one rank
    only, so the float64 sum is exact). Every rank must call it at the same point."""
    rank, size = world()
    n = len(dataset)
    mine = range(rank * n // size, (rank + 1) * n // size)
    scores = el2n_row_scores(model, dataset, collator, batch_size, rows=mine)
    if size > 1:
        scores = all_sum(torch.from_numpy(scores)).numpy()
    return scores, len(mine)


class PruningCallback(CheckpointedCallback):
    """Wires a ``PruningSampler`` into a Trainer run: scoring, checkpoints, resume position."""

    state_file = "fewtrunc-pruning.pt"

    def __init__(self, sampler: PruningSampler, dataset, collator: PackedCollator, batch_size: int = 8):
        super().__init__()
        self.sampler = sampler
        self.dataset = dataset
        self.collator = collator
        self.batch_size = int(batch_size)
        self.layout: Optional[StepLayout] = None
        self.rows_scored = 0  # rows this process scored, over all rescorings
        self._model = None
        self._saved_batch: Optional[int] = None

    def state_dict(self) -> dict:
        return {**self.sampler.state_dict(), "global_batch": self.layout.global_batch if self.layout else -1}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._saved_batch = int(state.get("global_batch", -1))

    def _score(self, pruning_epoch: int) -> np.ndarray:
        scores, n = shared_el2n_scores(self._model, self.dataset, self.collator, self.batch_size)
        self.rows_scored += n
        return scores

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if args.dataloader_num_workers:
            raise ConfigError("PruningCallback needs dataloader_num_workers=0: loader workers fetch batches "
                              "further ahead than the step at which rescoring happens")
        self.layout = StepLayout.from_args(args, len(self.sampler))
        self.layout.check("the PruningSampler (samples_per_epoch)")
        if self._saved_batch not in (None, -1) and self._saved_batch != self.layout.global_batch:
            raise ConfigError(
                f"the checkpoint was made with a global batch of {self._saved_batch} rows, this run has "
                f"{self.layout.global_batch} (per_device_train_batch_size x world size x gradient_accumulation_steps): "
                "keep the global batch when resuming")
        self._model = model
        self.sampler.scorer = self._score
        self.sampler.managed = True
        step = state.global_step
        self.sampler.skip_until = self.layout.position(step) if step > 0 else 0
        self.sampler.set_epoch(self.layout.epoch_of(step))
        self.sampler.score_before(self.layout.position(step + 2))

    def on_epoch_begin(self, args, state, control, **kwargs):
        # accelerate does not reach the sampler's set_epoch through a resumed (skipping) loader
        self.sampler.set_epoch(self.layout.epoch_of(state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step < state.max_steps:
            self.sampler.score_before(self.layout.position(state.global_step + 2))


class PruningTrainer(Trainer):
    """A ``transformers.Trainer`` that draws training rows with ``train_sampler``, or from
    ``shard_rows(..., streaming=True)``'s reader when that is the ``train_dataset``."""

    def __init__(self, *args, train_sampler: Optional[Sampler] = None, **kwargs):
        from training.hf.streaming import streaming_wiring

        train_sampler, extra = streaming_wiring(kwargs.get("train_dataset"), train_sampler)
        if extra is not None:
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), extra]
        self.train_sampler = train_sampler
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self):
        loader = super().get_train_dataloader()
        if getattr(self.train_sampler, "rank_aware", False):
            # the sampler already yields this rank's share: accelerate must not deal it out again
            shard = getattr(loader, "batch_sampler", None)
            if shard is not None and hasattr(shard, "num_processes"):
                shard.num_processes, shard.process_index = 1, 0
        return loader
