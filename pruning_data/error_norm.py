"""Per-token error norm ||softmax(logits) - one_hot(target)||_2 (EL2N / ENT score)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from pruning_data._checks import check_logits_targets

MAX_ERROR_NORM = math.sqrt(2.0)

# chunk_tokens=None: as many positions per chunk as fit in this many float32 elements (128 MiB).
CHUNK_ELEMENTS = 1 << 25


def chunk_size(vocab: int, chunk_tokens: Optional[int]) -> int:
    """Positions per chunk: ``chunk_tokens``, or ``CHUNK_ELEMENTS // vocab`` (at least 1) for None."""
    if chunk_tokens is None:
        return max(1, CHUNK_ELEMENTS // max(1, int(vocab)))
    if int(chunk_tokens) < 1:
        raise ValueError(f"chunk_tokens must be None or >= 1, got {chunk_tokens}")
    return int(chunk_tokens)


def error_norm(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
               chunk_tokens: Optional[int] = None) -> torch.Tensor:
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

    Memory: positions are processed ``chunk_tokens`` at a time (None: as many as fit
    in ``CHUNK_ELEMENTS`` float32 values, 128 MiB, whatever V is), and the softmax
    buffer of a chunk is squared in place, so the extra memory is one chunk x V buffer
    (plus a float32 copy of the chunk's logits when they are not float32/float64),
    not the two N x V buffers of a one-shot computation. The values do not depend on
    the chunking: each position is computed independently.
    """
    check_logits_targets(logits, targets)
    with torch.no_grad():
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        vocab = logits.shape[-1]
        flat_logits = logits.detach().reshape(-1, vocab)
        flat_targets = targets.reshape(-1)
        valid = flat_targets != ignore_index
        safe_targets = torch.where(valid, flat_targets, torch.zeros_like(flat_targets)).long()
        out = torch.empty(flat_targets.shape[0], dtype=dtype, device=logits.device)
        step = chunk_size(vocab, chunk_tokens)
        for start in range(0, flat_targets.shape[0], step):
            stop = min(start + step, flat_targets.shape[0])
            probs = torch.softmax(flat_logits[start:stop], dim=-1, dtype=dtype)
            probs.scatter_(-1, safe_targets[start:stop].unsqueeze(-1), 0.0)  # only the v != y terms
            wrong_mass = probs.sum(dim=-1)
            squared = probs.square_().sum(dim=-1).add_(wrong_mass.square_())
            out[start:stop] = squared.clamp_(0.0, 2.0).sqrt_()
            del probs  # free this chunk's buffer before the next one is allocated
        return out.masked_fill_(~valid, 0.0).reshape(targets.shape)
