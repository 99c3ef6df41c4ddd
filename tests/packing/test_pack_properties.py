"""Property tests: every packer against naive references, on any input hypothesis finds."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import packing.order
from packing import lower_bound, pack
from packing.bfd import bfd_assign_histogram

_spec = importlib.util.spec_from_file_location("naive", Path(__file__).with_name("naive.py"))
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)


@st.composite
def instances(draw, max_items=120, max_capacity=64):
    capacity = draw(st.integers(1, max_capacity))
    lengths = draw(st.lists(st.integers(1, capacity), max_size=max_items))
    return np.asarray(lengths, dtype=np.int64), capacity


def check_valid(result, lengths, capacity):
    a = result.assignment
    assert a.shape == lengths.shape and a.dtype == np.int64
    if lengths.size == 0:
        assert result.n_bins == 0
        return
    # every item placed exactly once, bins dense 0..n-1, none empty, none over capacity
    assert a.min() == 0 and a.max() == result.n_bins - 1
    fills = np.bincount(a, weights=lengths, minlength=result.n_bins)
    assert (fills > 0).all() and (fills <= capacity).all()
    assert fills.sum() == lengths.sum()
    # CSR view lists each item once, grouped by bin
    assert sorted(result.bin_items.tolist()) == list(range(lengths.size))
    for b in range(result.n_bins):
        assert (a[result.items_of(b)] == b).all()
    assert result.stats.lower_bound == lower_bound(int(lengths.sum()), capacity)
    assert result.stats.bins == result.n_bins >= result.stats.lower_bound


@settings(max_examples=300, deadline=None)
@given(instances())
def test_bfd_matches_naive_bfd(inst):
    lengths, capacity = inst
    result = pack(lengths, capacity, "bfd")
    check_valid(result, lengths, capacity)
    assert sorted(result.fills.tolist()) == naive.naive_bfd(lengths.tolist(), capacity)


@settings(max_examples=200, deadline=None)
@given(instances())
def test_obfd_matches_naive_bfd(inst):
    lengths, capacity = inst
    result = pack(lengths, capacity, "obfd")
    check_valid(result, lengths, capacity)
    assert sorted(result.fills.tolist()) == naive.naive_bfd(lengths.tolist(), capacity)


@settings(max_examples=200, deadline=None)
@given(instances())
def test_ffd_matches_naive_ffd(inst):
    lengths, capacity = inst
    result = pack(lengths, capacity, "ffd")
    check_valid(result, lengths, capacity)
    assert sorted(result.fills.tolist()) == naive.naive_ffd(lengths.tolist(), capacity)


@settings(max_examples=60, deadline=None)
@given(inst=instances(max_items=300, max_capacity=40))
def test_bfd_in_parallel_chunks_matches_naive(monkeypatch_chunks, inst):
    lengths, capacity = inst
    result = pack(lengths, capacity, "bfd")
    check_valid(result, lengths, capacity)
    assert sorted(result.fills.tolist()) == naive.naive_bfd(lengths.tolist(), capacity)
    if lengths.size:  # small inputs take the sorted-list pass: run the chunked histogram pass too
        assignment, _ = bfd_assign_histogram(lengths, capacity)
        assert assignment.tolist() == naive.naive_bfd_assignment(lengths.tolist(), capacity)


@pytest.fixture(scope="module")
def monkeypatch_chunks():
    """Force many small chunks so the parallel slot mapping is exercised on small inputs."""
    old = packing.order._MIN_CHUNK
    packing.order._MIN_CHUNK = 7
    yield
    packing.order._MIN_CHUNK = old


@pytest.mark.skipif(importlib.util.find_spec("ortools") is None,
                    reason="algorithm='optimal' needs OR-Tools: the [optimal] extra is not installed")
@settings(max_examples=25, deadline=None)
@given(instances(max_items=40, max_capacity=30))
def test_optimal_between_lower_bound_and_bfd(inst):
    lengths, capacity = inst
    result = pack(lengths, capacity, "optimal", time_limit=5.0)
    check_valid(result, lengths, capacity)
    assert result.stats.lower_bound <= result.n_bins <= pack(lengths, capacity).n_bins
    assert result.stats.best_bound <= result.n_bins


@settings(max_examples=100, deadline=None)
@given(instances())
def test_deterministic(inst):
    lengths, capacity = inst
    for algorithm in ("bfd", "obfd", "ffd"):
        a = pack(lengths, capacity, algorithm).assignment
        b = pack(lengths.copy(), capacity, algorithm).assignment
        assert np.array_equal(a, b)


def test_large_random_bfd_equals_obfd_fills():
    rng = np.random.default_rng(7)
    lengths = np.clip(rng.lognormal(5.0, 1.3, 200_000).astype(np.int64), 1, 2048)
    fast = pack(lengths, 2048, "bfd")
    ref = pack(lengths, 2048, "obfd")
    assert np.array_equal(np.sort(fast.fills), np.sort(ref.fills))
    assert fast.stats.overhead < 1e-3
