"""``EpochCursor``: where a rank is in the global order (epoch, sample position), which rows it
takes next, and the resumable state, at sample granularity.

The state is the global position ``position`` in the epoch's order: every row before it has been
taken, by whichever rank, and none after it. A rank advances it when it hands out its last row of
a global batch (its share of that batch is then done), so a state saved between optimizer steps
is exact. Resuming (any world size, any global batch size) restarts the global batches at
``position``: no row repeats or is skipped. A state saved with another seed, canonical stream
count, shuffle window or data set is refused with one line, as is an ``allowed`` subset other
than the one the state's epoch was ordered with.
"""
from __future__ import annotations

import numpy as np

from pipelines.infra.errors import ConfigError
from training.streaming.order import GlobalOrder, allowed_digest, check_world

STATE_VERSION = 1


class EpochCursor:
    """This rank's place in ``order`` (a ``GlobalOrder``) with ``global_batch_size`` rows per
    step split over ``world_size`` ranks; ``drop_last`` leaves out an epoch's last global batch
    when it has fewer rows than the others."""

    def __init__(self, order: GlobalOrder, global_batch_size: int, rank: int, world_size: int,
                 drop_last: bool = False):
        check_world(global_batch_size, rank, world_size)
        self.order, self.batch = order, int(global_batch_size)
        self.rank, self.world = int(rank), int(world_size)
        self.drop_last = bool(drop_last)
        self.epoch, self.position = 0, 0
        self._allowed, self._digest, self._expected = None, None, None
        self._cached = None  # (epoch, digest, EpochOrder)

    def set_epoch(self, epoch: int, allowed=None) -> None:
        """Iterate ``epoch`` next, taking only ``allowed`` rows (a bool mask over all rows or
        global row ids; None: all). Another epoch starts at position 0; the current one (e.g.
        after ``load_state_dict``) keeps its position."""
        digest = allowed_digest(allowed, self.order.index.rows)
        if self._expected is not None and self._expected[0] == epoch and self._expected[1] != digest:
            raise ConfigError(f"the reader state of epoch {epoch} was saved with another set of "
                              "allowed rows: give set_epoch the subset that epoch was ordered with")
        if epoch != self.epoch:
            self.position = 0
        self.epoch, self._allowed, self._digest = int(epoch), allowed, digest

    def epoch_order(self):
        expected = self._expected
        if expected is not None and expected[0] == self.epoch and expected[1] != self._digest:
            raise ConfigError(f"the reader state of epoch {self.epoch} was saved with a subset of "
                              "allowed rows: call set_epoch(epoch, allowed) with it before iterating")
        key = (self.epoch, self._digest)
        if self._cached is None or self._cached[:2] != key:
            self._cached = (*key, self.order.epoch(self.epoch, self._allowed))
        return self._cached[2]

    def end(self) -> int:
        """The position where the epoch ends (before a short last batch with ``drop_last``)."""
        n = len(self.epoch_order())
        if self.drop_last and n > self.position:
            n -= (n - self.position) % self.batch
        return n

    def plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, step, position after) for this rank from the current position: its rows in
        order, the step of each (0 = the batch at the current position), and the position to
        record once that row is handed out (its step's end after the rank's last row of the step,
        the epoch's end after its last row, else unchanged)."""
        order, end = self.epoch_order(), self.end()
        if self.position > len(order):
            raise ConfigError(f"the reader state's position {self.position} is past the end of epoch "
                              f"{self.epoch} ({len(order)} rows)")
        start = self.position
        cut = type(order)(order.rows[:end], order.streams[:end])
        rows, step = cut.rank_rows(start, self.batch, self.rank, self.world) if end > start else (
            np.zeros(0, np.int64), np.zeros(0, np.int64))
        after = np.full(rows.size, -1, np.int64)
        if rows.size:
            last_of_step = np.flatnonzero(np.diff(step)) if rows.size > 1 else np.zeros(0, np.int64)
            after[last_of_step] = np.minimum(start + (step[last_of_step] + 1) * self.batch, end)
            after[-1] = end
        return rows, step, after

    def finish_epoch(self) -> None:
        """The epoch is done: the next one starts at position 0 with every row allowed."""
        self.epoch, self.position = self.epoch + 1, 0
        self._allowed = self._digest = None

    def state_dict(self) -> dict:
        o = self.order
        return {"version": STATE_VERSION, "epoch": self.epoch, "position": int(self.position),
                "seed": o.seed, "canonical_streams": o.streams, "window_blocks": o.window,
                "dataset": o.index.fingerprint, "rows": o.index.rows, "allowed": self._digest,
                "global_batch_size": self.batch}

    def load_state_dict(self, state: dict) -> None:
        o = self.order
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ConfigError("not a streaming reader state of this fewtrunc (no version "
                              f"{STATE_VERSION}): was it saved by another data loader?")
        for key, mine in (("dataset", o.index.fingerprint), ("seed", o.seed),
                          ("canonical_streams", o.streams), ("window_blocks", o.window)):
            if state.get(key) != mine:
                what = "another data set" if key == "dataset" else f"{key} {state.get(key)!r}"
                raise ConfigError(f"the reader state was saved with {what}, this reader has "
                                  f"{key} {mine!r}: resume with the same data and settings")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._expected = (self.epoch, state.get("allowed"))
        self._allowed = self._digest = None
        self._cached = None
