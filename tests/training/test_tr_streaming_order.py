"""The streaming reader's global order and rank shares, on real shards with many record batches:
every row exactly once per epoch whatever the world size (with and without a pruned subset), the
N shares of a step are exactly the 1-process step, and the order is a function of (seed, epoch)."""
from __future__ import annotations

import numpy as np
import pytest

from pipelines.infra.errors import ConfigError
from tests.training.streaming_shards import shared_blocks
from training.streaming import GlobalOrder, ShardIndex, StreamingShardDataset, rank_share


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return shared_blocks(tmp_path_factory)


@pytest.fixture(scope="module")
def index(blocks):
    return ShardIndex.open(blocks)


def _subset(n: int) -> np.ndarray:
    keep = np.zeros(n, bool)
    keep[np.random.default_rng(3).permutation(n)[: n * 3 // 5]] = True
    return keep


def test_the_epoch_order_is_a_permutation_and_a_function_of_seed_and_epoch(index):
    order = GlobalOrder(index, seed=7, canonical_streams=4, window_blocks=2)
    a = order.epoch(0)
    assert np.array_equal(np.sort(a.rows), np.arange(index.rows))
    assert np.array_equal(a.rows, GlobalOrder(index, 7, 4, 2).epoch(0).rows)  # a fresh object
    assert not np.array_equal(a.rows, order.epoch(1).rows)
    assert not np.array_equal(a.rows, GlobalOrder(index, 8, 4, 2).epoch(0).rows)
    assert not np.array_equal(a.rows, np.arange(index.rows))


def test_rows_come_from_few_blocks_at_a_time(index):
    """Block-level shuffle: each stream walks its blocks one window at a time, so the rows of a
    block are taken within a short stretch of the epoch, not spread over all of it."""
    order = GlobalOrder(index, seed=1, canonical_streams=2, window_blocks=2).epoch(0)
    block = index.block_of(order.rows)
    first = np.full(index.blocks, index.rows)
    last = np.zeros(index.blocks, np.int64)
    np.minimum.at(first, block, np.arange(block.size))
    np.maximum.at(last, block, np.arange(block.size))
    span = last - first + 1
    # a window holds 2 blocks per stream and 2 streams interleave: about 4 blocks' rows at once
    assert span.max() <= 4 * index.block_rows.max() + 8 < index.rows // 2


@pytest.mark.parametrize("subset", [False, True])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_each_row_exactly_once_per_epoch_across_ranks(blocks, index, world, subset):
    allowed = _subset(index.rows) if subset else None
    taken = []
    for rank in range(world):
        ds = StreamingShardDataset(blocks, 12, rank, world, seed=5, canonical_streams=6,
                                   window_blocks=2, index=index)
        ds.set_epoch(2, allowed)
        taken += [row["index"] for row in ds]
        assert ds.epoch == 3  # the epoch ended
        ds.close()
    expected = np.flatnonzero(allowed) if subset else np.arange(index.rows)
    assert sorted(taken) == expected.tolist()


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_shares_of_a_step_are_the_one_process_step(index, world):
    order = GlobalOrder(index, seed=2, canonical_streams=4, window_blocks=3).epoch(1, _subset(index.rows))
    batch = 12
    shares = [order.rank_rows(0, batch, r, world) for r in range(world)]
    for step in range(-(-len(order) // batch)):
        rows, streams = order.step(step * batch, batch)
        parts = [rank_share(rows, r, world, streams) for r in range(world)]
        assert sorted(np.concatenate(parts).tolist()) == sorted(rows.tolist())
        for r in range(world):  # the vectorized epoch split agrees with the per-step rule
            assert parts[r].tolist() == shares[r][0][shares[r][1] == step].tolist()


def test_aligned_ranks_take_only_their_own_streams(index):
    """C a multiple of N and B a multiple of C: rank r's rows come from its C/N streams while
    every stream lasts (the end of an epoch, where streams run out unevenly, is excepted)."""
    C, N, B = 4, 2, 8
    order = GlobalOrder(index, seed=4, canonical_streams=C, window_blocks=2).epoch(0)
    stream_len = np.bincount(order.streams, minlength=C)
    full = stream_len.min() * C // B * B  # positions before any stream runs out, whole steps
    for rank in range(N):
        rows, _ = order.rank_rows(0, B, rank, N)
        pos = np.argsort(order.rows)[rows]  # each row's position in the epoch
        mine = order.streams[pos[pos < full]]
        assert set(np.unique(mine).tolist()) == {rank * C // N + k for k in range(C // N)}


def test_a_short_last_batch_is_split_by_the_same_rule(index):
    order = GlobalOrder(index, seed=0, canonical_streams=2).epoch(0)
    batch, last_step = 16, index.rows // 16  # 2,626 rows: the last batch has 2 rows
    rows, streams = order.step(last_step * batch, batch)
    assert rows.size == index.rows % batch == 2
    got = [order.rank_rows(0, batch, r, 4) for r in range(4)]
    last = [g[0][g[1] == last_step].tolist() for g in got]
    assert [len(x) for x in last] == [0, 1, 0, 1]  # floor(r * 2 / 4) boundaries
    assert sorted(sum(last, [])) == sorted(rows.tolist())


def test_a_world_size_that_does_not_divide_the_batch_is_refused(blocks, index):
    with pytest.raises(ConfigError, match="not a multiple of the world size 3"):
        StreamingShardDataset(blocks, 8, 0, 3, index=index)
    with pytest.raises(ConfigError, match="allowed mask has 5 entries"):
        GlobalOrder(index, 0).epoch(0, np.ones(5, bool))
