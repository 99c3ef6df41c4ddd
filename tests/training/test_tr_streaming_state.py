"""The streaming reader's resumable state: saved mid-epoch by 2 ranks, resumed by 1 or 3, it
continues the same global order without repeating or skipping a row; a state from another seed,
data set or subset is refused with one line; every rank makes the same number of steps."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

from pipelines.infra.errors import ConfigError
from tests.training.streaming_shards import block_shards, shared_blocks
from training.data import DocumentCollator
from training.streaming import ShardIndex, StreamingMapView, StreamingSampler, StreamingShardDataset

B, C = 12, 6
SETTINGS = dict(seed=11, canonical_streams=C, window_blocks=2)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return shared_blocks(tmp_path_factory)


@pytest.fixture(scope="module")
def index(blocks):
    return ShardIndex.open(blocks)


def _readers(blocks, index, world, **kw):
    return [StreamingShardDataset(blocks, B, r, world, index=index, **{**SETTINGS, **kw})
            for r in range(world)]


def _steps(readers, n=None):
    """Global steps as sets of rows: each rank's share of each step, ``n`` steps (None: all)."""
    iters = [r.steps() for r in readers]
    out = []
    while n is None or len(out) < n:
        shares = [next(it, None) for it in iters]
        if shares[0] is None:
            assert all(s is None for s in shares)  # the ranks end together
            return out
        out.append(sorted(row["index"] for share in shares for row in share))
    return out


@pytest.mark.parametrize("resume_world", [1, 3])
def test_a_mid_epoch_state_of_2_ranks_resumes_on_another_world_size(blocks, index, resume_world):
    allowed = np.arange(index.rows) % 7 != 3
    whole = _readers(blocks, index, 1)
    whole[0].set_epoch(1, allowed)
    expected = _steps(whole)  # the uninterrupted 1-process run

    two = _readers(blocks, index, 2)
    for r in two:
        r.set_epoch(1, allowed)
    before = _steps(two, 9)
    states = [r.state_dict() for r in two]
    assert states[0] == states[1] and states[0]["position"] == 9 * B and states[0]["epoch"] == 1

    resumed = _readers(blocks, index, resume_world)
    for r in resumed:
        r.load_state_dict(states[0])
        r.set_epoch(1, allowed)
    after = _steps(resumed)
    assert before + after == expected  # the same global steps: nothing repeated or skipped
    taken = sorted(i for step in before + after for i in step)
    assert taken == np.flatnonzero(allowed).tolist()
    assert all(r.epoch == 2 and r.state_dict()["position"] == 0 for r in resumed)


def test_a_state_saved_at_any_row_resumes_with_the_next_one(blocks, index):
    """DataLoader batches of a local share: the state after each batch points at the next global
    batch, so a resume from it takes exactly the remaining rows."""
    ds = _readers(blocks, index, 1)[0]
    loader = DataLoader(ds, batch_size=ds.local_batch_size, collate_fn=DocumentCollator())
    seen = []
    for k, batch in enumerate(loader):
        seen += batch["index"].tolist()
        if k == 4:
            state = ds.state_dict()
            break
    assert state["position"] == 5 * B
    again = _readers(blocks, index, 1)[0]
    again.load_state_dict(state)
    rest = [row["index"] for row in again]
    assert sorted(seen + rest) == list(range(index.rows))


def test_every_rank_makes_the_same_number_of_steps(blocks, index):
    """The epoch's last global batch is short (2,626 rows, B = 12: 10 rows): ``steps`` gives
    every rank a list for it, empty when its share is."""
    readers = _readers(blocks, index, 4, drop_last=False)
    counts = [[len(s) for s in r.steps()] for r in readers]
    n = -(-index.rows // B)
    assert all(len(c) == n for c in counts)
    assert all(c[:-1] == [B // 4] * (n - 1) for c in counts)
    assert [c[-1] for c in counts] == [2, 3, 2, 3]  # floor(r * 10 / 4) boundaries
    dropped = _readers(blocks, index, 4, drop_last=True)
    assert all(len(list(r.steps())) == n - 1 for r in dropped)


def test_the_sampler_and_map_view_take_the_same_rows(blocks, index):
    ds = _readers(blocks, index, 2)[1]
    loader = DataLoader(StreamingMapView(ds), sampler=StreamingSampler(ds),
                        batch_size=ds.local_batch_size, collate_fn=DocumentCollator())
    via_sampler = [i for batch in loader for i in batch["index"].tolist()]
    ref = _readers(blocks, index, 2)[1]
    assert via_sampler == [row["index"] for row in ref]
    assert ds.bytes_read <= 1.1 * ref.bytes_read  # served from the prefetched blocks


def test_a_state_from_another_seed_or_data_set_is_refused(blocks, index, tmp_path):
    state = _readers(blocks, index, 1)[0].state_dict()
    with pytest.raises(ConfigError, match="saved with seed 11, this reader has seed 12"):
        _readers(blocks, index, 1, seed=12)[0].load_state_dict(state)
    with pytest.raises(ConfigError, match="canonical_streams 6, this reader has canonical_streams 4"):
        _readers(blocks, index, 1, canonical_streams=4)[0].load_state_dict(state)
    other = block_shards(tmp_path / "other", n_docs=40)
    with pytest.raises(ConfigError, match="saved with another data set") as exc:
        StreamingShardDataset(other, B, **SETTINGS).load_state_dict(state)
    assert "\n" not in str(exc.value)


def test_a_state_saved_with_a_subset_needs_that_subset(blocks, index):
    ds = _readers(blocks, index, 1)[0]
    ds.set_epoch(0, np.arange(index.rows) % 2 == 0)
    state = ds.state_dict()
    again = _readers(blocks, index, 1)[0]
    again.load_state_dict(state)
    with pytest.raises(ConfigError, match="saved with a subset of allowed rows"):
        list(again)
    with pytest.raises(ConfigError, match="saved with another set of allowed rows"):
        again.set_epoch(0, np.arange(index.rows) % 3 == 0)
