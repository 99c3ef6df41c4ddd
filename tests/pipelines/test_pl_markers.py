"""``pipelines.markers`` owns the completion markers: every marker a run leaves is one it names,
the driver's results are what it reads back, and it works alike on a local disk and a store."""
from __future__ import annotations

import json

import pipelines
from pipelines.markers import (KINDS, PART, SHARD, UNIT, count_markers, done_among, has_marker,
                               marker_glob, marker_name, read_marker, remove_markers,
                               write_marker)
from pipelines.infra.storage import list_files
from pipelines.work_dir import WORK_FILE
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401


def _names_in(listing: list[str]):
    """``names(dir, pattern)`` as a progress poll has it: the names of one listing."""
    import fnmatch

    return lambda work, pattern: fnmatch.filter(listing, pattern)


def test_every_marker_of_a_run_is_named_and_read_by_markers(tmp_path):
    recs = english_records(60)
    paths = [str(write_jsonl(tmp_path / f"in-{k}.jsonl", recs[k * 20:(k + 1) * 20]))
             for k in range(3)]
    out = tmp_path / "o"
    manifest = pipelines.run(None, base_overrides(
        out, *paths, **{"input.unit_bytes": 1, "pack.partition_chunks": 25,
                        "output.rows_per_shard": 8, "output.keep_work": "true"}))["manifest"]
    work = out / "_work"
    found = sorted(p.name for p in work.iterdir() if p.name.endswith(".done.json"))
    units, shards = manifest["inputs"]["units"], len(manifest["shards"])
    parts = [n for n in found if n.startswith(PART)]
    assert units == 3 and shards > 1 and len(parts) > 1  # every kind, several of each
    assert found == sorted([marker_name(UNIT, u) for u in range(units)]
                           + [marker_name(PART, p) for p in range(len(parts))]
                           + [marker_name(SHARD, k) for k in range(shards)])
    assert all(WORK_FILE.fullmatch(n) for n in found)  # removed with the work directory
    # what the driver read back is what markers.py reads: the manifest's shard entries, the
    # units' counts
    assert [read_marker(work, SHARD, k) for k in range(shards)] == manifest["shards"]
    assert sum(read_marker(work, UNIT, u)["records"] for u in range(units)) == \
        manifest["totals"]["documents_read"]
    assert [has_marker(work, UNIT, u) for u in range(units + 1)] == [True] * units + [False]
    assert read_marker(work, PART, len(parts)) is None
    names = _names_in(found)
    assert [count_markers(work, k, names) for k in KINDS] == [units, len(parts), shards]
    assert done_among(work, UNIT, [2, 0, 7], names) == [2, 0]


def test_markers_bytes_and_removal_by_kind(tmp_path):
    for kind in KINDS:
        for i in (0, 1, 12345):
            write_marker(tmp_path, kind, i, {"b": [1, 2], "a": kind, "i": i})
    path = tmp_path / marker_name(SHARD, 12345)
    assert path.name == "shard-12345.done.json" and marker_glob(UNIT) == "unit-*.done.json"
    # the same bytes for the same content, whatever the order it was built in
    assert path.read_bytes() == (json.dumps({"a": "shard", "b": [1, 2], "i": 12345}, indent=1,
                                            sort_keys=True) + "\n").encode()
    remove_markers(tmp_path, SHARD)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        marker_name(k, i) for k in (UNIT, PART) for i in (0, 1, 12345))
    write_marker(tmp_path, UNIT, 100000, {})  # past 5 digits: still a marker of the run
    assert WORK_FILE.fullmatch(marker_name(UNIT, 100000))


def test_markers_on_a_store(object_store):
    work = object_store.url("out", "_work")
    write_marker(work, UNIT, 3, {"records": 2}, sync=True)
    write_marker(work, SHARD, 0, {"rows": 1})
    write_marker(work, SHARD, 1, {"rows": 2})
    assert read_marker(work, UNIT, 3) == {"records": 2} and read_marker(work, UNIT, 4) is None
    assert has_marker(work, SHARD, 1) and not has_marker(work, PART, 0)
    remove_markers(work, SHARD)
    assert [u.rsplit("/", 1)[-1] for u, _ in list_files(work)] == [marker_name(UNIT, 3)]
