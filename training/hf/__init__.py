"""Train Hugging Face ``transformers`` models on fewtrunc shards (the ``hf-train`` extra).

* ``PackedCollator``: padding-free batches that keep documents apart (labels, restarting
  position ids, ``use_cache=False``, varlen kwargs, optional 4D block-diagonal mask); rows that
  are not token ids are refused (``RowError``, naming the row);
* ``shard_rows``: a directory of shards, ``datasets.load_dataset("arrow", ...)`` of them, or
  (``streaming=True``) the streaming reader for N processes, as rows the collator takes;
* ``FewtruncLoss``: MLE, Error Norm Truncation or loss truncation as a Trainer
  ``compute_loss_func`` (and a callback that keeps its state in the Trainer's checkpoints);
* ``PruningSampler`` + ``PruningCallback``: dynamic EL2N pruning, resumable from checkpoints;
* ``PruningTrainer``: a Trainer that takes ``train_sampler=`` (or the streaming reader as its train set);
* ``RowRecorder`` + ``SampleLog``: the rows of every step, gathered from the ranks (``samples.jsonl``);
* ``pack_dataset``: a drop-in for TRL's ``pack_dataset`` with fewtrunc's exact global Best-fit packing.

``PackedCollator``, ``shard_rows`` and ``pack_dataset`` work without ``transformers``; everything is usable from a
plain PyTorch loop too (see docs/training.md).

Under ``torchrun`` / ``accelerate launch`` (a ``torch.distributed`` process group up) N processes
train on the rows, and log the losses, of one process with the same global batch
(``per_device_train_batch_size * N * gradient_accumulation_steps``): the loss's statistics are the
global micro-batch's, rescoring is split across the ranks, files are written by the main process,
and a checkpoint resumes with another N or accumulation (``schedule.StepLayout``).
"""
from training.hf.collator import IGNORE_INDEX, PackedCollator, RowError, block_causal_mask

__all__ = ["IGNORE_INDEX", "PackedCollator", "RowError", "block_causal_mask", "FewtruncLoss", "PruningCallback",
           "PruningSampler", "PruningTrainer", "RowRecorder", "SampleLog", "StepLayout", "el2n_row_scores",
           "pack_dataset", "shard_rows"]

_LAZY = {"FewtruncLoss": "training.hf.losses", "PruningCallback": "training.hf.pruning",
         "PruningSampler": "training.hf.pruning", "PruningTrainer": "training.hf.pruning",
         "el2n_row_scores": "training.hf.pruning", "pack_dataset": "training.hf.pack",
         "RowRecorder": "training.hf.sample_log", "SampleLog": "training.hf.sample_log",
         "StepLayout": "training.hf.schedule",
         "shard_rows": "training.hf.sources"}


def __getattr__(name):
    """Import the parts that need ``transformers`` / ``datasets`` only when they are used."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'training.hf' has no attribute {name!r}")
