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
