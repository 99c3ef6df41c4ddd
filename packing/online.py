"""Online Best-fit Packing for streams: exact BFD over a bounded buffer, leftovers carried over.

``BufferedPacker`` works on lengths only. Items enter a buffer; once it holds ``buffer_tokens``
tokens, the buffer is packed with ``packing.pack`` (exact BFD by default). Bins filled to at least
``min_fill`` are emitted; the least-filled bins, up to half of ``buffer_tokens``, are *carried*:
their items go back into the buffer to meet the next items, instead of being emitted half empty
or dropped. ``flush`` packs and emits everything left. Nothing is ever dropped or cut.

Memory bound: the buffer never holds more than ``buffer_tokens + capacity`` tokens (at most half
of it carried), so memory is O(buffer_tokens) whatever the stream length. Items wait at most until
the flush; the order of emitted bins is deterministic.

Quality against one global BFD (bins over the global bins, minus one), CPython stdlib source
lengths in GPT-2 tokens (bytes/4), L = 2048, 4 copies (~23k chunks), ``min_fill=0.99``:

| buffer_tokens | 32 L | 256 L | 2048 L |
|---------------|------|-------|--------|
| extra bins    | +0.117% | +0.032% | +0.006% |

(global BFD: 15,394 bins.) The default buffer is 256 L (2 MB of int32 ids at L = 2048).

(measured by ``python benchmarks/bench_online_buffer.py``). ``OnlinePacker`` wraps it for token sequences inside
a training script: documents in, packed rows with ``doc_lens`` out.

Speed: with the compiled kernel (``packing._bfd_kernel``) a whole push is one ``stream`` call:
items enter the buffer, and each round sorts only the items that came since the last one (the
carried ones stay sorted and are merged in), runs the compiled BFD loop and splits bins into
emitted and carried, all in C (~17 µs a round of ~500 uniform lengths, ~35 µs of ~1,200
lognormal ones, at L = 2048 and push overheads included). Streaming 1M lengths in 1,000-item
pushes takes ~0.7x one global pack of the same items with lognormal lengths and ~1.6x with
uniform ones (whose rounds come 4.6x as often) at L = 2048, less at L = 8192
(``benchmarks/bench_packing_speed.py``). Without the kernel, or for another algorithm, a round is
``packing.pack`` and a dozen numpy calls (~0.3-0.6 µs per item, 5-9x), and a push that starts no
round only queues its array. Both give the same bins.
"""
from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple

import numpy as np

import packing.bfd
from packing.api import pack
from packing.bfd import bfd_assign
from packing.validate import as_lengths, check_capacity, index_dtype


class Bins(NamedTuple):
    """CSR: bin ``b`` holds item ids ``items[offsets[b]:offsets[b+1]]`` (increasing ids)."""

    items: np.ndarray
    offsets: np.ndarray

    @property
    def n_bins(self) -> int:
        return int(self.offsets.size - 1)


def _concat_bins(parts: list[Bins]) -> Bins:
    if not parts:
        return Bins(np.zeros(0, np.int64), np.zeros(1, np.int64))
    items = np.concatenate([p.items for p in parts])
    offs, base = [np.zeros(1, np.int64)], 0
    for p in parts:
        offs.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Bins(items, np.concatenate(offs))


def _head(a: np.ndarray, n: int) -> np.ndarray:
    """``a[:n]``, copied when that frees most of a large ``a`` (a long push's spare room)."""
    return a[:n].copy() if a.size > 4096 and 2 * n < a.size else a[:n]


class BufferedPacker:
    def __init__(self, capacity: int, buffer_tokens: int, algorithm: str = "bfd",
                 min_fill: float = 0.99, **options):
        self.capacity = check_capacity(capacity)
        if buffer_tokens < 2 * self.capacity:
            raise ValueError(f"buffer_tokens={buffer_tokens} must be at least 2 * capacity")
        if not 0.0 <= min_fill <= 1.0:
            raise ValueError(f"min_fill={min_fill} must be in [0, 1]")
        self.buffer_tokens, self.algorithm, self.min_fill = buffer_tokens, algorithm, min_fill
        self.options = options
        self.ids = np.zeros(0, np.int64)
        self.lens = np.zeros(0, np.int64)
        self.next_id = 0
        self.rounds = 0
        self._tokens = 0  # sum of self.lens and of the waiting pushes
        self._waiting: list[np.ndarray] = []  # whole pushes after self.lens, not yet joined
        # BFD with the compiled kernel: the whole push runs in _bfd_kernel.stream, on a buffer
        # kept here (lengths, ids, and the carried items' sorted order), grown on demand
        self._kernel = packing.bfd.kernel if algorithm == "bfd" else None
        self._n = self._n_sorted = 0
        self._blen = self._bid = self._bsorted = np.zeros(0, np.int64)

    @property
    def buffered_tokens(self) -> int:
        return self._tokens

    def push(self, lengths) -> Bins:
        """Add items (ids continue from the previous push); return the bins emitted meanwhile."""
        if self._kernel is not None:
            if type(lengths) is np.ndarray and lengths.dtype == np.int64 and lengths.ndim == 1:
                try:  # the kernel checks the range before it changes anything
                    return self._stream(lengths, final=False)
                except ValueError:
                    as_lengths(lengths, self.capacity)  # raises the error that names the item
                    raise
            return self._stream(as_lengths(lengths, self.capacity), final=False)
        new = as_lengths(lengths, self.capacity)
        ends = np.cumsum(new)  # once per push: a long push costs O(n), not O(n) per round
        if new.size and self._tokens + int(ends[-1]) < self.buffer_tokens:
            self._waiting.append(new)  # no round in this push: join the arrays at the next one
            self.next_id += new.size
            self._tokens += int(ends[-1])
            return _concat_bins([])
        self._join_waiting()
        first_id = self.next_id
        self.next_id += new.size
        out: list[Bins] = []
        pos = 0
        while pos < new.size:
            base = int(ends[pos - 1]) if pos else 0
            room = self.buffer_tokens - self._tokens
            stop = int(np.searchsorted(ends, base + room, side="left")) + 1
            stop = min(max(stop, pos + 1), new.size)  # at least one item, as room may be <= 0
            self.ids = np.concatenate([self.ids, np.arange(first_id + pos, first_id + stop)])
            self.lens = np.concatenate([self.lens, new[pos:stop]])
            self._tokens += int(ends[stop - 1]) - base
            pos = stop
            if self.buffered_tokens >= self.buffer_tokens:  # the item that fills the buffer is in it
                out.append(self._round(final=False))
        return out[0] if len(out) == 1 else _concat_bins(out)

    def flush(self) -> Bins:
        """Pack and emit everything still buffered."""
        if self._kernel is not None:
            return self._stream(np.zeros(0, np.int64), final=True)
        self._join_waiting()
        return self._round(final=True) if self.ids.size else _concat_bins([])

    def _stream(self, new: np.ndarray, final: bool) -> Bins:
        """The push (or flush) in one ``_bfd_kernel.stream`` call: the same rounds as
        ``_round``, whose BFD sorts only the items that came after the carried ones."""
        n = self._n
        need = min(n + new.size, self.buffer_tokens)  # a round runs once it holds that many
        if need > self._blen.size:
            size = min(max(need, 2 * self._blen.size), self.buffer_tokens)
            for name in ("_blen", "_bid", "_bsorted"):
                grown = np.empty(size, np.int64)
                grown[:n] = getattr(self, name)[:n]
                setattr(self, name, grown)
        items = np.empty(n + new.size, np.int64)
        offsets = np.empty(n + new.size + 1, np.int64)
        self._n, self._n_sorted, self._tokens, rounds, n_items, n_bins = self._kernel.stream(
            self._blen, self._bid, self._bsorted, n, self._n_sorted, self._tokens,
            np.ascontiguousarray(new), self.next_id, self.capacity, self.buffer_tokens,
            self.min_fill * self.capacity, self.buffer_tokens // 2, final, items, offsets)
        self.next_id += new.size
        self.rounds += rounds
        return Bins(_head(items, n_items), _head(offsets, n_bins + 1))

    def _join_waiting(self) -> None:
        if self._waiting:
            n = sum(w.size for w in self._waiting)
            first = self.next_id - n
            self.ids = np.concatenate([self.ids, np.arange(first, self.next_id)])
            self.lens = np.concatenate([self.lens, *self._waiting])
            self._waiting = []

    def _round(self, final: bool) -> Bins:
        self.rounds += 1
        lens = self.lens
        if self.algorithm == "bfd":  # lengths were checked on push: skip pack()'s wrapper
            assignment, n_bins = bfd_assign(lens, self.capacity)
        else:
            res = pack(lens, self.capacity, self.algorithm, **self.options)
            assignment, n_bins = res.assignment, res.n_bins
        if packing.bfd.kernel is not None:  # the same split, compiled
            return self._split_compiled(assignment, n_bins, final)
        fills = np.bincount(assignment, weights=lens, minlength=n_bins).astype(np.int64)
        keep = np.ones(n_bins, dtype=bool)
        if not final:
            low = np.flatnonzero(fills < self.min_fill * self.capacity)
            low = low[np.argsort(fills[low], kind="stable")]
            carried = low[np.cumsum(fills[low]) <= self.buffer_tokens // 2]
            keep[carried] = False
        # bins in order, ids increasing inside; a narrow key makes it a radix sort
        by_bin = np.argsort(assignment.astype(index_dtype(n_bins), copy=False), kind="stable")
        item_kept = keep[assignment]
        take = by_bin[item_kept[by_bin]]
        sizes = np.bincount(assignment, minlength=n_bins)[keep]
        offsets = np.zeros(sizes.size + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        bins = Bins(self.ids[take], offsets)
        self.ids, self.lens = self.ids[~item_kept], lens[~item_kept]
        self._tokens = int(self.lens.sum())
        return bins

    def _split_compiled(self, assignment: np.ndarray, n_bins: int, final: bool) -> Bins:
        order = np.empty(self.lens.size, dtype=np.int64)
        offsets = np.empty(n_bins + 1, dtype=np.int64)
        n_kept, n_emit = packing.bfd.kernel.split_round(
            np.ascontiguousarray(assignment, dtype=np.int64), self.lens, n_bins,
            self.min_fill * self.capacity, self.buffer_tokens // 2, final, order, offsets)
        bins = Bins(self.ids[order[:n_emit]], offsets[: n_kept + 1])
        rest = order[n_emit:]
        self.ids, self.lens = self.ids[rest], self.lens[rest]
        self._tokens = int(self.lens.sum())
        return bins


class PackedRow(NamedTuple):
    input_ids: np.ndarray  # int32, at most seq_len
    doc_lens: np.ndarray  # int32, segment lengths, sum = len(input_ids)
    doc_index: np.ndarray  # int64, position of each segment's document in the input stream
    chunk_index: np.ndarray  # int32, which seq_len-chunk of that document


class OnlinePacker:
    """Pack a stream of token sequences into rows of at most ``seq_len`` tokens.

    Documents longer than ``seq_len`` are split into seq_len chunks (the paper's only cut); every
    chunk is packed with BFD over a buffer of ``buffer_tokens``; leftovers are carried, and
    everything is flushed when the stream ends.
    """

    def __init__(self, seq_len: int, buffer_tokens: int | None = None, algorithm: str = "bfd",
                 min_fill: float = 0.99):
        self.seq_len = check_capacity(seq_len)
        self.packer = BufferedPacker(self.seq_len, buffer_tokens or 256 * self.seq_len,
                                     algorithm, min_fill)

    def pack(self, sequences: Iterable) -> Iterator[PackedRow]:
        pending: dict[int, tuple[np.ndarray, int, int]] = {}  # item id -> (tokens, doc, chunk)
        L = self.seq_len
        for doc, seq in enumerate(sequences):
            arr = np.asarray(seq, dtype=np.int32).ravel()
            if arr.size == 0:
                continue
            pieces = [arr[o : o + L] for o in range(0, arr.size, L)]
            first = self.packer.next_id
            for c, piece in enumerate(pieces):
                pending[first + c] = (piece, doc, c)
            yield from self._rows(self.packer.push([p.size for p in pieces]), pending)
        yield from self._rows(self.packer.flush(), pending)

    @staticmethod
    def _rows(bins: Bins, pending: dict) -> Iterator[PackedRow]:
        for b in range(bins.n_bins):
            ids = bins.items[bins.offsets[b] : bins.offsets[b + 1]].tolist()
            parts = [pending.pop(i) for i in ids]
            yield PackedRow(
                np.concatenate([p[0] for p in parts]),
                np.array([p[0].size for p in parts], dtype=np.int32),
                np.array([p[1] for p in parts], dtype=np.int64),
                np.array([p[2] for p in parts], dtype=np.int32),
            )
