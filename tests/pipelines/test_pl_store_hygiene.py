"""What a run leaves on S3 and GCS (real protocol servers on 127.0.0.1), read with the stores' own
listing APIs, which show every key (``storage.list_files`` hides "directory" objects):

- a finished run leaves its files only: no zero-byte ``prefix/`` objects (pyarrow's S3 client
  makes one for a deleted key's parent), no ``_work/``, no lock;
- a run refused for what ``output.dir`` holds (foreign content, a ``_work/`` without the run
  record, a finished run of another config, the lock of another run) writes nothing at all:
  every key keeps its version."""
from __future__ import annotations

import json
import urllib.request

import pytest

import pipelines
from pipelines.infra import atomic, storage
from pipelines.infra.errors import ConfigError, OutputError
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files whose ids repeat (so the duplicates' work files are written and removed too),
    in several units and partitions."""
    root = tmp_path_factory.mktemp("corpus")
    recs = [{"text": r["text"], "id": i % 30} for i, r in enumerate(english_records(40))]
    write_jsonl(root / "a.jsonl", recs[:20], None)
    write_jsonl(root / "b.jsonl", recs[20:], None)
    return root


def overrides(out, corpus, **extra) -> list[str]:
    return base_overrides(out, f"{corpus}/*.jsonl", **{"input.id_field": "id",
                                                      "input.unit_bytes": 20_000,
                                                      "pack.partition_chunks": 30, **extra})


def raw_keys(store) -> dict[str, tuple]:
    """Every key of the bucket, with what changes when it is written again (S3: size and ETag,
    with the lock's changing body; GCS: its generation)."""
    server = store.server
    if server.scheme == "s3":
        found = {}
        pages = _s3_client(server).get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=store.bucket):
            for o in page.get("Contents", []):
                found[o["Key"]] = (o["Size"], o["ETag"], str(o["LastModified"]))
        return found
    url = f"{server.endpoint}/storage/v1/b/{store.bucket}/o"
    items = json.load(urllib.request.urlopen(url, timeout=10)).get("items", [])
    return {o["name"]: (int(o["size"]), o["generation"]) for o in items}


def _s3_client(server):
    import boto3

    return boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def history(store) -> set:
    """On S3 with versioning on, every version and delete marker ever made in the bucket: an
    object written and removed again (a lock taken and released) shows. On GCS (the emulator
    keeps no versions): every key with its generation."""
    if store.server.scheme != "s3":
        return set(raw_keys(store).items())
    found = set()
    pages = _s3_client(store.server).get_paginator("list_object_versions")
    for page in pages.paginate(Bucket=store.bucket):
        for kind in ("Versions", "DeleteMarkers"):
            found |= {(kind, v["Key"], v["VersionId"]) for v in page.get(kind, [])}
    return found


def test_a_finished_run_leaves_no_directory_objects(object_store, corpus):
    out = object_store.url("runs/out")
    result = pipelines.run(None, overrides(out, corpus))
    assert result["manifest"]["totals"]["documents_duplicate"] == 10
    assert len(result["manifest"]["shards"]) >= 2
    keys = raw_keys(object_store)
    assert [k for k in keys if k.endswith("/")] == []
    assert sorted(k.split("/", 2)[2] for k in keys) == sorted(
        [e["file"] for e in result["manifest"]["shards"]]
        + ["manifest.json", "timings.json", *result["manifest"]["files"]])


def test_a_refused_run_writes_nothing(object_store, corpus):
    if object_store.server.scheme == "s3":
        _s3_client(object_store.server).put_bucket_versioning(
            Bucket=object_store.bucket, VersioningConfiguration={"Status": "Enabled"})
    foreign = object_store.url("foreign")
    atomic.write_bytes(f"{foreign}/notes.txt", b"mine")
    stray = object_store.url("stray")
    atomic.write_bytes(f"{stray}/_work/important.txt", b"precious")
    done = object_store.url("done")
    pipelines.run(None, overrides(done, corpus))
    busy = object_store.url("busy")
    atomic.write_json(f"{busy}/.fewtrunc.lock", {"fingerprint": "other", "holder": "pid 1 on x"})
    before = history(object_store)
    refusals = [(foreign, {}, OutputError, "holds no fewtrunc run"),
                (stray, {}, OutputError, "_work/ has no fewtrunc run record"),
                (done, {"pack.seq_len": 512}, ConfigError, "finished run with another config"),
                (busy, {}, OutputError, "in use by another fewtrunc run")]
    for out, extra, error, match in refusals:
        with pytest.raises(error, match=match):
            pipelines.run(None, overrides(out, corpus, **extra))
        assert history(object_store) == before, out
    assert storage.exists(f"{done}/manifest.json")
