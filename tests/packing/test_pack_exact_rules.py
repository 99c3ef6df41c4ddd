"""Exact rules of the packers, each pinned by an input that tells a single-point mutation apart
(BFD group counts, the tie between bins, split counts, the buffered packer's round and carry
rules, segment order inside a row): comparing only bin counts let such mutants through."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing import BufferedPacker, pack, split_documents
from packing.bfd import bfd_assign_histogram

_spec = importlib.util.spec_from_file_location("naive", Path(__file__).with_name("naive.py"))
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)


def _assign(lengths, capacity, algorithm):
    """``pack``'s assignment; "bfd-histogram" forces BFD's large-input pass on a small input."""
    if algorithm == "bfd-histogram":
        return bfd_assign_histogram(np.asarray(lengths, dtype=np.int64), capacity)[0].tolist()
    return pack(lengths, capacity, algorithm).assignment.tolist()


@pytest.mark.parametrize("algorithm", ["bfd", "bfd-histogram", "obfd"])
def test_group_counts_merge_repeated_destinations(algorithm):
    # several groups move into the same remaining capacity at once (np.add.at, not fancy +=)
    lengths = [19, 15, 12, 3, 3, 3, 3, 2, 2, 1]
    got = _assign(lengths, 20, algorithm)
    assert sorted(np.bincount(got, weights=lengths).tolist()) == [3, 20, 20, 20]
    assert got == naive.naive_bfd_assignment(lengths, 20)


@pytest.mark.parametrize("algorithm", ["bfd", "bfd-histogram", "obfd"])
def test_tie_between_bins_goes_to_the_one_that_reached_the_room_first(algorithm):
    assert _assign([6, 6, 4], 10, algorithm) == [0, 1, 0]
    assert _assign([5, 7, 7, 3, 3], 10, algorithm) == naive.naive_bfd_assignment([5, 7, 7, 3, 3], 10)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 40).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=60))))
def test_whole_assignment_equals_a_naive_bfd(case):
    cap, lengths = case
    want = naive.naive_bfd_assignment(lengths, cap)
    for algorithm in ("bfd", "bfd-histogram", "obfd"):
        if lengths:
            assert _assign(lengths, cap, algorithm) == want, algorithm


def test_split_counts():
    chunks = split_documents([20], 8)
    assert chunks.length.tolist() == [8, 8, 4] and chunks.chunk.tolist() == [0, 1, 2]
    assert chunks.n_split_documents == 1
    assert split_documents([8, 9, 3, 16], 8).n_split_documents == 2


def test_buffered_packer_round_trigger_and_carry():
    p = BufferedPacker(4, 8)
    assert p.push([4, 4]).offsets.size - 1 == 2  # the buffer is full at exactly 8: a round
    assert p.buffered_tokens == 0
    q = BufferedPacker(5, 10)
    out = q.push([4, 2, 4])  # fills 4, 4, 2: only the least-filled bin (2 <= 10 // 2) carried
    assert np.diff(out.offsets).tolist() == [1, 1] and q.buffered_tokens == 2
    assert q.flush().items.tolist() == [1]
    t = BufferedPacker(3, 12)
    out = t.push([2] * 6)  # six bins of 2: carried while their sum stays <= 12 // 2 (equal too)
    assert out.offsets.size - 1 == 3 and t.buffered_tokens == 6
    r = BufferedPacker(5, 10)
    r.push([4, 2, 3])  # 9 < 10 tokens: no round yet
    assert r.rounds == 0 and r.buffered_tokens == 9


@pytest.mark.parametrize("window", [0, 600])
@pytest.mark.parametrize("algorithm", ["bfd", "ffd", "obfd"])
def test_segments_inside_a_row_follow_input_order(algorithm, window):
    from types import SimpleNamespace

    from pipelines.steps.pack import plan_rows

    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 300, 200)
    cfg = SimpleNamespace(seq_len=128, algorithm=algorithm, window_tokens=window,
                          optimal_time_limit=1.0)
    plan = plan_rows(lengths, cfg)
    multi = 0
    for r in range(plan.row_offsets.size - 1):
        a, b = plan.row_offsets[r], plan.row_offsets[r + 1]
        key = plan.seg_doc[a:b] * 1000 + plan.seg_chunk[a:b]
        assert (np.diff(key) > 0).all(), f"row {r}: segments out of input order"
        multi += b - a > 1
    assert multi > 10  # rows of several segments were checked
