"""Exact rules of ``pipelines.infra.storage`` that the runs on stores pass through without looking:
``file://`` URLs, joining keys, ``@`` in a key, a missing bucket, dot-names in globs, a prefix
that is no file, symbolic links to regular files and a FIFO swapped in before the open. Stores
are fsspec's ``memory://`` (the same code path as any fsspec scheme); each test fails on one
plausible one-line slip (``benchmarks/mutation_check.py`` names them)."""
from __future__ import annotations

import os

import pytest

from pipelines.infra.atomic import write_bytes
from pipelines.infra.storage import listing, reading
from pipelines.infra.storage.errors import translate
from pipelines.infra.storage.paths import UrlPath
from pipelines.infra.storage.reading import NotRegularFile, open_input
from pipelines.infra.storage.redact import inline_credentials
from pipelines.infra.storage.urls import is_url, join, local_path


def test_file_urls_are_local_paths_unquoted():
    assert not is_url("file:///data/a.jsonl") and is_url("s3://b/a.jsonl")
    assert local_path("file:///data/my%20corpus/a%2Bb.jsonl") == "/data/my corpus/a+b.jsonl"
    assert local_path("file://localhost/data/a.jsonl") == "/data/a.jsonl"


def test_joining_under_a_prefix_written_with_a_trailing_slash():
    assert join("s3://b/out/", "_work", "x") == "s3://b/out/_work/x"
    assert join("s3://b/out", "/_work/", "x") == "s3://b/out/_work/x"


def test_an_at_sign_in_a_key_is_no_credentials():
    assert inline_credentials("s3://bucket/mail/user@example.com.jsonl") == ""
    assert inline_credentials("s3://KEY:SECRET@bucket/a.jsonl") == "s3"


def test_a_missing_bucket_is_not_called_a_missing_object():
    error = translate(FileNotFoundError("The specified bucket does not exist"), "s3://nope/k")
    assert error.kind == "missing bucket" and "bucket 'nope' does not exist" in str(error)
    error = translate(FileNotFoundError("no such key"), "s3://b/k")
    assert error.kind == "missing" and str(error) == "s3://b/k: no such object"


def test_a_store_glob_skips_dot_names_unless_the_pattern_has_one():
    for name in ("x.jsonl", ".hidden.jsonl"):
        write_bytes(f"memory://bite-glob/dir/{name}", b"{}\n")
    found = [u.rsplit("/", 1)[-1] for u in listing.glob("memory://bite-glob/dir/*.jsonl")]
    assert found == ["x.jsonl"]
    found = [u.rsplit("/", 1)[-1] for u in listing.glob("memory://bite-glob/dir/.*.jsonl")]
    assert found == [".hidden.jsonl"]


def test_a_prefix_is_a_directory_not_a_file():
    write_bytes("memory://bite-prefix/out/_work/run.json", b"{}")
    prefix = UrlPath("memory://bite-prefix/out/_work")
    assert prefix.is_dir() and not prefix.is_file()
    assert (prefix / "run.json").is_file() and not (prefix / "run.json").is_dir()


def test_a_symbolic_link_to_a_regular_file_is_read(tmp_path):
    (tmp_path / "real.jsonl").write_text('{"text": "a"}\n')
    os.symlink(tmp_path / "real.jsonl", tmp_path / "link.jsonl")
    assert listing.not_regular(str(tmp_path / "link.jsonl")) == ""
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", tmp_path / "to-fifo")
    assert listing.not_regular(str(tmp_path / "to-fifo")) == "a symbolic link to a FIFO"
    with open_input(str(tmp_path / "link.jsonl"), regular=True) as f:
        assert f.read() == b'{"text": "a"}\n'


def test_a_fifo_swapped_in_after_the_stat_is_refused_by_the_open(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "f.jsonl")
    # the stat that precedes the open saw a regular file (the swap happens right after it)
    monkeypatch.setattr(reading, "not_regular", lambda path, st=None: "")
    with pytest.raises(NotRegularFile, match="not a regular file: a FIFO"):
        open_input(str(tmp_path / "f.jsonl"), regular=True)
