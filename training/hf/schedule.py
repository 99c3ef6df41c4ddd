"""Where a Trainer run is in its sampler's stream, for any world size and gradient accumulation.

The Trainer (through accelerate's ``BatchSamplerShard``) deals a sampler's batches of
``per_device_train_batch_size`` rows round-robin to the ranks, so the ``k``-th micro-batches of
the N ranks together are the sampler's positions ``[k*M, (k+1)*M)`` with ``M = per_device *
world_size``: exactly one process's ``k``-th micro-batch with ``per_device = M``. An optimizer
step takes ``grad_accum`` of them, ``G = M * grad_accum`` positions (the global batch), except the
last step of a Trainer epoch, which takes what is left when the epoch's micro-batches are not a
multiple of ``grad_accum``. A Trainer epoch is one pass over the sampler (``len(sampler)``
positions, ``L``) and makes ``ceil(L / G)`` steps, as the Trainer computes them.

So the stream position before global step ``s`` depends on ``(L, G)`` only: two runs with the same
global batch, whatever their world sizes and accumulation, are at the same position after the
same step, and a checkpoint made with one resumes with the other. Under N > 1 processes ``L``
must be a multiple of ``M``: accelerate would otherwise pad the epoch's last batches with rows
from its start, which one process does not do.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipelines.infra.errors import ConfigError


@dataclass(frozen=True)
class StepLayout:
    samples_per_epoch: int  # L: positions of one Trainer epoch (len of the sampler over all ranks)
    per_device: int
    world_size: int = 1
    grad_accum: int = 1

    @classmethod
    def from_args(cls, args, samples_per_epoch: int) -> "StepLayout":
        """From ``TrainingArguments`` (``world_size``: the processes of the launch)."""
        return cls(int(samples_per_epoch), int(args.per_device_train_batch_size), int(args.world_size),
                   int(args.gradient_accumulation_steps))

    @property
    def micro(self) -> int:
        """Rows of one global micro-batch (every rank's micro-batch together)."""
        return self.per_device * self.world_size

    @property
    def global_batch(self) -> int:
        return self.micro * self.grad_accum

    @property
    def steps_per_epoch(self) -> int:
        """The Trainer's ``num_update_steps_per_epoch``: ceil(ceil(L / M) / grad_accum)."""
        batches = -(-self.samples_per_epoch // self.micro)
        return max(-(-batches // self.grad_accum), 1)

    def position(self, step: int) -> int:
        """Stream position (samples over all ranks, all Trainer epochs) before global ``step``."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        return epoch * self.samples_per_epoch + min(k * self.global_batch, self.samples_per_epoch)

    def epoch_of(self, step: int) -> int:
        """The Trainer epoch that global ``step`` (0-based) belongs to."""
        return int(step) // self.steps_per_epoch

    def check(self, what: str = "the sampler") -> None:
        """Refuse what would make N processes take other rows than one process."""
        if self.world_size > 1 and self.samples_per_epoch % self.micro:
            raise ConfigError(
                f"{what} has {self.samples_per_epoch} samples per epoch, not a multiple of "
                f"per_device_train_batch_size x world size = {self.micro}: accelerate would pad the last "
                f"batches with rows from the epoch's start; use {self.samples_per_epoch // self.micro * self.micro}")
