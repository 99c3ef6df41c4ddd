"""ENT and loss-truncation decisions over the *global* micro-batch: the union of every rank's
micro-batch, which is exactly the micro-batch a 1-process run with the same global batch takes.

With accelerate's batch sharding, rank ``r``'s ``k``-th micro-batch is the ``r``-th slice of
the 1-process run's ``k``-th micro-batch, so concatenating the ranks' targets in rank order
gives the 1-process targets in order. A fraction (ENT's top ``c`` of the error norms, loss
truncation's percentile) is then taken over that concatenation, as one process takes it, and
each rank keeps its own slice of the decision.

Ties: a target's tie key is a hash of its index among the micro-batch's valid targets (in rank
order). It is the same whatever the world size and whatever the layout (flattened or stacked
rows), which the flat position index, ``ent_loss``'s default, is not.
"""
from __future__ import annotations

import torch

from pruning_data._checks import floor_count
from pruning_data._ties import tie_key
from pruning_data.ent import _top_k_mask
from pruning_data.error_norm import error_norm
from training.hf.distributed import gather_ragged


def valid_tie_ids(valid: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Per position: ``offset`` + its index among the valid targets (row-major); -1 elsewhere."""
    index = valid.reshape(-1).long().cumsum(0).reshape(valid.shape) - 1 + int(offset)
    return torch.where(valid, index, torch.full_like(index, -1))


def ent_drop_mask(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, offset: int,
                  *, threshold, fraction, level: str, ignore_index: int) -> tuple[torch.Tensor, int]:
    """(dropped mask of this rank's targets, sequences this rank dropped) for ENT decided over
    the global micro-batch; ``offset`` is the count of valid targets on the ranks before."""
    scores = error_norm(logits, targets, ignore_index=ignore_index)
    keys = tie_key(valid_tie_ids(valid, offset))
    if level == "token":
        if threshold is not None:
            return valid & (scores > threshold), 0
        s, _ = gather_ragged(scores[valid])
        k_all = tie_key(torch.arange(s.numel(), device=s.device))
        chosen = _top_k_mask(s, torch.ones_like(s, dtype=torch.bool), floor_count(fraction, s.numel()), k_all)
        mine = chosen[offset:offset + int(valid.sum())].to(valid.device)
        dropped = torch.zeros_like(valid)
        dropped[valid] = mine
        return dropped, 0
    # level="sequence": the rows of the (stacked) batch, as ent_loss without segment_ids
    rows = valid.shape[0]
    counts = valid.double().sum(1)
    sums = torch.where(valid, scores, torch.zeros_like(scores)).double().sum(1)
    has = counts > 0
    means = sums / counts.clamp_min(1)
    big = torch.iinfo(torch.int64).max
    row_keys = torch.where(valid, keys, torch.full_like(keys, big)).amin(1) if valid.shape[1] else \
        torch.full((rows,), big, dtype=torch.int64, device=valid.device)
    if threshold is not None:
        chosen = has & (means > threshold)
    else:
        all_means, row_counts = gather_ragged(means)
        all_has, _ = gather_ragged(has.long())
        all_keys, _ = gather_ragged(row_keys)
        rank = torch.distributed.get_rank() if row_counts.numel() > 1 else 0
        first = int(row_counts[:rank].sum())
        glob = _top_k_mask(all_means, all_has.bool(), floor_count(fraction, int(all_has.sum())), all_keys)
        chosen = glob[first:first + rows].to(valid.device)
    return valid & chosen[:, None], int(chosen.sum())


def truncation_keep(truncation, losses: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(keep mask of this rank's sequences, kept sequences over all ranks): the percentile cut
    of ``truncation`` (a ``LossTruncation``) fed with every rank's losses in rank order, so its
    buffer and cut-off are the same on every rank and as in one process."""
    everyone, counts = gather_ragged(losses.detach())
    if everyone.numel() == 0:
        return torch.zeros_like(losses, dtype=torch.bool), 0
    keep = truncation(everyone)
    rank = torch.distributed.get_rank() if counts.numel() > 1 else 0
    first = int(counts[:rank].sum())
    return keep[first:first + losses.numel()].to(losses.device), int(keep.sum())
