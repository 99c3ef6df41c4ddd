"""The global sample order of an epoch and each rank's share of a global batch: pure functions
of (seed, epoch, canonical streams, window, allowed rows), never of the world size.

How an epoch's order is built (``GlobalOrder.epoch``):

1. Blocks (record batches) are permuted by a hash of (seed, epoch) and dealt round-robin to
   ``canonical_streams`` streams (C): block ``perm[k]`` goes to stream ``k % C``, slot ``k // C``.
2. Inside a stream, the rows of each window of ``window_blocks`` (W) consecutive slots are shuffled
   together (a hash of (seed, epoch, row)); windows follow each other. Rows of disallowed rows
   (``allowed``) are removed here, so each stream keeps its blocks and windows.
3. The streams are interleaved round-robin: the ``j``-th row of every stream, in stream order,
   then the ``j+1``-th, ...; a stream that has run out is skipped.

So a stream reads its blocks one window at a time, each block once per epoch, and a global batch
of B rows (B a multiple of C) takes B / C rows from every stream while all streams last.

**Ranks** (``rank_share``): the rows of one global batch are sorted stably by stream, and rank
``r`` of ``N`` takes positions ``[r*b//N, (r+1)*b//N)`` of that list (``b`` the batch's rows). The
N shares are disjoint and together are exactly the batch a 1-process run takes. With C a multiple
of N and B a multiple of C, rank r takes exactly the rows of streams ``r*C/N .. (r+1)*C/N - 1``,
so it reads only its own streams' blocks (except near the end of an epoch, where streams of
unequal length run out at different steps). The epoch's last batch may hold fewer than B rows:
it is split by the same rule, so a rank may get ``b//N`` or ``b//N + 1`` rows, or none when
``b < N``. A world size that does not divide B is refused.

The hash is splitmix64 on numpy uint64 arrays: the order is the same on every platform and numpy
version (``numpy.random`` promises no stream stability across versions).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from pipelines.infra.errors import ConfigError


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized (uint64 arithmetic wraps, as intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hash(values: np.ndarray, seed: int, epoch: int, salt: int) -> np.ndarray:
    key = _mix(np.array([(seed * 1_000_003 + salt) & (2**64 - 1)], np.uint64))
    key = _mix(key ^ np.uint64(epoch & (2**64 - 1)))
    return _mix(np.asarray(values).astype(np.uint64) ^ key[0])


@dataclass(frozen=True)
class EpochOrder:
    """One epoch's global order: ``rows[p]`` is the global row at sample position ``p``, taken
    from canonical stream ``streams[p]``."""

    rows: np.ndarray  # int64
    streams: np.ndarray  # int32

    def __len__(self) -> int:
        return int(self.rows.size)

    def step(self, start: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, streams) of the global batch at positions ``[start, start + batch_size)``."""
        return self.rows[start:start + batch_size], self.streams[start:start + batch_size]

    def rank_rows(self, start: int, batch_size: int, rank: int, world_size: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """This rank's rows of every global batch from position ``start`` to the epoch's end
        (batches of ``batch_size`` counted from ``start``), in the order it takes them, and the
        batch (0 = the one at ``start``) each belongs to. Equals ``rank_share`` batch by batch."""
        check_world(batch_size, rank, world_size)
        rows, streams = self.rows[start:], self.streams[start:]
        n = rows.size
        step = np.arange(n, dtype=np.int64) // batch_size
        order = np.lexsort((streams, step))  # by batch, then stream; stable within a stream
        q = np.arange(n, dtype=np.int64) - step * batch_size  # position inside the sorted batch
        b = np.minimum(batch_size, n - step * batch_size)  # that batch's size
        keep = (q >= rank * b // world_size) & (q < (rank + 1) * b // world_size)
        return rows[order][keep], step[keep]


def check_world(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} of world size {world_size} with global batch {batch_size}: "
                          "need batch >= 1 and 0 <= rank < world size")
    if batch_size % world_size:
        raise ConfigError(f"the global batch size {batch_size} is not a multiple of the world size "
                          f"{world_size}: every rank must take the same number of rows per step")


def rank_share(step_rows: np.ndarray, rank: int, world_size: int, streams: np.ndarray) -> np.ndarray:
    """Rank ``rank``'s rows of one global batch (``step_rows`` with their ``streams``): the
    batch sorted stably by stream, positions ``[rank*b//N, (rank+1)*b//N)``."""
    b = len(step_rows)
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is outside the world size {world_size}")
    order = np.argsort(np.asarray(streams), kind="stable")
    return np.asarray(step_rows)[order[rank * b // world_size:(rank + 1) * b // world_size]]


class GlobalOrder:
    """The epoch orders of ``index`` (a ``ShardIndex``) for ``seed``.

    ``canonical_streams`` (C) fixes the order for any world size: choose it once per training
    run (a multiple of every world size you may use, e.g. 8 or 64); ``window_blocks`` (W) is how
    many blocks of a stream are shuffled together (more: better mixing, W blocks per stream held
    decoded at once).
    """

    def __init__(self, index, seed: int, canonical_streams: int = 8, window_blocks: int = 4):
        if canonical_streams < 1 or window_blocks < 1:
            raise ConfigError("canonical_streams and window_blocks must be at least 1")
        self.index, self.seed = index, int(seed)
        self.streams, self.window = int(canonical_streams), int(window_blocks)

    def epoch(self, epoch: int, allowed: np.ndarray | None = None) -> EpochOrder:
        """The global order of ``epoch``; ``allowed`` (a bool mask over all rows, or global row
        ids) keeps only those rows, each stream keeping its blocks and windows."""
        ix, C = self.index, self.streams
        perm = np.argsort(_hash(np.arange(ix.blocks), self.seed, epoch, 1), kind="stable")
        stream_of, window_of = np.empty(ix.blocks, np.int64), np.empty(ix.blocks, np.int64)
        stream_of[perm] = np.arange(ix.blocks) % C
        window_of[perm] = np.arange(ix.blocks) // C // self.window
        rows = np.arange(ix.rows, dtype=np.int64) if allowed is None else allowed_rows(allowed, ix.rows)
        block = ix.block_of(rows)
        s, w = stream_of[block], window_of[block]
        by_stream = np.lexsort((_hash(rows, self.seed, epoch, 2), w, s))
        rows, s = rows[by_stream], s[by_stream]
        starts = np.searchsorted(s, np.arange(C))
        j = np.arange(rows.size) - starts[s]  # position inside its stream
        final = np.lexsort((s, j))
        return EpochOrder(rows[final], s[final].astype(np.int32))


def allowed_rows(allowed, n_rows: int) -> np.ndarray:
    """Sorted global row ids from a bool mask of ``n_rows`` entries or an array of ids."""
    allowed = np.asarray(allowed)
    if allowed.dtype == bool:
        if allowed.size != n_rows:
            raise ConfigError(f"the allowed mask has {allowed.size} entries for {n_rows} rows")
        return np.flatnonzero(allowed).astype(np.int64)
    ids = np.unique(allowed.astype(np.int64))
    if ids.size and (ids[0] < 0 or ids[-1] >= n_rows):
        raise ConfigError(f"allowed row ids must lie in [0, {n_rows}); got {int(ids[0])}..{int(ids[-1])}")
    return ids


def allowed_digest(allowed, n_rows: int) -> str | None:
    """A short digest of an allowed set (None: every row), kept in a reader's state."""
    if allowed is None:
        return None
    return hashlib.sha256(allowed_rows(allowed, n_rows).tobytes()).hexdigest()[:16]
