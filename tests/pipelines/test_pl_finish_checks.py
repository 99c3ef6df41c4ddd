"""The end of a run checks what it publishes, and these checks are tested to fail when broken:
a shard marker without its shard, a last shard of exactly one row, the manifest's seal over
every total, scratch copies of store objects removed once read, and ``file://localhost/`` URLs
read and written as the local paths they name."""
from __future__ import annotations

import json
import os
import tempfile

import pytest

import pipelines
from pipelines.infra.errors import FatalError, OutputError
from pipelines.infra.shard_format import list_shards, open_shard
from pipelines.steps.verify import verify_dir
from tests.pipelines.conftest import base_overrides, english_records, file_bytes, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401

SEAL = "manifest.json was edited after the run (its seal differs)"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return write_jsonl(d / "en.jsonl", [{"text": r["text"], "id": i}
                                        for i, r in enumerate(english_records(24))])


def _run(out, small, check="size", **extra):
    return pipelines.run(None, base_overrides(out, str(small), **{"output.rows_per_shard": 8,
                                                                  **extra}), check=check)


def test_finalize_refuses_a_shard_marker_whose_shard_is_gone(tmp_path, small):
    from pipelines.config import load_run_config
    from pipelines.driver import shard_entries
    from pipelines.run_plan import build_run_plan

    out = tmp_path / "o"
    manifest = _run(out, small, **{"output.keep_work": "true"})["manifest"]
    n = len(manifest["shards"])
    assert n >= 3
    plan, _ = build_run_plan(load_run_config(None, base_overrides(
        out, str(small), **{"output.rows_per_shard": 8, "output.keep_work": "true"})))
    assert shard_entries(plan, n) == manifest["shards"]
    (out / "shard-00001.arrow").unlink()  # its marker in _work/ still says it is written
    with pytest.raises(FatalError, match="left shard 1 without its file or marker"):
        shard_entries(plan, n)
    from pipelines.resume import output_damage

    assert output_damage(out, manifest) == ["shard-00001.arrow is missing"]


def test_a_last_shard_of_exactly_one_row(tmp_path, small):
    one = _run(tmp_path / "one", small, **{"output.rows_per_shard": 10**6})["manifest"]
    rows = one["totals"]["sequences"]
    assert rows >= 3
    split = _run(tmp_path / "split", small, **{"output.rows_per_shard": rows - 1})["manifest"]
    assert [s["rows"] for s in split["shards"]] == [rows - 1, 1]
    whole = open_shard(tmp_path / "one" / "shard-00000.arrow").to_pylist()
    parts = [r for p in list_shards(tmp_path / "split") for r in open_shard(p).to_pylist()]
    assert parts == whole  # the last row is the whole run's last row, not lost or repeated
    assert split["totals"]["tokens_out"] == one["totals"]["tokens_out"]
    assert verify_dir(tmp_path / "split")[0] == []


def _bumped(value):
    return not value if isinstance(value, bool) else value + (0.5 if isinstance(value, float)
                                                              else 1)


def test_the_seal_covers_every_total(tmp_path, small):
    """An edit of any ``totals`` key without resealing: ``verify`` names the seal, and so does
    the check of a rerun with ``check="sha256"``, which refuses the run as damaged (its work
    files are gone; run for two keys, the check alone for every key)."""
    from pipelines.resume import output_damage

    out = tmp_path / "o"
    manifest = _run(out, small)["manifest"]
    path = out / "manifest.json"
    pristine = path.read_bytes()
    assert len(manifest["totals"]) >= 15
    for n, (key, value) in enumerate(manifest["totals"].items()):
        edited = json.loads(pristine)
        edited["totals"][key] = _bumped(value)
        path.write_text(json.dumps(edited, indent=1, sort_keys=True) + "\n")
        assert SEAL in verify_dir(out)[0], key
        assert SEAL in output_damage(out, edited, "sha256"), key
        if n in (0, len(manifest["totals"]) - 1):
            with pytest.raises(OutputError, match="its seal differs"):
                _run(out, small, check="sha256")
        path.write_bytes(pristine)
    assert verify_dir(out)[0] == []
    assert _run(out, small, check="sha256")["status"] == "already complete"


def test_scratch_copies_of_store_objects_are_removed(object_store, tmp_path, monkeypatch):
    """A run on a store downloads inputs (a Parquet object), docs files, row plans and unit
    files to local scratch and writes its files there before uploading them: none is left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.infra import atomic

    recs = [{"text": r["text"], "id": i % 30} for i, r in enumerate(english_records(50))]
    local = tmp_path / "in"
    local.mkdir()
    write_jsonl(local / "a.jsonl", recs[:20])
    pq.write_table(pa.table({"text": [r["text"] for r in recs[20:]],
                             "id": [r["id"] for r in recs[20:]]}), local / "b.parquet")
    for p in local.iterdir():
        atomic.write_bytes(object_store.url("in", p.name), p.read_bytes())
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = pipelines.run(None, base_overrides(
        object_store.url("out"), object_store.url("in", "*"),
        **{"input.id_field": "id", "input.unit_bytes": 10_000, "pack.partition_chunks": 30}))
    assert result["manifest"]["totals"]["documents_duplicate"] == 20
    assert len(result["manifest"]["shards"]) >= 2
    assert sorted(os.listdir(scratch)) == []


def test_file_localhost_urls_are_the_local_paths(tmp_path, small):
    from urllib.parse import quote

    from pipelines.infra.storage import as_path, local_path

    assert local_path("file://localhost/tmp/a%20b/c") == "/tmp/a b/c"
    assert local_path("file:///tmp/a%20b/c") == local_path("/tmp/a b/c") == "/tmp/a b/c"
    assert str(as_path("file://localhost/tmp/x")) == "/tmp/x"
    out = tmp_path / "a b" / "o"
    url = "file://localhost" + quote(str(out))
    result = pipelines.run(None, base_overrides(url, "file://localhost" + quote(str(small)),
                                                **{"output.rows_per_shard": 8,
                                                   "input.id_field": "id"}))
    assert result["status"] == "complete" and (out / "manifest.json").is_file()
    plain = _run(tmp_path / "plain", small, **{"input.id_field": "id"})
    assert plain["manifest"]["shards"] == result["manifest"]["shards"]
    assert file_bytes(out, ("timings.json", "config.yaml", "manifest.json")) == \
        file_bytes(tmp_path / "plain", ("timings.json", "config.yaml", "manifest.json"))
    assert verify_dir(url)[0] == []
