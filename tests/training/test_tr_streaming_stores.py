"""The streaming reader on object stores: moto's S3 server (ranged reads of each record batch)
and the GCS emulator (ranged reads), as the suite starts them."""
from __future__ import annotations

import pytest

from tests.pipelines.object_stores import Store, gcs_server, s3_server  # noqa: F401
from tests.training.streaming_shards import same_row, shared_blocks, shared_run, upload
from training.data import ShardDataset
from training.shard_checks import ShardError
from training.streaming import ShardIndex, StreamingShardDataset


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return shared_blocks(tmp_path_factory)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture
def s3(s3_server, monkeypatch):  # noqa: F811
    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    return Store(s3_server)


def test_one_epoch_on_s3_reads_the_shards_about_once(s3, blocks, run):
    for local, world in ((blocks, 2), (run, 1)):
        url = upload(local, s3.url(local.name))
        index = ShardIndex.open(url)
        assert index.fingerprint == ShardIndex.open(local).fingerprint
        total, taken = 0, []
        for rank in range(world):
            ds = StreamingShardDataset(url, 8, rank, world, seed=2, canonical_streams=4,
                                       window_blocks=2, index=index)
            taken += [row["index"] for row in ds]
            total += ds.bytes_read
            # one ranged read per record batch, plus the tail, footer and schema of each shard
            assert ds.rows.reader.files.requests <= index.blocks + 3 * len(index.shards)
            ds.close()
        assert sorted(taken) == list(range(index.rows))
        assert index.shard_bytes * 0.95 < total <= 1.1 * index.shard_bytes, (url, total)


def test_rows_from_s3_are_the_local_rows(s3, run):
    url = upload(run, s3.url("rows"))
    ref = ShardDataset(run)
    ds = StreamingShardDataset(url, 4, seed=0)
    got = list(ds)
    assert len(got) == len(ref) and all(same_row(r, ref[r["index"]]) for r in got[::7])


def test_a_shard_missing_on_s3_is_one_line(s3, run):
    url = upload(run, s3.url("missing"))
    from pipelines.infra.storage.filesystems import resolve

    loc = resolve(f"{url}/shard-00001.arrow")
    loc.fs.delete_file(loc.path)
    with pytest.raises(ShardError, match=r"manifest.json: the shards differ from the manifest: "
                                         r"missing \['shard-00001.arrow'\]"):
        ShardIndex.open(url)


