"""Big files cut into several tokenize units (``pipelines/steps/cut.py``), on the local engine:
where each format is cut, a piece read alone or after the one before, one-frame files with and
without their size and with damage, pieces on S3 and GCS, and whole runs, partitioned, killed
and resumed: the output is the unsplit run's byte for byte (shards, stats.json, rejects.jsonl
with the same lines and rows). The corpus: ``split_corpus.py``; Ray and Beam:
``test_pl_split_engines.py``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
import zstandard

import pipelines
from pipelines.config import load_run_config
from pipelines.steps.plan import plan_units
from pipelines.steps.read import Reader
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401
from tests.pipelines.split_corpus import (SPLIT_BYTES, assert_same_as_unsplit, corpus,  # noqa: F401
                                          job, manifest, outputs, reference)


@pytest.fixture(scope="module")
def split_local(corpus):
    """The split run on the local engine: one reader goes through each file's pieces in order,
    reading chunks of 4 KiB, so that every piece ends inside the stream, as in a big file."""
    from pipelines.steps import read_jsonl, read_zstd

    root, paths, _ = corpus
    out = root / "local"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(read_jsonl, "CHUNK", 4096)
        mp.setattr(read_zstd, "CHUNK", 4096)
        assert pipelines.run(job(paths, out, SPLIT_BYTES))["status"] == "complete"
    return out


def test_every_format_is_cut_where_its_records_start(corpus):
    _, paths, biggest = corpus
    units = plan_units(load_run_config(job(paths, "unused", SPLIT_BYTES)).input)
    pieces = {}
    for u in units:
        (src,) = u.sources
        assert src.part is not None
        pieces.setdefault(Path(src.path).name, []).append(src.part)
    assert {n: len(p) for n, p in pieces.items()} == {  # of about input.unit_bytes on disk
        Path(p).name: math.ceil(os.path.getsize(p) / SPLIT_BYTES) for p in paths}
    assert min(len(p) for p in pieces.values()) >= 3
    for name, parts in pieces.items():
        assert [p.index for p in parts] == list(range(len(parts)))
        assert all(a.at + a.length == b.at for a, b in zip(parts, parts[1:])) or \
            name == "d.parquet"
    # one frame of a known size: cut at k/K of its content, each reader finds its first line
    assert all(p.counted and p.seek == 0 for p in pieces["b.jsonl.zst"])
    # the planner found the cuts and counted the lines before them: plain from the piece's
    # offset, several frames from the frame that holds the piece's first line
    for name in ("a.jsonl", "c.jsonl.zst"):
        assert not any(p.counted for p in pieces[name])
        assert all(a.first < b.first for a, b in zip(pieces[name], pieces[name][1:]))
    assert all(p.seek == p.at and p.skip == 0 for p in pieces["a.jsonl"])
    assert all(p.seek > 0 and p.skip < 16_000 for p in pieces["c.jsonl.zst"][1:])
    assert [p.seek + p.length for p in pieces["d.parquet"]][-1] == 10  # runs of row groups
    assert all(a.seek + a.length == b.seek for a, b in zip(pieces["d.parquet"],
                                                          pieces["d.parquet"][1:]))
    unsplit = plan_units(load_run_config(job(paths, "unused", biggest)).input)
    assert [u.sources[0].part for u in unsplit] == [None] * 4


def _read(paths, unit_bytes: int) -> tuple[list, list, list]:
    """Every record's document id, line/row and text hash, and every reject, in input order,
    read by one reader."""
    cfg = load_run_config(job(paths, "unused", unit_bytes)).input
    return _read_units(cfg, plan_units(cfg))


def test_a_piece_reads_the_same_alone_or_after_the_piece_before(corpus, monkeypatch):
    """One reader going through a file's pieces in order goes on from where each stopped (the
    file opened, and a one-frame .zst decoded, once); a piece read alone opens its own frame or
    offset and skips to its first line. Both give the unsplit file's records."""
    from pipelines.steps import cut, read_jsonl, read_zstd

    _, paths, biggest = corpus
    monkeypatch.setattr(read_jsonl, "CHUNK", 4096)  # a piece is many chunks, as in a big file
    monkeypatch.setattr(read_zstd, "CHUNK", 4096)
    opened, cut_open = [], cut.open_at

    def counting(path, offset):
        opened.append((Path(path).name, offset))
        return cut_open(path, offset)

    monkeypatch.setattr(cut, "open_at", counting)
    whole = _read(paths[:3], biggest)
    opened.clear()
    assert _read(paths[:3], SPLIT_BYTES) == whole
    assert Counter(name for name, _ in opened) == {"a.jsonl": 1, "b.jsonl.zst": 1,
                                                   "c.jsonl.zst": 1}
    cfg = load_run_config(job(paths[:3], "unused", SPLIT_BYTES)).input
    alone = [_read_units(cfg, [u]) for u in plan_units(cfg)]  # a fresh reader each
    assert tuple(sum(x, []) for x in zip(*alone)) == whole
    assert sorted(opened)[-1][1] > 0  # alone, a later piece opens at its own offset or frame


def _read_units(cfg, units) -> tuple[list, list, list]:
    ids, where, rejects = [], [], []
    reader = Reader(cfg, 20_000)
    for unit in units:
        for batch in reader(unit):
            ids += batch.doc_ids
            where += [(i, hash(t)) for i, t in zip(batch.index, batch.texts)]
            rejects += batch.rejects
    return ids, where, rejects


def test_one_frame_files_read_the_same_with_or_without_size_or_with_damage(corpus, tmp_path):
    """A one-frame .zst whose header has no content size (written as a stream) is cut where the
    planner's pass finds the cuts; one with damage in the middle of a block is cut by its
    readers, and only the piece that holds the damage reports it, at the unsplit file's line."""
    _, paths, _ = corpus
    text = zstandard.ZstdDecompressor().decompress(Path(paths[1]).read_bytes())
    streamed = tmp_path / "streamed.jsonl.zst"
    with open(streamed, "wb") as f, zstandard.ZstdCompressor().stream_writer(f) as w:
        w.write(text)
    damaged = tmp_path / "damaged.jsonl.zst"
    data = bytearray(Path(paths[1]).read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 40):  # in the second of 3 pieces
        data[i] ^= 0x5A
    damaged.write_bytes(bytes(data))
    for path, counted in ((streamed, False), (damaged, True)):
        cfg = load_run_config(job([str(path)], "unused", SPLIT_BYTES)).input
        units = plan_units(cfg)
        assert len(units) == 3 and all(u.sources[0].part.counted == counted for u in units)
        whole = _read([str(path)], 10**9)
        assert _read([str(path)], SPLIT_BYTES) == whole
        assert tuple(sum(x, []) for x in zip(*[_read_units(cfg, [u]) for u in units])) == whole
    assert "corrupt zstd stream" in whole[2][-1]["reason"] and 0 < whole[2][-1]["line"] < 215


def test_pieces_on_a_store_read_the_records_of_the_whole_object(corpus, object_store):
    """On S3 a piece reads its own bytes (ranged requests; a Parquet piece its row groups); on
    GCS a text piece streams from the object's start and skips, and Parquet is not cut."""
    from pipelines.infra import atomic

    _, paths, biggest = corpus
    urls = [object_store.url("in", Path(p).name) for p in paths]
    for path, url in zip(paths, urls):
        atomic.write_bytes(url, Path(path).read_bytes())
    cut = plan_units(load_run_config(job(urls, "unused", SPLIT_BYTES)).input)
    parquet_cut = object_store.server.scheme == "s3"
    pieces = math.ceil(os.path.getsize(paths[3]) / SPLIT_BYTES) if parquet_cut else 1
    assert sum(u.sources[0].path == urls[3] for u in cut) == pieces
    whole = _read(urls, biggest)
    assert _read(urls, SPLIT_BYTES) == whole
    assert len(whole[0]) > 500 and len(whole[2]) == 5


def test_local_split_run_equals_the_unsplit_run(corpus, split_local, reference):
    _, paths, _ = corpus
    out = split_local
    assert_same_as_unsplit(out, reference)
    units = plan_units(load_run_config(job(paths, "unused", SPLIT_BYTES)).input)
    held = [u.sources[0].part.index for u in units  # the piece whose marker holds each reject
            for r in json.loads((out / "_work" / f"unit-{u.index:05d}.done.json").read_text())[
                "rejects"]]
    assert len(held) == 5 and min(held) >= 1  # every bad record is in a later piece
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(Path(r["file"]).name, r.get("line", r.get("row"))) for r in rejects] == [
        ("a.jsonl", 71), ("b.jsonl.zst", 152), ("b.jsonl.zst", 182), ("c.jsonl.zst", 161),
        ("d.parquet", 100)]


def test_partitions_cut_a_split_file_as_the_whole_file(corpus, tmp_path):
    """Above ``pack.partition_chunks`` a file's documents are cut into runs: its pieces are cut
    as one unit, so the partitions (and so rows and shards) are the whole file's."""
    _, paths, biggest = corpus
    want, got = tmp_path / "whole", tmp_path / "cut"
    pipelines.run(job(paths[1:2], want, biggest, pack={"partition_chunks": 150}))
    pipelines.run(job(paths[1:2], got, SPLIT_BYTES, pack={"partition_chunks": 150}))
    layout = json.loads((got / "_work" / "partitions.json").read_text())
    assert len(layout["chunk_bounds"]) > 3 and len(set(layout["unit_bounds"])) > 2
    assert layout["chunk_bounds"] == \
        json.loads((want / "_work" / "partitions.json").read_text())["chunk_bounds"]
    assert outputs(got) == outputs(want)


def test_a_killed_split_run_resumes_to_the_same_bytes(corpus, reference, split_local):
    root, paths, _ = corpus
    out = root / "killed"
    config = root / "killed.yaml"
    cfg = job(paths, out, SPLIT_BYTES)
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    units = plan_units(load_run_config(cfg).input)
    # killed once the second piece of the one-frame .zst is done: the rerun reads its third
    # piece first, from the file's start
    crash = next(u for u in units if u.sources[0].path == paths[1]
                 and u.sources[0].part.index == 1)
    args = [sys.executable, "-m", "pipelines.cli", "run", str(config), "--quiet"]
    env = {**os.environ, "FEWTRUNC_CRASH": f"unit:{crash.index}"}  # SIGKILL once it is done
    killed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = sorted(p.name for p in (out / "_work").glob("unit-*.done.json"))
    assert done == [f"unit-{u:05d}.done.json" for u in range(crash.index + 1)]
    assert pipelines.run(cfg)["status"] == "complete"
    assert_same_as_unsplit(out, reference)
    assert manifest(out)["run_fingerprint"] == manifest(split_local)["run_fingerprint"]
