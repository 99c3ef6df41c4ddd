"""A Trainer callback whose state travels with the Trainer's checkpoints.

On every save the callback writes ``state_dict()`` (tensors and numbers, loadable with
``torch.load(..., weights_only=True)``) next to the Trainer's files, as
``checkpoint-N/<state_file>``, from the main process only (under ``torchrun`` every rank holds
the same state: the callbacks here keep it global). When a run resumes (``trainer.train(resume_from_checkpoint=...)``
restores ``global_step = N``), ``on_train_begin`` loads ``<output_dir>/checkpoint-N/<state_file>``:
the folder the Trainer wrote; every rank reads it, so ``output_dir`` must be shared by the ranks,
as for the Trainer's own checkpoints. Resuming from a checkpoint folder outside ``output_dir`` needs
``load_checkpoint(folder)`` called before ``train``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

CHECKPOINT_PREFIX = "checkpoint"  # transformers' PREFIX_CHECKPOINT_DIR


class CheckpointedCallback(TrainerCallback):
    state_file = "fewtrunc-state.pt"

    def __init__(self):
        self._loaded_from: Path | None = None

    def state_dict(self) -> dict:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def load_state_dict(self, state: dict) -> None:  # pragma: no cover
        raise NotImplementedError

    def load_checkpoint(self, folder) -> None:
        path = Path(folder) / self.state_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: the checkpoint was written without this callback "
                                    f"({type(self).__name__}), so its schedule cannot be resumed")
        self.load_state_dict(torch.load(path, weights_only=True))
        self._loaded_from = Path(folder)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}-{state.global_step}"
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(self.state_dict(), folder / self.state_file)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0 and self._loaded_from is None:
            self.load_checkpoint(Path(args.output_dir) / f"{CHECKPOINT_PREFIX}-{state.global_step}")
