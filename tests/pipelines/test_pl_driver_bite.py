"""The run's bookkeeping, where a one-line slip would go unnoticed by the end-to-end tests (the
output stays right, or the damage needs a second run, a block boundary or a kill to show): what
a resumed run redoes, the partition layout's counts and offsets, which duplicates a block keeps,
what the end of a run removes and in which order, and a write that fails. Each test fails on one
plausible one-line slip (``benchmarks/mutation_check.py`` names them)."""
from __future__ import annotations

import json
from contextlib import ExitStack

import numpy as np
import pytest

import pipelines
from pipelines import driver, partition_layout
from pipelines.infra.atomic import atomic_path, write_json
from pipelines.config import load_run_config
from pipelines.duplicates import keep_mask
from pipelines.partition_layout import unit_pieces
from pipelines.steps import spill
from pipelines.infra.storage import deleting
from pipelines.work_dir import has_record, remove_work
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl


@pytest.fixture(scope="module")
def three_units(tmp_path_factory):
    """Three input files of different sizes, one unit each."""
    d = tmp_path_factory.mktemp("three")
    recs = english_records(30)
    return [str(write_jsonl(d / f"in-{k}.jsonl", recs[:n])) for k, n in enumerate((4, 12, 8))]


def test_a_resumed_run_redoes_only_the_units_without_a_marker(tmp_path, three_units):
    out = tmp_path / "o"
    args = base_overrides(out, *three_units, **{"input.unit_bytes": 1, "output.keep_work": "true"})
    pipelines.run(None, args)
    (out / "manifest.json").unlink()  # unfinished again, every unit marked done
    with ExitStack() as lock:
        plan, _, finished = driver.prepare(load_run_config(None, args), lock)
        assert finished is None and len(plan.units) == 3
        assert driver.pending_units(plan) == []
        for u in (0, 2):
            spill.unit_path(plan.work, u, "done.json").unlink()
        # the largest first (unit 2's file is larger than unit 0's)
        assert [u.index for u in driver.pending_units(plan)] == [2, 0]


def test_an_unfinished_run_resumed_with_another_output_setting_rewrites_its_shards(
        tmp_path, three_units):
    out = tmp_path / "o"
    pipelines.run(None, base_overrides(out, *three_units, **{"output.rows_per_shard": 8,
                                                             "output.keep_work": "true"}))
    (out / "manifest.json").unlink()  # unfinished; its shards and markers are zstd-compressed
    other = {"output.rows_per_shard": 8, "output.compression": "none"}
    pipelines.run(None, base_overrides(out, *three_units, **other))
    pipelines.run(None, base_overrides(tmp_path / "fresh", *three_units, **other))
    shards = sorted(p.name for p in out.glob("shard-*.arrow"))
    assert len(shards) > 1
    assert shards == sorted(p.name for p in (tmp_path / "fresh").glob("shard-*.arrow"))
    for name in shards:
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name


def test_the_end_of_a_run_keeps_a_users_empty_folder_in_work(tmp_path):
    work = tmp_path / "_work"
    (work / "part-00000" / "plan").mkdir(parents=True)
    (work / "part-00000" / "plan" / "rows.seg_len.npy").write_bytes(b"x")
    (work / "mine").mkdir()  # empty, and not a run's
    write_json(work / "run.json", {"run_fingerprint": "f"})
    assert remove_work(work) == []
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == ["mine"]


def test_a_write_that_fails_leaves_no_temporary(tmp_path):
    (tmp_path / "f.json").write_text("old")
    with pytest.raises(OSError, match="no space"):
        with atomic_path(tmp_path / "f.json", sync=True) as tmp:
            tmp.write_text("half of it")
            raise OSError("no space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
    assert (tmp_path / "f.json").read_text() == "old"


def test_an_unfinished_run_resumed_with_another_partition_size_lays_out_anew(
        tmp_path, three_units):
    out = tmp_path / "o"
    pipelines.run(None, base_overrides(out, *three_units, **{"pack.partition_chunks": 0,
                                                             "output.keep_work": "true"}))
    (out / "manifest.json").unlink()  # unfinished, its partitions.json that of one partition
    other = {"pack.partition_chunks": 6, "output.keep_work": "true"}
    pipelines.run(None, base_overrides(out, *three_units, **other))
    pipelines.run(None, base_overrides(tmp_path / "fresh", *three_units, **other))
    layout = json.loads((out / "_work" / "partitions.json").read_text())
    assert len(layout["chunk_bounds"]) > 2
    assert layout == json.loads((tmp_path / "fresh" / "_work" / "partitions.json").read_text())


def _unit(work, lengths) -> None:
    """A tokenized unit 0 in ``work`` with documents of these lengths (ids 100, 101, ...)."""
    s = spill.UnitSpill(work, 0)
    lengths = np.asarray(lengths, np.int64)
    s.add(type("B", (), {"tokens": np.zeros(int(lengths.sum()), np.int32),
                         "doc_ids": 100 + np.arange(lengths.size), "lengths": lengths,
                         "rejects": [], "records": int(lengths.size), "bytes": 0,
                         "guard_docs": 0, "special_docs": 0, "id_bound": 1 << 31})())
    s.finish()


def test_a_units_pieces_count_chunks_of_each_document_rounded_up(tmp_path):
    lengths = [3, 4, 5, 9, 1, 8, 2, 4, 4, 7]  # chunks of 4: 1, 1, 2, 3, 1, 2, 1, 1, 1, 2
    _unit(tmp_path, lengths)
    starts, chunks, tokens, at = unit_pieces(tmp_path, 0, 4, 5)
    assert starts.tolist() == [0, 3, 5, 9]  # runs of at most 5 chunks, never a document cut
    assert chunks.tolist() == [4, 4, 5, 2] and tokens.tolist() == [12, 10, 18, 7]
    assert at.tolist() == [0, 12, 22, 40]


def test_a_units_pieces_after_left_out_documents_start_where_their_file_says(tmp_path,
                                                                             monkeypatch):
    lengths = [3, 4, 5, 9, 1, 8, 2, 4, 4, 7]
    _unit(tmp_path, lengths)
    drop = np.array([1, 6])  # duplicates: no chunks, no tokens, but in the file
    whole = unit_pieces(tmp_path, 0, 4, 5, drop=drop)
    monkeypatch.setattr(partition_layout, "BLOCK_DOCS", 3)  # the same, read 3 documents a time
    for got, want in zip(unit_pieces(tmp_path, 0, 4, 5, drop=drop), whole):
        assert got.tolist() == want.tolist()
    starts, _, _, at = whole
    assert at.tolist() == [int(np.sum(lengths[:s])) for s in starts.tolist()]


def test_a_duplicate_just_past_a_block_is_not_the_blocks():
    assert keep_mask(np.array([2, 5]), 0, 5).tolist() == [True, True, False, True, True]
    assert keep_mask(np.array([5, 9]), 5, 4).tolist() == [False, True, True, True]
    assert keep_mask(np.array([4, 9]), 5, 4) is None


def test_a_run_killed_while_removing_its_work_keeps_the_record_of_what_is_left(
        tmp_path, three_units, monkeypatch):
    out = tmp_path / "o"
    args = base_overrides(out, *three_units, **{"output.keep_work": "true"})
    pipelines.run(None, args)
    (out / "manifest.json").unlink()
    removed, real = [], deleting.remove_objects

    def killed_on_the_second_call(urls):
        if removed:
            raise KeyboardInterrupt("killed")
        removed.append(list(urls))
        real(urls)

    monkeypatch.setattr(deleting, "remove_objects", killed_on_the_second_call)
    with pytest.raises(KeyboardInterrupt):
        pipelines.run(None, base_overrides(out, *three_units))
    assert has_record(out / "_work")  # so the next run knows the rest is its own
    monkeypatch.setattr(deleting, "remove_objects", real)
    assert pipelines.run(None, base_overrides(out, *three_units))["status"] == "already complete"
