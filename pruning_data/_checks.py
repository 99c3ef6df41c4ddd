"""Shared argument checks and the one counting rule used by every fraction."""

from __future__ import annotations

import math

import torch


def floor_count(fraction: float, n: int) -> int:
    """Return floor(fraction * n), with c*n rounded to 9 decimals first.

    Without the rounding, binary floats give floor(0.29 * 100) == 28.
    """
    return int(math.floor(round(float(fraction) * n, 9)))


def check_fraction(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def check_logits_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("logits and targets must be torch tensors")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be an integer tensor, got {targets.dtype}")
    if logits.dim() < 1 or tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise ValueError(
            f"logits must be targets.shape + (vocab,), got logits {tuple(logits.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    if logits.shape[-1] < 1:
        raise ValueError("vocabulary size must be at least 1")
