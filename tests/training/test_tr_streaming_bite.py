"""Edges of the streaming reader the run-through tests do not reach: an epoch's end with
``drop_last`` after resuming at a position that is not a multiple of the (new) global batch, a new
epoch asked for in the middle of one, and a shard whose footer lists a record batch its file no
longer holds. Each test fails on one plausible one-line slip (``benchmarks/mutation_check.py``)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from pipelines.infra.shard_format import SCHEMA
from training.shard_checks import ShardError
from training.streaming.blocks import BlockReader
from training.streaming.cursor import EpochCursor
from training.streaming.index import Shard, ShardIndex
from training.streaming.order import GlobalOrder


@pytest.fixture
def order():
    """17 rows in two blocks (the order needs the counts only: no file is read)."""
    index = ShardIndex("rows", [Shard("shard-00000.arrow", "unused", 1, None, np.array([10, 7]))],
                       "fingerprint")
    return GlobalOrder(index, seed=3, canonical_streams=2, window_blocks=1)


def test_drop_last_counts_whole_batches_from_the_resumed_position(order):
    saved = EpochCursor(order, 3, 0, 1)
    saved.position = 3  # one step of 3 rows taken
    resumed = EpochCursor(order, 4, 0, 1, drop_last=True)  # resumed with a global batch of 4
    resumed.load_state_dict(saved.state_dict())
    resumed.set_epoch(0)
    assert resumed.end() == 15  # 3 + 3 * 4: the 2 rows left are the short batch, dropped
    rows, step, after = resumed.plan()
    assert rows.size == 12 and step.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert after[-1] == 15
    assert EpochCursor(order, 4, 0, 1, drop_last=True).end() == 16  # from 0: 4 whole batches


def test_a_new_epoch_starts_at_its_first_row_even_mid_epoch(order):
    cursor = EpochCursor(order, 4, 0, 1)
    cursor.set_epoch(0)
    cursor.position = 8  # two steps into epoch 0, then the loop moves on early
    cursor.set_epoch(1)
    assert cursor.position == 0 and cursor.plan()[0].size == 17
    cursor.position = 8
    cursor.set_epoch(1)  # the current epoch again (as after load_state_dict): kept
    assert cursor.position == 8


def test_a_shard_missing_its_last_record_batch_is_refused_when_laid_out(tmp_path):
    rows = [pa.record_batch([pa.array([[k, k + 1]], t) if n == "input_ids" else
                             pa.array([[2]], t) if n == "doc_lens" else pa.array([[k]], t)
                             for n, t in zip(SCHEMA.names, SCHEMA.types)], schema=SCHEMA)
            for k in range(3)]
    whole = tmp_path / "whole.arrow"
    with ipc.new_file(whole, SCHEMA) as writer:
        for batch in rows:
            writer.write_batch(batch)
    data = whole.read_bytes()
    reader = BlockReader([str(whole)], [len(data)])
    layout = reader.layout(0)
    assert layout.offsets.size == 3
    last, end = int(layout.offsets[-1]), int(layout.offsets[-1] + layout.lengths[-1])
    cut = tmp_path / "shard-00000.arrow"  # the last batch's bytes gone, the footer kept
    cut.write_bytes(data[:last] + data[end:])
    damaged = BlockReader([str(cut)], [cut.stat().st_size])
    with pytest.raises(ShardError, match="shard-00000.arrow: the footer lists a record batch "
                                         "outside the file"):
        damaged.layout(0)
    reader.close()
    damaged.close()
