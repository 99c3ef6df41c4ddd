"""MLE, Error Norm Truncation and loss truncation as a ``transformers.Trainer`` ``compute_loss_func``.

``FewtruncLoss`` is both the loss (``Trainer(compute_loss_func=loss)``) and a callback
(``callbacks=[loss]``) that tells it the step (ENT's warm-up) and keeps its state (the
loss-truncation buffer, the drop counts) in the Trainer's checkpoints. Labels are Hugging Face's
unshifted labels (``PackedCollator`` makes them): ``logits[:, t]`` is scored against ``labels[:, t+1]``.

  * ``mle``: mean cross-entropy over the targets (as the model's own loss);
  * ``ent``: ``pruning_data.ent_loss`` - drop targets whose error norm is above ``threshold``, or the
    top ``fraction`` (``level="token"``), or whole rows (``level="sequence"``: the batch's rows, so
    stack the rows with ``PackedCollator(layout="stack")``); no truncation before ``warmup_steps``;
  * ``loss_truncation``: ``pruning_data.LossTruncation`` over per-sequence mean losses, where a
    sequence is a batch row (``unit="row"``) or a document segment (``unit="document"``, found from
    the labels: every document starts with an ignored label, so it works with flattened rows).

Gradient accumulation: the Trainer passes ``num_items_in_batch`` (targets in all accumulated
micro-batches) and expects a loss already scaled by it. Each micro-batch's objective (a mean over
its kept targets or rows) is weighted by its share of the targets: with one micro-batch per step
the loss is exactly the objective's.

Many processes (``torchrun`` / ``accelerate launch``, a ``torch.distributed`` process group up):
the statistics are those of the *global* micro-batch, the union of the ranks' micro-batches, which
is the micro-batch one process takes with the same global batch (``global_batch.py``): ENT's
fraction and loss truncation's percentile are taken over every rank's targets and sequences
(all-gathered), ENT's and the loss's denominators count every rank's targets, and the counts below
are global, the same on every rank. Each rank returns its share of the global loss; the shares sum
to the 1-process loss, and the Trainer (``average_tokens_across_devices=True``, its default, which
this requires) scales it by the world size against DDP's gradient mean. In a plain DDP loop,
multiply the returned loss by the world size the same way. ``unit="row"`` and ``level="sequence"``
use batch rows: with ``layout="flatten"`` a rank's micro-batch is one row, so use
``unit="document"`` (or stacked rows) to match one process. Every rank must call the loss the same
number of times (it makes collectives).

Counts: ``last`` (the latest call), ``current`` (summed over the current Trainer step's
micro-batches: its loss, targets, dropped targets and sequences) and ``totals`` (the whole run,
kept in checkpoints).

From a plain loop: ``loss = objective(model(**batch_without_labels), batch["labels"], step=step)``.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from pipelines.infra.errors import ConfigError
from pruning_data import LossTruncation, ent_loss
from training.hf.checkpoint_state import CheckpointedCallback
from training.hf.collator import IGNORE_INDEX
from training.hf.distributed import all_sum, gather_ragged, world
from training.hf.global_batch import ent_drop_mask, truncation_keep, valid_tie_ids

KINDS = ("mle", "ent", "loss_truncation")


class FewtruncLoss(CheckpointedCallback):
    state_file = "fewtrunc-loss.pt"

    def __init__(self, kind: str = "mle", *, threshold: float | None = None, fraction: float | None = None,
                 level: str = "token", warmup_steps: int = 0, drop_fraction: float = 0.1, min_count: int = 64,
                 recompute_every: int = 1, unit: str = "row"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if unit not in ("row", "document"):
            raise ValueError(f"unit must be 'row' or 'document', got {unit!r}")
        if kind == "ent" and (threshold is None) == (fraction is None):
            raise ValueError("ENT needs exactly one of threshold or fraction")
        self.kind = kind
        self.ent = {"threshold": threshold, "fraction": fraction, "level": level, "warmup_steps": int(warmup_steps)}
        self.unit = unit
        self.truncation = LossTruncation(drop_fraction=drop_fraction, min_count=min_count,
                                         recompute_every=recompute_every) \
            if kind == "loss_truncation" else None
        self.step = 0
        self.totals = {"targets": 0, "dropped_targets": 0, "dropped_sequences": 0}
        self.last: dict = {}  # the latest call (micro-batch)
        self.current = self._zero()  # summed over the micro-batches of the current Trainer step

    # -- the loss ------------------------------------------------------------------------------
    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch=None, step: int | None = None):
        logits = outputs["logits"] if isinstance(outputs, dict) or hasattr(outputs, "keys") else outputs[0]
        if step is not None:
            self.step = int(step)
        logits, targets = logits[..., :-1, :], labels[..., 1:].to(logits.device)
        valid = targets != IGNORE_INDEX
        n_local = int(valid.sum())
        rank, size = world()
        if size > 1:  # every rank's valid targets: this rank's offset, and the global count
            counts = gather_ragged(torch.tensor([n_local], dtype=torch.int64))[0]
            offset, n_valid = int(counts[:rank].sum()), int(counts.sum())
        else:
            offset, n_valid = 0, n_local
        dropped_targets, dropped_sequences = 0, 0
        if self.kind == "mle":
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss / max(n_valid, 1)
        elif self.kind == "ent":
            loss, dropped_targets, dropped_sequences = self._ent(logits, targets, valid, offset, n_valid, size)
        else:
            loss, dropped_targets, dropped_sequences = self._truncated(logits, targets, valid, size)
        if num_items_in_batch is not None:
            total = float(num_items_in_batch)
            loss = loss * (n_valid / total if total > 0 else 0.0)
        record = [float(loss.detach()), n_local, int(dropped_targets), int(dropped_sequences)]
        if size > 1:  # this rank's share -> the global micro-batch's numbers (the same on every rank)
            record = all_sum(torch.tensor(record, dtype=torch.float64)).tolist()
        self.last = {"step": self.step, "loss": float(record[0]), "targets": int(record[1]),
                     "dropped_targets": int(record[2]), "dropped_sequences": int(record[3])}
        for key in self.totals:
            self.totals[key] += self.last[key]
            self.current[key] += self.last[key]
        self.current["loss"] += self.last["loss"]
        return loss

    def _ent(self, logits, targets, valid, offset: int, n_valid: int, size: int):
        e = self.ent
        if size == 1:
            loss, info = ent_loss(logits.float(), targets, threshold=e["threshold"], fraction=e["fraction"],
                                  level=e["level"], warmup_steps=e["warmup_steps"], step=self.step,
                                  ignore_index=IGNORE_INDEX, tie_ids=valid_tie_ids(valid))
            return loss, info.n_dropped, info.n_dropped_sequences
        if self.step < e["warmup_steps"]:
            dropped, n_seq = torch.zeros_like(valid), 0
        else:
            dropped, n_seq = ent_drop_mask(logits, targets, valid, offset, threshold=e["threshold"],
                                           fraction=e["fraction"], level=e["level"], ignore_index=IGNORE_INDEX)
        kept = targets.masked_fill(dropped, IGNORE_INDEX)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), kept.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        return loss / max(n_valid, 1), int(dropped.sum()), n_seq

    @staticmethod
    def _zero() -> dict:
        return {"loss": 0.0, "targets": 0, "dropped_targets": 0, "dropped_sequences": 0}

    def _truncated(self, logits, targets, valid, size: int):
        per_token = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                    reduction="none")
        group = sequence_ids(targets, self.unit)
        n_groups = int(group.max()) + 1 if group.numel() else 0
        flat_group, flat_valid = group.reshape(-1), valid.reshape(-1)
        sums = per_token.new_zeros(n_groups).index_add(0, flat_group, per_token.reshape(-1))
        counts = torch.zeros(n_groups, device=per_token.device).index_add_(0, flat_group, flat_valid.float())
        has = counts > 0
        losses = sums[has] / counts[has]
        if size > 1:  # the cut-off over every rank's sequences
            keep, n_kept = truncation_keep(self.truncation, losses)
        elif losses.numel() == 0:
            return per_token.sum() * 0.0, 0, 0
        else:
            keep = self.truncation(losses)
            n_kept = int(keep.sum())
        kept = torch.where(keep, losses, torch.zeros_like(losses))
        loss = kept.sum() / max(n_kept, 1)
        return loss, int(counts[has][~keep].sum()), int((~keep).sum())

    # -- callback: step and checkpoints ----------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if args.world_size > 1 and not args.average_tokens_across_devices:
            raise ConfigError("FewtruncLoss under many processes needs TrainingArguments("
                              "average_tokens_across_devices=True): its loss is a share of the global batch's")
        super().on_train_begin(args, state, control, **kwargs)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step
        self.current = self._zero()

    @property
    def dropped_share(self) -> float:
        """Share of all targets seen so far that were dropped."""
        return self.totals["dropped_targets"] / self.totals["targets"] if self.totals["targets"] else 0.0

    def state_dict(self) -> dict:
        return {"kind": self.kind, "step": self.step, "totals": dict(self.totals),
                "truncation": None if self.truncation is None else self.truncation.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state["kind"] != self.kind:
            raise ValueError(f"checkpoint has loss kind {state['kind']!r}, this loss {self.kind!r}")
        self.step = int(state["step"])
        self.totals = {k: int(v) for k, v in state["totals"].items()}
        if self.truncation is not None:
            self.truncation.load_state_dict(state["truncation"])


def sequence_ids(targets: torch.Tensor, unit: str) -> torch.Tensor:
    """Sequence number of every (shifted) target: its row, or its document segment.

    A document's first token has an ignored label, so in the shifted ``targets`` a new segment
    starts right after every ignored position (and at every row start).
    """
    rows, length = targets.shape[0], targets.shape[-1]
    if unit == "row":
        return torch.arange(rows, device=targets.device)[:, None].expand(rows, length)
    starts = torch.zeros_like(targets, dtype=torch.long)
    starts[:, 0] = 1
    starts[:, 1:] = (targets[:, :-1] == IGNORE_INDEX).long()
    return starts.reshape(-1).cumsum(0).reshape(targets.shape) - 1
