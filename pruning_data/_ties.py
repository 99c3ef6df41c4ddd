"""Deterministic tie-breaking keys without position bias: an integer hash of token identities.

Ranking by a score alone leaves ties (at saturation every confidently wrong token scores
exactly sqrt(2) in float32). Breaking them by index would always prefer the earlier rows and
positions; breaking them by a hash of what each token *is* (e.g. its document id and position)
is deterministic, reproducible across batch layouts, and unrelated to where the token sits.

Everything is int64 arithmetic on values below 2**49, so there is no signed overflow on any
device: 32-bit multiplications are split into 16-bit halves.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32, without leaving int64's positive range."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche mix (Wellons' "lowbias32") of values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash62(x: torch.Tensor) -> torch.Tensor:
    """A 62-bit non-negative hash of any int64 values (two independent 32-bit mixes)."""
    x = x.long()
    lo, hi = x & _M32, (x >> 32) & _M32
    a = _mix32(lo ^ _mix32(hi ^ 0x9E3779B9))
    b = _mix32(lo ^ _mix32(hi ^ 0x85EBCA6B) ^ 0xC2B2AE35)
    return ((a >> 1) << 31) | (b >> 1)


def tie_key(*parts: torch.Tensor) -> torch.Tensor:
    """One non-negative int64 key per element from integer tensors of one shape.

    ``tie_key(doc_ids, positions)`` identifies a token by its document and position; equal
    inputs give equal keys on every device and in every batch. Order matters:
    ``tie_key(a, b) != tie_key(b, a)`` in general.
    """
    if not parts:
        raise ValueError("tie_key needs at least one tensor")
    key = _hash62(parts[0])
    for part in parts[1:]:
        key = _hash62(_hash62(key ^ 0x2545F491) ^ part.long())
    return key
