"""Checkpoints: one ``torch.save`` file per saved step, loadable with ``weights_only=True``.

Everything needed to continue bit-for-bit is inside: model and optimizer state, the streaming
reader's state (epoch and global sample position, under ``"sampler"``), the pruner's scores and
selection, the loss-truncation buffer, the RNG state, the token map of a reduced vocabulary and the
configuration (plain data, secrets in URLs redacted). All of it is global state, the same on every
rank of a data-parallel run: rank 0 writes it, and any number of processes resumes from it.
"""
from __future__ import annotations

from pathlib import Path

import torch
from pipelines.infra.atomic import atomic_path

PATTERN = "step-*.pt"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    return sorted(checkpoint_dir(output_dir).glob(PATTERN))


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(state: dict, output_dir: str | Path, step: int, keep: int) -> Path:
    """Write atomically (temporary name, then rename) and keep only the ``keep`` newest."""
    directory = checkpoint_dir(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step-{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(output_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    return torch.load(path, map_location=map_location, weights_only=True)


def flat_config(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        else:
            out[name] = value
    return out


def config_differences(saved: dict, current: dict, allowed: tuple[str, ...]) -> list[str]:
    """Dotted keys whose values differ, except those under an ``allowed`` prefix."""
    a, b = flat_config(saved), flat_config(current)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k)
            and not any(k == p or k.startswith(p + ".") for p in allowed)]
