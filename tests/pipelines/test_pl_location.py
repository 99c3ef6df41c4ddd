"""``pipelines.infra.storage.location.Location``: how each spelling of a path or URL parses, that it
agrees with ``as_path`` and ``urls.join`` (the callers it replaces), what each store can do, that
it pickles small and to the same bytes in any process, that the run plan carries output.dir
resolved, and the file:// spellings that the text-based checks got wrong."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.infra.errors import ConfigError
from pipelines.infra.storage.location import Location
from pipelines.infra.storage.paths import UrlPath, as_path
from pipelines.infra.storage.urls import is_url, join
from tests.pipelines.conftest import base_overrides
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401

SPELLINGS = ["/data/out", "/data/out/", "out", "./out/sub", "../x", "C:/x", "./a:b", "~/x",
             "file:///data/out", "file://localhost/data/a%20b", "s3://b/out", "s3://b/out/",
             "S3://b/k", "s3a://b/k", "gs://b/k", "gcs://b/k", "memory://bucket/k",
             "hf://datasets/x/y", "https://host/f.jsonl?X-Amz-Signature=abc"]


@pytest.mark.parametrize("given, text, scheme", [
    ("/data/out", "/data/out", ""),
    ("out/", "out/", ""),  # the spelling is kept: callers get the string they had
    ("C:/x", "C:/x", ""),  # a drive letter is not a scheme
    ("./a:b", "./a:b", ""),
    ("file:///data/out", "/data/out", ""),
    ("file://localhost/data/a%20b", "/data/a b", ""),
    ("s3://b/out/", "s3://b/out/", "s3"),
    ("S3://b/k", "S3://b/k", "s3"),
    ("gs://b/k", "gs://b/k", "gs"),
    ("memory://bucket/k", "memory://bucket/k", "memory"),
])
def test_parsing(given, text, scheme):
    loc = Location.of(given)
    assert (loc.text, loc.scheme, loc.remote) == (text, scheme, bool(scheme))
    assert str(loc) == text


@pytest.mark.parametrize("given", SPELLINGS)
def test_agrees_with_the_calls_it_replaces(given):
    loc = Location.of(given)
    assert loc.remote == is_url(given)
    assert loc.as_path() == as_path(given)
    assert type(loc.as_path()) is type(as_path(given))
    assert str(loc.join("_work", "u.done.json")) == join(given, "_work", "u.done.json")
    assert loc.join() is loc
    # what callers hold today converts back to the same value, without parsing for a Path
    assert Location.of(loc) is loc
    assert Location.of(loc.as_path()).remote == loc.remote
    assert Location.of(as_path(given)).as_path() == as_path(given)


def test_a_path_and_a_urlpath_are_local_and_remote_by_type():
    # Path("s3://b/k") is the local path s3:/b/k: Path collapses the "//", as it always has
    assert not Location.of(Path("s3://b/k")).remote
    assert Location.of(Path("s3://b/k")).text == "s3:/b/k"
    remote = Location.of(UrlPath("gs://b/out/"))
    assert (remote.text, remote.scheme) == ("gs://b/out", "gs")


def test_local_path_and_bucket():
    assert Location.of("file:///a/b").local_path == "/a/b"
    assert Location.of("rel/x").local_path == "rel/x"
    with pytest.raises(ValueError, match="s3://b/k is on a store"):
        Location.of("s3://b/k").local_path  # noqa: B018 - the property raises
    assert Location.of("s3://user:pw@b/k/x").bucket == "user:pw@b"
    assert Location.of("memory://bucket").bucket == "bucket"
    assert Location.of("/a/b").bucket == ""


def test_join_of_a_bare_scheme_keeps_its_slashes():
    # urls.join gives "memory:/x" here (it strips the base's trailing slashes)
    assert str(Location.of("memory://").join("x", "y")) == "memory://x/y"


@pytest.mark.parametrize("given, answers", [
    # needs_fsync, uploads_whole, keeps_temporaries, has_directories, regular_file_check,
    # ranged_reads, cheap_reads
    ("/out", (True, False, True, True, True, True, True)),
    ("file:///out", (True, False, True, True, True, True, True)),
    ("C:/out", (True, False, True, True, True, True, True)),
    ("s3://b/out", (False, True, False, False, False, True, False)),
    ("s3a://b/out", (False, True, False, False, False, True, False)),
    ("gs://b/out", (False, True, False, False, False, False, False)),
    ("memory://b/out", (False, True, False, False, False, False, False)),
])
def test_capabilities(given, answers):
    loc = Location.of(given)
    assert (loc.needs_fsync, loc.uploads_whole, loc.keeps_temporaries, loc.has_directories,
            loc.regular_file_check, loc.ranged_reads, loc.cheap_reads) == answers


def test_value_semantics():
    a, b = Location.of("s3://b/k"), Location.of(UrlPath("s3://b/k"))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert Location.of("file:///a") == Location.of("/a")
    assert Location.of("/a") != Location.of("/a/")  # spellings differ; as_path equal
    assert Location.of("/a") != "/a"
    with pytest.raises(AttributeError):
        a.text = "s3://other"
    assert repr(a) == "Location('s3://b/k')"


def test_pickles_small_and_to_the_same_bytes_in_any_process():
    values = [Location.of(s) for s in SPELLINGS]
    blob = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
    assert pickle.loads(blob) == values
    # the class is named once; each value costs its two strings and a few opcodes
    assert len(blob) < 90 + sum(len(v.text) + len(v.scheme) + 12 for v in values)
    # another process (another hash seed) pickles the same values to the same bytes: the run
    # plan's parcel key (a hash of its pickle) is the same on every worker
    code = ("import pickle, sys; from pipelines.infra.storage.location import Location; "
            f"sys.stdout.buffer.write(pickle.dumps([Location.of(s) for s in {SPELLINGS!r}], "
            "protocol=pickle.HIGHEST_PROTOCOL))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PATH": ""}, cwd=Path.cwd())
    assert other.stdout == blob


def _write(fs_loc: Location, data: bytes) -> None:
    resolved = fs_loc.resolve()
    with resolved.fs.open_output_stream(resolved.path) as f:
        f.write(data)


def test_open_at_reads_from_an_offset_on_every_kind_of_store(tmp_path, object_store):
    from pipelines.steps.cut import open_at

    data = bytes(range(256)) * 1000
    where = [Location.of(object_store.url("blob.bin")), Location.of("memory://loc-test/blob"),
             Location.of(f"file://{tmp_path}/blob.bin")]
    for loc in where:
        _write(loc, data)
        for offset in (0, 1, 70_001, len(data)):
            with open_at(loc, offset) as f:  # a Location, as the run plan hands them on
                assert f.read() == data[offset:]
            with open_at(str(loc), offset) as f:  # and the str a source holds
                assert f.read(10) == data[offset:offset + 10]


def test_parquet_opens_from_a_location_and_is_cut_only_where_ranged(tmp_path, object_store):
    from pipelines.steps.cut import parquet_pieces
    from pipelines.steps.read_parquet import open_parquet
    from pipelines.steps.sources import Source

    local = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": [f"doc {i}" for i in range(400)]}), local,
                   row_group_size=100)
    url = object_store.url("t.parquet")
    _write(Location.of(url), local.read_bytes())
    for path in (str(local), f"file://{local}", url):
        ranged = Location.of(path).ranged_reads
        if ranged:  # Arrow's random access to GCS hangs against its emulator: never tried
            assert open_parquet(Location.of(path)).metadata.num_row_groups == 4
        src = Source(path, "t", "parquet", local.stat().st_size)
        assert len(parquet_pieces(src, 2)) == (2 if ranged else 0), path


@dataclass
class _Stage:
    """A stage as ``parcel.split`` takes one: a dataclass with a ``plan`` field."""

    plan: object


def _cfg(out: str, *inputs: str):
    from pipelines.config import load_run_config

    return load_run_config(None, base_overrides(out, *inputs))


def test_the_run_plan_carries_output_dir_resolved(tmp_path):
    from pipelines.engines import parcel
    from pipelines.run_plan import build_run_plan

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "hello world"}) + "\n")
    for out in (str(tmp_path / "o"), f"file://{tmp_path}/o/"):
        plan, _ = build_run_plan(_cfg(out, str(data)))
        assert plan.out_location == Location.of(out)
        assert plan.out == as_path(out) == Path(tmp_path / "o")
        assert plan.work == plan.out / "_work"
        assert plan.out_location.needs_fsync and plan.out_location.keeps_temporaries
        # as every engine ships it: packed once, opened on a worker
        shell, packed = parcel.split(_Stage(plan))
        opened = parcel.join(shell, packed.key, lambda: packed).plan
        assert opened.out_location == plan.out_location and opened.out == plan.out
        again, _ = build_run_plan(_cfg(out, str(data)))  # the same run planned again
        assert pickle.dumps(again) == pickle.dumps(plan)
    assert plan.config["output"]["dir"] == out  # what config.yaml records: as written


def test_the_run_plan_of_a_store_output(tmp_path, object_store):
    from pipelines.run_plan import build_run_plan

    data = tmp_path / "a.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    plan, _ = build_run_plan(_cfg(object_store.url("out/"), str(data)))
    assert plan.out_location == Location.of(object_store.url("out/"))
    assert plan.out == UrlPath(object_store.url("out"))
    assert plan.out_location.uploads_whole and not plan.out_location.keeps_temporaries


@pytest.mark.parametrize("out, given", [("file://{in}/out", "file://{in}"),
                                        ("file://{in}/out", "{in}"),
                                        ("{in}/out", "file://{in}"),
                                        ("file://localhost{in}/out", "file://{in}/*")])
def test_a_file_url_output_inside_its_inputs_is_refused(tmp_path, out, given):
    # before: the refusal took realpath of "file:///..." (a relative path below the current
    # directory), so a file:// spelling on either side let the run write into its own input
    from pipelines.run_plan import build_run_plan

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    out, given = (s.replace("{in}", str(data)) for s in (out, given))
    with pytest.raises(ConfigError, match=r"is inside input\.paths\[0\]"):
        build_run_plan(_cfg(out, given))


def test_a_file_url_output_beside_its_inputs_is_accepted(tmp_path):
    from pipelines.run_plan import build_run_plan

    data = tmp_path / "in"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    plan, _ = build_run_plan(_cfg(f"file://{tmp_path}/out", f"file://{data}"))
    assert plan.inputs["sources"] == 1


def test_open_shard_reads_a_file_url(tmp_path):
    # before: pa.memory_map("file:///...") failed (FileNotFoundError)
    from pipelines.infra.shard_format import SCHEMA, open_shard, write_shard

    table = pa.table({"input_ids": [[1, 2]], "doc_lens": [[2]], "doc_ids": [[7]],
                      "chunk_index": [[0]]}, schema=SCHEMA)
    write_shard(table, tmp_path / "shard-00000.arrow", compression="none")
    for path in (f"file://{tmp_path}/shard-00000.arrow", tmp_path / "shard-00000.arrow",
                 Location.of(tmp_path / "shard-00000.arrow")):
        assert open_shard(path).equals(table)
