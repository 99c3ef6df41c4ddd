"""Tokenize step: ``TextBatch`` -> ``TokenBatch`` (flat int32 ids + per-document lengths).

``encode`` is the expensive, GIL-free part (the Rust tokenizer's own threads use every core); an
engine may run it for batch k+1 while ``assemble`` (which holds the GIL) turns batch k into numpy.
BOS/EOS are inserted with one vectorized ``np.insert``, never a loop over tokens.
"""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from pipelines import memory
from pipelines.errors import ConfigError


@dataclass
class TokenBatch:
    doc_ids: np.ndarray  # int64
    lengths: np.ndarray  # int64 tokens per document, BOS/EOS included
    tokens: np.ndarray  # int32, every document's ids back to back
    rejects: list
    records: int
    bytes: int


@contextmanager
def one_thread_per_call():
    """Make ``encode_batch`` run on its calling thread, for callers that parallelize batches.

    ``tokenizers`` reads ``TOKENIZERS_PARALLELISM`` on every call. With one batch per thread,
    a huge document only delays its own batch (within one parallel call, the other cores idle
    until it is done) and no thread spins waiting for work: 2 threads encode 1.8x faster than 1,
    against 1.6x for one call on 2 pool threads (measured on this corpus).
    """
    key = "TOKENIZERS_PARALLELISM"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def set_worker_threads(threads: int) -> None:
    """For a worker process whose tokenizer may use ``threads`` threads (before its first call).

    One thread: ``encode_batch`` runs on the calling thread (no pool hand-off, no spinning).
    """
    os.environ["RAYON_NUM_THREADS"] = str(max(1, threads))
    if threads <= 1:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


TRIM_EVERY = 4  # batches between heap trims: bounds RSS at a few % of throughput


class Tokenize:
    """Holds the tokenizer (load once per worker, as a Ray callable class or a Beam DoFn does)."""

    def __init__(self, cfg):
        from pipelines.tokenizer import load_tokenizer

        self.cfg = cfg
        memory.cap_arenas()  # before the tokenizer's threads exist: see pipelines/memory.py
        self._batches = 0
        self.tokenizer = load_tokenizer(cfg.path or None)
        self.bos = self._special(cfg.bos_token, "bos") if cfg.add_bos else None
        self.eos = self._special(cfg.eos_token, "eos") if cfg.add_eos else None
        self._encode = getattr(self.tokenizer, "encode_batch_fast", self.tokenizer.encode_batch)

    def _special(self, token: str, which: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise ConfigError(f"tokenizer.{which}_token {token!r} is not in the tokenizer's vocab")
        return int(tid)

    def encode(self, texts: list) -> list:
        return self._encode(texts, add_special_tokens=False) if texts else []

    def assemble(self, batch, encodings: list) -> TokenBatch:
        self._batches += 1
        if self._batches % TRIM_EVERY == 0:  # hand freed encodings back to the OS (~10 ms)
            memory.trim()
        raw = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        # one document's id list at a time: a batch's ids as Python ints would be ~36 bytes each
        ids = itertools.chain.from_iterable(e.ids for e in encodings)
        flat = np.fromiter(ids, dtype=np.int32, count=int(raw.sum()))
        lengths = raw.copy()
        starts = np.cumsum(raw) - raw
        if self.bos is not None:
            flat = np.insert(flat, starts, np.int32(self.bos))
            lengths += 1
        if self.eos is not None:
            ends = np.cumsum(lengths)
            flat = np.insert(flat, ends, np.int32(self.eos))
            lengths += 1
        doc_ids = np.asarray(batch.doc_ids, dtype=np.int64)
        empty = np.flatnonzero(lengths == 0)  # only without BOS/EOS, e.g. whitespace stripped
        if empty.size:
            batch.rejects.extend({"doc_id": int(doc_ids[i]), "reason": "no tokens"} for i in empty)
            keep = lengths > 0
            doc_ids, lengths = doc_ids[keep], lengths[keep]
        return TokenBatch(
            doc_ids=doc_ids,
            lengths=lengths,
            tokens=flat,
            rejects=batch.rejects,
            records=batch.records,
            bytes=batch.bytes,
        )

    def __call__(self, batch) -> TokenBatch:
        return self.assemble(batch, self.encode(batch.texts))
