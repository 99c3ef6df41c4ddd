"""Error Norm Truncation (Li et al., ICLR 2024): MLE that skips suspected-noise tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from pruning_data._checks import check_fraction, check_logits_targets, floor_count
from pruning_data._ties import tie_key
from pruning_data.error_norm import error_norm

_LEVELS = ("token", "sequence")
NORMALIZE = ("all", "kept")


@dataclass(frozen=True)
class EntInfo:
    """What ``ent_loss`` dropped.

    dropped: bool mask shaped like ``targets`` (never set at ignored positions).
    n_dropped / n_valid: dropped and non-ignored token counts.
    n_dropped_sequences: sequences (rows, or documents with ``segment_ids``) dropped whole
        (``level="sequence"``; 0 otherwise).
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
    *,
    normalize: str = "all",
    segment_ids: Optional[torch.Tensor] = None,
    tie_ids: Optional[torch.Tensor] = None,
    chunk_tokens: Optional[int] = None,
):
    """Cross-entropy that drops tokens the model confidently predicts otherwise.

    Give exactly one of:
      threshold: drop tokens whose error norm is > threshold (level="token"), or
        sequences whose mean error norm is > threshold (level="sequence").
      fraction c: drop the floor(c * n) highest-scoring tokens among the n valid
        ones (level="token"), or the floor(c * n) sequences with the highest mean
        error norm among the n sequences that have a valid token (level="sequence").
    The error norm (in [0, sqrt(2)]) rather than the loss is the criterion because,
    at equal loss, a confidently wrong prediction (likely a noisy label) scores near
    sqrt(2) and a spread-out one (hard but valid) scores low.

    Sequences (level="sequence"): the rows of ``targets`` (rows, length), or, with
    ``segment_ids`` (an integer tensor shaped like ``targets``, e.g. the collator's
    per-position document number, negative = no document), each (row, segment) pair:
    the documents of packed rows, as in the paper where every example is one sequence.

    Ties (fraction): broken by a hash of ``tie_ids`` (an integer tensor shaped like
    ``targets`` that identifies each token, e.g. ``tie_key(doc_ids, positions)``;
    default: the flat position index), so the choice is deterministic but does not
    prefer earlier rows or positions. A sequence's tie key is the smallest hash of
    its valid tokens.

    Warm-up: ``step`` counts the optimizer updates already done (0 for the first
    batch). Nothing is dropped while ``step < warmup_steps``, so ``warmup_steps=k``
    gives exactly k plain MLE updates: early models are wrong everywhere.

    Normalization (``normalize``), with ``CE_t`` the token cross-entropy, ``V`` the
    valid (non-ignored) targets and ``K`` the kept ones (``K`` = ``V`` minus dropped):
      "all" (default, as the ENT authors' code: the masked losses' mean):
          loss = sum_{t in K} CE_t / |V|
        dropping tokens shrinks the loss and gradient scale by |K| / |V|.
      "kept": loss = sum_{t in K} CE_t / |K|, the mean over the kept tokens; the
        gradient scale does not shrink as more is dropped.
    Ignored targets (padding, document boundaries) count in neither. With nothing
    dropped both equal ``F.cross_entropy(..., ignore_index=...)`` (bitwise for
    "kept"). With nothing kept the loss is a graph-connected 0 (zero gradient).

    ``chunk_tokens`` bounds the memory of the error norms (see ``error_norm``).

    Returns ``(loss, EntInfo)``.
    """
    check_logits_targets(logits, targets)
    if (threshold is None) == (fraction is None):
        raise ValueError("give exactly one of threshold or fraction")
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {_LEVELS}, got {level!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {NORMALIZE}, got {normalize!r}")
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
    for name, tensor in (("segment_ids", segment_ids), ("tie_ids", tie_ids)):
        if tensor is not None and tuple(tensor.shape) != tuple(targets.shape):
            raise ValueError(f"{name} must be shaped like targets {tuple(targets.shape)}, "
                             f"got {tuple(tensor.shape)}")

    valid = targets != ignore_index
    n_valid = int(valid.sum())
    active = step is None or step >= warmup_steps
    scores = error_norm(logits, targets, ignore_index=ignore_index, chunk_tokens=chunk_tokens) \
        if active else None
    if not active:
        dropped, n_rows_dropped = torch.zeros_like(valid), 0
    else:
        keys = tie_key(tie_ids.to(targets.device) if tie_ids is not None
                       else torch.arange(targets.numel(), device=targets.device).reshape(targets.shape))
        groups = None if level == "token" else sequence_groups(valid, segment_ids)
        dropped, n_rows_dropped = ent_drop_mask(scores, valid, keys, threshold, fraction, groups)

    kept_targets = targets.masked_fill(dropped, ignore_index)
    n_dropped = int(dropped.sum())
    loss = masked_cross_entropy(logits, kept_targets, n_valid, normalize, ignore_index)
    info = EntInfo(dropped, n_dropped, n_valid, n_rows_dropped, active, scores)
    return loss, info


def masked_cross_entropy(logits: torch.Tensor, kept_targets: torch.Tensor, n_valid: int,
                         normalize: str = "all", ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy summed over the targets left in ``kept_targets`` (dropped ones set to
    ``ignore_index``), divided by ``n_valid`` ("all") or by the kept count ("kept")."""
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), kept_targets.reshape(-1)
    n_kept = int((flat_targets != ignore_index).sum())
    if n_kept > 0 and (normalize == "kept" or n_kept == n_valid):
        return F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="mean")
    total = F.cross_entropy(flat_logits, flat_targets, ignore_index=ignore_index, reduction="sum")
    return total / max(n_valid if normalize == "all" else n_kept, 1)  # "sum" of nothing is a finite 0


def ent_drop_mask(scores: torch.Tensor, valid: torch.Tensor, keys: torch.Tensor,
                  threshold: Optional[float] = None, fraction: Optional[float] = None,
                  groups: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, int]:
    """ENT's choice from error norms already computed: ``(dropped, sequences dropped whole)``.

    ``scores``, ``valid`` and ``keys`` (``tie_key`` values) have one shape, any shape; without
    ``groups`` tokens are dropped (level="token"), with ``groups`` (the sequence of each position,
    -1 for none, e.g. ``sequence_groups``) whole sequences by their mean score. The choice depends
    only on the (score, key, sequence) of each position, not on where it sits: a data-parallel
    trainer gathers them from every rank (concatenated in rank order, sequence ids made distinct)
    and gets the choice one process makes on the whole batch. ``ent_loss`` calls it.
    """
    if groups is None:
        return _drop_tokens(scores, valid, keys, threshold, fraction), 0
    return _drop_groups(scores, valid, groups, keys, threshold, fraction)


def _drop_tokens(scores, valid, keys, threshold, fraction) -> torch.Tensor:
    if threshold is not None:
        return valid & (scores > threshold)
    flat_valid = valid.reshape(-1)
    k = floor_count(fraction, int(flat_valid.sum()))
    return _top_k_mask(scores.reshape(-1), flat_valid, k, keys.reshape(-1)).reshape(valid.shape)


def sequence_groups(valid: torch.Tensor, segment_ids: Optional[torch.Tensor]) -> torch.Tensor:
    """Sequence number of every position (rows, or (row, segment) pairs); -1 = none."""
    rows = torch.arange(valid.shape[0], device=valid.device).unsqueeze(1).expand_as(valid)
    if segment_ids is None:
        return rows.clone()
    seg = segment_ids.to(valid.device).long()
    width = int(seg.max()) + 1 if seg.numel() else 1
    return torch.where(seg >= 0, rows * max(width, 1) + seg, torch.full_like(seg, -1))


def _drop_groups(scores, valid, groups, keys, threshold, fraction):
    """Drop whole sequences by their mean error norm over valid targets."""
    member = valid & (groups >= 0)
    if not bool(member.any()):
        return torch.zeros_like(valid), 0
    n_groups = int(groups.max()) + 1
    flat = torch.where(member, groups, torch.zeros_like(groups)).reshape(-1)
    counts = torch.zeros(n_groups, dtype=torch.float64, device=scores.device)
    sums = torch.zeros(n_groups, dtype=torch.float64, device=scores.device)
    counts.index_add_(0, flat, member.reshape(-1).double())
    sums.index_add_(0, flat, torch.where(member, scores, torch.zeros_like(scores)).reshape(-1).double())
    has_tokens = counts > 0
    means = sums / counts.clamp_min(1)
    if threshold is not None:
        chosen = has_tokens & (means > threshold)
    else:
        group_keys = torch.full((n_groups,), torch.iinfo(torch.int64).max, dtype=torch.int64,
                                device=scores.device)
        member_keys = torch.where(member, keys, torch.full_like(keys, torch.iinfo(torch.int64).max))
        group_keys.scatter_reduce_(0, flat, member_keys.reshape(-1), reduce="amin")
        chosen = _top_k_mask(means, has_tokens, floor_count(fraction, int(has_tokens.sum())), group_keys)
    dropped = member & chosen[torch.where(member, groups, torch.zeros_like(groups))]
    return dropped, int(chosen.sum())


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: int, keys: torch.Tensor) -> torch.Tensor:
    """Mask of the k highest-scoring candidates of a 1-D tensor; ties go to the smaller key."""
    mask = torch.zeros_like(candidates)
    if k <= 0:
        return mask
    by_key = torch.sort(keys, stable=True).indices
    last = torch.full_like(scores, math.inf, dtype=torch.float64)  # non-candidates sort last
    keyed = torch.where(candidates, -scores.double(), last)[by_key]
    order = by_key[torch.sort(keyed, stable=True).indices]
    mask[order[:k]] = True
    return mask
