"""Dynamic EL2N pruning (``pruning_data.DynamicPruner``) for the Hugging Face ``Trainer`` or a plain loop.

``PruningSampler`` is a torch ``Sampler`` over row indices. It draws a stream of *pruning
epochs*: epoch ``e`` is the pruner's subset for ``e`` (all rows during ``full_epochs``, then
``keep_fraction`` of them, skipping the ``offset_fraction`` hardest), shuffled from ``(seed, e)``.
When the stream reaches a rescore epoch the sampler asks its ``scorer`` for one score per row
(EL2N with the current model, ``el2n_row_scores``) before drawing that epoch.

The ``Trainer`` sees epochs of a fixed ``len(sampler)`` samples (default: all rows); Trainer
epoch ``t`` is the stream's samples ``[t * len, (t + 1) * len)``, so pruned epochs make the same
number of steps cover more pruning epochs. A batch may hold the end of one pruning epoch and the
start of the next.

``PruningCallback`` (``Trainer(callbacks=[...])``) gives the sampler a scorer that uses the
Trainer's model, saves the pruner's scores and selection with every checkpoint, and on resume
restores them, so the resumed run draws the same rows and rescoring happens at the same steps as
in an uninterrupted run. Scoring happens when the data loader *fetches* the first batch of a
rescore epoch; the Trainer's loader fetches one batch ahead, so keep ``dataloader_num_workers=0``
(more workers prefetch further ahead, and the model that scores is then older).

The Trainer has no argument for a sampler: ``PruningTrainer`` (a ``Trainer`` that takes
``train_sampler=``) plugs it in. With ``datasets`` or torch datasets alike, keep
``remove_unused_columns=False`` so ``doc_lens`` reaches the collator.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch.utils.data import Sampler
from transformers import Trainer

from pruning_data import DynamicPruner, el2n
from training.hf.checkpoint_state import CheckpointedCallback
from training.hf.collator import IGNORE_INDEX, PackedCollator


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

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def epoch_size(self, pruning_epoch: int) -> int:
        p = self.pruner
        return p.n_examples if pruning_epoch < p.full_epochs else p.n_keep

    def locate(self, position: int) -> tuple:
        """(pruning epoch, offset inside it) of a stream position."""
        p, full = self.pruner, self.pruner.n_examples * self.pruner.full_epochs
        if position < full:
            return position // p.n_examples, position % p.n_examples
        if p.n_keep == 0:
            raise ValueError("keep_fraction keeps no example")
        return p.full_epochs + (position - full) // p.n_keep, (position - full) % p.n_keep

    def order(self, pruning_epoch: int) -> np.ndarray:
        """The rows of a pruning epoch in drawing order (rescoring first when it is due)."""
        if self.pruner.needs_scores(pruning_epoch) and self.scored_epoch < pruning_epoch:
            if self.scorer is None:
                raise RuntimeError(f"pruning epoch {pruning_epoch} needs EL2N scores: give the sampler a scorer "
                                   "(PruningCallback does, in a Trainer)")
            self.pruner.update(self.scorer(pruning_epoch))
            self.scored_epoch = pruning_epoch
            self.rescored.append(pruning_epoch)
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
                "rescored": torch.tensor(self.rescored, dtype=torch.int64), "pruner": self.pruner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "samples_per_epoch"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"checkpoint has {key}={state[key]}, this sampler {getattr(self, key)}")
        self.pruner.load_state_dict(state["pruner"])
        self.scored_epoch = int(state["scored_epoch"])
        self.rescored = state["rescored"].tolist()


@torch.no_grad()
def el2n_row_scores(model, dataset, collator: PackedCollator, batch_size: int = 8) -> np.ndarray:
    """EL2N of every row of ``dataset`` (mean error norm over its scored targets; 0 if none).

    Rows are scored stacked, with ``collator``'s attention settings, so documents stay apart as in
    training. The model is put in eval mode for the pass and restored.
    """
    stacked = PackedCollator(layout="stack", position_ids=collator.position_ids, mask=collator.mask,
                             mask_dtype=collator.mask_dtype, pad_id=collator.pad_id, token_map=collator.token_map,
                             flash_attn_kwargs=collator.flash_attn_kwargs, seq_idx=collator.seq_idx,
                             use_cache=collator.use_cache)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = np.zeros(len(dataset), dtype=np.float64)
    try:
        for start in range(0, len(dataset), batch_size):
            idx = range(start, min(start + batch_size, len(dataset)))
            batch = stacked([dataset[i] for i in idx])
            labels = batch.pop("labels")
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            logits = model(**inputs).logits
            scores = el2n(logits[:, :-1], labels[:, 1:].to(device), reduce="sequence", ignore_index=IGNORE_INDEX)
            out[start:start + len(idx)] = np.nan_to_num(scores.double().cpu().numpy(), nan=0.0)
    finally:
        model.train(was_training)
    return out


class PruningCallback(CheckpointedCallback):
    """Wires a ``PruningSampler`` into a Trainer run: scorer, checkpoints, resume position."""

    state_file = "fewtrunc-pruning.pt"

    def __init__(self, sampler: PruningSampler, dataset, collator: PackedCollator, batch_size: int = 8):
        super().__init__()
        self.sampler = sampler
        self.dataset = dataset
        self.collator = collator
        self.batch_size = int(batch_size)

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)

    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        self.sampler.scorer = lambda epoch: el2n_row_scores(model, self.dataset, self.collator, self.batch_size)
        if state.global_step > 0 and train_dataloader is not None:
            # the samples a resumed Trainer skips: whole Trainer epochs, then full batches of this one
            batches, ga = len(train_dataloader), args.gradient_accumulation_steps
            per_step = max(batches // ga + int(batches % ga > 0), 1)  # the Trainer's steps per epoch
            epochs, steps = divmod(state.global_step, per_step)
            batches = steps * args.gradient_accumulation_steps
            self.sampler.skip_until = epochs * len(self.sampler) + batches * args.per_device_train_batch_size
        else:
            self.sampler.skip_until = 0


class PruningTrainer(Trainer):
    """A ``transformers.Trainer`` that draws training rows with ``train_sampler``."""

    def __init__(self, *args, train_sampler: Optional[Sampler] = None, **kwargs):
        self.train_sampler = train_sampler
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sampler is not None:
            return self.train_sampler
        return super()._get_train_sampler(train_dataset)
