"""The training objective chosen by ``loss.kind``: MLE, ENT or loss truncation.

All take already shifted ``labels`` (``IGNORE_INDEX`` = no loss) and return
``(loss, stats)`` where ``stats`` holds plain numbers for the metrics log:
``tokens`` (valid targets), ``dropped_tokens``, ``dropped_rows`` (rows with every valid target
dropped) and ``dropped_examples`` (sequences dropped whole: documents or rows), plus the
``dropped_mask`` tensor.
  * mle: mean cross-entropy over valid targets.
  * ent: ``pruning_data.ent_loss`` (threshold / fraction, token or sequence level, warmup).
  * loss_truncation: ``pruning_data.LossTruncation`` on per-example mean losses (each example
    weighted equally, as in Kang & Hashimoto).
``loss.normalize`` ("all", the papers' code, or "kept") sets the denominator of both truncation
losses: every valid token (ENT) or every example (loss truncation), or only the kept ones.
Examples of sequence-level ENT and loss truncation are the document segments of the packed rows
(``unit="document"``, default) or the rows (``unit="row"``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_data import LossTruncation, ent_loss, tie_key
from training.config import LossConfig
from training.data import IGNORE_INDEX


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each row over its valid targets (0 for a row without any)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                reduction="none")
    counts = (labels != IGNORE_INDEX).sum(dim=1)
    return per_token.sum(dim=1) / counts.clamp_min(1)


def example_losses(logits: torch.Tensor, labels: torch.Tensor, segment_ids: Optional[torch.Tensor] = None):
    """Mean cross-entropy of every example that has a valid target, and each position's example.

    Examples are the rows, or with ``segment_ids`` ([B, T], negative = padding) each
    (row, segment) pair, numbered row-major. Returns ``(losses [E], example [B, T])`` with
    ``example == -1`` where a position belongs to no example or has no valid target.
    """
    valid = labels != IGNORE_INDEX
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)
    if segment_ids is None:
        group = rows
    else:
        seg = segment_ids.to(labels.device).long()
        width = max(int(seg.max()) + 1, 1) if seg.numel() else 1
        group = torch.where(seg >= 0, rows * width + seg, torch.full_like(seg, -1))
    member = valid & (group >= 0)
    n_groups = max(int(group.max()) + 1 if group.numel() else 0, 1)  # group 0 may be empty: dropped below
    flat = torch.where(member, group, torch.zeros_like(group)).reshape(-1)
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                reduction="none")
    sums = per_token.new_zeros(n_groups).index_add(0, flat, torch.where(member, per_token, 0.0).reshape(-1))
    counts = torch.zeros(n_groups, dtype=torch.long, device=labels.device)
    counts.index_add_(0, flat, member.reshape(-1).long())
    present = counts > 0
    renumber = torch.cumsum(present.long(), 0) - 1
    example = torch.where(member, renumber[flat].reshape(labels.shape), torch.full_like(labels, -1))
    return sums[present] / counts[present], example


def token_tie_ids(batch: dict) -> torch.Tensor:
    """A key per target position from (document id, chunk index, position in the segment).

    Ties in ENT-fraction are broken by it, so which of two equal-scoring tokens is dropped
    depends on the tokens, not on the rows and positions they were packed into.
    """
    input_ids = batch["input_ids"]
    B, T = input_ids.shape
    doc = np.full((B, T), -1, dtype=np.int64)
    chunk = np.zeros((B, T), dtype=np.int64)
    for b, (lens, ids, chunks) in enumerate(zip(batch["doc_lens"], batch["doc_ids"], batch["chunk_index"])):
        lens = lens.numpy()
        n = int(lens.sum())
        doc[b, :n] = np.repeat(ids.numpy(), lens)
        chunk[b, :n] = np.repeat(chunks.numpy(), lens)
    seg = batch["segment_ids"]
    starts = torch.ones(B, T, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    index = torch.arange(T).expand(B, T)
    segment_pos = index - torch.cummax(torch.where(starts, index, torch.zeros_like(index)), dim=1).values
    return tie_key(torch.from_numpy(doc), torch.from_numpy(chunk), segment_pos)


class Objective:
    """Stateful loss (loss truncation keeps a buffer); ``state_dict`` goes into checkpoints.

    ``objective(logits, labels, step, segment_ids=None, tie_ids=None)``: ``step`` is the number
    of optimizer updates already done (0 for the first batch), so ``loss.ent.warmup_steps=k``
    gives exactly k plain MLE updates. ``segment_ids`` (the collator's) make the examples of
    ``unit="document"`` objectives; without them every row is one example. ``tie_ids`` (e.g.
    ``token_tie_ids(batch)``) break ENT-fraction ties.
    """

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg
        t = cfg.truncation
        self.truncation = LossTruncation(t.drop_fraction, t.min_count, t.recompute_every) \
            if cfg.kind == "loss_truncation" else None

    @property
    def unit(self) -> Optional[str]:
        """"document" or "row" for the sequence-level objectives, None otherwise."""
        if self.cfg.kind == "loss_truncation":
            return self.cfg.truncation.unit
        if self.cfg.kind == "ent" and self.cfg.ent.level == "sequence":
            return self.cfg.ent.unit
        return None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, step: int,
                 segment_ids: Optional[torch.Tensor] = None, tie_ids: Optional[torch.Tensor] = None):
        valid = labels != IGNORE_INDEX
        stats = {"tokens": int(valid.sum()), "dropped_tokens": 0, "dropped_rows": 0, "dropped_examples": 0}
        if self.cfg.kind == "mle":
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
            return loss, stats
        segments = segment_ids if self.unit == "document" else None
        if self.cfg.kind == "ent":
            e = self.cfg.ent
            loss, info = ent_loss(logits.float(), labels, threshold=e.threshold, fraction=e.fraction,
                                  level=e.level, warmup_steps=e.warmup_steps, step=step,
                                  ignore_index=IGNORE_INDEX, normalize=self.cfg.normalize,
                                  segment_ids=segments, tie_ids=tie_ids)
            dropped, n_examples = info.dropped, info.n_dropped_sequences
        else:
            losses, example = example_losses(logits, labels, segments)
            keep = self.truncation(losses) if losses.numel() else torch.ones(0, dtype=torch.bool)
            keep = keep.to(losses.device)
            kept = torch.where(keep, losses, torch.zeros_like(losses)).sum()
            denominator = losses.numel() if self.cfg.normalize == "all" else int(keep.sum())
            loss = kept / max(denominator, 1)
            dropped = (example >= 0) & ~keep[example.clamp_min(0)] if losses.numel() else torch.zeros_like(valid)
            n_examples = int((~keep).sum())
        rows_with_tokens = valid.any(dim=1)
        stats.update(dropped_tokens=int(dropped.sum()), dropped_examples=n_examples,
                     dropped_rows=int((rows_with_tokens & ~(valid & ~dropped).any(dim=1)).sum()))
        stats["dropped_mask"] = dropped
        return loss, stats

    def state_dict(self) -> dict:
        return {} if self.truncation is None else {"truncation": self.truncation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.truncation is not None and "truncation" in state:
            self.truncation.load_state_dict(state["truncation"])
