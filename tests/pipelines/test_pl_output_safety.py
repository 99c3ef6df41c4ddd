"""Never delete what fewtrunc did not write: a ``_work/`` without fewtrunc's run record is a
user's folder (the run refuses the directory, touching nothing), and the end of a run removes
only the ``_work/`` entries a run writes, leaving anything else there with one line saying so.
Locally and on S3/GCS (real protocol servers on 127.0.0.1)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipelines
from pipelines.infra import atomic, storage
from pipelines.infra.errors import OutputError
from tests.pipelines.conftest import base_overrides, english_records, write_jsonl
from tests.pipelines.object_stores import gcs_server, object_store, s3_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return write_jsonl(d / "en.jsonl", [{"text": r["text"]} for r in english_records(24)])


def _run(out, small, **extra):
    return pipelines.run(None, base_overrides(out, str(small), **{"output.rows_per_shard": 8,
                                                                  **extra}))


def _tree(root) -> dict:
    """Every file and directory below ``root`` with its bytes (files) and mtime (both): a
    refused run must change none of them, not even by creating and removing a lock file."""
    found = {".": os.stat(root).st_mtime_ns}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            found[rel] = (os.stat(path).st_mtime_ns,
                          open(path, "rb").read() if os.path.isfile(path) else None)
    return found


def test_the_issue_command_refuses_a_folder_named_work_and_keeps_it(tmp_path):
    """``mkdir -p D/_work; echo precious > D/_work/important.txt; fewtrunc run
    configs/demo.yaml output.dir=D``: refused in one line, before any work; D unchanged."""
    d = tmp_path / "D"
    (d / "_work").mkdir(parents=True)
    (d / "_work" / "important.txt").write_text("precious\n")
    before = _tree(d)
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(DEMO),
                           f"output.dir={d}", "--quiet"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "holds no fewtrunc run" in lines[0] and "_work/ has no fewtrunc run record" in lines[0]
    assert _tree(d) == before  # important.txt kept, no lock file made and removed


def test_a_work_folder_without_the_run_record_is_foreign(tmp_path, small):
    out = tmp_path / "o"
    (out / "_work" / "sub").mkdir(parents=True)
    (out / "_work" / "sub" / "notes.txt").write_text("mine")
    (out / "_work" / "run.json").write_text('{"not": "a fewtrunc record"}')  # no fingerprint
    before = _tree(out)
    with pytest.raises(OutputError, match="_work/ has no fewtrunc run record"):
        _run(out, small)
    assert _tree(out) == before
    empty = tmp_path / "e"  # an empty _work/ (a run killed as it began) holds nothing to lose
    (empty / "_work").mkdir(parents=True)
    assert _run(empty, small)["status"] == "complete"
    assert not (empty / "_work").exists()
    begun = tmp_path / "b"  # nor one killed while writing its record
    (begun / "_work").mkdir(parents=True)
    (begun / "_work" / ".run.json.tmp-123-0123abcd").write_text('{"run_fing')
    assert _run(begun, small)["status"] == "complete"
    assert not (begun / "_work").exists()


def test_the_end_of_a_run_removes_only_what_the_run_wrote(tmp_path, small, caplog):
    out = tmp_path / "o"
    _run(out, small, **{"output.keep_work": "true"})
    work = out / "_work"
    ours = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert "run.json" in ours and any(n.startswith("part-00000/plan/") for n in ours)
    (work / "notes.txt").write_text("mine")
    (work / "part-00000" / "plan" / "extra.bin").write_text("also mine")
    (work / "unit-1.tokens").write_text("a name close to a run's, but not one")
    (out / "manifest.json").unlink()  # unfinished again: resumed, finalized, _work removed
    with caplog.at_level(logging.WARNING):
        assert _run(out, small)["status"] == "complete"
    left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file())
    assert left == ["notes.txt", "part-00000/plan/extra.bin", "unit-1.tokens"]
    said = [r.getMessage() for r in caplog.records if "did not write" in r.getMessage()]
    assert len(said) == 1 and "left 3 files" in said[0] and "notes.txt" in said[0]
    # the finished run is recognized; its _work/ is neither its own nor removed
    caplog.clear()
    assert _run(out, small)["status"] == "already complete"
    assert sorted(str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()) == left


def test_rerunning_a_finished_keep_work_run_keeps_its_work_for_repairs(tmp_path, small):
    out = tmp_path / "o"
    _run(out, small, **{"output.keep_work": "true"})
    work = sorted(p.relative_to(out) for p in (out / "_work").rglob("*"))
    assert _run(out, small, **{"output.keep_work": "true"})["status"] == "already complete"
    assert sorted(p.relative_to(out) for p in (out / "_work").rglob("*")) == work
    shard = (out / "shard-00001.arrow").read_bytes()
    (out / "shard-00001.arrow").unlink()  # a later repair needs the kept work files
    assert _run(out, small, **{"output.keep_work": "true"})["status"] == "complete"
    assert (out / "shard-00001.arrow").read_bytes() == shard
    assert sorted(p.relative_to(out) for p in (out / "_work").rglob("*")) == work


def test_make_and_remove_dirs_undo_only_what_they_created(tmp_path):
    """A refused run leaves no new empty output directory: ``prepare`` removes the directories
    it created (deepest first), only while they are empty."""
    from pipelines.driver import _make_dirs, _remove_dirs

    (tmp_path / "a").mkdir()
    created = _make_dirs(tmp_path / "a" / "b" / "c")
    assert created == [str(tmp_path / "a" / "b" / "c"), str(tmp_path / "a" / "b")]
    _remove_dirs(created)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a"]
    created = _make_dirs(tmp_path / "a" / "b" / "c")
    (tmp_path / "a" / "b" / "kept.txt").write_text("x")
    _remove_dirs(created)
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["kept.txt"]
    assert _make_dirs("s3://bucket/out") == []


def test_a_run_that_fails_before_its_first_file_leaves_no_new_directory(tmp_path, small):
    """An output.dir path so long that its lock file's path is over PATH_MAX: the directories
    are made, the lock cannot be, and the run leaves none of the directories it made."""
    limit = os.pathconf(str(tmp_path), "PC_PATH_MAX")
    out, part = tmp_path / "new", "d" * 200
    while len(str(out / part)) < limit - 8:  # out itself can be made; out/.fewtrunc.lock not
        out = out / part
    out = out / ("x" * (limit - 8 - len(str(out)) - 1))
    assert len(str(out)) < limit <= len(str(out / ".fewtrunc.lock"))
    with pytest.raises(OSError, match="too long"):
        _run(out, small)
    assert sorted(os.listdir(tmp_path)) == []


def test_on_a_store_the_end_of_a_run_keeps_strangers(object_store, small, caplog):
    """(A ``_work/`` without the run record on a store is refused: test_pl_store_hygiene.)"""
    run = object_store.url("r")
    _run(run, small, **{"output.keep_work": "true"})
    atomic.write_bytes(f"{run}/_work/notes.txt", b"mine")
    storage.remove(f"{run}/manifest.json")
    with caplog.at_level(logging.WARNING):
        assert _run(run, small)["status"] == "complete"
    assert [k for k, _ in storage.list_files(f"{run}/_work")] == [f"{run}/_work/notes.txt"]
    assert any("left 1 file " in r.getMessage() for r in caplog.records)
    assert json.loads(storage.read_bytes(f"{run}/manifest.json"))["totals"]["sequences"] > 0
