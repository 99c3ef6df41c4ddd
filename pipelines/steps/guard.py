"""The tokenizer guard: a deterministic sample of every run is also encoded with the reference.

When the fast backend runs, the first ``tokenizer.guard_first`` documents of every input unit plus
``tokenizer.guard_fraction`` of all documents (chosen by a hash of the document id, so the same
documents on every engine and at any batch size) are re-encoded with HF ``tokenizers`` and
compared id for id. A difference stops the run before the unit is marked done, with one line that
names the document, the first differing token and the way out (``tokenizer.backend=tokenizers``).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from pipelines.encoders import first_difference
from pipelines.infra.errors import FatalError

_SCALE = 1 << 20


class TokenizerMismatch(FatalError):
    """The fast backend's ids differ from the reference's on one document."""


def _mix(doc_ids: np.ndarray) -> np.ndarray:
    """splitmix64 of the ids: user-given ids (0, 1, 2, ...) sample as evenly as hashed ones."""
    z = doc_ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Guard:
    """``check`` compares the sample of one batch. A sampled document of up to ``chars``
    characters is compared whole, against the very ids the run writes; of a longer one, both
    backends encode its first ``chars`` characters and are compared there. The reference is ~50x
    slower than the fast backend, so this cap is what keeps the guard at a few % of a run on
    corpora with large files."""

    def __init__(self, encoder, reference, fraction: float, first: int, chars: int = 2048):
        self.encoder, self.reference, self.first, self.chars = encoder, reference, first, chars
        self.cut = np.uint64(int(round(fraction * _SCALE)))
        self.seconds = 0.0  # CPU seconds spent here (timings.json: what the guard costs)
        self._lock = threading.Lock()

    def sample(self, doc_ids: np.ndarray, first_batch: bool) -> np.ndarray:
        """Indices (into the batch) of the documents to re-encode."""
        chosen = (_mix(doc_ids) % np.uint64(_SCALE)) < self.cut
        if first_batch:
            chosen[: self.first] = True
        return np.flatnonzero(chosen)

    def check(self, batch, ids: np.ndarray, counts: np.ndarray) -> int:
        """Re-encode the sample of ``batch`` (a ``TextBatch``) whose fast ids are ``ids``/``counts``;
        returns how many documents were compared, raises ``TokenizerMismatch`` on a difference."""
        t0 = time.thread_time()
        try:
            return self._check(batch, ids, counts)
        finally:
            with self._lock:
                self.seconds += time.thread_time() - t0

    def _check(self, batch, ids: np.ndarray, counts: np.ndarray) -> int:
        pick = self.sample(np.asarray(batch.doc_ids, dtype=np.int64), batch.first)
        if not pick.size:
            return 0
        texts = batch.texts
        whole = [i for i in pick.tolist() if len(texts[i]) <= self.chars]
        heads = [i for i in pick.tolist() if len(texts[i]) > self.chars]
        if whole:
            starts = np.cumsum(counts) - counts
            got = [ids[starts[i] : starts[i] + counts[i]] for i in whole]
            self._compare(batch, whole, got, [texts[i] for i in whole])
        if heads:
            cut = [texts[i][: self.chars] for i in heads]
            fast, fast_n = self.encoder.encode_flat(cut)
            self._compare(batch, heads, np.split(fast, np.cumsum(fast_n)[:-1]), cut)
        return int(pick.size)

    def _compare(self, batch, docs: list[int], got: list, texts: list[str]) -> None:
        want, want_n = self.reference.encode_flat(texts)
        got_n = np.fromiter(map(len, got), dtype=np.int64, count=len(got))
        if np.array_equal(got_n, want_n) and np.array_equal(np.concatenate(got), want):
            return
        for i, a, b in zip(docs, got, np.split(want, np.cumsum(want_n)[:-1])):
            if not np.array_equal(a, b):  # only on a mismatch: name the first bad document
                self._fail(batch, i, a, b)

    def _fail(self, batch, i: int, got: np.ndarray, want: np.ndarray):
        pos = first_difference(got, want)
        show = lambda x: str(int(x[pos])) if pos < x.size else "end of document"  # noqa: E731
        raise TokenizerMismatch(
            f"{batch.locate(i)}: tokenizer backend {self.encoder.name} {self.encoder.version} "
            f"gives other ids than tokenizers {self.reference.version} from token {pos} "
            f"({self.encoder.name}: {show(got)}, tokenizers: {show(want)}); nothing was marked "
            "complete: rerun with tokenizer.backend=tokenizers")
