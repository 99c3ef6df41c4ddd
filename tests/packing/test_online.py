"""Online packer: nothing dropped, bounded buffer, exact global BFD when the buffer holds all."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing import BufferedPacker, OnlinePacker, pack


def _run(lengths, capacity, buffer_tokens, batches, **kw):
    p = BufferedPacker(capacity, buffer_tokens, **kw)
    parts, peak = [], 0
    for chunk in np.array_split(np.asarray(lengths, dtype=np.int64), batches):
        parts.append(p.push(chunk))
        peak = max(peak, p.buffered_tokens)
    parts.append(p.flush())
    return parts, peak


lengths_st = st.integers(2, 64).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=300)))


@settings(max_examples=150, deadline=None)
@given(case=lengths_st, mult=st.integers(2, 12), batches=st.integers(1, 5),
       min_fill=st.sampled_from([0.0, 0.9, 0.99, 1.0]))
def test_invariants(case, mult, batches, min_fill):
    cap, lengths = case
    lengths = np.asarray(lengths, dtype=np.int64)
    parts, peak = _run(lengths, cap, mult * cap, batches, min_fill=min_fill)
    items = np.concatenate([p.items for p in parts]) if parts else np.zeros(0, np.int64)
    assert np.array_equal(np.sort(items), np.arange(lengths.size))  # each item exactly once
    fills = np.concatenate([np.add.reduceat(lengths[p.items], p.offsets[:-1])
                            for p in parts if p.n_bins]) if lengths.size else np.zeros(0)
    assert (fills <= cap).all() and (fills > 0).all()
    assert fills.sum() == lengths.sum()
    assert fills.size >= -(-int(lengths.sum()) // cap)  # never beats the lower bound
    assert peak <= mult * cap + cap  # the memory bound in the docstring
    again, _ = _run(lengths, cap, mult * cap, batches, min_fill=min_fill)
    assert all(np.array_equal(a.items, b.items) for a, b in zip(parts, again))  # deterministic


@settings(max_examples=80, deadline=None)
@given(case=lengths_st, batches=st.integers(1, 4))
def test_buffer_holding_everything_is_global_bfd(case, batches):
    cap, lengths = case
    big = max(2 * cap, sum(lengths) + 1)
    parts, _ = _run(lengths, cap, big, batches)
    online = sorted(int(np.sum(np.asarray(lengths)[p.items[a:b]]))
                    for p in parts for a, b in zip(p.offsets[:-1], p.offsets[1:]))
    assert online == sorted(pack(lengths, cap).fills.tolist())


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(st.integers(0, 50_000), min_size=0, max_size=90), max_size=60),
       seq_len=st.integers(4, 40))
def test_online_packer_rows_rebuild_every_document(docs, seq_len):
    rows = list(OnlinePacker(seq_len, 3 * seq_len).pack(docs))
    pieces = {}
    for r in rows:
        assert 0 < r.input_ids.size <= seq_len and r.doc_lens.sum() == r.input_ids.size
        pos = 0
        for n, d, c in zip(r.doc_lens, r.doc_index, r.chunk_index):
            pieces.setdefault(int(d), []).append((int(c), r.input_ids[pos : pos + n]))
            pos += n
    for d, doc in enumerate(docs):
        if not doc:
            assert d not in pieces
            continue
        parts = sorted(pieces[d], key=lambda p: p[0])
        assert [c for c, _ in parts] == list(range(-(-len(doc) // seq_len)))
        assert np.concatenate([p for _, p in parts]).tolist() == doc


def test_bad_arguments():
    with pytest.raises(ValueError, match="buffer_tokens"):
        BufferedPacker(100, 150)
    with pytest.raises(ValueError, match="exceeds the capacity"):
        BufferedPacker(10, 100).push([11])


# --- the compiled push (_bfd_kernel.stream): the same bins as the numpy rounds ---------------

import packing.bfd  # noqa: E402

KERNEL = packing.bfd.kernel
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="packing._bfd_kernel is not built")


def _stream_runs(x, cap, buffer_tokens, pushes, min_fill):
    """Bins, round counts and buffered tokens after every push, numpy rounds then compiled."""
    runs, saved = [], packing.bfd.kernel
    try:
        for kernel in (None, KERNEL):
            packing.bfd.kernel = kernel
            p, pos, got = BufferedPacker(cap, buffer_tokens, min_fill=min_fill), 0, []
            assert (p._kernel is not None) == (kernel is not None)
            for k in pushes:
                out = p.push(x[pos : pos + k])
                pos += k
                got.append((out.items.tolist(), out.offsets.tolist(), p.rounds,
                            p.buffered_tokens, p.next_id))
            out = p.flush()
            got.append((out.items.tolist(), out.offsets.tolist(), p.rounds))
            runs.append(got)
    finally:
        packing.bfd.kernel = saved
    return runs


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(cap=st.sampled_from([1, 3, 17, 300, 2048, 8192, 9000]), seed=st.integers(0, 2**32 - 1),
       spread=st.sampled_from(["uniform", "small", "lognormal", "equal"]),
       mult=st.sampled_from([2, 3, 8, 40]),
       pushes=st.lists(st.integers(0, 900), min_size=1, max_size=10),
       min_fill=st.sampled_from([0.0, 0.5, 0.99, 1.0]))
def test_compiled_stream_equals_numpy_rounds(cap, seed, spread, mult, pushes, min_fill):
    # every capacity side of the round's open-bin structure (by room up to 8192 and 32 L per
    # item, a sorted array beyond), new items sorted by insertion (< 32) or by radix, many
    # low bins (min_fill 1.0, wide buffers) and long runs of equal lengths (ties on the merge of
    # carried and new items)
    rng = np.random.default_rng(seed)
    n = sum(pushes)
    x = {"uniform": lambda: rng.integers(1, cap + 1, n),
         "small": lambda: rng.integers(1, max(1, cap // 8) + 1, n),
         "lognormal": lambda: np.clip(rng.lognormal(np.log(max(cap, 2)) - 2, 1.2, n), 1,
                                      cap).astype(np.int64),
         "equal": lambda: np.full(n, max(1, cap // 3), np.int64)}[spread]()
    python, compiled = _stream_runs(x, cap, mult * cap, pushes, min_fill)
    assert python == compiled


@needs_kernel
def test_compiled_stream_one_long_push_and_strided_input():
    x = np.random.default_rng(7).integers(1, 2049, 60_000)
    python, compiled = _stream_runs(x[::2], 2048, 16 * 2048, [30_000], 0.99)
    assert python == compiled and python[0][2] > 100  # many rounds inside the one push


@needs_kernel
def test_kernel_stream_refuses_bad_buffers():
    buf = [np.zeros(4, np.int64) for _ in range(3)]
    out_items, out_offsets = np.empty(8, np.int64), np.empty(9, np.int64)
    new = np.array([2, 3], np.int64)

    def call(*, n=0, n_sorted=0, add=new, L=4, bufs=buf, items=out_items, offsets=out_offsets):
        return KERNEL.stream(*bufs, n, n_sorted, 0, add, 0, L, 8, 3.0, 4, False, items, offsets)

    assert call() == (2, 0, 5, 0, 0, 0)  # queued, no round
    with pytest.raises(ValueError, match="sizes do not match"):
        call(n=5)  # more items than the buffer holds
    with pytest.raises(ValueError, match="sizes do not match"):
        call(items=out_items[:1])
    with pytest.raises(ValueError, match="sizes do not match"):
        call(bufs=[buf[0], buf[1], buf[2][:3]])
    for bad in ([0, 2], [1, 1]):
        buf[2][:2] = bad
        with pytest.raises(ValueError, match="not a permutation"):
            call(n=2, n_sorted=2)
    with pytest.raises(ValueError, match=r"new\[1\] = 9 is out of \[1, 4\]"):
        call(add=np.array([2, 9], np.int64))  # a length over the capacity, before any change
    with pytest.raises(ValueError, match="buffer is full"):
        call(add=np.ones(5, np.int64), L=100)
    with pytest.raises(TypeError, match="int64"):
        call(add=new.astype(np.int32))


@pytest.mark.parametrize("bad", [[3, 11], [3, 0], [3, -2]])
def test_bad_int64_push_names_the_item_and_changes_nothing(bad):
    # int64 arrays skip the numpy checks when the kernel is built: its own check runs first
    p, q = BufferedPacker(10, 20), BufferedPacker(10, 20)
    p.push(np.array([4, 5]))
    q.push(np.array([4, 5]))
    with pytest.raises(ValueError, match=r"lengths\[1\] = -?\d+ (exceeds|must be)"):
        p.push(np.array(bad, dtype=np.int64))
    a, b = p.push(np.array([9, 8, 7])), q.push(np.array([9, 8, 7]))
    assert p.next_id == q.next_id and p.buffered_tokens == q.buffered_tokens
    assert np.array_equal(a.items, b.items) and np.array_equal(a.offsets, b.offsets)
