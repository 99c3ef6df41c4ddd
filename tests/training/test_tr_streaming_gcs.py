"""The streaming reader and ``ShardDataset`` on GCS (gcp-storage-emulator, as the suite starts it):
one ranged read per record batch, no local copy of a shard, and about the shards' bytes per
epoch summed over the ranks; a shard gone or a store out of reach is one line, never a hang.
Other stores still copy a shard to local scratch: ``close()`` removes the copies."""
from __future__ import annotations

import gc
import tempfile

import numpy as np
import pytest

from pipelines.infra.storage.errors import StorageError
from pipelines.infra.storage import filesystems
from pipelines.infra.storage.filesystems import configure, resolve
from tests.pipelines.object_stores import Store, gcs_server  # noqa: F401
from tests.training.streaming_shards import same_row, shared_blocks, shared_run, upload
from training.data import ShardDataset
from training.streaming import ShardIndex, StreamingShardDataset
from training.streaming.blocks import BlockReader


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return shared_blocks(tmp_path_factory)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture
def gcs(gcs_server, monkeypatch):  # noqa: F811
    for k, v in gcs_server.env.items():
        monkeypatch.setenv(k, v)
    return Store(gcs_server)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """An empty temporary folder for the test: a local copy of a shard would land in it."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_one_epoch_on_gcs_reads_each_batch_once_without_local_copies(gcs, blocks, scratch):
    url = upload(blocks, gcs.url("blocks"))
    index = ShardIndex.open(url)  # no manifest: counts from the footers, by ranged reads too
    assert index.fingerprint == ShardIndex.open(blocks).fingerprint
    for world in (1, 2):
        total, taken = 0, []
        for rank in range(world):
            ds = StreamingShardDataset(url, 8, rank, world, seed=2, canonical_streams=4,
                                       window_blocks=2, index=index)
            taken += [row["index"] for row in ds]
            total += ds.bytes_read
            # one ranged read per record batch, plus the tail, footer and schema of each shard
            assert ds.rows.reader.files.requests <= index.blocks + 3 * len(index.shards)
            assert list(scratch.iterdir()) == []  # nothing copied, even while the reader is open
            ds.close()
        assert sorted(taken) == list(range(index.rows))
        # summed over the ranks: each shard about once (whole copies per rank were 2x at 2 ranks)
        assert index.shard_bytes * 0.95 < total <= 1.1 * index.shard_bytes, (world, total)


def test_rows_from_gcs_are_the_local_rows(gcs, run, scratch):
    url = upload(run, gcs.url("rows"))
    ref = ShardDataset(run)
    ds = StreamingShardDataset(url, 4, seed=0)
    got = list(ds)
    ds.close()
    assert len(got) == len(ref) and all(same_row(r, ref[r["index"]]) for r in got[::5])
    # ShardDataset reads a GCS shard by ranged reads too: no local copy, the same rows
    remote = ShardDataset(url)
    assert list(scratch.iterdir()) == [] and not remote._scratch
    order = np.random.default_rng(0).permutation(len(ref))[:40]
    assert all(same_row(remote[int(i)], ref[int(i)]) for i in order)


def test_a_shard_gone_from_gcs_mid_epoch_is_one_line(gcs, blocks):
    url = upload(blocks, gcs.url("gone"))
    ds = StreamingShardDataset(url, 8, seed=0)
    loc = resolve(f"{url}/shard-00001.arrow")
    loc.fs.delete_file(loc.path)
    with pytest.raises(StorageError, match=r"^gs://[^ ]+/gone/shard-00001\.arrow: no such object"):
        list(ds)
    ds.close()


def test_an_unreachable_gcs_endpoint_is_one_line_after_the_retry_window(gcs, blocks, monkeypatch):
    url = upload(blocks, gcs.url("dead"))
    index = ShardIndex.open(url)
    from tests.pipelines.object_stores import free_port

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nobody there
    before = filesystems._SETTINGS["retry_seconds"]
    configure(retry_seconds=0.3)
    try:
        reader = BlockReader([s.path for s in index.shards], [s.bytes for s in index.shards])
        with pytest.raises(StorageError, match=r"^gs://[^ ]+/dead/shard-00000\.arrow: cannot reach "
                                               r"http://127\.0\.0\.1:\d+ \(STORAGE_EMULATOR_HOST\)"):
            reader.read(0, 0, int(index.block_rows[0]))
    finally:
        configure(retry_seconds=before)


def test_copies_of_shards_on_other_stores_are_removed_on_close(blocks, scratch):
    import fsspec

    names = sorted(p.name for p in blocks.glob("shard-*.arrow"))
    memory = fsspec.filesystem("memory")
    for name in names:
        memory.pipe(f"/fewtrunc-copies/{name}", (blocks / name).read_bytes())
    paths = [f"memory://fewtrunc-copies/{n}" for n in names]
    sizes = [(blocks / n).stat().st_size for n in names]
    reader = BlockReader(paths, sizes)
    rows = [int(r) for r in reader.scan_rows(0)]
    reader.read(0, 0, rows[0])
    copies = [p for d in scratch.iterdir() for p in d.iterdir()]
    assert [p.name for p in copies] == [names[0]] and reader.files.bytes_read == sizes[0]
    reader.close()
    assert list(scratch.iterdir()) == []  # close() removed the folder of copies
    reader.read(0, 1, rows[1])  # usable again: a new copy
    assert len(list(scratch.iterdir())) == 1
    del reader
    gc.collect()
    assert list(scratch.iterdir()) == []  # and so does dropping the reader (its finalizer)
