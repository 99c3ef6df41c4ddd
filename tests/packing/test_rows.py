"""pack_token_lists against a row-by-row construction from pack() and split_documents()."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from packing import pack, pack_token_lists, split_documents


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), st.lists(st.integers(1, 120), max_size=60), st.integers(0, 2**31))
def test_rows_match_a_row_by_row_build(seq_len, doc_lengths, seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 1000, n).astype(np.int32) for n in doc_lengths]
    rows = pack_token_lists(docs, seq_len)
    chunks = split_documents(np.array(doc_lengths, dtype=np.int64), seq_len)
    result = pack(chunks.length, seq_len)
    assert rows.n_rows == result.n_bins
    for b in range(result.n_bins):
        items = result.items_of(b)
        want = [docs[chunks.doc[i]][chunks.offset[i] : chunks.offset[i] + chunks.length[i]]
                for i in items]
        got = rows.tokens[rows.token_offsets[b] : rows.token_offsets[b + 1]]
        assert np.array_equal(got, np.concatenate(want))
        seg = slice(rows.seg_offsets[b], rows.seg_offsets[b + 1])
        assert rows.seg_len[seg].tolist() == chunks.length[items].tolist()
        assert rows.seg_doc[seg].tolist() == chunks.doc[items].tolist()
        assert rows.seg_chunk[seg].tolist() == chunks.chunk[items].tolist()
    # every token of every document appears exactly once
    assert rows.tokens.size == sum(doc_lengths)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 30), max_size=40))
def test_positions_within_matches_a_loop(lengths):
    from packing.split import positions_within

    want = [i for n in lengths for i in range(n)]
    got = positions_within(np.array(lengths, dtype=np.int64))
    assert got.dtype == np.int64 and got.tolist() == want
