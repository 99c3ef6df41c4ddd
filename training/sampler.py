"""A seeded sampler that resumes mid-epoch, and the adapter that lets it honour a DynamicPruner.

``fewtrunc train`` draws its rows from the streaming reader (``training.feed``), whose order does
not depend on the number of processes, with ``PrunerSubset`` giving each epoch's allowed rows and
keep masks; ``ResumableSampler`` remains for single-process loops over a map-style dataset.

Batches never span two epochs (the last batch of an epoch may be smaller). The order of epoch
``e`` is a pure function of ``(seed, e, subset(e))``, so a sampler restored from
``state_dict()`` yields exactly the batches the original would have yielded next.

Pruning unit (``PrunerSubset``):
  * ``"row"``: the pruner's examples are packed rows; pruned rows are not drawn, so each pruned
    epoch costs ``keep_fraction`` of the steps.
  * ``"document"``: the pruner's examples are documents; ``segment_example`` maps every
    document segment of the rows (row-major, the order of ``pruning_data.el2n(reduce="document")``)
    to its example, so all chunks of a document split across rows are kept or pruned together
    (default: every segment its own example). Rows are not re-packed: a row is drawn when at
    least one of its segments is kept, and the pruned segments of a drawn row get no loss (their
    labels are ignored). Compute is saved only on rows pruned whole; to
    save it fully, write the next epoch's shards from the scores instead (``fewtrunc score``).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np


class ResumableSampler:
    """Infinite stream of index batches, shuffled per epoch.

    ``subset(epoch)`` (optional) returns the example indices allowed in that epoch; it is
    called once per epoch, after ``on_epoch_start(epoch)`` (the hook where a trainer re-scores
    data for a pruner). Both are re-evaluated lazily after ``load_state_dict``.
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int = 0,
                 subset: Optional[Callable[[int], np.ndarray]] = None,
                 on_epoch_start: Optional[Callable[[int], None]] = None):
        if n_examples < 1 or batch_size < 1:
            raise ValueError("need n_examples >= 1 and batch_size >= 1")
        self.n_examples = int(n_examples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.subset = subset
        self.on_epoch_start = on_epoch_start
        self.epoch = 0
        self.position = 0  # examples of this epoch already yielded
        self.started = False  # False until epoch 0's first batch
        self._order: Optional[np.ndarray] = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        allowed = np.arange(self.n_examples, dtype=np.int64) if self.subset is None else \
            np.asarray(self.subset(epoch), dtype=np.int64)
        if allowed.size == 0:
            raise ValueError(f"epoch {epoch} has no examples to draw")
        rng = np.random.default_rng([self.seed, epoch])
        return allowed[rng.permutation(allowed.size)]

    def next_batch(self) -> np.ndarray:
        if not self.started or (self._order is not None and self.position >= self._order.size):
            if self.started:
                self.epoch += 1
            self.started, self.position, self._order = True, 0, None
            if self.on_epoch_start is not None:
                self.on_epoch_start(self.epoch)
        if self._order is None:
            self._order = self.epoch_order(self.epoch)
            if self.position >= self._order.size:  # restored at an epoch's very end
                return self.next_batch()
        batch = self._order[self.position:self.position + self.batch_size]
        self.position += batch.size
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"n_examples": self.n_examples, "batch_size": self.batch_size, "seed": self.seed,
                "epoch": self.epoch, "position": self.position, "started": self.started}

    def load_state_dict(self, state: dict) -> None:
        for key in ("n_examples", "batch_size", "seed"):
            if int(state[key]) != getattr(self, key):
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler {getattr(self, key)}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self.started = bool(state["started"])
        self._order = None


class PrunerSubset:
    """Turns a ``pruning_data.DynamicPruner`` into the sampler's ``subset`` and per-row keep masks."""

    def __init__(self, pruner, unit: str, segments_per_row: np.ndarray,
                 segment_example: Optional[np.ndarray] = None):
        if unit not in ("row", "document"):
            raise ValueError(f"unit must be 'row' or 'document', got {unit!r}")
        self.pruner = pruner
        self.unit = unit
        self.segments_per_row = np.asarray(segments_per_row, dtype=np.int64)
        self.n_rows = self.segments_per_row.size
        self.first_segment = np.concatenate([[0], np.cumsum(self.segments_per_row)])
        n_segments = int(self.first_segment[-1])
        if segment_example is not None and unit == "row":
            raise ValueError("segment_example is only for unit='document'")
        self.segment_example = np.arange(n_segments, dtype=np.int64) if segment_example is None \
            else np.asarray(segment_example, dtype=np.int64)
        if self.segment_example.shape != (n_segments,):
            raise ValueError(f"segment_example needs one entry per segment ({n_segments})")
        expected = self.n_rows if unit == "row" else \
            (int(self.segment_example.max()) + 1 if n_segments else 0)
        if pruner.n_examples != expected:
            raise ValueError(f"pruner has {pruner.n_examples} examples, unit={unit} needs {expected}")

    def __call__(self, epoch: int) -> np.ndarray:
        kept = self.pruner.indices(epoch)
        if self.unit == "row":
            return kept
        row_of_segment = np.repeat(np.arange(self.n_rows), self.segments_per_row)
        return np.unique(row_of_segment[self._kept_segments(kept)])

    def _kept_segments(self, kept_examples: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.pruner.n_examples, dtype=bool)
        mask[kept_examples] = True
        return mask[self.segment_example]

    def keep_masks(self, epoch: int, rows: np.ndarray) -> Optional[list]:
        """Per drawn row, a bool per segment (unit="document"); None for unit="row"."""
        if self.unit == "row":
            return None
        kept = self._kept_segments(self.pruner.indices(epoch))
        return [kept[self.first_segment[r]:self.first_segment[r + 1]] for r in rows]
