"""Passes over a whole dataset without training: held-out loss and EL2N / error-norm scores.

Shared by the trainer (re-scoring for dynamic pruning), ``fewtrunc score`` and the experiments.
Rows are visited in dataset order; segments are numbered row-major, like
``pruning_data.el2n(reduce="document")``.
"""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from pruning_data import el2n, error_norm
from training.data import IGNORE_INDEX, DocumentCollator


def ordered_batches(dataset, collator: DocumentCollator, batch_size: int):
    for start in range(0, len(dataset), batch_size):
        yield collator([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])


def forward(model, batch: dict, device: torch.device, autocast=None):
    with autocast or nullcontext():
        return model(batch["input_ids"].to(device), batch["position_ids"].to(device),
                     batch["segment_ids"].to(device))


@torch.no_grad()
def heldout_loss(model, dataset, collator, batch_size: int = 16, device=None) -> float:
    """Token-weighted mean cross-entropy over every valid target of ``dataset``."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in ordered_batches(dataset, collator, batch_size):
        logits = forward(model, batch, device).float()
        labels = batch["labels"].to(device)
        total += float(F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                       reduction="sum"))
        count += int((labels != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def score_dataset(model, dataset, collator, batch_size: int = 16, device=None) -> dict:
    """EL2N of every row and every document segment, plus per-segment error-norm statistics.

    Returns numpy arrays: ``row_el2n`` [rows]; per segment (row-major): ``row``, ``doc_id``,
    ``chunk_index``, ``n_scored`` (targets scored: a segment's last token predicts across the
    boundary and is never scored), ``el2n`` (mean error norm; NaN when ``n_scored == 0``) and
    ``error_norm_max`` (0 when nothing was scored).
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {k: [] for k in ("row_el2n", "row", "doc_id", "chunk_index", "n_scored", "el2n", "error_norm_max")}
    for batch in ordered_batches(dataset, collator, batch_size):
        logits = forward(model, batch, device).float()
        labels = batch["labels"].to(device)
        T = labels.shape[1]
        out["row_el2n"].append(el2n(logits, labels, reduce="sequence").cpu().numpy())
        # el2n(reduce="document") needs doc_lens summing to T: padding is one more "document".
        lens = [torch.cat([d, torch.tensor([T - int(d.sum())])]) if int(d.sum()) < T else d
                for d in batch["doc_lens"]]
        seg = el2n(logits, labels, doc_lens=lens, reduce="document").cpu().numpy()
        norms = error_norm(logits, labels).cpu().numpy()
        valid = (labels != IGNORE_INDEX).cpu().numpy()
        k = 0
        for r, d in enumerate(batch["doc_lens"]):
            starts = np.concatenate([[0], np.cumsum(d.numpy())])
            for j in range(d.numel()):
                a, b = starts[j], starts[j + 1]
                scored = valid[r, a:b]
                out["row"].append(int(batch["index"][r]))
                out["doc_id"].append(int(batch["doc_ids"][r][j]))
                out["chunk_index"].append(int(batch["chunk_index"][r][j]))
                out["n_scored"].append(int(scored.sum()))
                out["el2n"].append(float(seg[k + j]))
                out["error_norm_max"].append(float(norms[r, a:b][scored].max()) if scored.any() else 0.0)
            k += len(lens[r])
    model.train(was_training)
    result = {"row_el2n": np.concatenate(out.pop("row_el2n")) if out["row"] else np.zeros(0)}
    dtypes = {"row": np.int64, "doc_id": np.int64, "chunk_index": np.int32, "n_scored": np.int64,
              "el2n": np.float64, "error_norm_max": np.float64}
    result.update({k: np.asarray(v, dtype=dtypes[k]) for k, v in out.items()})
    return result
