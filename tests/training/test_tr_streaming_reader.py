"""The streaming reader's start-up, rows, bytes read and refusals, on a real pipeline run (a
sealed manifest with ``batch_rows``) and on shards without a manifest."""
from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.ipc as ipc
import pytest

from pipelines.steps.verify import verify_dir
from tests.training.streaming_shards import (copy_run, edit_manifest, same_row, shared_blocks,
                                             shared_run)
from training.data import ShardDataset
from training.shard_checks import ShardError
from training.streaming import ShardIndex, StreamingRows, StreamingShardDataset
from training.streaming.blocks import BlockReader


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return shared_blocks(tmp_path_factory)


@pytest.fixture
def count_decodes(monkeypatch):
    """How many record batches were decoded (the one call that decompresses a batch)."""
    calls = []
    real = ipc.read_record_batch
    monkeypatch.setattr(ipc, "read_record_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_the_manifest_records_each_record_batch_and_still_verifies(run):
    manifest = json.loads((run / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3
    for entry in manifest["shards"]:
        with ipc.open_file(str(run / entry["file"])) as f:
            actual = [f.get_batch(b).num_rows for b in range(f.num_record_batches)]
        assert entry["batch_rows"] == actual and sum(actual) == entry["rows"]
        assert len(actual) > 1
    assert verify_dir(run)[0] == []  # the seal covers batch_rows; `fewtrunc verify` passes


def test_start_up_reads_the_manifest_only(run, tmp_path, count_decodes):
    """No shard is opened at start-up: with every shard's bytes replaced by zeros of the same size
    the index still opens; the first read of a row then fails, naming the shard."""
    copy = copy_run(run, tmp_path / "run")
    for shard in copy.glob("shard-*.arrow"):
        shard.write_bytes(bytes(shard.stat().st_size))
    index = ShardIndex.open(copy)
    assert index.scanned == 0 and index.rows == 712 and index.blocks == 6
    rows = StreamingRows(index)
    assert rows.bytes_read == 0 and count_decodes == []
    with pytest.raises(ShardError, match=r"shard-00000\.arrow: no Arrow IPC file footer"):
        rows.get(0)
    rows.close()


def test_rows_are_those_of_shard_dataset(run, blocks):
    for directory in (run, blocks):
        ref = ShardDataset(directory)
        ds = StreamingShardDataset(directory, 8, seed=3)
        got = list(ds)
        assert sorted(r["index"] for r in got) == list(range(len(ref)))
        assert all(same_row(r, ref[r["index"]]) for r in got)
        ds.close()


@pytest.mark.parametrize("world", [1, 2])
def test_one_epoch_reads_the_shards_about_once(run, blocks, world, count_decodes):
    """Bytes summed over the ranks, footers and schemas included. The pipeline run has only 6
    blocks, too few for 2 ranks: where streams of unequal length run out, a rank may read a
    block of another rank's stream (``order.py``); that costs a few blocks per epoch, whatever
    the corpus size."""
    cases = [(blocks, 4, 8)] + ([(run, 2, 4)] if world == 1 else [])
    for directory, streams, batch in cases:
        index = ShardIndex.open(directory)
        total = decoded = 0
        for rank in range(world):
            ds = StreamingShardDataset(directory, batch, rank, world, seed=1, canonical_streams=streams,
                                       window_blocks=2, index=index)
            assert sum(1 for _ in ds) > 0
            total += ds.bytes_read
            decoded += ds.rows.decoded
            ds.close()
        assert index.shard_bytes * 0.95 < total <= 1.1 * index.shard_bytes, (directory, total)
        assert index.blocks <= decoded <= 1.1 * index.blocks


def test_no_manifest_counts_from_the_footers_without_decompressing(blocks, count_decodes, caplog):
    with caplog.at_level(logging.WARNING):
        index = ShardIndex.open(blocks)
    assert index.scanned == 3 and count_decodes == []  # footers and headers only
    assert "no manifest.json" in caplog.text and "nothing decompressed" in caplog.text
    assert index.rows == len(ShardDataset(blocks))


def test_an_older_manifest_without_batch_rows_still_works(run, tmp_path, count_decodes):
    copy = copy_run(run, tmp_path / "run")
    edit_manifest(copy, lambda m: [e.pop("batch_rows") for e in m["shards"]])
    old, new = ShardIndex.open(copy), ShardIndex.open(run)
    assert old.scanned == 3 and count_decodes == []
    assert np.array_equal(old.block_rows, new.block_rows) and old.fingerprint == new.fingerprint
    ds = StreamingShardDataset(copy, 4, seed=0, index=old)
    assert sorted(r["index"] for r in ds) == list(range(712))


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_a_shard_missing_or_not_listed_is_one_line(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    (copy / "shard-00001.arrow").unlink()
    with pytest.raises(ShardError) as exc:
        ShardIndex.open(copy)
    assert ("manifest.json: the shards differ from the manifest: missing ['shard-00001.arrow']"
            in _one_line(exc))
    (copy / "shard-00001.arrow").write_bytes((run / "shard-00001.arrow").read_bytes())
    (copy / "shard-00007.arrow").write_bytes(b"x")
    with pytest.raises(ShardError, match=r"not listed \['shard-00007.arrow'\]"):
        ShardIndex.open(copy)


def test_a_manifest_that_disagrees_with_the_shards_is_one_line(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    other = (copy / "shard-00002.arrow").read_bytes()
    (copy / "shard-00002.arrow").write_bytes(other + b"\0")
    with pytest.raises(ShardError) as exc:
        ShardIndex.open(copy)
    assert "shard-00002.arrow: has " in _one_line(exc) and "the manifest records" in str(exc.value)
    (copy / "shard-00002.arrow").write_bytes(other)

    def shift(m):  # the same total, split otherwise: only the file can tell
        m["shards"][0]["batch_rows"] = [127, 129]
    edit_manifest(copy, shift)
    rows = StreamingRows(ShardIndex.open(copy))
    with pytest.raises(ShardError) as exc:
        rows.get(0)
    assert "shard-00000.arrow (record batch 0): has 128 rows, the manifest records 127" in _one_line(exc)

    edit_manifest(copy, lambda m: m["shards"][1].update(batch_rows=[128, 100]))
    with pytest.raises(ShardError, match=r"shard-00001.arrow: its record batches hold 228 rows, "
                                         r"the manifest records 256"):
        ShardIndex.open(copy)


def test_a_hand_edited_manifest_is_refused(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["shards"][0]["batch_rows"] = [127, 129]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="manifest.json: was edited after the run"):
        ShardIndex.open(copy)


def test_a_damaged_block_names_the_shard_and_batch(blocks, tmp_path):
    copy = copy_run(blocks, tmp_path / "b")
    shard = copy / "shard-00000.arrow"
    layout = BlockReader([str(shard)], [shard.stat().st_size]).layout(0)
    body = int(layout.offsets[2] + layout.meta[2]), int(layout.offsets[2] + layout.lengths[2])
    data = bytearray(shard.read_bytes())
    data[body[0]:body[1]] = bytes(body[1] - body[0])  # record batch 2's zstd buffers zeroed
    shard.write_bytes(bytes(data))
    ds = StreamingShardDataset(copy, 4, seed=0, canonical_streams=1, window_blocks=1)
    with pytest.raises(ShardError) as exc:
        list(ds)
    assert "shard-00000.arrow (record batch 2): cannot be decoded" in _one_line(exc)


@pytest.mark.parametrize("cache_bytes, ahead, most", [(1, 4, 2), (1 << 30, 3, 5)])
def test_the_cache_is_bounded_and_a_small_one_still_serves_every_row(blocks, caplog, cache_bytes,
                                                                     ahead, most):
    """One stream, one block per window: the consumer needs one block at a time. A cache of 1
    byte holds the block in use plus the one being read for the next row (with a warning); a
    large one holds at most ``prefetch_blocks`` more than the block in use."""
    index = ShardIndex.open(blocks)
    ds = StreamingShardDataset(blocks, 4, seed=0, canonical_streams=1, window_blocks=1,
                               cache_bytes=cache_bytes, prefetch_blocks=ahead, index=index)
    sizes, taken = [], []
    with caplog.at_level(logging.WARNING):
        for row in ds:
            taken.append(row["index"])
            sizes.append(len(ds.rows._cache))
    assert sorted(taken) == list(range(index.rows))
    assert max(sizes) <= most and ds.rows.decoded == index.blocks
    assert ("exceed cache_bytes" in caplog.text) == (cache_bytes == 1)


def test_write_shard_batches_reports_the_rows_of_each_record_batch_written(blocks, tmp_path):
    """A table of several chunks is written as several record batches: each is reported."""
    import pyarrow as pa

    from pipelines.infra.shard_format import write_shard_batches

    with ipc.open_file(str(blocks / "shard-00000.arrow")) as f:
        table = f.read_all()  # one chunk per record batch of the file
        parts = [pa.concat_tables([table.slice(0, 5), table.slice(5, 7)]), f.get_batch(3)]
    _, _, counts = write_shard_batches(parts, tmp_path / "shard-00000.arrow")
    with ipc.open_file(str(tmp_path / "shard-00000.arrow")) as f:
        assert counts == [f.get_batch(b).num_rows for b in range(f.num_record_batches)] == [5, 7, 24]


def test_a_marker_whose_batch_rows_do_not_add_up_stops_the_manifest():
    from pipelines.infra.errors import FatalError
    from pipelines.steps.manifest import build_manifest

    shard = {"file": "shard-00000.arrow", "rows": 10, "tokens": 5, "bytes": 1, "sha256": "",
             "batch_rows": [4, 5]}
    with pytest.raises(FatalError, match="shard-00000.arrow: its record batches hold 9 rows"):
        build_manifest(config={}, fingerprint="", tokenizer={}, inputs={}, shards=[shard],
                       markers=[], stats={})
