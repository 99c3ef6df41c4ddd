"""Small pieces of the training loop's set-up: the learning-rate schedule and the device."""
from __future__ import annotations

import math

import torch

from pipelines.infra.errors import ConfigError


def lr_at(step: int, cfg) -> float:
    """Linear warmup to ``lr``, then constant or cosine to ``min_lr`` over ``decay_steps``."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.decay_steps <= 0:
        return cfg.lr
    t = min(1.0, (step - cfg.warmup_steps) / cfg.decay_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def wants_cuda(name: str) -> bool:
    """Whether ``train.device`` puts this run on CUDA (and so an NCCL group under torchrun)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but CUDA is not available")
    return name == "cuda" or (name == "auto" and torch.cuda.is_available())


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``train.device`` as a torch device; on CUDA, GPU ``local_rank`` (one per process)."""
    return torch.device("cuda", local_rank) if wants_cuda(name) else torch.device("cpu")
