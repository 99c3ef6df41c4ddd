"""Loss truncation (Kang & Hashimoto 2020): skip the highest-loss sequences."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from pruning_data._checks import check_fraction


class LossTruncation:
    """Keep mask for per-sequence losses, cut at a percentile of recent losses.

    Each call first appends the batch's (detached) losses to a ring buffer holding
    the last ``buffer_size`` losses (default ``min_count``), then:
      * hot start: while fewer than ``min_count`` losses have been seen in total,
        everything is kept (the buffer is not yet a fair sample);
      * the cut-off is ``np.percentile(buffer, (1 - drop_fraction) * 100)`` (linear
        interpolation), except where its virtual index ``(n - 1) * (1 - drop_fraction)``
        is a whole number once rounded to 9 decimals (as ``floor_count`` rounds c * n):
        then it is that loss itself. Binary floats put the index a hair off (0.34 of 101
        losses gives 65.99999999999999), and interpolating would drop the loss that the
        cut-off stands on. Recomputed on the first eligible call and then whenever at
        least ``recompute_every`` losses arrived since the last recomputation
        (percentiles over a large buffer are too costly for every step);
      * a sequence is kept iff its loss <= cut-off (so the minimum is always kept).
    Non-finite losses raise: a NaN in the buffer would poison every later cut-off.
    """

    def __init__(self, drop_fraction: float, min_count: int, recompute_every: int = 1,
                 buffer_size: Optional[int] = None):
        self.drop_fraction = check_fraction("drop_fraction", drop_fraction)
        if int(min_count) < 1 or int(recompute_every) < 1:
            raise ValueError("min_count and recompute_every must be >= 1")
        self.min_count = int(min_count)
        self.recompute_every = int(recompute_every)
        self.buffer_size = int(buffer_size if buffer_size is not None else min_count)
        if self.buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        self._buffer = np.zeros(self.buffer_size, dtype=np.float64)
        self._seen = 0
        self._since_recompute = 0
        self.cutoff: Optional[float] = None

    def __call__(self, losses: torch.Tensor) -> torch.Tensor:
        """Bool keep mask shaped like the 1-D ``losses``."""
        if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
            raise ValueError("losses must be a 1-D tensor of per-sequence losses")
        values = losses.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(values).all():
            raise ValueError("losses must be finite")
        self._push(values)
        if self._seen < self.min_count or self.drop_fraction == 0.0:
            return torch.ones_like(losses, dtype=torch.bool)
        if self.cutoff is None or self._since_recompute >= self.recompute_every:
            filled = self._buffer[: min(self._seen, self.buffer_size)]
            self.cutoff = _cutoff(filled, self.drop_fraction)
            self._since_recompute = 0
        return losses.detach().double() <= self.cutoff  # compare at the buffer's precision

    def truncated_mean(self, losses: torch.Tensor, normalize: str = "all") -> torch.Tensor:
        """Masked mean of the per-sequence ``losses`` (one call of ``self``), with gradient.

        normalize="all" (default, as ``loss_dropper``: ``loss *= mask; loss.mean()``):
            sum_{kept i} loss_i / n, over all n sequences of the batch;
        normalize="kept": sum_{kept i} loss_i / |kept|, a connected 0 if none is kept.
        """
        if normalize not in ("all", "kept"):
            raise ValueError(f"normalize must be 'all' or 'kept', got {normalize!r}")
        keep = self(losses)
        kept = torch.where(keep, losses, torch.zeros_like(losses))
        count = keep.numel() if normalize == "all" else int(keep.sum())
        return kept.sum() / max(count, 1)

    def _push(self, values: np.ndarray) -> None:
        n = values.shape[0]
        if n >= self.buffer_size:
            tail = values[n - self.buffer_size:]
            start = (self._seen + n - self.buffer_size) % self.buffer_size
            self._buffer[:] = np.roll(tail, start)
        else:
            idx = (self._seen + np.arange(n)) % self.buffer_size
            self._buffer[idx] = values
        self._seen += n
        self._since_recompute += n

    def state_dict(self) -> dict:
        """Everything needed to resume with the same future keep masks."""
        return {
            "drop_fraction": self.drop_fraction, "min_count": self.min_count,
            "recompute_every": self.recompute_every, "buffer_size": self.buffer_size,
            "buffer": torch.from_numpy(self._buffer.copy()), "seen": self._seen,
            "since_recompute": self._since_recompute,
            "cutoff": math.nan if self.cutoff is None else self.cutoff,
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("drop_fraction", "min_count", "recompute_every", "buffer_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state has {key}={state[key]}, this object {getattr(self, key)}")
        self._buffer = state["buffer"].to(torch.float64).numpy().copy()
        self._seen = int(state["seen"])
        self._since_recompute = int(state["since_recompute"])
        self.cutoff = None if math.isnan(state["cutoff"]) else float(state["cutoff"])


def _cutoff(filled: np.ndarray, drop_fraction: float) -> float:
    """The (1 - drop_fraction) percentile of ``filled``, exact on a whole virtual index."""
    index = round((filled.size - 1) * (1.0 - drop_fraction), 9)  # float error ~1e-16 * n << 1e-9
    if index.is_integer():
        return float(np.partition(filled, int(index))[int(index)])
    return float(np.percentile(filled, (1.0 - drop_fraction) * 100.0))
