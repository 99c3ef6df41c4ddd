"""Padding-free batches for Hugging Face models from fewtrunc's packed rows.

``PackedCollator`` turns rows (``input_ids`` + ``doc_lens``, as a ``ShardDataset``, a
``datasets`` Arrow dataset of shards or ``training.hf.pack_dataset`` give them) into the
keyword arguments a ``transformers`` causal LM takes, with the names
``DataCollatorWithFlattening`` uses:

  input_ids      int64; ``pad_id`` after a row's end when rows are stacked;
  labels         int64, Hugging Face's *unshifted* convention (the model shifts them): the token
                 itself, ``-100`` on the first token of every document and on padding. After the
                 model's shift, no position whose next token starts another document, or lies past
                 the row's end, has a target;
  position_ids   int64, 0, 1, ... restarting at every document (padding restarts too, so it is a
                 sequence of its own and never continues a document);
  cu_seq_lens_q / cu_seq_lens_k, max_length_q / max_length_k  (``flash_attn_kwargs=True``):
                 int32 offsets of every sequence in the flattened batch (each document, and each
                 row's padding), and the longest one, for FlashAttention-2 varlen / flex_attention;
  seq_idx        int32 (``seq_idx=True``): the sequence number of every token in the batch;
  attention_mask (``mask="4d"``): ``[rows, 1, T, T]`` block-diagonal causal mask, additive
                 (0 where attended, the dtype's minimum elsewhere) in ``mask_dtype``, or boolean
                 with ``mask_dtype=torch.bool``. For eager or SDPA attention. It costs T*T per row:
                 for long flattened batches prefer the ``position_ids`` path (transformers builds the
                 same block-diagonal mask itself when no ``attention_mask`` and no cache is given).
  use_cache      ``False`` (a Python bool; ``use_cache=None`` leaves the key out). transformers
                 derives the block-diagonal mask from ``position_ids`` only when the model runs
                 without a cache; every pretrained Llama/Mistral/Qwen config says ``use_cache=True``,
                 and with a cache documents attend to each other. The batch says ``False`` itself,
                 so ``model(**batch)`` and the ``Trainer`` keep documents apart whatever the config.

A collator that cannot keep documents apart is refused (``ConfigError``): no ``position_ids``,
mask, varlen kwargs or ``seq_idx``; or ``use_cache`` other than ``False`` without ``mask="4d"``
(only an explicit mask separates documents when a cache is used).

Rows are checked (vectorized over the concatenated ids): ids must be flat lists of integers,
not negative, below 2**63 and, with ``token_map``, below its length; ``doc_lens`` positive and
summing to the row's length. A bad row raises ``RowError`` naming its index in the batch.

``layout="flatten"`` concatenates the rows into one row ``[1, total_tokens]``; ``"stack"``
keeps ``[rows, T]`` with T the longest row, rounded up to ``pad_to_multiple``.

A document longer than the shards' ``seq_len`` was cut into chunks (``chunk_index`` 0, 1, ...),
each in order but possibly in different rows. Every chunk is a sequence of its own here, exactly as
in the paper: chunk k > 0 attends only to its own tokens, its positions restart at 0, and its first
token gets no target (its predecessor ended the previous chunk, in another row or another place).
"""
from __future__ import annotations

import numpy as np
import torch

from packing.split import positions_within
from pipelines.infra.errors import ConfigError, InputError

IGNORE_INDEX = -100
LAYOUTS = ("flatten", "stack")
_INT64_MAX = np.iinfo(np.int64).max


class RowError(InputError, ValueError):
    """A row that is not a flat list of token ids with its document lengths; names the row."""


class PackedCollator:
    """``collator(rows) -> dict of tensors`` for ``model(**batch)`` (see the module docstring).

    A row is a mapping with ``input_ids`` and ``doc_lens`` (``seq_lengths`` is accepted too, as
    ``pack_dataset`` and TRL name it); values may be numpy arrays, tensors or lists. Other keys
    (``doc_ids``, ``chunk_index``, ``index``) are ignored. ``token_map`` (an int array indexed by
    token id) remaps the ids, e.g. to a reduced vocabulary (``training.data.vocab_map``).
    """

    def __init__(self, layout: str = "flatten", position_ids: bool = True, flash_attn_kwargs: bool = False,
                 seq_idx: bool = False, mask: str | None = None, mask_dtype: torch.dtype = torch.float32,
                 pad_id: int = 0, pad_to_multiple: int = 1, token_map=None, use_cache: bool | None = False):
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if mask not in (None, "4d"):
            raise ValueError(f"mask must be None or '4d', got {mask!r}")
        if int(pad_to_multiple) < 1:
            raise ValueError(f"pad_to_multiple must be >= 1, got {pad_to_multiple}")
        self.layout = layout
        self.position_ids = bool(position_ids)
        self.flash_attn_kwargs = bool(flash_attn_kwargs)
        self.seq_idx = bool(seq_idx)
        self.mask = mask
        self.mask_dtype = mask_dtype
        self.pad_id = int(pad_id)
        self.pad_to_multiple = int(pad_to_multiple)
        self.token_map = None if token_map is None else np.asarray(token_map, dtype=np.int64)
        self.use_cache = use_cache
        if not (self.position_ids or self.mask or self.flash_attn_kwargs or self.seq_idx):
            raise ConfigError("PackedCollator(position_ids=False) with no mask, flash_attn_kwargs or seq_idx "
                              "lets the documents of a row attend to each other: keep position_ids=True")
        if use_cache is not False and self.mask != "4d":
            raise ConfigError(f"PackedCollator(use_cache={use_cache!r}) cannot keep documents apart: with a "
                              "cache, transformers ignores the packing in position_ids; keep use_cache=False "
                              "(the default) or pass mask='4d'")

    def __call__(self, rows) -> dict:
        ids, row_lens, seg_lens, segs_per_row = _gather(rows, None if self.token_map is None else self.token_map.size)
        if self.token_map is not None:
            ids = self.token_map[ids]
        if self.layout == "flatten":
            width, n_rows = int(ids.size), 1
            rows_of_segments = np.zeros(seg_lens.size, dtype=np.int64)
            pad = np.zeros(1, dtype=np.int64)
        else:
            longest = int(row_lens.max())
            width = -(-longest // self.pad_to_multiple) * self.pad_to_multiple
            n_rows = row_lens.size
            rows_of_segments = np.repeat(np.arange(n_rows), segs_per_row)
            pad = width - row_lens
        # every sequence of the batch, row-major: each row's documents, then its padding (if any)
        seq_row = np.concatenate([rows_of_segments, np.flatnonzero(pad > 0)])
        seq_len = np.concatenate([seg_lens, pad[pad > 0]])
        is_pad = np.concatenate([np.zeros(seg_lens.size, bool), np.ones(int((pad > 0).sum()), bool)])
        order = np.lexsort((is_pad, seq_row))  # by row, documents before padding
        seq_len, is_pad = seq_len[order], is_pad[order]

        n = n_rows * width
        token_ids = np.full(n, self.pad_id, dtype=np.int64)
        token_is_pad = np.repeat(is_pad, seq_len)
        token_ids[~token_is_pad] = ids
        seq_of_token = np.repeat(np.arange(seq_len.size), seq_len)
        positions = positions_within(seq_len)
        labels = token_ids.copy()
        labels[positions == 0] = IGNORE_INDEX
        labels[token_is_pad] = IGNORE_INDEX

        shape = (n_rows, width)
        batch = {"input_ids": torch.from_numpy(token_ids.reshape(shape)),
                 "labels": torch.from_numpy(labels.reshape(shape))}
        if self.position_ids:
            batch["position_ids"] = torch.from_numpy(positions.reshape(shape))
        if self.flash_attn_kwargs:
            cu = torch.from_numpy(np.concatenate([[0], np.cumsum(seq_len)]).astype(np.int32))
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
            batch["max_length_q"] = batch["max_length_k"] = int(seq_len.max())
        if self.seq_idx:
            batch["seq_idx"] = torch.from_numpy(seq_of_token.astype(np.int32).reshape(shape))
        if self.mask == "4d":
            batch["attention_mask"] = block_causal_mask(torch.from_numpy(seq_of_token.reshape(shape)),
                                                        self.mask_dtype)
        if self.use_cache is not None:
            batch["use_cache"] = self.use_cache
        return batch


def block_causal_mask(seq_of_token: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[rows, 1, T, T]`` mask: query t sees key s iff s <= t and both are in the same sequence.

    Boolean (True = attend) for ``dtype=torch.bool``, else additive: 0 or ``finfo(dtype).min``.
    """
    t = seq_of_token.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool).tril_()
    allowed = (seq_of_token[:, :, None] == seq_of_token[:, None, :]) & causal
    allowed = allowed[:, None]
    if dtype == torch.bool:
        return allowed
    zero = torch.zeros((), dtype=dtype)
    return torch.where(allowed, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype))


def _where(rows, b: int) -> str:
    index = rows[b].get("index") if hasattr(rows[b], "get") else None
    return f"row {b} of the batch" + ("" if index is None else f" (dataset row {int(index)})")


def _column(rows, b: int, *names) -> np.ndarray:
    """Row ``b``'s first column of ``names`` as a flat integer array (int64 unless narrower)."""
    row = rows[b]
    name = next((n for n in names if n in row), None)
    if name is None:
        raise KeyError(f"row {b} of the batch has none of the columns {names} (it has {sorted(row)}); with the "
                       "Trainer, set TrainingArguments(remove_unused_columns=False) so that they reach the collator")
    value = row[name]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nested lists
        arr = None
    if arr is None or arr.ndim != 1:
        raise RowError(_where(rows, b), f"{name} must be a flat list of integers, got "
                                        f"{'a single value' if arr is not None and arr.ndim == 0 else 'nested lists'}")
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            return arr.astype(np.int64)
        kind = {"f": "floats", "U": "strings", "S": "bytes", "b": "booleans",
                "O": "None or values that are not 64-bit integers"}
        raise RowError(_where(rows, b), f"{name} holds {kind.get(arr.dtype.kind, arr.dtype)} "
                                        f"({arr.dtype}); token ids must be integers")
    if arr.dtype == np.uint64:
        if arr.size and int(arr.max()) > _INT64_MAX:
            raise RowError(_where(rows, b), f"{name} holds {int(arr.max())}, above 2**63 - 1")
        arr = arr.astype(np.int64)
    return arr


def _gather(rows, n_ids: int | None = None):
    """The batch's ids (concatenated, int64), row lengths, segment lengths and segments per row;
    ids checked in one pass over the concatenation: >= 0 and, when ``n_ids`` is given, < n_ids."""
    if len(rows) == 0:
        raise ValueError("cannot collate an empty batch")
    ids = [_column(rows, b, "input_ids") for b in range(len(rows))]
    lens = [_column(rows, b, "doc_lens", "seq_lengths") for b in range(len(rows))]
    row_lens = np.fromiter((a.size for a in ids), dtype=np.int64, count=len(ids))
    segs_per_row = np.fromiter((a.size for a in lens), dtype=np.int64, count=len(lens))
    seg_lens = np.concatenate(lens).astype(np.int64, copy=False)
    if seg_lens.size and seg_lens.min() < 1:  # name the first bad length, not the smallest
        k = int(np.flatnonzero(seg_lens < 1)[0])
        b = int(np.searchsorted(np.cumsum(segs_per_row), k, side="right"))
        raise RowError(_where(rows, b), f"doc_lens must be positive, got {int(seg_lens[k])}")
    ends = np.concatenate([[0], np.cumsum(seg_lens)])
    bounds = np.concatenate([[0], np.cumsum(segs_per_row)])
    sums = ends[bounds[1:]] - ends[bounds[:-1]]
    bad = np.flatnonzero((sums != row_lens) | (row_lens == 0))
    if bad.size:
        b = int(bad[0])
        raise RowError(_where(rows, b), f"{int(row_lens[b])} tokens but doc_lens sum to {int(sums[b])}"
                                        " (an empty row, or doc_lens that do not describe input_ids)")
    flat = np.concatenate(ids).astype(np.int64, copy=False)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or (n_ids is not None and high >= n_ids):  # name the first bad id, not the extreme
        bad = (flat < 0) if n_ids is None else (flat < 0) | (flat >= n_ids)
        token = int(np.flatnonzero(bad)[0])
        b = int(np.searchsorted(np.cumsum(row_lens), token, side="right"))
        what = "negative" if flat[token] < 0 else f"not below the token_map's {n_ids} entries"
        raise RowError(_where(rows, b), f"token id {int(flat[token])} is {what}")
    return flat, row_lens, seg_lens, segs_per_row
