"""The tokenizer guard: a deterministic sample of every run is also encoded with the reference.

When the fast backend runs, the first ``tokenizer.guard_first`` documents of every input unit plus
``tokenizer.guard_fraction`` of all documents (chosen by a hash of the document id, so the same
documents on every engine and at any batch size) are re-encoded with HF ``tokenizers`` and
compared id for id. A difference stops the run before the unit is marked done, with one line that
names the document, the first differing token and the way out (``tokenizer.backend=tokenizers``).
"""
from __future__ import annotations

import numpy as np

from pipelines.encoders import first_difference
from pipelines.errors import FatalError

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
    def __init__(self, encoder, reference, fraction: float, first: int):
        self.encoder, self.reference, self.first = encoder, reference, first
        self.cut = np.uint64(int(round(fraction * _SCALE)))

    def sample(self, doc_ids: np.ndarray, first_batch: bool) -> np.ndarray:
        """Indices (into the batch) of the documents to re-encode."""
        chosen = (_mix(doc_ids) % np.uint64(_SCALE)) < self.cut
        if first_batch:
            chosen[: self.first] = True
        return np.flatnonzero(chosen)

    def check(self, batch, ids: np.ndarray, counts: np.ndarray) -> int:
        """Re-encode the sample of ``batch`` (a ``TextBatch``) whose fast ids are ``ids``/``counts``;
        returns how many documents were compared, raises ``TokenizerMismatch`` on a difference."""
        pick = self.sample(np.asarray(batch.doc_ids, dtype=np.int64), batch.first)
        if not pick.size:
            return 0
        want, want_n = self.reference.encode_flat([batch.texts[i] for i in pick])
        starts = np.cumsum(counts) - counts
        got_n = counts[pick]
        if np.array_equal(got_n, want_n):
            index = np.repeat(starts[pick] - np.r_[0, np.cumsum(got_n)[:-1]], got_n)
            got = ids[index + np.arange(index.size)]
            if np.array_equal(got, want):
                return int(pick.size)
        want_starts = np.cumsum(want_n) - want_n
        for k, i in enumerate(pick.tolist()):  # only on a mismatch: find the first bad document
            a = ids[starts[i] : starts[i] + counts[i]]
            b = want[want_starts[k] : want_starts[k] + want_n[k]]
            if not np.array_equal(a, b):
                self._fail(batch, i, a, b)
        raise FatalError("tokenizer guard: the sample differs but no document does")  # unreachable

    def _fail(self, batch, i: int, got: np.ndarray, want: np.ndarray):
        pos = first_difference(got, want)
        show = lambda x: str(int(x[pos])) if pos < x.size else "end of document"  # noqa: E731
        raise TokenizerMismatch(
            f"{batch.locate(i)}: tokenizer backend {self.encoder.name} {self.encoder.version} "
            f"gives other ids than tokenizers {self.reference.version} from token {pos} "
            f"({self.encoder.name}: {show(got)}, tokenizers: {show(want)}); nothing was marked "
            "complete: rerun with tokenizer.backend=tokenizers")
