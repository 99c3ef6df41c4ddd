"""Partitioned packing (``pack.partition_chunks``): a corpus above the threshold is packed in
partitions of consecutive units; every token is written once, the output is deterministic, the
same on every engine, resumes after a kill between partitions, and a corpus below the threshold
gives the bytes of a global pack."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipelines
from pipelines.config import PackConfig
from pipelines.infra.errors import ConfigError
from pipelines.partition_layout import choose_partitions
from pipelines.steps.pack import plan_rows
from pipelines.steps.stats import merge_stats, run_stats, stats_piece
from pipelines.steps.verify import verify_dir
from tests.pipelines.conftest import file_bytes, segments_by_doc
from tests.pipelines.test_engines_equivalence import (comparable_manifest, job_config,
                                                      loopback_env, make_corpus, write_config)


def _config(paths, out, partition_chunks, **sections):
    cfg = job_config(paths, out, **sections)
    cfg["input"]["unit_bytes"] = 100_000
    cfg["pack"]["partition_chunks"] = partition_chunks
    return cfg


def _outputs(out: Path) -> dict[str, bytes]:
    """Shards, stats.json and rejects.jsonl: what does not name the config."""
    return {k: v for k, v in file_bytes(out).items()
            if k.startswith("shard-") or k in ("stats.json", "rejects.jsonl")}


def _assert_same_documents(out: Path, glob: Path) -> None:
    """A verified output holding every document of the global run, token for token."""
    assert verify_dir(out)[0] == []
    got, want = segments_by_doc(out), segments_by_doc(glob)
    assert got.keys() == want.keys()
    for doc, tokens in want.items():
        assert np.array_equal(got[doc], tokens), doc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The equivalence tests' corpus, its global run, and a partition size giving several."""
    root = tmp_path_factory.mktemp("partitions")
    paths = make_corpus(root)
    glob = root / "global"
    m = pipelines.run(_config(paths, glob, 0))["manifest"]
    assert m["inputs"]["units"] >= 6
    return root, paths, glob, max(1, m["totals"]["chunks"] // 5)


@pytest.fixture(scope="module")
def partitioned(corpus):
    root, paths, _, size = corpus
    out = root / "parts"
    result = pipelines.run(_config(paths, out, size, output={"keep_work": True}))
    assert result["status"] == "complete"
    return out


def test_several_partitions_hold_every_token_once(corpus, partitioned):
    _, _, glob, size = corpus
    layout = json.loads((partitioned / "_work" / "partitions.json").read_text())
    bounds = layout["chunk_bounds"]
    assert len(bounds) - 1 >= 4
    for p in range(len(bounds) - 1):  # a unit alone above `size` is cut between documents
        assert bounds[p + 1] - bounds[p] <= size
    _assert_same_documents(partitioned, glob)
    m, g = (json.loads((d / "manifest.json").read_text()) for d in (partitioned, glob))
    assert m["totals"]["tokens_out"] == g["totals"]["tokens_in"] == m["totals"]["tokens_in"]
    assert m["totals"]["sequences"] >= g["totals"]["sequences"]  # each partition ends alone
    stats = json.loads((partitioned / "stats.json").read_text())
    gstats = json.loads((glob / "stats.json").read_text())
    for key in ("documents", "tokens", "lower_bound", "concat", "length_histogram",
                "longer_than_seq_len", "documents_truncated"):
        assert stats[key] == gstats[key], key  # merged from the partitions' pieces
    assert stats["rows"] == m["totals"]["sequences"] == sum(stats["fill_histogram"]["counts"])


def test_shards_follow_partitions_and_rerun_is_identical(corpus, partitioned, tmp_path):
    root, paths, _, size = corpus
    rows = [json.loads(p.read_text())["rows"]
            for p in sorted((partitioned / "_work").glob("part-*.done.json"))]
    per_shard = 150
    expected = [min(per_shard, r - a) for r in rows for a in range(0, r, per_shard)]
    m = json.loads((partitioned / "manifest.json").read_text())
    assert [s["rows"] for s in m["shards"]] == expected  # no shard spans two partitions
    again = tmp_path / "again"
    pipelines.run(_config(paths, again, size))
    assert _outputs(again) == _outputs(partitioned)


def test_one_partition_is_the_global_pack(corpus, tmp_path):
    """Below the threshold (the default here) the output is partition_chunks=0's."""
    root, paths, glob, _ = corpus
    out = tmp_path / "default"
    pipelines.run(_config(paths, out, PackConfig().partition_chunks))
    assert _outputs(out) == _outputs(glob)

    def strip(m):
        m["config"]["pack"].pop("partition_chunks")
        return m
    assert strip(comparable_manifest(out)) == strip(comparable_manifest(glob))


def test_kill_between_partitions_resumes_to_the_same_bytes(corpus, partitioned, tmp_path):
    root, paths, _, size = corpus
    out = tmp_path / "killed"
    config = write_config(tmp_path / "job.yaml", _config(paths, out, size))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config), "--quiet"]
    proc = subprocess.run(cmd, env={**os.environ, "FEWTRUNC_CRASH": "partition:1"},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and not (out / "manifest.json").exists()
    assert (out / "_work" / "part-00001.done.json").is_file()
    assert not (out / "_work" / "part-00002.done.json").exists()
    proc = subprocess.run(cmd, env={**os.environ, "FEWTRUNC_CRASH": ""}, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _outputs(out) == _outputs(partitioned)


@pytest.mark.slow
def test_ray_and_beam_write_the_same_partitions(corpus, partitioned):
    root, paths, _, size = corpus
    beam = root / "beam"
    pipelines.run(_config(paths, beam, size, engine="beam", beam={"num_workers": 2}))
    assert _outputs(beam) == _outputs(partitioned)
    ray = root / "ray"
    config = write_config(root / "ray.yaml", _config(paths, ray, size))
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", str(config), "engine=ray",
         "ray.num_cpus=2", "--quiet"],
        env=loopback_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _outputs(ray) == _outputs(partitioned)
    assert comparable_manifest(ray) == comparable_manifest(beam)


def test_one_big_file_is_cut_into_partitions_between_its_documents(tmp_path, monkeypatch):
    """A corpus that is one file (one unit): partitions of at most partition_chunks chunks, cut
    between documents, every document whole and once, token for token the global pack's, the
    same on a rerun and after a kill between partitions."""
    from tests.pipelines.conftest import english_records, write_jsonl

    recs = [{"text": r["text"]} for r in english_records(400)]
    data = write_jsonl(tmp_path / "one.jsonl", recs)

    def cfg(out, chunks):
        c = job_config([str(data)], out, pack={"seq_len": 64, "partition_chunks": chunks})
        c["input"]["unit_bytes"] = 1 << 30
        return c

    glob = tmp_path / "global"
    m = pipelines.run(cfg(glob, 0))["manifest"]
    assert m["inputs"]["units"] == 1
    size = max(2, m["totals"]["chunks"] // 4)
    out = tmp_path / "parts"
    pipelines.run({**cfg(out, size), "output": {**cfg(out, size)["output"], "keep_work": True}})
    layout = json.loads((out / "_work" / "partitions.json").read_text())
    bounds = layout["chunk_bounds"]
    assert len(bounds) - 1 >= 4 and set(layout["unit_bounds"][:-1]) == {0}
    assert layout["doc_bounds"][0] == 0 and sorted(layout["doc_bounds"][:-1]) == \
        layout["doc_bounds"][:-1] and len(set(layout["doc_bounds"][:-1])) == len(bounds) - 1
    assert all(b - a <= size for a, b in zip(bounds, bounds[1:]))
    from pipelines.partition_layout import unit_pieces  # its lengths read in blocks of any size
    whole = unit_pieces(out / "_work", 0, 64, size)
    monkeypatch.setattr("pipelines.partition_layout.BLOCK_DOCS", 7)
    for got, want in zip(unit_pieces(out / "_work", 0, 64, size), whole):
        assert got.tolist() == want.tolist()
    assert whole[0].tolist() == layout["doc_bounds"][:-1]
    _assert_same_documents(out, glob)
    stats, gstats = (json.loads((d / "stats.json").read_text()) for d in (out, glob))
    for key in ("documents", "tokens", "lower_bound", "length_histogram", "documents_truncated"):
        assert stats[key] == gstats[key], key
    killed = tmp_path / "killed"
    config = write_config(tmp_path / "job.yaml", cfg(killed, size))
    cmd = [sys.executable, "-m", "pipelines.cli", "run", str(config), "--quiet"]
    proc = subprocess.run(cmd, env={**os.environ, "FEWTRUNC_CRASH": "partition:2"},
                          capture_output=True, text=True)
    assert proc.returncode != 0 and not (killed / "manifest.json").exists()
    proc = subprocess.run(cmd, env={**os.environ, "FEWTRUNC_CRASH": ""}, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _outputs(killed) == _outputs(out)


def test_the_cut_depends_on_chunk_counts_and_threshold_only():
    counts = np.array([5, 0, 7, 3, 9, 1])
    assert choose_partitions(counts, 0) == ([0, 6], [0, 25])
    assert choose_partitions(counts, 25) == ([0, 6], [0, 25])  # fits: global
    units, chunks = choose_partitions(counts, 12)
    assert units == [0, 3, 5, 6] and chunks == [0, 12, 24, 25]
    with pytest.raises(ConfigError, match="partition_chunks"):
        PackConfig(partition_chunks=-1)


@pytest.mark.parametrize("algorithm", ["bfd", "concat"])
def test_stats_pieces_merge_to_the_whole_corpus_stats(algorithm):
    """Length histograms and the concatenation baseline do not depend on the grouping."""
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 5000, 700)
    cfg = PackConfig(seq_len=256, algorithm=algorithm)
    whole = run_stats(lengths, plan_rows(lengths, cfg), cfg)
    cuts = [0, 100, 101, 450, 700]
    pieces = [stats_piece(lengths[a:b], plan_rows(lengths[a:b], cfg), cfg, int(lengths[:a].sum()))
              for a, b in zip(cuts, cuts[1:])]
    merged = merge_stats(pieces, cfg)
    for key in ("documents", "tokens", "lower_bound", "concat", "length_histogram",
                "longer_than_seq_len", "seq_len", "algorithm"):
        assert merged[key] == whole[key], key
    for key in ("edges", "documents", "truncated_concat"):
        assert merged["truncation_by_length"][key] == whole["truncation_by_length"][key], key
    if algorithm == "bfd":  # a document is cut when longer than seq_len, whatever the grouping
        assert merged["truncation_by_length"] == whole["truncation_by_length"]
        assert merged["documents_truncated"] == whole["documents_truncated"]
    assert merged["rows"] == sum(p["rows"] for p in pieces) >= whole["rows"]


def test_partition_stages_pickle_without_live_objects(corpus, tmp_path):
    """What Ray and Beam ship to their workers: each stage is its frozen plan."""
    import pickle

    from pipelines.partitions import stages
    from pipelines.run_plan import build_run_plan
    from pipelines.config import load_run_config

    root, paths, _, size = corpus
    plan, _ = build_run_plan(load_run_config(_config(paths, tmp_path / "o", size)))
    for stage in stages(plan):
        again = pickle.loads(pickle.dumps(stage))
        assert again == stage and again.plan.fingerprint == plan.fingerprint
