"""The corpus and helpers of the tests of big files cut into pieces (``pipelines/steps/cut.py``):
``test_pl_split_files.py`` (plan, reading, local runs) and ``test_pl_split_engines.py`` (Ray,
Beam). Four files, each larger than ``SPLIT_BYTES``, with bad records inside later pieces: plain
JSON lines, a one-frame and a multi-frame ``.jsonl.zst``, a Parquet file of 10 row groups.

The reference is the local run with ``input.unit_bytes`` just above the largest file: each file
is one unit there, as a file at most that size always was.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import pipelines
from tests.pipelines.conftest import english_records

SPLIT_BYTES = 64 * 1024  # every file is 3-4 pieces (the least a piece may be)
COMPARED = ("rejects.jsonl", "stats.json")


def _jsonl(recs, bad: dict) -> bytes:
    lines = [json.dumps({"text": r["text"]}) for r in recs]
    for i, line in bad.items():
        lines[i] = line
    return ("\n".join(lines) + "\n").encode()


def build_corpus(root: Path) -> list[str]:
    recs = english_records()
    plain = _jsonl(recs[:100], {70: '{"text": broken'})
    (root / "a.jsonl").write_bytes(plain)
    one = _jsonl(recs, {151: '{"text": broken', 181: '{"text": ""}'})
    (root / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(one))
    many = _jsonl(recs[::-1], {160: "[1, 2]"})
    c = zstandard.ZstdCompressor()  # frames of 16,000 bytes: they start mid-line
    (root / "c.jsonl.zst").write_bytes(b"".join(c.compress(many[i : i + 16_000])
                                                for i in range(0, len(many), 16_000)))
    texts = [r["text"] for r in recs[:120]]
    texts[100] = None
    pq.write_table(pa.table({"text": texts}), root / "d.parquet", row_group_size=12)
    return [str(root / n) for n in ("a.jsonl", "b.jsonl.zst", "c.jsonl.zst", "d.parquet")]


def job(paths, out: Path, unit_bytes: int, **sections) -> dict:
    cfg = {"input": {"paths": paths, "unit_bytes": unit_bytes},
           "tokenizer": {"batch_bytes": 20_000}, "pack": {"seq_len": 256},
           "output": {"dir": str(out), "rows_per_shard": 100, "report": False,
                      "keep_work": True}}
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(out).iterdir())
            if p.name.startswith("shard-") or p.name in COMPARED}


def manifest(out: Path) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text())


def assert_same_as_unsplit(out: Path, want: Path) -> None:
    got, ref = outputs(out), outputs(want)
    assert sorted(got) == sorted(ref) and len(ref) > 3
    for name in ref:
        assert got[name] == ref[name], f"{name} differs from the unsplit run's"
    g, w = manifest(out), manifest(want)
    assert g["totals"] == w["totals"]  # the guard's sample included
    assert g["shards"] == w["shards"]
    assert g["inputs"]["units"] > w["inputs"]["units"] == 4


def workers(out: Path) -> Counter:
    """Input bytes tokenized per worker, from the unit markers."""
    done = Counter()
    for path in sorted((Path(out) / "_work").glob("unit-*.done.json")):
        m = json.loads(path.read_text())
        done[(m["worker"]["host"], m["worker"]["pid"])] += m["bytes"]
    return done


def assert_about_half_each(out: Path, least: float = 0.25) -> None:
    done = workers(out)
    assert len(done) == 2, f"one worker tokenized everything: {done}"
    share = min(done.values()) / sum(done.values())
    assert share >= least, f"one worker tokenized {1 - share:.0%} of the input: {done}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    (root / "in").mkdir()
    paths = build_corpus(root / "in")
    sizes = [os.path.getsize(p) for p in paths]
    assert 2 * min(sizes) > max(sizes)  # one unit per file in the reference
    return root, paths, max(sizes)


@pytest.fixture(scope="module")
def reference(corpus):
    root, paths, biggest = corpus
    out = root / "unsplit"
    assert pipelines.run(job(paths, out, biggest))["status"] == "complete"
    return out
