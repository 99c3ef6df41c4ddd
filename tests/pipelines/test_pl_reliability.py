"""Inputs and outputs an adversarial user would try: none crashes a run, a damaged output never
passes as complete, and every error is one clear line."""
import json
import os
import subprocess
import sys

import pytest

import pipelines
from pipelines.errors import InputError
from tests.pipelines.conftest import base_overrides, english_records

GOOD = [r["text"] for r in english_records(5)]


def _run(out, *paths, policy="skip", **extra):
    return pipelines.run(None, base_overrides(out, *map(str, paths),
                                              **{"input.on_error": policy, **extra}))


def _rejects(out):
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


# --- inputs -----------------------------------------------------------------------------------

def test_lone_surrogate_is_a_named_reject_not_a_crash(tmp_path):
    path = tmp_path / "s.jsonl"
    lines = [json.dumps({"text": GOOD[0]}), '{"text": "x \\ud800 y"}',
             '{"text": "pair \\ud83d\\ude00 ok"}', json.dumps({"text": GOOD[1]})]
    path.write_text("\n".join(lines) + "\n")
    result = _run(tmp_path / "o", path)
    t = result["manifest"]["totals"]
    assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"]) == (4, 3, 1)
    (rej,) = _rejects(tmp_path / "o")
    assert rej["line"] == 2 and rej["reason"].startswith("lone surrogate U+D800 at character 2")
    with pytest.raises(InputError, match=r"s\.jsonl:line 2: lone surrogate"):
        _run(tmp_path / "f", path, policy="fail")


def test_file_name_that_is_not_utf8(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.c").write_text("int a;\n")
    with open(os.path.join(os.fsencode(tree), b"\xff.c"), "w") as f:  # name: the byte 0xff
        f.write("int x;\n")
    (tree / "bad.c").write_bytes(b"caf\xe9\n")  # a reject whose record names a file
    with open(os.path.join(os.fsencode(tree), b"\xfe.c"), "wb") as f:
        f.write(b"")  # an empty file with a non-UTF-8 name: its reject names it
    result = _run(tmp_path / "o", tree)
    assert result["manifest"]["totals"]["documents_accepted"] == 2
    rejects = _rejects(tmp_path / "o")
    names = sorted(os.fsencode(r["file"]) for r in rejects)
    assert names == sorted([os.fsencode(tree / "bad.c"), os.fsencode(tree) + b"/\xfe.c"])
    again = _run(tmp_path / "o", tree)  # the inputs digest is stable for such names
    assert again["status"] == "already complete"


def _deep_tree(root, depth=20):
    """A directory below root whose path is longer than PATH_MAX: listing it fails with
    ENAMETOOLONG, for root too (which reads any directory whatever its mode)."""
    fd = os.open(root, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d" * 250, dir_fd=fd)
            nfd = os.open("d" * 250, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("lost.c", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(leaf, b"int lost;\n")
        os.close(leaf)
    finally:
        os.close(fd)


def test_directory_that_cannot_be_listed_is_a_reject_or_the_error(tmp_path):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.c").write_text("int a;\n")
    _deep_tree(tree)
    result = _run(tmp_path / "o", tree)
    t = result["manifest"]["totals"]
    assert (t["documents_accepted"], t["documents_rejected"]) == (1, 1)
    (rej,) = _rejects(tmp_path / "o")
    assert rej["reason"].startswith("cannot list directory: File name too long")
    with pytest.raises(InputError, match="cannot list directory"):
        _run(tmp_path / "f", tree, policy="fail")


@pytest.mark.skipif(os.geteuid() == 0, reason="root lists directories whatever their mode")
def test_directory_without_permission(tmp_path):
    tree = tmp_path / "t"
    (tree / "locked").mkdir(parents=True)
    (tree / "a.c").write_text("int a;\n")
    (tree / "locked" / "b.c").write_text("int b;\n")
    (tree / "locked").chmod(0)
    try:
        _run(tmp_path / "o", tree)
        (rej,) = _rejects(tmp_path / "o")
        assert rej["file"] == str(tree / "locked") and "Permission denied" in rej["reason"]
        with pytest.raises(InputError, match="cannot list directory"):
            _run(tmp_path / "f", tree, policy="fail")
    finally:
        (tree / "locked").chmod(0o755)


def _gz_damaged_after(tmp_path, n_lines, good_lines, name):
    """A gzip file of n_lines records, flushed after good_lines and damaged just after that."""
    import zlib

    lines = [json.dumps({"text": f"record {i}: " + GOOD[i % 5][:200]}).encode() + b"\n"
             for i in range(n_lines)]
    c = zlib.compressobj(6, zlib.DEFLATED, 31)
    head = c.compress(b"".join(lines[:good_lines])) + c.flush(zlib.Z_FULL_FLUSH)
    data = bytearray(head + c.compress(b"".join(lines[good_lines:])) + c.flush())
    for i in range(len(head) + 40, len(head) + 48):
        data[i] ^= 0xFF
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("n_lines, good", [(20_000, 16_000), (400, 300)])
def test_gz_damaged_mid_file_keeps_every_record_before_the_damage(tmp_path, n_lines, good):
    from pipelines.config import load_run_config
    from pipelines.steps.read import Reader
    from pipelines.steps.plan import plan_units

    path = _gz_damaged_after(tmp_path, n_lines, good, "d.jsonl.gz")
    cfg = load_run_config(None, base_overrides(tmp_path / "o", str(path)))
    (unit,) = plan_units(cfg.input)
    batches = list(Reader(cfg.input)(unit))
    texts = [t for b in batches for t in b.texts]
    rejects = [r for b in batches for r in b.rejects]
    assert texts[:good] == [f"record {i}: " + GOOD[i % 5][:200] for i in range(good)]
    broken = [r for r in rejects if "corrupt" in r["reason"] or "truncated" in r["reason"]]
    assert len(broken) == 1 and broken[0]["line"] > good
    assert broken[0]["line"] == len(texts) + len(rejects)  # the line where it broke, not line 1
    with pytest.raises(InputError, match=rf"d\.jsonl\.gz:line {broken[0]['line']}:"):
        list(Reader(load_run_config(None, base_overrides(
            tmp_path / "o", str(path), **{"input.on_error": "fail"})).input)(unit))
