"""The training objective chosen by ``loss.kind``: MLE, ENT or loss truncation.

All take already shifted ``labels`` (``IGNORE_INDEX`` = no loss) and return
``(loss, stats)`` where ``stats`` holds plain numbers for the metrics log:
``tokens`` (valid targets), ``dropped_tokens`` and ``dropped_rows``.
  * mle: mean cross-entropy over valid targets.
  * ent: ``pruning_data.ent_loss`` (threshold / fraction, token or sequence level, warmup);
    mean over the kept tokens.
  * loss_truncation: ``pruning_data.LossTruncation`` on per-row mean losses; the loss is the
    mean of the kept rows' losses (each row weighted equally, as in Kang & Hashimoto).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pruning_data import LossTruncation, ent_loss
from training.config import LossConfig
from training.data import IGNORE_INDEX


def row_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each row over its valid targets (0 for a row without any)."""
    per_token = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                reduction="none")
    counts = (labels != IGNORE_INDEX).sum(dim=1)
    return per_token.sum(dim=1) / counts.clamp_min(1)


class Objective:
    """Stateful loss (loss truncation keeps a buffer); ``state_dict`` goes into checkpoints."""

    def __init__(self, cfg: LossConfig):
        self.cfg = cfg
        t = cfg.truncation
        self.truncation = LossTruncation(t.drop_fraction, t.min_count, t.recompute_every) \
            if cfg.kind == "loss_truncation" else None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, step: int):
        valid = labels != IGNORE_INDEX
        stats = {"tokens": int(valid.sum()), "dropped_tokens": 0, "dropped_rows": 0}
        if self.cfg.kind == "mle":
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=IGNORE_INDEX)
            return loss, stats
        if self.cfg.kind == "ent":
            e = self.cfg.ent
            loss, info = ent_loss(logits.float(), labels, threshold=e.threshold, fraction=e.fraction,
                                  level=e.level, warmup_steps=e.warmup_steps, step=step,
                                  ignore_index=IGNORE_INDEX)
            stats.update(dropped_tokens=info.n_dropped, dropped_rows=info.n_dropped_sequences)
            stats["dropped_mask"] = info.dropped
            return loss, stats
        losses = row_losses(logits, labels)
        has_tokens = valid.any(dim=1)
        keep = torch.ones_like(has_tokens)
        if bool(has_tokens.any()):
            keep[has_tokens] = self.truncation(losses[has_tokens])
        keep &= has_tokens
        loss = torch.where(keep, losses, torch.zeros_like(losses)).sum() / keep.sum().clamp_min(1)
        dropped = has_tokens & ~keep
        stats.update(dropped_rows=int(dropped.sum()), dropped_tokens=int((valid & dropped[:, None]).sum()))
        stats["dropped_mask"] = valid & dropped[:, None]
        return loss, stats

    def state_dict(self) -> dict:
        return {} if self.truncation is None else {"truncation": self.truncation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.truncation is not None and "truncation" in state:
            self.truncation.load_state_dict(state["truncation"])
