"""The two exact BFD passes (sorted list for small inputs, histogram for large ones) give the
same assignment as the naive item-by-item BFD, on either side of the dispatch rule; the
buffered packer keeps its round and carry rules whatever the push sizes."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import packing.bfd
from packing import BufferedPacker, pack
from packing.bfd import SMALL_PER_SIZE, bfd_assign_histogram, bfd_assign_small

_spec = importlib.util.spec_from_file_location("naive", Path(__file__).with_name("naive.py"))
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)

cases = st.integers(1, 70).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=150)))


@settings(max_examples=300, deadline=None)
@given(case=cases)
def test_both_passes_equal_naive_assignment(case):
    cap, lengths = case
    want = naive.naive_bfd_assignment(lengths, cap)
    arr = np.asarray(lengths, dtype=np.int64)
    if not arr.size:
        return
    tiny = packing.bfd.TINY
    try:
        for packing.bfd.TINY in (0, tiny):  # the small pass with numpy's preparation, and Python's
            got, n_bins = bfd_assign_small(arr, cap)
            assert got.tolist() == want and n_bins == max(want) + 1
    finally:
        packing.bfd.TINY = tiny
    got, n_bins = bfd_assign_histogram(arr, cap)
    assert got.tolist() == want and n_bins == max(want) + 1


@settings(max_examples=60, deadline=None)
@given(cap=st.integers(2, 12), seed=st.integers(0, 2**32 - 1),
       n=st.integers(1, 4 * SMALL_PER_SIZE * 12))
def test_dispatch_boundary_many_repeats(cap, seed, n):
    # few distinct sizes and long runs: both sides of the rule, same assignment
    x = np.random.default_rng(seed).integers(1, cap + 1, n)
    a, _ = bfd_assign_small(x, cap)
    b, _ = bfd_assign_histogram(x, cap)
    assert np.array_equal(a, b) and np.array_equal(pack(x, cap).assignment, a)


@pytest.mark.parametrize("capacity,n", [(2048, 60_000), (8192, 30_000), (100, 20_000)])
def test_large_inputs_same_assignment(capacity, n):
    x = np.clip(np.random.default_rng(capacity).lognormal(5.5, 1.3, n).astype(np.int64),
                1, capacity)
    a, na = bfd_assign_small(x, capacity)
    b, nb = bfd_assign_histogram(x, capacity)
    assert na == nb and np.array_equal(a, b)


@settings(max_examples=150, deadline=None)
@given(case=st.integers(2, 30).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), max_size=120))),
    mult=st.integers(2, 6), cuts=st.lists(st.integers(0, 120), max_size=6),
    min_fill=st.sampled_from([0.0, 0.8, 0.99, 1.0]))
def test_buffered_packer_equals_naive_rules_for_any_push_sizes(case, mult, cuts, min_fill):
    cap, lengths = case
    want = naive.naive_buffered(lengths, cap, mult * cap, min_fill)
    p = BufferedPacker(cap, mult * cap, min_fill=min_fill)
    got = []
    for part in np.split(np.asarray(lengths, dtype=np.int64), sorted(set(cuts))):
        out = p.push(part)
        got += [out.items[a:b].tolist() for a, b in zip(out.offsets[:-1], out.offsets[1:])]
    out = p.flush()
    got += [out.items[a:b].tolist() for a, b in zip(out.offsets[:-1], out.offsets[1:])]
    assert got == want
