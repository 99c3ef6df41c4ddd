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

Data-parallel runs (``comm``, a ``training.distributed.Dist``): each rank holds its share of the
global batch, and every choice and count is the one a single process makes on the whole batch.
ENT fractions rank the error norms (with their tie keys, and sequence ids) gathered from every
rank in rank order; loss truncation pushes the per-example losses gathered in rank order into its
buffer (so every rank holds the same buffer and cut-off); the denominators are global counts. A
rank's loss is its share: the shares of all ranks sum to the global loss (DDP averages gradients,
so the trainer scales the share by the world size before ``backward``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_data import LossTruncation, error_norm, tie_key
from pruning_data.ent import ent_drop_mask, sequence_groups
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

    ``objective(logits, labels, step, segment_ids=None, tie_ids=None, comm=None)``: ``step`` is
    the number of optimizer updates already done (0 for the first batch), so
    ``loss.ent.warmup_steps=k`` gives exactly k plain MLE updates. ``segment_ids`` (the
    collator's) make the examples of ``unit="document"`` objectives; without them every row is
    one example. ``tie_ids`` (e.g. ``token_tie_ids(batch)``) break ENT-fraction ties. ``comm``:
    this batch is one rank's share of a global batch (see the module docstring); the loss
    returned is that rank's share and ``stats`` count the global batch, with ``global_loss`` the
    loss of the whole batch (a float). Without ``comm`` the batch is the whole batch.
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
                 segment_ids: Optional[torch.Tensor] = None, tie_ids: Optional[torch.Tensor] = None,
                 comm=None):
        from training.distributed import LOCAL

        comm = comm or LOCAL
        logits = logits.float()
        valid = labels != IGNORE_INDEX
        segments = segment_ids.to(labels.device) if segment_ids is not None and self.unit == "document" else None
        if self.cfg.kind == "loss_truncation":
            numerator, dropped, examples, kept, n_dropped = self._truncation(logits, labels, segments, comm)
        else:
            dropped, n_dropped = (torch.zeros_like(valid), 0) if self.cfg.kind == "mle" else \
                self._ent_dropped(logits, labels, valid, step, segments, tie_ids, comm)
            kept_targets = labels.masked_fill(dropped, IGNORE_INDEX)
            numerator = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept_targets.reshape(-1),
                                        ignore_index=IGNORE_INDEX, reduction="sum")
            examples, kept = int(valid.sum()), int((valid & ~dropped).sum())
        if not bool(valid.any()):
            numerator = (logits * 0.0).sum()  # nothing to learn here: a connected 0 (every parameter gets a 0 gradient)
        dropped_rows = int((valid.any(dim=1) & ~(valid & ~dropped).any(dim=1)).sum())
        local = [float(numerator.detach()), int(valid.sum()), int(dropped.sum()), dropped_rows, n_dropped,
                 examples, kept]
        total = comm.sum(torch.tensor(local, dtype=torch.float64, device=logits.device)).tolist()
        denominator = max(total[5] if self.cfg.normalize == "all" else total[6], 1)
        stats = {"tokens": int(total[1]), "dropped_tokens": int(total[2]), "dropped_rows": int(total[3]),
                 "dropped_examples": int(total[4]) if self.cfg.kind != "mle" else 0,
                 "global_loss": total[0] / denominator, "dropped_mask": dropped}
        return numerator / denominator, stats

    def _ent_dropped(self, logits, labels, valid, step, segments, tie_ids, comm):
        """ENT's dropped mask of this share and the sequences of it dropped whole."""
        e = self.cfg.ent
        if step < e.warmup_steps:
            return torch.zeros_like(valid), 0
        scores = error_norm(logits, labels, ignore_index=IGNORE_INDEX)
        keys = tie_key(tie_ids.to(labels.device) if tie_ids is not None
                       else torch.arange(labels.numel(), device=labels.device).reshape(labels.shape))
        groups = None if e.level == "token" else sequence_groups(valid, segments)
        if e.fraction is None:  # a threshold decides each token or sequence alone
            return ent_drop_mask(scores, valid, keys, e.threshold, None, groups)
        member = valid if groups is None else valid & (groups >= 0)
        local_group = torch.unique(groups[member], return_inverse=True)[1] if groups is not None else None
        cols = [scores[member].view(torch.int32).long(), keys[member]]  # float32 bits travel exactly
        if local_group is not None:
            cols.append(local_group)
        packed, sizes = comm.gather_cat(torch.stack(cols, dim=1).reshape(-1))
        packed = packed.reshape(-1, len(cols))
        all_scores = packed[:, 0].to(torch.int32).view(torch.float32)
        all_groups = None
        if local_group is not None:  # each rank's sequences numbered after the previous ranks'
            offsets, start, first = [], 0, 0
            for n in sizes:
                part = packed[start // len(cols):(start + n) // len(cols), 2]
                offsets.append(part + first)
                first += int(part.max()) + 1 if part.numel() else 0
                start += n
            all_groups = torch.cat(offsets)
        chosen, _ = ent_drop_mask(all_scores, torch.ones_like(all_scores, dtype=torch.bool), packed[:, 1],
                                  None, e.fraction, all_groups)
        mine = sum(sizes[:comm.rank]) // len(cols)
        dropped = torch.zeros_like(valid)
        dropped[member] = chosen[mine:mine + int(member.sum())]
        n_seq = int(torch.unique(local_group[dropped[member]]).numel()) if local_group is not None else 0
        return dropped, n_seq

    def _truncation(self, logits, labels, segments, comm):
        """Loss truncation over the per-example losses of the global batch (rank order)."""
        losses, example = example_losses(logits, labels, segments)
        everything, sizes = comm.gather_cat(losses.detach().double())
        keep_all = self.truncation(everything) if everything.numel() else torch.ones(0, dtype=torch.bool)
        start = sum(sizes[:comm.rank])
        keep = keep_all[start:start + losses.numel()].to(losses.device)
        numerator = torch.where(keep, losses, torch.zeros_like(losses)).sum()
        dropped = (example >= 0) & ~keep[example.clamp_min(0)] if losses.numel() else torch.zeros_like(labels, dtype=torch.bool)
        return numerator, dropped, losses.numel(), int(keep.sum()), int((~keep).sum())

    def state_dict(self) -> dict:
        return {} if self.truncation is None else {"truncation": self.truncation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.truncation is not None and "truncation" in state:
            self.truncation.load_state_dict(state["truncation"])
