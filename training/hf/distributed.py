"""The few collectives the HF path needs under ``torchrun`` / ``accelerate launch``.

Everything here is a no-op (rank 0 of 1) when no ``torch.distributed`` process group is up, so
the same code runs in one process and in N. Tensors travel on the backend's device (CUDA for
NCCL, CPU otherwise) and come back on the caller's device. Every rank must make the same calls
in the same order: they are collectives.
"""
from __future__ import annotations

import torch


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def finish() -> None:
    """End the process group cleanly: call once at the end of a script under ``torchrun``.

    Without it, gloo's worker threads are still alive when the interpreter exits, and a rank can
    die with SIGABRT ("terminate called without an active exception") after all its work is done.
    The barrier first, so no rank tears down its side while another still talks to it.
    """
    import gc

    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # a Trainer's DDP wrapper in a reference cycle would keep the group alive
        dist.barrier()
        dist.destroy_process_group()


def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``values`` over all ranks (float64 sums of counts are exact)."""
    if world()[1] == 1:
        return values
    t = values.detach().to(_device()).clone()
    torch.distributed.all_reduce(t)
    return t.to(values.device)


def gather_ragged(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's 1-D ``values`` concatenated in rank order, and each rank's length.

    Lengths may differ between ranks (padded to the longest for ``all_gather``, then cut)."""
    rank, size = world()
    values = values.detach().reshape(-1)
    if size == 1:
        return values, torch.tensor([values.numel()])
    dev = _device()
    n = torch.tensor([values.numel()], dtype=torch.int64, device=dev)
    counts = [torch.zeros_like(n) for _ in range(size)]
    torch.distributed.all_gather(counts, n)
    counts = torch.cat(counts).cpu()
    width = max(int(counts.max()), 1)
    padded = torch.zeros(width, dtype=values.dtype, device=dev)
    padded[:values.numel()] = values.to(dev)
    parts = [torch.empty_like(padded) for _ in range(size)]
    torch.distributed.all_gather(parts, padded)
    out = torch.cat([p[:int(c)] for p, c in zip(parts, counts.tolist())])
    return out.to(values.device), counts
