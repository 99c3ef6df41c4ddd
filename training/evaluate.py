"""Passes over a whole dataset without training: held-out loss and EL2N / error-norm scores.

Shared by the trainer (re-scoring for dynamic pruning), ``fewtrunc score`` and the experiments.
Rows are visited in dataset order; segments are numbered row-major, like
``pruning_data.el2n(reduce="document")``.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from pruning_data import document_stats, el2n_from_norms, error_norm
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
def score_dataset(model, dataset, collator, batch_size: int = 16, device=None,
                  chunk_tokens: Optional[int] = None) -> dict:
    """EL2N of every row and every document segment, plus per-segment error-norm statistics.

    Returns numpy arrays: ``row_el2n`` [rows]; per segment (row-major): ``row``, ``doc_id``,
    ``chunk_index``, ``n_scored`` (targets scored: a segment's last token predicts across the
    boundary and is never scored), ``el2n`` (mean error norm; NaN when ``n_scored == 0``) and
    ``error_norm_max`` (0 when nothing was scored).

    The error norms of a batch are computed once (``chunk_tokens`` positions at a time, see
    ``pruning_data.error_norm``) and reduced three ways: per row, per segment mean, per segment max.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = {k: [] for k in ("row_el2n", "row", "doc_id", "chunk_index", "n_scored", "el2n", "error_norm_max")}
    for batch in ordered_batches(dataset, collator, batch_size):
        logits = forward(model, batch, device)
        labels = batch["labels"].to(device)
        T = labels.shape[1]
        norms = error_norm(logits, labels, ignore_index=IGNORE_INDEX, chunk_tokens=chunk_tokens)
        del logits
        out["row_el2n"].append(el2n_from_norms(norms, labels, reduce="sequence").cpu().numpy())
        # document_stats needs doc_lens summing to T: padding is one more "document", dropped below.
        pads = [T - int(d.sum()) for d in batch["doc_lens"]]
        lens = [torch.cat([d, torch.tensor([p])]) if p else d for d, p in zip(batch["doc_lens"], pads)]
        mean, count, peak = (x.cpu().numpy() for x in document_stats(norms, labels, lens, IGNORE_INDEX))
        real = np.concatenate([np.r_[np.ones(d.numel(), dtype=bool), np.zeros(int(p > 0), dtype=bool)]
                               for d, p in zip(batch["doc_lens"], pads)])
        out["row"].append(np.repeat(batch["index"].numpy(), [d.numel() for d in batch["doc_lens"]]))
        out["doc_id"].append(torch.cat(batch["doc_ids"]).numpy())
        out["chunk_index"].append(torch.cat(batch["chunk_index"]).numpy())
        out["n_scored"].append(count[real])
        out["el2n"].append(mean[real])
        out["error_norm_max"].append(peak[real])
    model.train(was_training)
    dtypes = {"row_el2n": np.float64, "row": np.int64, "doc_id": np.int64, "chunk_index": np.int32,
              "n_scored": np.int64, "el2n": np.float64, "error_norm_max": np.float64}
    return {k: (np.concatenate(v) if v else np.zeros(0)).astype(dtypes[k]) for k, v in out.items()}
