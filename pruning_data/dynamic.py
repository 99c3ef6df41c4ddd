"""Dynamic data pruning (Attendu & Corbeil 2023): re-score and keep a rank window."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from pruning_data._checks import check_fraction, floor_count

_STRATEGIES = ("el2n", "random")


class DynamicPruner:
    """Which example indices to train on in each (0-based) epoch.

    Schedule: epochs ``< full_epochs`` use all examples. Epoch ``e >= full_epochs`` is
    a *rescore epoch* when ``(e - full_epochs) % rescore_every == 0``; there the
    caller scores every example with the current model, calls ``update(scores)``,
    then ``indices(e)``. Other pruned epochs reuse the latest rescore epoch's subset.

    Window: with ``n_keep = floor(keep_fraction * n)`` and
    ``n_skip = floor(offset_fraction * n)``, examples are ranked hardest first by a
    stable sort on (-score, index) - equal scores go to the lower index - and ranks
    ``[n_skip, n_skip + n_keep)`` are kept. The offset exists because the very
    hardest examples by EL2N are often label noise.

    ema_previous_weight: None uses each score vector as given; a value w in [0, 1)
    ranks by the EMA ``w * previous + (1 - w) * scores`` (the first update starts the
    average), damping rank churn between rescorings. The name says which side the
    weight is on because the data-diets code's ``prune_ema_alpha`` weights the *new*
    scores: ``prune_ema_alpha=a`` ports as ``ema_previous_weight=1 - a``. ``smoothing``
    is the former name of this argument (same meaning), kept for existing callers.

    strategy="random" is the baseline: at each rescore epoch a uniformly random
    subset of the same ``n_keep`` examples, drawn from ``(seed, epoch)`` only; it
    never needs scores.

    ``indices`` returns sorted int64 indices; shuffling is the sampler's job.
    """

    def __init__(self, n_examples: int, keep_fraction: float, offset_fraction: float = 0.0,
                 full_epochs: int = 1, rescore_every: int = 1, smoothing: Optional[float] = None,
                 seed: int = 0, strategy: str = "el2n", *, ema_previous_weight: Optional[float] = None):
        if int(n_examples) < 0 or int(full_epochs) < 0 or int(rescore_every) < 1:
            raise ValueError("need n_examples >= 0, full_epochs >= 0 and rescore_every >= 1")
        keep_fraction = check_fraction("keep_fraction", keep_fraction)
        offset_fraction = check_fraction("offset_fraction", offset_fraction)
        if smoothing is not None and ema_previous_weight is not None:
            raise ValueError("give ema_previous_weight only (smoothing is its former name)")
        weight = ema_previous_weight if ema_previous_weight is not None else smoothing
        if weight is not None and not 0.0 <= float(weight) < 1.0:
            raise ValueError(f"ema_previous_weight must be None or in [0, 1), got {weight}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        self.n_examples = int(n_examples)
        self.keep_fraction = keep_fraction
        self.offset_fraction = offset_fraction
        self.full_epochs = int(full_epochs)
        self.rescore_every = int(rescore_every)
        self.ema_previous_weight = None if weight is None else float(weight)
        self.seed = int(seed)
        self.strategy = strategy
        self.n_keep = floor_count(keep_fraction, self.n_examples)
        self.n_skip = floor_count(offset_fraction, self.n_examples)
        if self.n_skip + self.n_keep > self.n_examples:
            raise ValueError("offset_fraction + keep_fraction must not exceed 1")
        self._scores: Optional[np.ndarray] = None
        self._version = 0  # bumped by update(); says whether a selection is stale
        self._selection: Optional[tuple] = None  # (rescore_epoch, version, indices)

    @property
    def smoothing(self) -> Optional[float]:
        """Former name of ``ema_previous_weight``."""
        return self.ema_previous_weight

    def rescore_epoch(self, epoch: int) -> Optional[int]:
        """The latest rescore epoch <= ``epoch``, or None during the full epochs."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch < self.full_epochs:
            return None
        return epoch - (epoch - self.full_epochs) % self.rescore_every

    def needs_scores(self, epoch: int) -> bool:
        """True when ``update(scores)`` must be called before ``indices(epoch)``."""
        return self.strategy == "el2n" and self.rescore_epoch(epoch) == epoch

    def update(self, scores) -> None:
        """Record one score per example (higher = harder), e.g. per-document EL2N."""
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().to("cpu", torch.float64).numpy()
        values = np.asarray(scores, dtype=np.float64)
        if values.shape != (self.n_examples,):
            raise ValueError(f"expected {self.n_examples} scores, got shape {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("scores must be finite (fill empty documents' NaN first)")
        w = self.ema_previous_weight
        if w is None or self._scores is None:
            self._scores = values.copy()
        else:
            self._scores = w * self._scores + (1.0 - w) * values
        self._version += 1

    def indices(self, epoch: int) -> np.ndarray:
        """Sorted int64 indices of the examples to train on in ``epoch``."""
        rescore = self.rescore_epoch(epoch)
        if rescore is None:
            return np.arange(self.n_examples, dtype=np.int64)
        if self.strategy == "random":
            rng = np.random.default_rng([self.seed, rescore])
            return np.sort(rng.choice(self.n_examples, size=self.n_keep, replace=False)).astype(np.int64)
        if self._selection is not None:
            done_epoch, done_version, chosen = self._selection
            if done_epoch == rescore:
                return chosen.copy()
            if rescore < done_epoch:
                raise ValueError(f"epoch {epoch}'s subset was replaced at rescore epoch {done_epoch}")
            if done_version == self._version:
                raise RuntimeError(f"epoch {rescore} needs fresh scores: call update() first")
        if self._scores is None:
            raise RuntimeError(f"epoch {rescore} needs scores: call update() first")
        order = np.argsort(-self._scores, kind="stable")
        chosen = np.sort(order[self.n_skip:self.n_skip + self.n_keep]).astype(np.int64)
        self._selection = (rescore, self._version, chosen)
        return chosen.copy()

    def state_dict(self) -> dict:
        """Config and scoring state as tensors and numbers (loads with weights_only)."""
        epoch, version, chosen = self._selection if self._selection else (-1, -1, None)
        return {
            "config": {"n_examples": self.n_examples, "keep_fraction": self.keep_fraction,
                       "offset_fraction": self.offset_fraction, "full_epochs": self.full_epochs,
                       "rescore_every": self.rescore_every,
                       "ema_previous_weight": self.ema_previous_weight,
                       "seed": self.seed, "strategy": self.strategy},
            "scores": None if self._scores is None else torch.from_numpy(self._scores.copy()),
            "version": self._version,
            "selection_epoch": epoch,
            "selection_version": version,
            "selection": None if chosen is None else torch.from_numpy(chosen.copy()),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a run; refuses a state saved under a different configuration."""
        for key, value in state["config"].items():
            key = "ema_previous_weight" if key == "smoothing" else key  # states saved before the rename
            if getattr(self, key) != value:
                raise ValueError(f"state has {key}={value!r}, this pruner {getattr(self, key)!r}")
        scores = state["scores"]
        self._scores = None if scores is None else scores.to(torch.float64).numpy().copy()
        self._version = int(state["version"])
        chosen = state["selection"]
        self._selection = None if chosen is None else (
            int(state["selection_epoch"]), int(state["selection_version"]),
            chosen.to(torch.int64).numpy().copy())
