"""Per-token error norm ||softmax(logits) - one_hot(target)||_2 (EL2N / ENT score)."""

from __future__ import annotations

import math

import torch

from pruning_data._checks import check_logits_targets

MAX_ERROR_NORM = math.sqrt(2.0)


def error_norm(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Error norm of each prediction, shaped like ``targets``, in [0, sqrt(2)].

    ||p - e_y||^2 = sum_v p_v^2 - 2 p_y + 1 = sum_{v!=y} p_v^2 + (sum_{v!=y} p_v)^2.
    The second form is what is computed: it needs no one-hot of size V, and with
    only positive terms it keeps full precision for confident correct predictions,
    where the first form cancels to ~sqrt(machine eps) (3e-4 in float32). The square
    is clamped to [0, 2] so rounding cannot push a score above sqrt(2) (a spurious
    ENT drop). Computed in float32 (float64 if the logits are float64) because
    bf16/fp16 softmax is too coarse to rank examples. Positions whose target equals
    ``ignore_index`` score 0. The result is detached: scores select data, they are
    not a training signal.
    """
    check_logits_targets(logits, targets)
    with torch.no_grad():
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        probs = torch.softmax(logits.detach().to(dtype), dim=-1)
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets)).long()
        probs.scatter_(-1, safe_targets.unsqueeze(-1), 0.0)  # keep only the v != y terms
        squared = probs.square().sum(dim=-1) + probs.sum(dim=-1).square()
        norms = squared.clamp_(0.0, 2.0).sqrt_()
        return norms.masked_fill_(~valid, 0.0)
