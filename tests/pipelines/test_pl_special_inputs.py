"""Inputs are regular files: a FIFO, a device, a socket (or a link to one) never hangs a run or
fills its memory. Named in input.paths it is refused before any work; met in a tree or a glob it
is a named reject. A files-format document is read one byte past input.max_document_bytes at
most, whatever its size says.

The timeouts turn a regression into a failure, not a hang: before these rules, opening a FIFO
blocked forever and /dev/zero was read until the kernel killed the process."""
import json
import os
import socket

import pytest

import pipelines
from pipelines.infra.errors import ConfigError, InputError
from tests.pipelines.conftest import base_overrides

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")]


def _run(out, *paths, policy="skip", **extra):
    return pipelines.run(None, base_overrides(out, *map(str, paths),
                                              **{"input.on_error": policy, **extra}))


def _rejects(out):
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


@pytest.fixture
def fifo(tmp_path):
    """A FIFO that no one writes. Afterwards a reader that a regression left blocked on it is
    released (opening the write end wakes it; it then reads end-of-file)."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    yield path
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: no reader is waiting, as it should be
        pass


def _plan(tmp_path, *paths, **extra):
    from pipelines.config import load_run_config
    from pipelines.steps.plan import plan_units

    return plan_units(load_run_config(None, base_overrides(tmp_path / "o", *map(str, paths),
                                                           **extra)).input)


@pytest.mark.parametrize("fmt", ["auto", "jsonl", "files", "parquet"])
def test_a_device_named_in_input_paths_is_refused_when_planning(tmp_path, fmt):
    link = tmp_path / "zeros.jsonl"
    os.symlink("/dev/zero", link)
    for path, kind in (("/dev/zero", "a character device"), ("/dev/null", "a character device"),
                       (link, "a symbolic link to a character device")):
        with pytest.raises(ConfigError) as err:
            _plan(tmp_path, path, **{"input.format": fmt})
        assert str(err.value) == (f"input.paths[0] {str(path)!r}: not a regular file ({kind}): "
                                  "give files, directories or globs")


def test_dev_zero_as_input_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="not a regular file"):
        _run(out, "/dev/zero", **{"input.format": "jsonl"})
    assert not out.exists()


def test_a_fifo_named_in_input_paths_is_refused_before_any_work(tmp_path, fifo):
    good = tmp_path / "a.jsonl"
    good.write_text(json.dumps({"text": "hello"}) + "\n")
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"input\.paths\[1\] '.*pipe': not a regular file "
                                          r"\(a FIFO\)"):
        _run(out, good, fifo)
    assert not out.exists()


def test_special_files_in_a_tree_are_named_rejects(tmp_path, fifo):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "good.py").write_text("print('hello')\n")
    os.mkfifo(tree / "a_fifo.py")
    os.symlink("/dev/zero", tree / "b_zero.c")
    os.symlink(fifo, tree / "c_link.py")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tree / "d.sock"))
        result = _run(tmp_path / "o", tree)
        t = result["manifest"]["totals"]
        assert (t["documents_read"], t["documents_accepted"], t["documents_rejected"]) == (5, 1, 4)
        assert {os.path.basename(r["file"]): r["reason"] for r in _rejects(tmp_path / "o")} == {
            "a_fifo.py": "not a regular file: a FIFO",
            "b_zero.c": "not a regular file: a symbolic link to a character device",
            "c_link.py": "not a regular file: a symbolic link to a FIFO",
            "d.sock": "not a regular file: a socket",
        }
        with pytest.raises(InputError) as err:
            _run(tmp_path / "f", tree, policy="fail")
        assert str(err.value) == f"{tree / 'a_fifo.py'}: not a regular file: a FIFO"
    finally:
        sock.close()


def test_a_fifo_matched_by_a_glob_is_a_reject(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    os.mkfifo(data / "b.jsonl")
    result = _run(tmp_path / "o", data / "*.jsonl")
    assert result["manifest"]["totals"]["documents_accepted"] == 1
    assert _rejects(tmp_path / "o") == [{"file": str(data / "b.jsonl"),
                                          "reason": "not a regular file: a FIFO"}]


def test_a_file_swapped_for_a_fifo_after_planning_is_a_reject(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.config import load_run_config
    from pipelines.steps.plan import plan_units
    from pipelines.steps.read import Reader

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("a = 1\n")
    (tree / "b.jsonl").write_text(json.dumps({"text": "hello"}) + "\n")
    pq.write_table(pa.table({"text": ["hello"]}), tree / "c.parquet")
    names = ("a.py", "b.jsonl", "c.parquet")
    cfg = load_run_config(None, base_overrides(tmp_path / "o", str(tree / "*")))
    units = plan_units(cfg.input)
    for name in names:  # planned as regular files, FIFOs by the time they are read
        (tree / name).unlink()
        os.mkfifo(tree / name)
    rejects = [r for unit in units for b in Reader(cfg.input)(unit) for r in b.rejects]
    assert rejects == [{"file": str(tree / n), "reason": "not a regular file: a FIFO"}
                       for n in names]


@pytest.mark.skipif(not os.path.isfile("/proc/self/maps"), reason="needs Linux's /proc")
def test_a_files_document_is_read_one_byte_past_the_limit_at_most(tmp_path):
    """/proc files are regular files whose size says 0: a size that lies. The reading itself
    stops at max_document_bytes + 1 bytes."""
    from pipelines.config import load_run_config
    from pipelines.steps.plan import Source
    from pipelines.steps.read_files import records

    assert os.stat("/proc/self/maps").st_size == 0 and len(open("/proc/self/maps").read()) > 65
    cfg = load_run_config(None, base_overrides(tmp_path / "o", "/proc/self/maps", **{
        "input.max_document_bytes": 64})).input
    (rec,) = records(Source("/proc/self/maps", "maps", "files", 0), cfg)
    assert rec.text is None and rec.nbytes == 65
    assert rec.reason == "document of more than 64 bytes exceeds input.max_document_bytes"
    big = tmp_path / "big.py"  # a size that says it is too big: rejected without being opened
    big.write_text("x = 1\n" * 20)
    big.chmod(0)  # opening would fail (except as root): the reason shows it was never opened
    (rec,) = records(Source(str(big), "big", "files", 120), cfg)
    assert rec.reason == "document of 120 bytes exceeds input.max_document_bytes"
