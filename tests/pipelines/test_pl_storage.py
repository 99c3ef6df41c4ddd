"""pipelines.infra.storage and the publish calls of pipelines.infra.atomic on real S3 and GCS protocol servers
(moto, gcp-storage-emulator, on 127.0.0.1): listing, globs, reads, publishing, markers and the one
error line for a missing bucket or object and an unreachable endpoint."""
from __future__ import annotations

import gzip

import pytest

from pipelines.infra import atomic, storage
from tests.pipelines.object_stores import (free_port, gcs_server, object_store,  # noqa: F401
                                           s3_server)


def _populate(store):
    for name in ("d/a.jsonl", "d/b.jsonl.gz", "d/sub/c.jsonl", "d/sub/deep/e.txt", "d/.hidden"):
        atomic.write_bytes(store.url(name), name.encode())


def test_list_glob_stat_read(object_store):
    _populate(object_store)
    u = object_store.url
    assert [x for x, _ in storage.list_files(u("d"))] == [
        u("d/.hidden"), u("d/a.jsonl"), u("d/b.jsonl.gz"), u("d/sub/c.jsonl"),
        u("d/sub/deep/e.txt")]
    assert storage.glob(u("d/*.jsonl*")) == [u("d/a.jsonl"), u("d/b.jsonl.gz")]
    assert storage.glob(u("d/**/*.jsonl")) == [u("d/a.jsonl"), u("d/sub/c.jsonl")]
    assert storage.glob(u("d/s*")) == [u("d/sub")]  # a prefix is a directory (a file tree)
    assert storage.glob(u("d/*")) == [u("d/a.jsonl"), u("d/b.jsonl.gz"), u("d/sub")]
    st = storage.stat(u("d/a.jsonl"))
    assert st.size == len(b"d/a.jsonl") and st.mtime_ns > 0 and not st.is_dir
    assert storage.stat(u("d/sub")).is_dir
    assert storage.stat(u("d/nothing")) is None
    with storage.open_input(u("d/b.jsonl.gz")) as f:
        assert f.peek(2)[:2] == b"d/" and f.read() == b"d/b.jsonl.gz"


def test_publish_is_whole_or_nothing_and_leaves_no_temporaries(object_store):
    u = object_store.url
    with atomic.atomic_path(u("out/shard-00000.arrow")) as tmp:
        assert not storage.exists(u("out/shard-00000.arrow"))  # not visible while written
        tmp.write_bytes(b"x" * 100_000)
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(u("out/shard-00001.arrow")) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("the writer fails")
    assert not tmp.exists()  # the local scratch file is gone too
    with atomic.atomic_path(u("out/rejects.jsonl")) as tmp:
        tmp.write_bytes(b"")  # an empty file is published too
    atomic.write_json(u("out/_work/shard-00000.done.json"), {"bytes": 100_000})
    atomic.write_text(u("out/manifest.json"), "{}\n")
    assert [x for x, _ in storage.list_files(u("out"))] == [
        u("out/_work/shard-00000.done.json"), u("out/manifest.json"), u("out/rejects.jsonl"),
        u("out/shard-00000.arrow")]
    assert storage.read_bytes(u("out/rejects.jsonl")) == b""
    assert storage.read_bytes(u("out/shard-00000.arrow")) == b"x" * 100_000
    assert storage.read_bytes(u("out/_work/shard-00000.done.json")) == \
        b'{\n "bytes": 100000\n}\n'
    atomic.write_text(u("out/manifest.json"), "{\"v\": 2}\n")  # a rerun replaces it whole
    assert storage.read_bytes(u("out/manifest.json")) == b'{"v": 2}\n'
    assert storage.remove(u("out/_work/shard-00000.done.json"))
    assert not storage.remove(u("out/_work/shard-00000.done.json"))  # gone: not an error
    assert not storage.exists(u("out/_work/shard-00000.done.json"))


def _one_line(exc, url):
    text = str(exc.value)
    assert "\n" not in text and text.startswith(url), text
    return text


def test_missing_bucket_and_object_are_one_line_naming_the_url(object_store):
    scheme = object_store.server.scheme
    url = f"{scheme}://no-such-bucket-fewtrunc/x.jsonl"
    for call in (storage.stat, storage.read_bytes, lambda p: atomic.write_text(p, "x")):
        with pytest.raises(storage.StorageError) as exc:
            call(url)
        assert "bucket 'no-such-bucket-fewtrunc' does not exist" in _one_line(exc, url)
    missing = object_store.url("missing.jsonl")
    with pytest.raises(storage.StorageError) as exc:
        storage.read_bytes(missing)
    assert "no such object" in _one_line(exc, missing)


def test_unreachable_endpoint_is_one_line_naming_the_url(object_store, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    var = "AWS_ENDPOINT_URL" if object_store.server.scheme == "s3" else "STORAGE_EMULATOR_HOST"
    monkeypatch.setenv(var, dead)
    storage.configure(retry_attempts=1, retry_seconds=1, connect_timeout=1)
    try:
        url = object_store.url("a.jsonl")
        with pytest.raises(storage.StorageError) as exc:
            storage.stat(url)
        assert f"cannot reach {dead} ({var})" in _one_line(exc, url)
    finally:
        storage.configure(retry_attempts=3, retry_seconds=60, connect_timeout=10)


def test_memory_and_file_urls():
    pytest.importorskip("fsspec")
    atomic.write_bytes("memory://fewtrunc-test/a/x.jsonl.gz", gzip.compress(b"{}\n", mtime=0))
    assert storage.glob("memory://fewtrunc-test/a/*.gz") == ["memory:///fewtrunc-test/a/x.jsonl.gz"]
    assert gzip.decompress(storage.read_bytes("memory://fewtrunc-test/a/x.jsonl.gz")) == b"{}\n"
    assert storage.local_path("file:///tmp/a%20b") == "/tmp/a b"
    assert not storage.is_url("file:///tmp/x") and storage.is_url("gs://b/k")
    assert storage.join("s3://b/out/", "_work", "x.json") == "s3://b/out/_work/x.json"


def test_the_storage_section_sets_timeouts_and_retries_for_the_run(tmp_path, monkeypatch):
    """``storage:`` in the config reaches the store's client (the driver's here; each stage's
    setup applies it on its worker), and leaves the run's fingerprint alone."""
    from contextlib import ExitStack

    from pipelines import driver
    from pipelines.config import load_run_config
    from pipelines.infra.errors import ConfigError
    from pipelines.infra.storage import filesystems
    from tests.pipelines.conftest import base_overrides

    data = tmp_path / "a.jsonl"
    data.write_text('{"text": "a few words"}\n', encoding="utf-8")
    monkeypatch.setattr(filesystems, "_SETTINGS", dict(filesystems._SETTINGS))
    plans = []
    for extra in ([], ["storage.connect_timeout=2", "storage.request_timeout=5",
                       "storage.retry_attempts=1", "storage.retry_seconds=7"]):
        cfg = load_run_config(None, base_overrides(tmp_path / "o", str(data)) + extra)
        with ExitStack() as lock:  # the lock, released at once
            plan, _, _ = driver.prepare(cfg, lock)
        plans.append(plan)
    assert filesystems._SETTINGS == {"connect_timeout": 2.0, "request_timeout": 5.0,
                                     "retry_attempts": 1, "retry_seconds": 7.0}
    assert plans[0].fingerprint == plans[1].fingerprint
    with pytest.raises(ConfigError, match="storage.connect_timeout must be > 0"):
        load_run_config(None, ["storage.connect_timeout=0"])


def test_a_docs_file_on_a_store_is_copied_once_and_read_in_slices(object_store, tmp_path,
                                                                  monkeypatch):
    """The partition layout reads a big unit's lengths a block at a time: on a store, one
    download for all the blocks (not one per block), slices equal to the local file's, and the
    copy gone once dropped."""
    import numpy as np

    from pipelines.steps import spill

    ids, lengths = np.arange(10_000, dtype=np.int64) * 7, np.arange(10_000, dtype=np.int64) % 97
    local = tmp_path / "unit-00003.docs.npy"
    np.save(local, np.stack([ids, lengths]))
    work = object_store.url("run/_work")
    atomic.write_bytes(f"{work}/unit-00003.docs.npy", local.read_bytes())
    opened = []
    real = storage.open_input
    monkeypatch.setattr(storage, "open_input", lambda p, *a: opened.append(p) or real(p, *a))
    for a in range(0, 10_000, 3_000):
        got = spill.load_docs(work, 3, a, a + 3_000)
        want = spill.load_docs(tmp_path, 3, a, a + 3_000)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))
    assert spill.load_docs(work, 3, 9_999, None, ids=False)[0] is None
    assert len(opened) == 1
    copy = spill._DOCS_COPY["path"]
    assert copy.is_file()
    spill.drop_docs_copy()
    assert not copy.exists()
