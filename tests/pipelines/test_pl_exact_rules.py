"""Exact rules of the pipeline steps, each pinned by an input that tells a single-point mutation
apart: the spill's and shards' write order and fsyncs, the gather's runs, resume's sha256 check,
JSONL line limits, gzip members and the last line, max_documents, "no tokens" rejects, verify's
checks. (Where only the order or presence of a system call tells a mutant apart, the test wraps
the real call and lets it through.)"""
import gzip
import json
import os
from contextlib import ExitStack

import numpy as np
import pyarrow as pa
import pytest

import pipelines
from pipelines.steps import spill
from pipelines.steps.gather import SpillStore
from pipelines.steps.read_jsonl import lines
from tests.pipelines.conftest import base_overrides, english_records, file_bytes, write_jsonl

TEXTS = [r["text"] for r in english_records(30)]


def _run(out, *paths, **extra):
    return pipelines.run(None, base_overrides(out, *map(str, paths), **{
        "output.rows_per_shard": 8, **extra}))


@pytest.fixture()
def corpus(tmp_path):
    return write_jsonl(tmp_path / "en.jsonl", [{"text": t} for t in TEXTS])


class _Calls:
    """Wraps os.replace and os.fsync: records (call, name) and calls the real function."""

    def __init__(self, monkeypatch):
        self.log = []
        real_replace, real_fsync = os.replace, os.fsync

        def replace(src, dst, *a, **k):
            self.log.append(("replace", os.path.basename(os.fspath(dst))))
            return real_replace(src, dst, *a, **k)

        def fsync(fd):
            self.log.append(("fsync", os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))))
            return real_fsync(fd)

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)

    def index(self, call, name):
        return self.log.index((call, name))


# --- spill ------------------------------------------------------------------------------------

@pytest.mark.parametrize("id_bound, suffix, dtype", [(1 << 31, "tokens", np.int32),
                                                     (50257, "tokens16", np.uint16)])
def test_unit_marker_is_published_after_its_tokens_and_docs(tmp_path, monkeypatch, id_bound,
                                                            suffix, dtype):
    calls = _Calls(monkeypatch)
    s = spill.UnitSpill(tmp_path, 3)
    batch = type("B", (), {"tokens": np.arange(10, dtype=np.int32), "doc_ids": np.array([1, 2]),
                           "lengths": np.array([4, 6]), "rejects": [], "records": 2, "bytes": 9,
                           "guard_docs": 0, "special_docs": 0, "id_bound": id_bound})()
    s.add(batch)
    marker = s.finish()
    assert marker["tokens"] == 10 and marker["accepted"] == 2
    done = calls.index("replace", "unit-00003.done.json")
    assert calls.index("replace", f"unit-00003.{suffix}") < done
    assert calls.index("replace", "unit-00003.docs.npy") < done
    for name in (f".unit-00003.{suffix}", ".unit-00003.docs.npy", ".unit-00003.done.json"):
        synced = [i for i, (c, n) in enumerate(calls.log) if c == "fsync" and n.startswith(
            name + ".tmp")]  # the temporary is synced before it is renamed
        assert synced and synced[0] < calls.index("replace", name.lstrip(".")), name
    assert np.fromfile(tmp_path / f"unit-00003.{suffix}", dtype).tolist() == list(range(10))
    assert SpillStore(tmp_path, 4).gather(np.array([3]), np.array([2]),
                                                np.array([5])).tolist() == [2, 3, 4, 5, 6]


@pytest.mark.parametrize("direct", [0, 10**9])  # segments read in place, and through staging
def test_gather_never_merges_reads_across_units(tmp_path, direct):
    (tmp_path / "unit-00000.tokens").write_bytes(np.arange(0, 10, dtype=np.int32).tobytes())
    (tmp_path / "unit-00001.tokens").write_bytes(np.arange(100, 110, dtype=np.int32).tobytes())
    store = SpillStore(tmp_path, 2)
    # unit 0's segment ends at offset 5, where unit 1's segment starts: not one run
    got = store.gather(np.array([0, 1]), np.array([3, 5]), np.array([2, 2]),
                       direct_min_tokens=direct)
    assert got.tolist() == [3, 4, 105, 106]
    got = store.gather(np.array([1, 0, 0]), np.array([5, 5, 3]), np.array([2, 2, 2]),
                       direct_min_tokens=direct)
    assert got.tolist() == [105, 106, 5, 6, 3, 4]


# --- shards -----------------------------------------------------------------------------------

def test_shards_and_manifest_are_fsynced_then_renamed(tmp_path, corpus, monkeypatch):
    calls = _Calls(monkeypatch)
    result = _run(tmp_path / "o", corpus)
    for entry in result["manifest"]["shards"]:
        tmp = [n for c, n in calls.log if c == "fsync" and n.startswith(f".{entry['file']}.tmp")]
        assert tmp, f"{entry['file']}: no fsync of its temporary file"
        assert calls.index("fsync", tmp[0]) < calls.index("replace", entry["file"])
    assert ("fsync", "manifest.json") not in calls.log  # the temporary is synced, then renamed
    synced = [n for c, n in calls.log if c == "fsync" and n.startswith(".manifest.json.tmp")]
    assert synced and calls.index("fsync", synced[0]) < calls.index("replace", "manifest.json")


def test_resume_rewrites_a_shard_whose_sha256_differs_from_its_marker(tmp_path, corpus):
    out = tmp_path / "o"
    _run(out, corpus, **{"output.keep_work": "true"})
    before = file_bytes(out)
    data = bytearray(before["shard-00001.arrow"])
    data[len(data) // 2] ^= 0xFF  # same size and rows: only the hash tells
    (out / "shard-00001.arrow").write_bytes(bytes(data))
    (out / "manifest.json").unlink()  # an unfinished run: markers decide what is rewritten
    assert _run(out, corpus, **{"output.keep_work": "true"})["status"] == "complete"
    assert file_bytes(out) == before


# --- JSONL ------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunks", [[b"abc\nabcd\nab\n"], [b"ab", b"c\nab", b"cd", b"\nab\n"],
                                    [b"a", b"b", b"c", b"\n", b"abc", b"d\n", b"ab\n"]])
def test_line_size_limit_is_inclusive(chunks):
    got = list(lines(iter(chunks), 3))
    assert got == [(1, b"abc", 3), (2, None, 4), (3, b"ab", 2)]


def test_last_line_without_newline_is_kept():
    assert list(lines(iter([b"a\nbc"]), 10)) == [(1, b"a", 1), (2, b"bc", 2)]
    assert list(lines(iter([b"a\n", b"bcdef"]), 3)) == [(1, b"a", 1), (2, None, 5)]


def test_every_gzip_member_is_read(tmp_path):
    recs = [{"text": t} for t in TEXTS[:9]]
    raw = [b"".join(json.dumps(r).encode() + b"\n" for r in recs[i : i + 3])
           for i in (0, 3, 6)]
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in raw))
    result = _run(tmp_path / "o", path)
    assert result["manifest"]["totals"]["documents_accepted"] == 9
    big = [os.urandom(300_000).hex().encode() for _ in range(3)]  # members over several pieces
    path.write_bytes(b"".join(gzip.compress(json.dumps({"text": b.decode()}).encode() + b"\n",
                                            mtime=0) for b in big))
    from pipelines.steps.read_jsonl import _chunks

    with open(path, "rb") as f:
        text = b"".join(_chunks(f))
    assert [json.loads(line)["text"].encode() for line in text.splitlines()] == big


# --- read and tokenize ------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 3, 29])
def test_max_documents_is_exact(tmp_path, corpus, n):
    result = _run(tmp_path / "o", corpus, **{"input.max_documents": n})
    t = result["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"]) == (n, n)


def test_documents_without_tokens_are_recorded_rejects(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "<|endoftext|>": 2},
                                     unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # whitespace makes no token
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    path = tmp_path / "w.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["hello", "   ", "hello x"]))
    result = _run(tmp_path / "o", path, **{"tokenizer.path": str(tmp_path / "tokenizer.json"),
                                           "tokenizer.add_eos": "false"})
    t = result["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"]) == (3, 2, 1)
    (rej,) = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").open()]
    assert rej["reason"] == "no tokens"


# --- verify -----------------------------------------------------------------------------------

def _table(ids, lens, doc_ids, chunks):
    from pipelines.infra.shard_format import SCHEMA

    return pa.Table.from_pydict({"input_ids": ids, "doc_lens": lens, "doc_ids": doc_ids,
                                 "chunk_index": chunks}, schema=SCHEMA)


def test_verify_checks_every_row_after_the_length_check():
    from pipelines.steps.verify import check_table

    ok = _table([[1, 2, 3], [4]], [[2, 1], [1]], [[7, 8], [9]], [[0, 0], [0]])
    assert check_table(ok, 4, "s") == ([], 4)
    assert check_table(ok, 3, "s") == ([], 4)  # a row of exactly seq_len tokens is valid
    sums = _table([[1, 2, 3], [4]], [[2, 2], [1]], [[7, 8], [9]], [[0, 0], [0]])
    assert check_table(sums, 4, "s")[0] == ["s: row 0: sum(doc_lens) = 4 != len(input_ids) = 3"]
    ids = _table([[1, 2, 3], [4]], [[2, 1], [1]], [[7], [9]], [[0, 0], [0]])
    assert check_table(ids, 4, "s")[0] == ["s: doc_ids and doc_lens disagree in length"]
    empty = _table([[1, 2, 3], [4]], [[3, 0], [1]], [[7, 8], [9]], [[0, 0], [0]])
    assert check_table(empty, 4, "s")[0] == ["s: a row or document segment is empty"]
    long = _table([[1, 2, 3], [4]], [[2, 1], [1]], [[7, 8], [9]], [[0, 0], [0]])
    assert check_table(long, 2, "s")[0] == ["s: row 0 has 3 tokens > seq_len 2"]


def test_verify_compares_tokens_in_with_tokens_out(tmp_path, corpus):
    from pipelines.infra.manifest import manifest_seal
    from pipelines.steps.verify import verify_dir

    out = tmp_path / "o"
    _run(out, corpus)
    m = json.loads((out / "manifest.json").read_text())
    m["totals"]["tokens_in"] += 1
    m["seal"] = manifest_seal(m)
    (out / "manifest.json").write_text(json.dumps(m))
    (problem,) = verify_dir(out)[0]
    assert "tokens_in" in problem


def test_document_of_exactly_max_bytes_is_accepted(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "at.py").write_text("é" * 50)  # 100 bytes, 50 characters
    (tree / "over.py").write_text("é" * 50 + "x")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "é" * 50}) + "\n" + json.dumps({"text": "é" * 51}) + "\n")
    for src in (tree, path):
        out = tmp_path / f"o-{src.name}"
        _run(out, src, **{"input.max_document_bytes": 100})
        rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
        assert len(rejects) == 1 and "exceeds" in rejects[0]["reason"], src


def test_unit_boundaries_at_exactly_unit_bytes():
    from pipelines.steps.plan import Source, group_units

    srcs = [Source(f"f{i}", f"f{i}", "files", n) for i, n in enumerate([40, 60, 50, 50, 101])]
    units = group_units(srcs, 100)
    assert [[s.path for s in u.sources] for u in units] == [["f0", "f1"], ["f2", "f3"], ["f4"]]


def test_finalize_refuses_an_output_that_lost_a_shard(tmp_path, corpus):
    from pipelines.config import load_run_config
    from pipelines import driver
    from pipelines.finish import finalize_stats
    from pipelines.partitions import run_totals
    from pipelines.row_plan import unit_markers
    from pipelines.infra.errors import FatalError

    out = tmp_path / "o"
    args = base_overrides(out, str(corpus), **{"output.rows_per_shard": 8,
                                                "output.keep_work": "true"})
    pipelines.run(None, args)
    (out / "manifest.json").unlink()  # unfinished again, every marker kept
    with ExitStack() as lock:
        plan, _, finished = driver.prepare(load_run_config(None, args), lock)
        assert finished is None
        stats, n_rows, n_shards = run_totals(plan)
        shards = driver.shard_entries(plan, n_shards)
        assert n_shards > 1
        with pytest.raises(FatalError, match="conservation broken"):
            finalize_stats(plan, stats, n_rows, unit_markers(plan), shards[:-1], {})
        assert not (out / "manifest.json").exists()


def test_an_input_that_changed_size_is_another_input(tmp_path, corpus):
    from pipelines.infra.errors import ConfigError

    _run(tmp_path / "o", corpus)
    with open(corpus, "a") as f:
        f.write(json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(ConfigError, match="finished run with another input"):
        _run(tmp_path / "o", corpus)


def test_rejects_stream_from_the_unit_markers_in_unit_order(tmp_path):
    """rejects.jsonl lists every unit's rejects in unit order, while the markers the driver
    keeps carry counts only (its memory is O(units), not O(rejected documents))."""
    from pipelines import driver
    from pipelines.config import load_run_config
    from pipelines.row_plan import unit_markers

    paths = []
    for k in range(3):  # three units, each with good lines and rejects
        p = tmp_path / f"part-{k}.jsonl"
        p.write_text("".join(f'{{"text": "doc {k} {i}"}}\n' if i % 3 else "not json\n"
                             for i in range(30)), encoding="utf-8")
        paths.append(str(p))
    out = tmp_path / "o"
    args = base_overrides(out, *paths, **{"input.unit_bytes": 1, "output.keep_work": "true"})
    m = pipelines.run(None, args)["manifest"]
    assert m["inputs"]["units"] == 3 and m["totals"]["documents_rejected"] == 30
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["file"], r["line"]) for r in rejects] == [
        (p, i + 1) for p in paths for i in range(30) if i % 3 == 0]
    (out / "manifest.json").unlink()
    with ExitStack() as lock:
        plan, _, _ = driver.prepare(load_run_config(None, args), lock)
        markers = unit_markers(plan)
        assert [m["rejected"] for m in markers] == [10, 10, 10]
        assert all("rejects" not in m for m in markers)
