"""EL2N scores (Paul et al. 2021) per token, per row, or per document of a packed row."""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from pruning_data.error_norm import error_norm

DocLens = Sequence[Union[Sequence[int], torch.Tensor]]

_REDUCTIONS = ("token", "sequence", "document")


def el2n(
    logits: torch.Tensor,
    targets: torch.Tensor,
    doc_lens: Optional[DocLens] = None,
    reduce: str = "sequence",
    ignore_index: int = -100,
    chunk_tokens: Optional[int] = None,
) -> torch.Tensor:
    """EL2N: the mean error norm of an example's predictions (higher = harder).

    Convention: ``logits[..., t, :]`` predicts ``targets[..., t]``; targets are the
    already shifted labels, with ``ignore_index`` where no loss is taken.

    reduce="token": the per-token error norm (0 at ignored positions), shaped like
        ``targets``.
    reduce="sequence": ``targets`` is (rows, length); returns (rows,) means over the
        non-ignored positions of each row.
    reduce="document": ``targets`` is (rows, length) of packed rows and ``doc_lens[r]``
        lists the lengths of the documents of row r in order (positive, summing to
        ``length``). Returns a flat float tensor of per-document means, row-major in
        document order. Besides ``ignore_index`` positions, the last position of
        every document is excluded: its target is the first token of the next
        document (or of whatever follows the row), which the model should not be
        scored on. With document-masked attention this equals scoring each document
        alone.

    A row or document with no scored position gets NaN ("no evidence") rather than
    0, which would rank it as the easiest example; callers must fill or drop it.

    ``chunk_tokens`` bounds the scoring memory (see ``error_norm``). To reduce one set
    of norms several ways, compute ``error_norm`` once and call ``el2n_from_norms``.
    """
    norms = error_norm(logits, targets, ignore_index=ignore_index, chunk_tokens=chunk_tokens)
    return el2n_from_norms(norms, targets, doc_lens=doc_lens, reduce=reduce, ignore_index=ignore_index)


def el2n_from_norms(
    norms: torch.Tensor,
    targets: torch.Tensor,
    doc_lens: Optional[DocLens] = None,
    reduce: str = "sequence",
    ignore_index: int = -100,
) -> torch.Tensor:
    """``el2n`` from per-token error norms already computed (``error_norm(logits, targets)``)."""
    if tuple(norms.shape) != tuple(targets.shape):
        raise ValueError(f"norms {tuple(norms.shape)} and targets {tuple(targets.shape)} differ")
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    if (doc_lens is not None) != (reduce == "document"):
        raise ValueError('doc_lens is required for reduce="document" and only allowed there')
    if reduce == "token":
        return norms
    if targets.dim() != 2:
        raise ValueError(f'reduce="{reduce}" needs (rows, length) targets, got {tuple(targets.shape)}')
    valid = targets != ignore_index
    if reduce == "sequence":
        return _masked_mean(norms, valid, group=None, n_groups=targets.shape[0])
    group, is_last = _document_layout(doc_lens, targets.shape[0], targets.shape[1], targets.device)
    if group.numel() == 0:
        return norms.new_zeros(0)
    return _masked_mean(norms, valid & ~is_last, group=group, n_groups=int(group.max()) + 1)


def document_stats(norms: torch.Tensor, targets: torch.Tensor, doc_lens: DocLens,
                   ignore_index: int = -100):
    """Per document of packed rows: ``(el2n, n_scored, max)`` from per-token norms.

    Same documents, order and scored positions as ``el2n_from_norms(reduce="document")``
    (so ``el2n`` equals it); ``n_scored`` is an int64 count and ``max`` the largest
    scored norm (0 when nothing is scored).
    """
    if targets.dim() != 2 or tuple(norms.shape) != tuple(targets.shape):
        raise ValueError("need (rows, length) norms and targets of the same shape")
    group, is_last = _document_layout(doc_lens, targets.shape[0], targets.shape[1], targets.device)
    n_groups = int(group.max()) + 1 if group.numel() else 0
    keep = (targets != ignore_index) & ~is_last
    means = _masked_mean(norms, keep, group=group, n_groups=n_groups) if n_groups else norms.new_zeros(0)
    flat = group.reshape(-1)
    counts = torch.zeros(n_groups, dtype=torch.int64, device=norms.device)
    counts.index_add_(0, flat, keep.reshape(-1).long())
    maxima = torch.zeros(n_groups, dtype=norms.dtype, device=norms.device)
    scored = torch.where(keep, norms, torch.zeros_like(norms)).reshape(-1)  # norms are >= 0
    maxima.scatter_reduce_(0, flat, scored, reduce="amax", include_self=True)
    return means, counts, maxima


def _document_layout(doc_lens: DocLens, n_rows: int, length: int, device: torch.device):
    """Document id of every position and a mask of each document's last position."""
    if len(doc_lens) != n_rows:
        raise ValueError(f"doc_lens has {len(doc_lens)} rows, targets has {n_rows}")
    ids, lasts, first_id = [], [], 0
    for row, lens in enumerate(doc_lens):
        lens = torch.as_tensor(lens, dtype=torch.long, device="cpu").reshape(-1)
        if lens.numel() == 0 or bool((lens <= 0).any()) or int(lens.sum()) != length:
            raise ValueError(
                f"doc_lens[{row}] must be positive lengths summing to the row length "
                f"{length}, got {lens.tolist()}"
            )
        ids.append(torch.repeat_interleave(torch.arange(first_id, first_id + lens.numel()), lens))
        last = torch.zeros(length, dtype=torch.bool)
        last[torch.cumsum(lens, 0) - 1] = True
        lasts.append(last)
        first_id += lens.numel()
    if not ids:
        empty = torch.zeros(0, length, dtype=torch.long, device=device)
        return empty, empty.bool()
    return torch.stack(ids).to(device), torch.stack(lasts).to(device)


def _masked_mean(norms: torch.Tensor, keep: torch.Tensor, group, n_groups: int) -> torch.Tensor:
    """Mean of ``norms`` over ``keep`` per row (group=None) or per group id; NaN if empty."""
    values = torch.where(keep, norms, torch.zeros_like(norms)).double()
    counts = keep.double()
    if group is None:
        sums, ns = values.sum(dim=1), counts.sum(dim=1)
    else:
        flat = group.reshape(-1)
        sums = torch.zeros(n_groups, dtype=torch.float64, device=norms.device)
        ns = torch.zeros(n_groups, dtype=torch.float64, device=norms.device)
        sums.index_add_(0, flat, values.reshape(-1))
        ns.index_add_(0, flat, counts.reshape(-1))
    means = sums / ns.clamp_min(1.0)
    return means.masked_fill_(ns == 0, float("nan")).to(norms.dtype)
