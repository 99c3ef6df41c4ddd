"""Duplicate document ids are never merged: the first document of an id (in input order) is kept,
each later one is a reject naming its file and line and where the id was first seen (or the run
stops with that line under ``input.on_error=fail``), and the manifest's totals stay exact: the
shards are those of the input without the later copies, byte for byte."""
from __future__ import annotations

import json

import numpy as np
import pytest

import pipelines
from pipelines.infra.errors import InputError
from pipelines.steps.verify import verify_dir
from tests.pipelines.conftest import base_overrides, english_records, file_bytes, write_jsonl

SAME = ("timings.json", "config.yaml", "manifest.json", "rejects.jsonl", "stats.json")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """a.jsonl and b.jsonl whose ids repeat within a file and across them; ``dedup/`` holds the
    same files without the later copies."""
    root = tmp_path_factory.mktemp("dups")
    (root / "dedup").mkdir()
    texts = [r["text"] for r in english_records(36)]
    ids = [0, 1, 2, 1, 3, 4, 0, 5, 6, 7, 8, 9, 7, 10, 11, 12, 13, 14,  # a.jsonl
           2, 15, 16, 17, 15, 18, 19, 20, 0, 21, 22, 23, 24, 25, 26, 27, 28, 3]  # b.jsonl
    recs = [{"text": t, "id": i} for t, i in zip(texts, ids)]
    files = {"a.jsonl": recs[:18], "b.jsonl": recs[18:]}
    seen, expected, firsts = {}, [], []
    for name, rs in files.items():
        write_jsonl(root / name, rs)
        for line, r in enumerate(rs, 1):
            if r["id"] in seen:
                expected.append((name, line, r["id"], seen[r["id"]]))
            else:
                seen[r["id"]] = f"{name}:line {line}"
        write_jsonl(root / "dedup" / name,
                    [r for line, r in enumerate(rs, 1)
                     if (name, line) not in {(e[0], e[1]) for e in expected}])
    return root, expected


def _run(out, paths: str, **extra):
    return pipelines.run(None, base_overrides(out, paths, **{"input.id_field": "id",
                                                             "output.rows_per_shard": 6,
                                                             **extra}))


@pytest.mark.parametrize("layout", [{}, {"input.unit_bytes": 20_000,
                                         "pack.partition_chunks": 25}])
def test_later_copies_of_an_id_are_named_rejects_and_left_out(tmp_path, corpus, layout):
    root, expected = corpus
    result = _run(tmp_path / "o", f"{root}/*.jsonl", **layout)
    clean = _run(tmp_path / "clean", f"{root}/dedup/*.jsonl", **layout)
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").open()]
    assert [(r["file"].rsplit("/", 1)[1], r["line"]) for r in rejects] == \
        [(name, line) for name, line, _, _ in expected]
    for r, (name, line, doc_id, first) in zip(rejects, expected):
        assert r["reason"] == (f"duplicate id {doc_id} (input.id_field 'id'), first seen at "
                               f"{root}/{first}: left out")
    t, c = result["manifest"]["totals"], clean["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"],
            t["documents_duplicate"]) == (36, 36 - len(expected), len(expected), len(expected))
    assert t["tokens_out"] == c["tokens_out"] == c["tokens_in"]
    assert t["tokens_dropped"] == t["tokens_in"] - c["tokens_in"] > 0
    assert all(result["manifest"]["checks"].values())
    for key in ("documents_accepted", "chunks", "sequences", "lower_bound", "overhead"):
        assert t[key] == c[key], key
    # the kept documents are the first copies: the shards are the deduplicated input's
    assert file_bytes(tmp_path / "o", SAME) == file_bytes(tmp_path / "clean", SAME)
    assert json.loads((tmp_path / "o" / "stats.json").read_text()) == \
        json.loads((tmp_path / "clean" / "stats.json").read_text())
    assert verify_dir(tmp_path / "o")[0] == []


def test_under_on_error_fail_the_first_duplicate_stops_the_run(tmp_path, corpus):
    root, expected = corpus
    with pytest.raises(InputError) as raised:
        _run(tmp_path / "o", f"{root}/*.jsonl", **{"input.on_error": "fail"})
    name, line, doc_id, first = expected[0]
    assert str(raised.value) == (f"{root}/{name}:line {line}: duplicate id {doc_id} "
                                 f"(input.id_field 'id'), first seen at {root}/{first}")
    assert not (tmp_path / "o" / "manifest.json").exists()


def test_verify_checks_the_dropped_tokens(tmp_path, corpus):
    from pipelines.infra.manifest import manifest_seal

    root, _ = corpus
    _run(tmp_path / "o", f"{root}/*.jsonl")
    path = tmp_path / "o" / "manifest.json"
    m = json.loads(path.read_text())
    m["totals"]["tokens_dropped"] += 1
    m["seal"] = manifest_seal(m)  # resealed: the totals must add up by themselves
    path.write_text(json.dumps(m))
    assert any("tokens_dropped" in p for p in verify_dir(tmp_path / "o")[0])


def _brute(ids: np.ndarray, units: np.ndarray) -> list:
    first, out = {}, []
    for k, (i, u) in enumerate(zip(ids.tolist(), units.tolist())):
        if i in first:
            out.append((u, k, i, *first[i]))
        else:
            first[i] = (u, k)
    return out


@pytest.mark.parametrize("held", [1 << 21, 7])
def test_the_finder_matches_a_dictionary_in_memory_and_in_buckets(monkeypatch, held):
    """``held`` 7: the ids go to bucket files on scratch after every few documents."""
    from pipelines.duplicates import DuplicateFinder

    monkeypatch.setattr(DuplicateFinder, "HELD", held)
    rng = np.random.default_rng(3)
    ids = np.concatenate([rng.integers(0, 400, 300), rng.integers(0, 2**63 - 1, 200),
                          [2**63 - 1, 2**63 - 1, 0]]).astype(np.int64)
    units = np.repeat(np.arange(5), [100, 100, 150, 150, 3])
    finder = DuplicateFinder()
    for u in range(5):  # each unit in blocks: the document numbers run on within a unit
        pick = np.flatnonzero(units == u)
        for a in range(0, pick.size, 40):
            block = pick[a : a + 40]
            finder.add(u, a, ids[block])
    found = finder.found()
    assert finder.dir is None  # the scratch files are gone
    start = np.searchsorted(units, np.arange(5))
    want = _brute(ids, units)
    got = [(int(f["unit"]), int(start[f["unit"]] + f["pos"]), int(f["id"]), int(f["first_unit"]),
            int(start[f["first_unit"]] + f["first_pos"])) for f in found]
    assert got == want and len(want) > 50


def test_without_duplicates_nothing_is_recorded(tmp_path, corpus):
    root, _ = corpus
    result = _run(tmp_path / "o", f"{root}/dedup/*.jsonl", **{"output.keep_work": "true"})
    t = result["manifest"]["totals"]
    assert (t["documents_duplicate"], t["tokens_dropped"]) == (0, 0)
    assert (tmp_path / "o" / "rejects.jsonl").read_text() == ""
    work = tmp_path / "o" / "_work"
    assert json.loads((work / "partitions.json").read_text())["duplicates"] == {
        "documents": 0, "tokens": 0}
    assert not (work / "duplicates.npy").exists() and not (work / "duplicates.jsonl").exists()
