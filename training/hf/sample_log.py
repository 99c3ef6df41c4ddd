"""Which rows each optimizer step trained on, over all ranks: ``samples.jsonl`` for the HF path.

    recorder = RowRecorder(PackedCollator())                   # the Trainer's data_collator
    callbacks = [SampleLog(recorder, output / "samples.jsonl")]

One line per step, written by the main process only: ``{"step": s, "rows": [global row ids of
the step's global batch, in one process's order], "ranks": [[rows rank 0 trained on], ...]}``.
The rank lists come from the ranks themselves (all-gathered), not recomputed on rank 0. Rows
need their global id in ``"index"`` (``ShardDataset`` and the streaming reader give it).

The recorder notes each micro-batch when the loader collates it; the Trainer trains micro-batches
in that order (the loader's look-ahead batch waits in the queue for the next step), so a step's
rows are the first ``micro-batches of the step`` entries. ``"rows"`` interleaves the ranks per
micro-batch: the ``k``-th micro-batches of ranks 0..N-1 in turn are one process's ``k``-th.
"""
from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import torch
from transformers import TrainerCallback

from training.hf.distributed import world


class RowRecorder:
    """A collator wrapper that notes the ``index`` of the rows of every micro-batch it collates."""

    def __init__(self, collator):
        self.collator = collator
        self.pending: deque = deque()

    def __call__(self, rows):
        self.pending.append([int(r["index"]) for r in rows])
        return self.collator(rows)


class SampleLog(TrainerCallback):
    def __init__(self, recorder: RowRecorder, path):
        self.recorder, self.path = recorder, Path(path)
        self._micro = 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._micro = 1

    def on_substep_end(self, args, state, control, **kwargs):
        self._micro += 1

    def on_step_end(self, args, state, control, **kwargs):
        mine = [self.recorder.pending.popleft() for _ in range(self._micro)]
        rank, size = world()
        every = [mine]
        if size > 1:
            every = [None] * size
            torch.distributed.all_gather_object(every, mine)
        if state.is_world_process_zero:
            rows = [i for k in range(len(mine)) for r in every for i in r[k]]
            record = {"step": state.global_step, "rows": rows,
                      "ranks": [[i for batch in r for i in batch] for r in every]}
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
