"""Partitions: consecutive, bounded, greedy, deterministic; one partition is the global pack;
merged summaries equal the sums over partitions."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packing import merge_stats, pack, pack_partition, plan_partitions, split_documents


def naive_partitions(counts, max_chunks):
    bounds, total = [0], 0
    for u, c in enumerate(counts):
        if u > bounds[-1] and total + c > max_chunks:
            bounds.append(u)
            total = 0
        total += c
    if counts:
        bounds.append(len(counts))
    return bounds


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(0, 40), max_size=80), max_chunks=st.integers(1, 100))
def test_greedy_bounded_consecutive_cut(counts, max_chunks):
    plan = plan_partitions(np.asarray(counts, dtype=np.int64), max_chunks)
    assert plan.unit_bounds.tolist() == naive_partitions(counts, max_chunks)
    ends = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    assert plan.chunk_bounds.tolist() == ends[plan.unit_bounds].tolist()
    for p in range(plan.n_partitions):
        units = plan.units(p)
        assert len(units) >= 1
        n = sum(counts[u] for u in units)
        assert n == len(plan.chunks(p))
        assert n <= max_chunks or len(units) == 1  # only a lone oversized unit exceeds it


def test_one_partition_is_the_global_pack():
    rng = np.random.default_rng(3)
    docs = np.clip(rng.lognormal(5.5, 1.4, 3000).astype(np.int64), 1, 5000)
    chunks = split_documents(docs, 512)
    unit_chunks = np.add.reduceat(-(-docs // 512), np.arange(0, 3000, 100))  # 30 units
    plan = plan_partitions(unit_chunks, len(chunks))
    assert plan.n_partitions == 1
    whole = pack(chunks.length, 512)
    part = pack_partition(chunks.length[plan.chunk_bounds[0]:plan.chunk_bounds[1]], 512)
    assert np.array_equal(part.assignment, whole.assignment)
    assert merge_stats([part.stats], 512) == whole.stats


def test_partitions_pack_alone_and_merge():
    rng = np.random.default_rng(4)
    lengths = np.clip(rng.lognormal(5.5, 1.2, 40_000).astype(np.int64), 1, 2048)
    plan = plan_partitions(np.full(400, 100), 10_000)
    assert plan.n_partitions == 4
    parts = [pack_partition(lengths[plan.chunk_bounds[p]:plan.chunk_bounds[p + 1]], 2048)
             for p in range(plan.n_partitions)]
    merged = merge_stats([r.stats for r in parts], 2048)
    whole = pack(lengths, 2048).stats
    assert merged.items == whole.items and merged.tokens == whole.tokens
    assert merged.lower_bound == whole.lower_bound
    assert merged.bins == sum(r.n_bins for r in parts)
    assert sum(merged.fill_histogram) == merged.bins
    assert whole.bins <= merged.bins <= whole.bins + 2 * plan.n_partitions


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_chunks"):
        plan_partitions([1, 2], 0)
    with pytest.raises(ValueError, match="negative"):
        plan_partitions([1, -2], 5)
    with pytest.raises(ValueError, match="integers"):
        plan_partitions([1.5], 5)
    assert plan_partitions([], 5).n_partitions == 0


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(0, 40), max_size=80), max_chunks=st.integers(1, 100),
       blocks=st.lists(st.integers(1, 20), min_size=1, max_size=10))
def test_cut_fed_block_by_block_is_the_one_call_cut(counts, max_chunks, blocks):
    """One big unit's documents, read a block at a time, are cut where one call would cut."""
    from packing.partition import RunCutter

    cutter, cuts, a, k = RunCutter(max_chunks), [], 0, 0
    while a < len(counts):
        b = min(len(counts), a + blocks[k % len(blocks)])
        cuts.extend((a + cutter.cut(np.asarray(counts[a:b], dtype=np.int64))).tolist())
        a, k = b, k + 1
    want = naive_partitions(counts, max_chunks)
    assert [0, *cuts, len(counts)] == want if counts else cuts == []
