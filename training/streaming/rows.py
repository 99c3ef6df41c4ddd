"""``StreamingRows``: rows by global id, read block by block, with the blocks of an announced
order downloaded and decoded ahead on a background thread into a bounded cache.

Use: ``plan(rows)`` announces the rows this process will take, in order (its share of an epoch:
``EpochOrder.rank_rows``); ``take()`` then returns them one by one as dicts. A background thread
reads and decodes the blocks of the plan in the order of their first use, up to
``prefetch_blocks`` ahead of the block the consumer is on and while the cache holds under
``cache_bytes`` of decoded data; a block leaves the cache right after its last planned row. So
downloads and decompression overlap the training step and each block is read once per plan.

``cache_bytes`` bounds prefetching, not correctness: the blocks of the current shuffle window
stay cached until their last row even when they exceed it (one warning then says to raise it or
lower ``window_blocks``); the working set is about ``window_blocks`` x streams per rank blocks.
``get(i)`` reads any row outside the plan (a synchronous read, a small LRU of blocks).

``bytes_read`` counts every byte read from the shards (``ShardFiles``); ``decoded`` counts record
batches decompressed and decoded.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

import numpy as np

from training.streaming.blocks import BlockReader

log = logging.getLogger(__name__)


class StreamingRows:
    """Rows of ``index`` (a ``ShardIndex``) by global id; ``token_map`` remaps token ids as in
    ``training.data.ShardDataset``."""

    def __init__(self, index, cache_bytes: int = 1 << 30, prefetch_blocks: int = 8,
                 token_map: np.ndarray | None = None):
        self.index = index
        self.cache_bytes, self.prefetch_blocks = int(cache_bytes), max(1, int(prefetch_blocks))
        self.token_map = token_map
        self.reader = BlockReader([s.path for s in index.shards], [s.bytes for s in index.shards])
        self._cond = threading.Condition()
        self._cache: dict[int, dict] = {}  # block -> columns, planned blocks only
        self._sizes: dict[int, int] = {}
        self._used = 0
        self._lru: OrderedDict = OrderedDict()  # blocks read by ``get`` outside the plan
        self._thread: threading.Thread | None = None
        self._warned = False
        self._reset(np.zeros(0, np.int64))

    @property
    def bytes_read(self) -> int:
        return self.reader.files.bytes_read

    @property
    def decoded(self) -> int:
        return self.reader.decoded

    @property
    def remaining(self) -> int:
        """Rows of the plan not taken yet."""
        return int(self._rows.size - self._pos)

    def _reset(self, rows: np.ndarray) -> None:
        ix = self.index
        self._rows = np.asarray(rows, dtype=np.int64)
        self._blocks = ix.block_of(self._rows) if self._rows.size else np.zeros(0, np.int64)
        uniq, first = np.unique(self._blocks, return_index=True)
        self._seq = self._blocks[np.sort(first)]  # blocks in order of first use
        rank = np.empty(ix.blocks, np.int64)
        rank[self._seq] = np.arange(self._seq.size)
        self._need = rank[self._blocks] if self._rows.size else self._blocks  # seq position per row
        last = np.full(ix.blocks, -1, np.int64)
        np.maximum.at(last, self._blocks, np.arange(self._rows.size))  # each block's last use
        self._last = last
        self._pos = 0
        self._frontier = 0  # seq position of the block the consumer is on
        self._error: BaseException | None = None
        self._stop = False

    def plan(self, rows: np.ndarray) -> None:
        """Announce the rows ``take`` will return, in order; starts prefetching their blocks."""
        self.stop()
        with self._cond:
            self._cache.clear()
            self._sizes.clear()
            self._used = 0
            self._reset(rows)
        self._thread = threading.Thread(target=self._prefetch, name="fewtrunc-prefetch", daemon=True)
        self._thread.start()

    def take(self) -> dict:
        """The next row of the plan (``IndexError`` after the last)."""
        if self._pos >= self._rows.size:
            raise IndexError("the planned rows are all taken")
        i, block, k = int(self._rows[self._pos]), int(self._blocks[self._pos]), int(self._need[self._pos])
        with self._cond:
            if k > self._frontier:
                self._frontier = k
                self._cond.notify_all()
            while block not in self._cache:
                if self._error is not None:
                    raise self._error
                self._cond.wait(1.0)
                if self._thread is None or not self._thread.is_alive():
                    if self._error is not None:
                        raise self._error
                    if block not in self._cache:
                        raise RuntimeError("the prefetch thread stopped before the planned rows were read")
            cols = self._cache[block]
            if self._last[block] == self._pos:
                del self._cache[block]
                self._used -= self._sizes.pop(block)
                self._cond.notify_all()
            self._pos += 1
        return self._row(i, block, cols)

    def get(self, i: int) -> dict:
        """Row ``i``: the next planned row when it is that one, else a synchronous read."""
        i = int(i)
        if not 0 <= i < self.index.rows:
            raise IndexError(f"row {i} out of range ({self.index.rows} rows)")
        if self._pos < self._rows.size and self._rows[self._pos] == i:
            return self.take()
        block = int(self.index.block_of(np.array([i]))[0])
        with self._cond:
            cols = self._cache.get(block)
        if cols is None:
            cols = self._lru.get(block)
            if cols is None:
                cols = self._load(block)
                self._lru[block] = cols
                if len(self._lru) > 2:
                    self._lru.popitem(last=False)
            self._lru.move_to_end(block)
        return self._row(i, block, cols)

    def _row(self, i: int, block: int, cols: dict) -> dict:
        r = i - int(self.index.block_start[block])
        out = {name: values[offsets[r]:offsets[r + 1]] for name, (offsets, values) in cols.items()}
        ids = out["input_ids"].astype(np.int64)
        out["input_ids"] = self.token_map[ids] if self.token_map is not None else ids
        out["index"] = i
        return out

    def _load(self, block: int) -> dict:
        ix = self.index
        return self.reader.read(int(ix.block_shard[block]), int(ix.block_batch[block]),
                                int(ix.block_rows[block]))

    def _prefetch(self) -> None:
        try:
            for k, block in enumerate(self._seq.tolist()):
                with self._cond:
                    while not self._stop and k > self._frontier and (
                            k > self._frontier + self.prefetch_blocks or self._used >= self.cache_bytes):
                        self._cond.wait()
                    if self._stop:
                        return
                cols = self._load(block)
                size = sum(o.nbytes + v.nbytes for o, v in cols.values())
                with self._cond:
                    self._cache[block] = cols
                    self._sizes[block] = size
                    self._used += size
                    self._cond.notify_all()
                    over = k <= self._frontier and self._used > self.cache_bytes
                if over and not self._warned:
                    self._warned = True
                    log.warning("the blocks in use (%.1f MB decoded) exceed cache_bytes (%.1f MB): "
                                "they are kept, but nothing is read ahead; raise cache_bytes or "
                                "lower window_blocks", self._used / 1e6, self.cache_bytes / 1e6)
        except BaseException as exc:  # handed to the consumer, which raises it
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop prefetching (the plan's remaining rows can no longer be taken)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            thread.join()

    def close(self) -> None:
        self.stop()
        self.reader.close()
