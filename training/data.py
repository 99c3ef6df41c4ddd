"""A torch ``Dataset`` over a directory of fewtrunc shards, and the document-aware collator.

The dataset memory-maps each shard and decodes one record batch at a time (a small LRU cache),
so the corpus is never held in memory: uncompressed shards are read zero-copy; zstd/lz4 shards
are decompressed per record batch when a row of it is asked for. For random access over
compressed shards, keep record batches small or write training shards with ``compression: none``.

Label convention: labels are *already shifted*: ``logits[:, t]`` predicts ``labels[:, t]`` =
``input_ids[:, t + 1]``. A label is ``IGNORE_INDEX`` where the next token belongs to another
document (or to no document: the end of a row, padding), so no loss ever crosses a boundary.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import torch
from torch.utils.data import Dataset

from packing.split import positions_within
from pipelines.infra.errors import ConfigError
from pipelines.infra.shard_format import list_shards
from pipelines.infra.storage.paths import UrlPath, as_path
from training.shard_checks import COLUMNS, open_shard_file, read_batch  # noqa: F401 (COLUMNS: re-exported)

IGNORE_INDEX = -100


def _random_access(path, owner):
    """A shard memory-mapped; on S3 and GCS a file whose reads are ranged requests (a record
    batch, about 1M tokens, is read when a row of it is asked for, not the whole shard: GCS
    through ``training.streaming.gcs``, as pyarrow's GCS random-access file hangs against
    gcp-storage-emulator); on other stores a copy on local scratch, made on first use, removed
    with ``owner``."""
    if not isinstance(path, UrlPath):
        return str(path)  # open_shard_file memory-maps it
    from pipelines.infra.storage import open_input
    from pipelines.infra.storage.filesystems import resolve
    from pipelines.infra.storage.listing import guarded
    from training.streaming.gcs import GcsFile, is_gcs

    if is_gcs(path.url):
        return pa.PythonFile(GcsFile(path.url), mode="r")
    loc = resolve(path.url)
    if loc.scheme in ("s3", "s3a"):
        with guarded(path.url, loc):
            return loc.fs.open_input_file(loc.path)
    if not owner._scratch:
        import shutil
        import weakref

        from pipelines.infra.atomic import scratch_dir

        owner._scratch = scratch_dir("shards")
        weakref.finalize(owner, shutil.rmtree, owner._scratch, True)
    local = os.path.join(owner._scratch, path.name)
    with open(local, "wb") as out, open_input(path.url) as f:
        while chunk := f.read(8 << 20):
            out.write(chunk)
    return pa.memory_map(local, "r")


class ShardDataset(Dataset):
    """Row ``i`` of the concatenation of ``shard-*.arrow`` files (sorted by name).

    ``dataset[i]`` is a dict of numpy arrays: ``input_ids`` (int64), ``doc_lens``, ``doc_ids``,
    ``chunk_index`` and ``index`` (= i). ``token_map`` (optional int64 array) remaps token ids,
    e.g. to a reduced vocabulary (see ``vocab_map``).

    Opening checks every record batch (``training.shard_checks``: schema, offsets, lengths,
    ids): a damaged shard ends in a ``ShardError`` naming the file and the batch, before any
    row is used. The pass also records ``longest_row`` and ``max_token_id`` (before
    ``token_map``), which the trainer checks the model's configuration against, and
    ``batch_rows`` (the rows of every record batch of each shard, empty ones included).

    ``part=(k, n)`` opens only the shards ``k, k + n, k + 2n, ...`` of the sorted listing (their
    numbers are ``shard_numbers``; rows are numbered within the part): n processes check a
    directory together, each reading 1/n of it (``training.startup``). ``docs=True`` also keeps
    ``doc_layout``, read in the same pass.
    """

    def __init__(self, directory: str | Path, token_map: np.ndarray | None = None, cache_batches: int = 8,
                 part: tuple[int, int] = (0, 1), docs: bool = False):
        self.directory = as_path(directory)  # a UrlPath for s3:// and gs:// (ranged reads)
        every = list_shards(self.directory)
        if not every:
            raise ConfigError(
                f"no shards (shard-*.arrow) in {str(self.directory)!r}: build them first, e.g. "
                "`fewtrunc run configs/demo.yaml`, and point data.dir at its output")
        self.shard_numbers = list(range(len(every)))[part[0]::part[1]]
        self.shards = [every[s] for s in self.shard_numbers]
        self._scratch = ""  # a folder of local copies of shards on a store (GCS)
        self._readers: dict[int, ipc.RecordBatchFileReader] = {}
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = max(1, cache_batches)
        locs, counts, longest, max_id = [], [], 0, -1
        self.batch_rows, per_row, doc_ids = [], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for s in range(len(self.shards)):
            reader = self._reader(s)
            self.batch_rows.append(np.zeros(reader.num_record_batches, np.int64))
            for b in range(reader.num_record_batches):
                cols = read_batch(reader, b, str(self.shards[s]))
                offsets, ids = cols["input_ids"]
                self.batch_rows[s][b] = offsets.size - 1
                if docs and offsets.size > 1:
                    per_row.append(np.diff(cols["doc_ids"][0]).astype(np.int64))
                    doc_ids.append(cols["doc_ids"][1].astype(np.int64))
                if offsets.size > 1:
                    locs.append((s, b))
                    counts.append(offsets.size - 1)
                    longest = max(longest, int(np.diff(offsets).max()))
                    max_id = max(max_id, int(ids.max()))
        self._locs = locs
        self._starts = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.longest_row, self.max_token_id = longest, max_id
        self.doc_layout = (np.concatenate(per_row), np.concatenate(doc_ids)) if docs else None
        self.token_map = token_map

    @property
    def token_map(self) -> np.ndarray | None:
        return self._token_map

    @token_map.setter
    def token_map(self, mapping) -> None:
        if mapping is not None:
            mapping = np.asarray(mapping, dtype=np.int64)
            if self.max_token_id >= mapping.size:
                raise ConfigError(f"the shards in {str(self.directory)!r} hold token id {self.max_token_id}, "
                                  f"but the token map has {mapping.size} entries: build it with the "
                                  "tokenizer the shards were made with")
        self._token_map = mapping

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _reader(self, s: int) -> ipc.RecordBatchFileReader:
        if s not in self._readers:
            where = str(self.shards[s])
            self._readers[s] = open_shard_file(_random_access(self.shards[s], self), where)
        return self._readers[s]

    def _batch(self, k: int) -> dict:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        s, b = self._locs[k]
        cols = read_batch(self._reader(s), b, str(self.shards[s]), check=False)  # checked on opening
        self._cache[k] = cols
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cols

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} out of range (dataset has {len(self)} rows)")
        k = int(np.searchsorted(self._starts, index, side="right") - 1)
        r = index - int(self._starts[k])
        out = {"index": index}
        for name, (offsets, values) in self._batch(k).items():
            out[name] = values[offsets[r]:offsets[r + 1]]
        ids = out["input_ids"].astype(np.int64)
        out["input_ids"] = self.token_map[ids] if self.token_map is not None else ids
        return out

    def iter_token_counts(self, n_tokens: int) -> np.ndarray:
        """Token frequencies over the whole directory, read one record batch at a time."""
        counts = np.zeros(n_tokens, dtype=np.int64)
        for s, b in self._locs:
            values = read_batch(self._reader(s), b, str(self.shards[s]), check=False)["input_ids"][1]
            counts += np.bincount(values.astype(np.int64), minlength=n_tokens)[:n_tokens]
        return counts


def vocab_map(dataset: ShardDataset, tokenizer_vocab: int, limit: int) -> np.ndarray:
    """Map the ``limit - 1`` most frequent token ids to 1..limit-1 and everything else to 0 (UNK).

    Ties in frequency go to the lower id, so the map is a pure function of the data.
    """
    return vocab_map_from_counts(dataset.iter_token_counts(tokenizer_vocab), limit)


def vocab_map_from_counts(counts: np.ndarray, limit: int) -> np.ndarray:
    """``vocab_map`` from token frequencies already counted (e.g. summed over processes)."""
    counts = np.asarray(counts, dtype=np.int64)
    tokenizer_vocab = counts.size
    order = np.argsort(-counts, kind="stable")[: limit - 1]
    mapping = np.zeros(tokenizer_vocab, dtype=np.int64)
    mapping[order] = np.arange(1, order.size + 1)
    return mapping


class DocumentCollator:
    """Pad a list of rows into a batch that carries its document structure.

    Returns a dict of tensors, all ``[B, T]`` with T the longest row (rounded up to
    ``pad_to_multiple``) unless noted:
      input_ids    token ids, ``pad_id`` after the row's end;
      labels       next token inside the same document, ``IGNORE_INDEX`` elsewhere;
      position_ids restart at 0 in each document (``reset_position_ids``) or 0..len-1 per row;
                   padding continues the row's last counter;
      segment_ids  0, 1, ... per document within the row; padding is its own segment (-1 for
                   attention, never attending to or attended by a document);
      cu_seqlens   [n_segments + 1] int32 offsets into the flattened ``input_ids.view(-1)``,
                   every document one segment and each row's padding one more (varlen kernels);
      doc_lens, doc_ids, chunk_index: lists (one tensor per row) of the true documents;
      index        [B] dataset row indices.
    """

    def __init__(self, reset_position_ids: bool = True, pad_id: int = 0, pad_to_multiple: int = 1):
        self.reset_position_ids = reset_position_ids
        self.pad_id = pad_id
        self.pad_to_multiple = max(1, pad_to_multiple)

    def __call__(self, rows: list[dict]) -> dict:
        if not rows:
            raise ValueError("cannot collate an empty batch")
        longest = max(len(r["input_ids"]) for r in rows)
        T = -(-longest // self.pad_to_multiple) * self.pad_to_multiple
        B = len(rows)
        input_ids = np.full((B, T), self.pad_id, dtype=np.int64)
        labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
        positions = np.zeros((B, T), dtype=np.int64)
        segments = np.full((B, T), -1, dtype=np.int64)
        seg_lens = []
        for b, row in enumerate(rows):
            ids, lens = row["input_ids"], np.asarray(row["doc_lens"], dtype=np.int64)
            n = ids.size
            input_ids[b, :n] = ids
            seg = np.repeat(np.arange(lens.size), lens)
            segments[b, :n] = seg
            same_doc_next = seg[:-1] == seg[1:]
            labels[b, : n - 1] = np.where(same_doc_next, ids[1:], IGNORE_INDEX)
            if self.reset_position_ids:
                positions[b, :n] = positions_within(lens)
            else:
                positions[b, :n] = np.arange(n)
            if T > n:
                last = positions[b, n - 1] if n else -1
                positions[b, n:] = last + 1 + np.arange(T - n)
            seg_lens.extend(lens.tolist() + ([T - n] if T > n else []))
        cu = np.concatenate([[0], np.cumsum(seg_lens)]).astype(np.int32)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "labels": torch.from_numpy(labels),
            "position_ids": torch.from_numpy(positions),
            "segment_ids": torch.from_numpy(segments),
            "cu_seqlens": torch.from_numpy(cu),
            "max_seqlen": int(max(seg_lens)),
            "doc_lens": [torch.tensor(np.asarray(r["doc_lens"], dtype=np.int64)) for r in rows],
            "doc_ids": [torch.tensor(np.asarray(r["doc_ids"], dtype=np.int64)) for r in rows],
            "chunk_index": [torch.tensor(np.asarray(r["chunk_index"], dtype=np.int64)) for r in rows],
            "index": torch.tensor([int(r["index"]) for r in rows], dtype=torch.int64),
        }


def mask_documents(batch: dict, keep: list[np.ndarray]) -> dict:
    """Ignore the labels of document segments with ``keep[b][k] == False`` (per-document pruning)."""
    labels = batch["labels"].clone()
    for b, (lens, keep_row) in enumerate(zip(batch["doc_lens"], keep)):
        drop = np.repeat(~np.asarray(keep_row, dtype=bool), lens.numpy())
        if drop.any():
            labels[b, : drop.size][torch.from_numpy(drop)] = IGNORE_INDEX
    return {**batch, "labels": labels}
