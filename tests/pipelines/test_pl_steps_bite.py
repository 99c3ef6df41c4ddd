"""Exact rules of the steps that the end-to-end runs pass through without looking: each test here
fails on one plausible one-line slip (``benchmarks/mutation_check.py`` names them)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pipelines
from pipelines.config import InputConfig, PackConfig
from pipelines.infra.errors import OutputError
from pipelines.steps import spill
from pipelines.steps.pack import concat_plan
from pipelines.steps.plan import Source, format_of, resolve_sources
from pipelines.steps.read import Record, doc_id_of, stable_id
from pipelines.steps.stats import stats_piece
from pipelines.steps.tokenize import with_bos_eos
from pipelines.infra.manifest import load_manifest, manifest_seal
from pipelines.steps.verify import verify_dir
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl


@pytest.mark.parametrize("name, fmt", [
    ("a.jsonl", "jsonl"), ("a.jsonl.gz", "jsonl"), ("a.JSON.zst", "jsonl"),
    ("a.ndjson.zstd", "jsonl"), ("a.parquet", "parquet"), ("a.py.gz", "files"), ("a.py", "files"),
])
def test_a_compressed_suffix_is_looked_through(name, fmt):
    assert format_of(name, "auto") == fmt


def test_exclude_globs_match_the_path_below_the_tree_root(tmp_path):
    for rel in ("a/keep.py", "b/skip.py", "b/c/deeper.py", "top.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    cfg = InputConfig(paths=(str(tmp_path),), exclude=("b/*.py",))
    keys = [s.key[len(str(tmp_path)) + 1:] for s in resolve_sources(cfg)]
    # fnmatch's * crosses "/": b/c/deeper.py is excluded too; a bare "skip.py" name is not a path
    assert keys == ["top.py", "a/keep.py"]


def test_max_documents_takes_exactly_that_many_files_of_a_tree(tmp_path):
    for k in range(4):
        (tmp_path / f"f{k}.py").write_text(f"x = {k}\n")
    srcs = resolve_sources(InputConfig(paths=(str(tmp_path),), max_documents=2))
    assert [s.path.rsplit("/", 1)[-1] for s in srcs] == ["f0.py", "f1.py"]


def test_boolean_id_field_values_are_hashed_not_taken_as_0_and_1():
    cfg, src = InputConfig(id_field="id"), Source("f", "f", "jsonl", 0)
    assert doc_id_of(src, Record(1, "t", True, 1), cfg) == stable_id("id", True) != 1
    assert doc_id_of(src, Record(2, "t", False, 1), cfg) == stable_id("id", False) != 0
    assert doc_id_of(src, Record(3, "t", 7, 1), cfg) == 7


@pytest.mark.parametrize("bound, dtype", [(50257, np.uint16), (1 << 16, np.uint16),
                                          ((1 << 16) + 1, np.int32), (1 << 17, np.int32)])
def test_spilled_ids_are_16_bits_only_when_every_id_fits(bound, dtype):
    assert spill.spill_dtype(bound) == np.dtype(dtype)


def test_bos_and_eos_both_frame_every_document():
    tokens, lengths = with_bos_eos(np.array([5, 6, 7]), np.array([2, 0, 1]), 1, 2, np.uint16)
    assert tokens.tolist() == [1, 5, 6, 2, 1, 2, 1, 7, 2] and tokens.dtype == np.uint16
    assert lengths.tolist() == [4, 2, 3]


def test_a_slice_of_a_units_docs_file_is_those_documents(tmp_path):
    s = spill.UnitSpill(tmp_path, 0)
    lengths = np.array([3, 1, 4, 1, 5, 9, 2], np.int64)
    batch = type("B", (), {"tokens": np.zeros(int(lengths.sum()), np.int32),
                           "doc_ids": np.arange(100, 107), "lengths": lengths, "rejects": [],
                           "records": 7, "bytes": 0, "guard_docs": 0, "special_docs": 0,
                           "id_bound": 1 << 31})()
    s.add(batch)
    s.finish()
    ids, got = spill.load_docs(tmp_path, 0, 2, 5)
    assert ids.tolist() == [102, 103, 104] and got.tolist() == [4, 1, 5]
    ids, got = spill.load_docs(tmp_path, 0, 5, 99, ids=False)
    assert ids is None and got.tolist() == [9, 2]


def test_concat_never_puts_two_documents_in_one_segment():
    lengths = np.array([3, 5, 4, 1, 7], np.int64)
    plan = concat_plan(lengths, 4)
    assert int(plan.seg_len.sum()) == int(lengths.sum())
    assert ((plan.seg_offset + plan.seg_len) <= lengths[plan.seg_doc]).all()
    assert (plan.row_tokens() <= 4).all()


def test_the_concat_baseline_cuts_a_document_only_across_a_multiple_of_seq_len():
    cfg = PackConfig(seq_len=4)
    # documents at tokens 0-3 and 4-7 end on a multiple: not cut; 8-10 and 11-13 spans 12: cut
    lengths = np.array([4, 4, 3, 3], np.int64)
    piece = stats_piece(lengths, concat_plan(lengths, 4), cfg)
    assert piece["truncated_concat"] == 1


def test_input_bytes_count_every_line_with_its_newline(tmp_path):
    path = write_jsonl(tmp_path / "en.jsonl", [{"text": r["text"]} for r in english_records(9)])
    with open(path, "ab") as f:
        f.write(b"\n")  # an empty line is read too: a reject of one byte
    m = pipelines.run(None, base_overrides(tmp_path / "o", str(path)))["manifest"]
    assert m["totals"]["input_bytes"] == path.stat().st_size


@pytest.mark.parametrize("name", ["sub/stats.json", "..\\stats.json", ".hidden"])
def test_a_manifest_file_entry_outside_the_run_directory_is_refused(tmp_path, name):
    manifest = {"run_fingerprint": "f", "config": {}, "shards": [], "totals": {},
                "files": {name: {"bytes": 1, "sha256": "0" * 64}}}
    manifest["seal"] = manifest_seal(manifest)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match="is not a file name inside the run directory"):
        load_manifest(tmp_path)


def test_verify_counts_the_documents_that_start_in_the_shards(tmp_path):
    path = write_jsonl(tmp_path / "en.jsonl", [{"text": r["text"]} for r in english_records(9)])
    out = tmp_path / "o"
    pipelines.run(None, base_overrides(out, str(path)))
    m = json.loads((out / "manifest.json").read_text())
    t = m["totals"]  # one document fewer, read and accepted: the sums still add up
    t["documents_accepted"] -= 1
    t["documents_read"] -= 1
    m["seal"] = manifest_seal(m)
    (out / "manifest.json").write_text(json.dumps(m))
    assert verify_dir(out)[0] == ["9 documents start in the shards (chunk 0), manifest "
                                  "documents_accepted 8"]
