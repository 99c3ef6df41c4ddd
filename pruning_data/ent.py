"""Error Norm Truncation (Li et al., ICLR 2024): MLE that skips suspected-noise tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from pruning_data._checks import check_fraction, check_logits_targets, floor_count
from pruning_data.error_norm import error_norm

_LEVELS = ("token", "sequence")


@dataclass(frozen=True)
class EntInfo:
    """What ``ent_loss`` dropped.

    dropped: bool mask shaped like ``targets`` (never set at ignored positions).
    n_dropped / n_valid: dropped and non-ignored token counts.
    n_dropped_sequences: rows dropped whole (``level="sequence"``; 0 otherwise).
    active: False while ``step < warmup_steps`` (plain MLE, no scores computed).
    error_norm: the per-token scores used, or None when inactive.
    """

    dropped: torch.Tensor
    n_dropped: int
    n_valid: int
    n_dropped_sequences: int
    active: bool
    error_norm: Optional[torch.Tensor]


def ent_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    threshold: Optional[float] = None,
    fraction: Optional[float] = None,
    level: str = "token",
    warmup_steps: int = 0,
    step: Optional[int] = None,
    ignore_index: int = -100,
):
    """Cross-entropy that drops tokens the model confidently predicts otherwise.

    Give exactly one of:
      threshold: drop tokens whose error norm is > threshold (level="token"), or
        rows whose mean error norm is > threshold (level="sequence").
      fraction c: drop the floor(c * n) highest-scoring tokens among the n valid
        ones (level="token"), or the floor(c * n) rows with the highest mean error
        norm among the n rows that have a valid token (level="sequence"). Ties go
        to the lower (flattened) index, so the choice is deterministic.
    The error norm (in [0, sqrt(2)]) rather than the loss is the criterion because,
    at equal loss, a confidently wrong prediction (likely a noisy label) scores near
    sqrt(2) and a spread-out one (hard but valid) scores low.

    No truncation while ``step < warmup_steps``: early models are wrong everywhere.

    Normalization: the loss is the mean cross-entropy over the *kept* tokens; dropped
    tokens leave both numerator and denominator (they are set to ``ignore_index``
    and passed to ``F.cross_entropy``). With nothing dropped the loss and gradient are
    therefore bitwise those of
    ``F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=...)``.
    With nothing kept the loss is a graph-connected 0 (zero gradient), never 0/0.

    Returns ``(loss, EntInfo)``.
    """
    check_logits_targets(logits, targets)
    if (threshold is None) == (fraction is None):
        raise ValueError("give exactly one of threshold or fraction")
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
    if threshold is not None and not (float(threshold) >= 0.0 and math.isfinite(float(threshold))):
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
    if fraction is not None:
        fraction = check_fraction("fraction", fraction)
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps > 0 and step is None:
        raise ValueError("step is required when warmup_steps > 0")
    if level == "sequence" and targets.dim() != 2:
        raise ValueError(f'level="sequence" needs (rows, length) targets, got {tuple(targets.shape)}')

    valid = targets != ignore_index
    n_valid = int(valid.sum())
    active = step is None or step >= warmup_steps
    scores = error_norm(logits, targets, ignore_index=ignore_index) if active else None
    if not active:
        dropped, n_rows_dropped = torch.zeros_like(valid), 0
    elif level == "token":
        dropped, n_rows_dropped = _drop_tokens(scores, valid, threshold, fraction), 0
    else:
        dropped, n_rows_dropped = _drop_rows(scores, valid, threshold, fraction)

    kept_targets = targets.masked_fill(dropped, ignore_index)
    n_dropped = int(dropped.sum())
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), kept_targets.reshape(-1)
    reduction = "mean" if n_valid - n_dropped > 0 else "sum"  # "sum" of nothing is a finite 0
    loss = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction=reduction)
    info = EntInfo(dropped, n_dropped, n_valid, n_rows_dropped, active, scores)
    return loss, info


def _drop_tokens(scores, valid, threshold, fraction) -> torch.Tensor:
    if threshold is not None:
        return valid & (scores > threshold)
    flat_valid = valid.reshape(-1)
    k = floor_count(fraction, int(flat_valid.sum()))
    return _top_k_mask(scores.reshape(-1), flat_valid, k).reshape(valid.shape)


def _drop_rows(scores, valid, threshold, fraction):
    counts = valid.sum(dim=1)
    has_tokens = counts > 0
    row_scores = scores.double().sum(dim=1) / counts.clamp_min(1)  # ignored positions score 0
    if threshold is not None:
        rows = has_tokens & (row_scores > threshold)
    else:
        k = floor_count(fraction, int(has_tokens.sum()))
        rows = _top_k_mask(row_scores, has_tokens, k)
    return valid & rows.unsqueeze(1), int(rows.sum())


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k highest-scoring candidates of a 1-D tensor; ties to the lower index."""
    mask = torch.zeros_like(candidates)
    if k <= 0:
        return mask
    last = torch.full_like(scores, math.inf, dtype=torch.float64)  # non-candidates sort last
    keyed = torch.where(candidates, -scores.double(), last)
    order = torch.sort(keyed, stable=True).indices
    mask[order[:k]] = True
    return mask
