"""Tokenize step: ``TextBatch`` -> ``TokenBatch`` (flat int32 ids + per-document lengths).

``encode`` is the expensive, GIL-free part (the backend from ``pipelines.encoders``, plus the guard's
re-encoding of its sample); an engine runs it for batch k+1 on another thread while ``assemble``
(which holds the GIL) turns batch k into a ``TokenBatch``.
BOS/EOS are framed in with one vectorized masked copy, never a loop over tokens.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipelines import memory
from pipelines.infra.errors import ConfigError, show
from pipelines.steps.spill import spill_dtype


@dataclass
class TokenBatch:
    doc_ids: np.ndarray  # int64
    lengths: np.ndarray  # int64 tokens per document, BOS/EOS included
    tokens: np.ndarray  # every document's ids back to back: uint16 when every id fits, else int32
    rejects: list
    records: int
    bytes: int
    guard_docs: int = 0  # documents re-encoded with the reference and compared
    special_docs: int = 0  # documents holding a special-token string
    id_bound: int = 1 << 31  # every id is below it: the vocabulary size (sets the spill's width)


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


TRIM_EVERY = 128  # batches between heap trims: a trim returns pages that the next batches fault in again


def with_bos_eos(ids: np.ndarray, counts: np.ndarray, bos, eos, dtype=np.int32
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every document's ids framed by ``bos``/``eos`` (None = none), in one output buffer of
    ``dtype`` (the spill's width: uint16 when every id fits, so no second pass narrows it)."""
    extra = (bos is not None) + (eos is not None)
    if not extra:
        return ids.astype(dtype, copy=False), counts.copy()
    lengths = counts + extra
    ends = np.cumsum(lengths)
    out = np.empty(int(ends[-1]) if ends.size else 0, dtype=dtype)
    text = np.ones(out.size, dtype=bool)  # where the documents' own ids go
    if bos is not None:
        out[ends - lengths] = bos
        text[ends - lengths] = False
    if eos is not None:
        out[ends - 1] = eos
        text[ends - 1] = False
    out[text] = ids
    return out, lengths


class Encoded(NamedTuple):
    """``Tokenize.encode``'s result: the half of tokenizing one batch that runs on the encoding
    threads (the backend, the guard, the special-token count and the BOS/EOS framing)."""

    tokens: np.ndarray  # every text's ids framed by BOS/EOS, back to back, in the spill's dtype
    lengths: np.ndarray  # int64 tokens per text, BOS/EOS included
    guard_docs: int  # documents the guard re-encoded with the reference and compared
    special_docs: int  # documents holding a special-token string


class SpecialFinder:
    """Counts the texts that contain one of the tokenizer's special-token strings.

    A substring test per needle (CPython's fast search, GB/s), the regex only on the few texts
    that hold one. The needle is the strings' longest common prefix when it has 2 characters or
    more: GPT-2's whole ``<|endoftext|>`` (3.6 GB/s on C source, against 2 GB/s for an
    8-character prefix), Llama-3's 256 ``<|…|>`` strings one pass for ``<|``; otherwise one needle
    per distinct 8-character prefix.
    """

    def __init__(self, strings: list[str]):
        common = os.path.commonprefix(strings) if strings else ""
        self.prefixes = [common] if len(common) >= 2 else sorted({s[:8] for s in strings})
        self.pattern = re.compile("|".join(map(re.escape, strings))) if strings else None

    def count(self, texts: list) -> int:
        if self.pattern is None:
            return 0
        if len(self.prefixes) == 1:
            (p,) = self.prefixes
            maybe = [t for t in texts if p in t]
        else:
            maybe = [t for t in texts if any(p in t for p in self.prefixes)]
        return sum(1 for t in maybe if self.pattern.search(t))


class Tokenize:
    """Holds the tokenizer (load once per worker, as a Ray callable class or a Beam DoFn does).

    ``encoder`` replaces the configured backend (a plug-in, or a test's faulty one); the guard
    still compares it with HF ``tokenizers``.
    """

    def __init__(self, cfg, encoder=None):
        from pipelines.encoders import ReferenceEncoder, encoders_for, special_strings
        from pipelines.steps.guard import Guard
        from pipelines.infra.tokenizer import load_tokenizer

        self.cfg = cfg
        memory.cap_arenas()  # before the tokenizer's threads exist: see pipelines/memory.py
        self._batches = 0
        self.tokenizer = load_tokenizer(cfg.path or None)
        self.bos = self._special(cfg.bos_token, "bos") if cfg.add_bos else None
        self.eos = self._special(cfg.eos_token, "eos") if cfg.add_eos else None
        split = cfg.special_tokens_in_text == "split"
        if encoder is None:
            encoder, reference, self.reason = encoders_for(cfg.path, cfg.backend, split)
        else:
            reference, self.reason = ReferenceEncoder(self.tokenizer, split), "given"
        self.encoder = encoder
        self.guard = None if reference is None else Guard(
            encoder, reference, cfg.guard_fraction, cfg.guard_first, cfg.guard_chars)
        self.specials = SpecialFinder(special_strings(self.tokenizer))
        # ids need not be dense (added tokens may sit above the base vocabulary)
        self.id_bound = max(self.tokenizer.get_vocab(with_added_tokens=True).values()) + 1
        self.dtype = spill_dtype(self.id_bound)  # framed ids come out in the spill's width

    @property
    def backend(self) -> dict:
        """What the manifest records: the backend, its version and why it was chosen."""
        return {"name": self.encoder.name, "version": self.encoder.version, "reason": self.reason,
                "guard_fraction": self.cfg.guard_fraction if self.guard else 0.0,
                "guard_first": self.cfg.guard_first if self.guard else 0,
                "guard_chars": self.cfg.guard_chars if self.guard else 0}

    def _special(self, token: str, which: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise ConfigError(f"tokenizer.{which}_token {show(token)} is not in the "
                              "tokenizer's vocab")
        return int(tid)

    def encode(self, batch) -> Encoded:
        """Encode ``batch.texts`` and check the guard's sample (may run on a worker thread)."""
        ids, counts = self.encoder.encode_flat(batch.texts)
        checked = self.guard.check(batch, ids, counts) if self.guard is not None else 0
        tokens, lengths = with_bos_eos(ids, counts, self.bos, self.eos, self.dtype)
        return Encoded(tokens, lengths, checked, self.specials.count(batch.texts))

    def assemble(self, batch, encoded: Encoded) -> TokenBatch:
        self._batches += 1
        if self._batches % TRIM_EVERY == 0:  # hand freed encodings back to the OS (~10 ms)
            memory.trim()
        flat, lengths = encoded.tokens, encoded.lengths
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
            guard_docs=encoded.guard_docs,
            special_docs=encoded.special_docs,
            id_bound=self.id_bound,
        )

    def __call__(self, batch) -> TokenBatch:
        return self.assemble(batch, self.encode(batch))
