"""Inputs and outputs an adversarial user would try: none crashes a run, a damaged output never
passes as complete, and every error is one clear line."""
import json
import os
import subprocess
import sys

import pytest

import pipelines
from pipelines.infra.errors import InputError
from tests.pipelines.conftest import base_overrides, english_records

GOOD = [r["text"] for r in english_records(5)]


def _run(out, *paths, policy="skip", **extra):
    return pipelines.run(None, base_overrides(out, *map(str, paths),
                                              **{"input.on_error": policy, **extra}))


def _rejects(out):
    return [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]


def _empty_config(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def _cli_here(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process: (exit code, stdout, stderr)."""
    from pipelines.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def _bypasses_file_modes() -> bool:
    """Root with CAP_DAC_OVERRIDE reads a mode-000 file (run the tests under
    ``setpriv --bounding-set=-dac_override,-dac_read_search ...`` to exercise them as root)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "probe")
        open(path, "w").close()
        os.chmod(path, 0)
        try:
            open(path).close()
        except PermissionError:
            return False
        return True


NO_MODES = pytest.mark.skipif(_bypasses_file_modes(), reason="this process reads any file "
                              "whatever its mode (root with CAP_DAC_OVERRIDE)")


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


@NO_MODES
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


# --- the output directory ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """30 English documents: several shards of a few rows."""
    from tests.pipelines.conftest import write_jsonl

    d = tmp_path_factory.mktemp("small")
    return write_jsonl(d / "en.jsonl", [{"text": r["text"]} for r in english_records(30)])


def _small_run(small, out, **extra):
    return pipelines.run(None, base_overrides(out, str(small), **{"output.rows_per_shard": 8,
                                                                  **extra}))


def test_rerun_over_damaged_shards_refuses_without_work_files(tmp_path, small):
    from pipelines.infra.errors import OutputError
    from tests.pipelines.conftest import file_bytes

    out = tmp_path / "o"
    assert len(_small_run(small, out)["manifest"]["shards"]) >= 3
    before = file_bytes(out)
    flipped = bytearray(before["shard-00002.arrow"])
    flipped[len(flipped) // 2] ^= 0xFF  # same size, other bytes
    (out / "shard-00002.arrow").write_bytes(bytes(flipped))
    assert _small_run(small, out)["status"] == "already complete"  # sizes are all as recorded
    with pytest.raises(OutputError, match=r"shard-00002\.arrow: sha256 differs"):
        pipelines.run(None, base_overrides(out, str(small), **{"output.rows_per_shard": 8}),
                      check="sha256")
    r = _cli("run", _empty_config(tmp_path), "--quiet", "--verify",
             *base_overrides(out, str(small), **{"output.rows_per_shard": 8}))
    assert r.returncode == 2 and "shard-00002.arrow: sha256 differs" in r.stderr
    (out / "shard-00000.arrow").unlink()
    with open(out / "shard-00001.arrow", "r+b") as f:
        f.truncate(100)
    with pytest.raises(OutputError, match=r"damaged: shard-00000\.arrow is missing; "
                       r"shard-00001\.arrow has 100 bytes, the manifest records [\d,]+\..*"
                       r"cannot be repaired"):
        _small_run(small, out)
    (out / "shard-00009.arrow").write_bytes(b"stray")
    r = _cli("run", _empty_config(tmp_path), "--quiet",
             *base_overrides(out, str(small), **{"output.rows_per_shard": 8}))
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith("fewtrunc run: error: output.dir ")
    assert "shard-00009.arrow is not in the manifest" in line


def test_rerun_over_damaged_shards_repairs_from_kept_work_files(tmp_path, small):
    from tests.pipelines.conftest import file_bytes

    out = tmp_path / "o"
    _small_run(small, out, **{"output.keep_work": "true"})
    before = file_bytes(out)
    (out / "shard-00001.arrow").unlink()
    (out / "shard-00002.arrow").write_bytes(b"garbage")
    (out / "shard-00042.arrow").write_bytes(b"stray")
    assert _small_run(small, out, **{"output.keep_work": "true"})["status"] == "complete"
    assert file_bytes(out) == before
    assert _small_run(small, out, **{"output.keep_work": "true"})["status"] == "already complete"


def test_where_the_output_is_written_is_not_part_of_the_fingerprint(tmp_path, small):
    import signal

    (tmp_path / "cwd").mkdir()
    killed = _cli("run", _empty_config(tmp_path), "--quiet",
                  *base_overrides("o", str(small), **{"output.rows_per_shard": 8}),
                  cwd=tmp_path / "cwd", env={**os.environ, "FEWTRUNC_CRASH": "shard:1",
                                             "PYTHONPATH": os.getcwd()})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = tmp_path / "cwd" / "o"
    assert not (out / "manifest.json").exists()
    assert _small_run(small, out)["status"] == "complete"  # resumed through the absolute path
    moved = tmp_path / "moved"
    out.rename(moved)
    assert _small_run(small, moved)["status"] == "already complete"
    from pipelines.infra.errors import ConfigError

    with pytest.raises(ConfigError, match=r"finished run with another config "
                       r"\(pack\.seq_len: 256 -> 512\)"):
        _small_run(small, moved, **{"pack.seq_len": 512})


def test_output_inside_an_input_is_refused_before_any_work(tmp_path, small):
    from pipelines.infra.errors import ConfigError
    from tests.pipelines.conftest import write_jsonl

    data = tmp_path / "data"
    (data / "src").mkdir(parents=True)
    (data / "src" / "a.py").write_text("x = 1\n")
    write_jsonl(data / "a.jsonl", [{"text": GOOD[0]}])
    refused = [(data, data / "out"), (data, data), (data / "src", data / "src" / "deep" / "o"),
               (f"{data}/*.jsonl", data), (f"{data}/**/*.py", data / "out"), (f"{data}/*", data / "o")]
    for inp, out in refused:
        with pytest.raises(ConfigError, match=r"inside input\.paths\[0\]"):
            _run(out, inp)
        assert not (out / "_work").exists()
    # not reachable from the input: accepted
    assert _run(data / "out", f"{data}/*.jsonl")["status"] == "complete"
    assert _run(data / "src" / "out", data / "a.jsonl")["status"] == "complete"


def test_one_run_at_a_time_per_output_dir(tmp_path, small):
    from pipelines.infra.errors import OutputError

    out = tmp_path / "o"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from pipelines.output_lock import lock_output; lock_output(Path(sys.argv[1])); "
         "print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError, match=rf"in use by another fewtrunc run \(pid "
                           rf"{holder.pid} on .*, since .* UTC\); wait for it to end"):
            _small_run(small, out)
        assert not (out / "_work").exists()  # nothing of the holder's was touched
    finally:
        holder.kill()
        holder.wait()
    assert _small_run(small, out)["status"] == "complete"
    assert not (out / ".fewtrunc.lock").exists()  # released and removed when the run ends


def test_corrupt_manifest_is_one_clear_line(tmp_path, small, capsys):
    out = tmp_path / "o"
    _small_run(small, out)
    args = base_overrides(out, str(small), **{"output.rows_per_shard": 8})
    for text, says in [("{not json", "unreadable manifest"),
                       ("{}", "not a fewtrunc manifest ('run_fingerprint' missing"),
                       ('{"run_fingerprint": "x", "config": {}, "shards": [{"file": '
                        '"../../../../etc/hostname", "rows": 1, "tokens": 1, "bytes": 1, '
                        '"sha256": "0"}], "totals": {}}', "'../../../../etc/hostname' is not a "
                        "shard file name inside the run directory")]:
        (out / "manifest.json").write_text(text)
        rc, stdout, stderr = _cli_here(capsys, "run", _empty_config(tmp_path), "--quiet", *args)
        assert rc == 2 and len(stderr.splitlines()) == 1, stderr
        assert stderr.startswith("fewtrunc run: error: ") and says in stderr
        rc, stdout, _ = _cli_here(capsys, "verify", out)
        assert rc == 1 and len(stdout.splitlines()) == 1 and says in stdout, stdout
        rc, _, stderr = _cli_here(capsys, "inspect", out)
        assert rc == 2 and says in stderr and len(stderr.splitlines()) == 1
    r = _cli("verify", out)  # and as a process: one line, no traceback
    assert r.returncode == 1 and r.stdout.startswith("FAIL ") and r.stderr == ""


def test_non_empty_directory_that_is_not_a_run_is_refused(tmp_path, small):
    from pipelines.infra.errors import OutputError

    out = tmp_path / "o"
    out.mkdir()
    (out / "shard-00005.arrow").write_bytes(b"someone else's")
    with pytest.raises(OutputError, match=r"is not empty and holds no fewtrunc run .*"
                       r"shard-00005\.arrow"):
        _small_run(small, out)
    assert sorted(p.name for p in out.iterdir()) == ["shard-00005.arrow"]


# --- write errors: one line naming the path and what to do; the resume stays byte-identical ----

def _limited_cli(tmp_path, out, small, fsize=None):
    import resource
    import signal

    def limit():
        if fsize:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run",
                           str(_empty_config(tmp_path)), "--quiet",
                           *base_overrides(out, str(small), **{"output.rows_per_shard": 8})],
                          capture_output=True, text=True, preexec_fn=limit,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def _one_error_line(r, *says):
    assert r.returncode == 2 and r.stdout == "", r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("fewtrunc run: error: cannot write "), line
    for s in says:
        assert s in line, line


def test_file_too_large_is_one_line_and_the_resume_is_identical(tmp_path, small):
    import shutil

    from tests.pipelines.conftest import file_bytes

    out = tmp_path / "o"
    _small_run(small, out)
    reference = file_bytes(out)
    shutil.rmtree(out)
    _one_error_line(_limited_cli(tmp_path, out, small, fsize=20_000), str(out),
                    "File too large", "ulimit -f")
    assert not (out / "manifest.json").exists()
    assert _small_run(small, out)["status"] == "complete"
    assert file_bytes(out) == reference


def _mount_tmpfs(where, options):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                       capture_output=True)
    if r.returncode:
        pytest.skip("needs a tmpfs mount (root with CAP_SYS_ADMIN)")


def _umount(where):
    subprocess.run(["umount", str(where)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
def test_no_space_left_is_one_line_and_the_resume_is_identical(tmp_path, small):
    from tests.pipelines.conftest import file_bytes

    _small_run(small, tmp_path / "ref")
    reference = {k: v for k, v in file_bytes(tmp_path / "ref").items() if k != "config.yaml"}
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=96k")
    try:
        out = disk / "o"
        _one_error_line(_limited_cli(tmp_path, out, small), str(out),
                        "No space left on device", "free space", "resumes where it stopped")
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        assert _small_run(small, out)["status"] == "complete"
        got = {k: v for k, v in file_bytes(out).items() if k != "config.yaml"}
        assert got.keys() == reference.keys()
        assert {k for k in got if got[k] != reference[k]} <= {"manifest.json"}  # output.dir
    finally:
        _umount(disk)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a read-only tmpfs")
def test_read_only_file_system_is_one_line(tmp_path, small):
    disk = tmp_path / "ro"
    _mount_tmpfs(disk, "ro,size=1m")
    try:
        _one_error_line(_limited_cli(tmp_path, disk / "o", small), str(disk / "o"),
                        "Read-only file system", "writable")
    finally:
        _umount(disk)


@NO_MODES
def test_permission_denied_is_one_line(tmp_path, small):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        _one_error_line(_limited_cli(tmp_path, parent / "o", small), "Permission denied",
                        "permissions")
    finally:
        parent.chmod(0o755)


def _parquet_with_damaged_group(path, groups=10, rows=100, damaged=4):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"row {i}: " + GOOD[i % 5][:100] for i in range(groups * rows)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=rows)
    col = pq.ParquetFile(path).metadata.row_group(damaged).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start, start + 16):  # the page header: the group cannot be decoded
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_parquet_row_group_rejects_only_that_group(tmp_path):
    path = tmp_path / "d.parquet"
    _parquet_with_damaged_group(path)
    result = _run(tmp_path / "o", path)
    t = result["manifest"]["totals"]
    assert (t["documents_accepted"], t["documents_rejected"]) == (900, 1)
    (rej,) = _rejects(tmp_path / "o")
    assert rej["row"] == 400 and rej["reason"].startswith(
        "corrupt Parquet data in row group 4 (rows 400..499 not read)")
    from tests.pipelines.conftest import segments_by_doc

    assert len(segments_by_doc(tmp_path / "o")) == 900
    with pytest.raises(InputError, match=r"d\.parquet:row 400: corrupt Parquet data in row "
                       r"group 4"):
        _run(tmp_path / "f", path, policy="fail")


def test_verify_catches_edits_of_the_manifest_and_of_every_output_file(tmp_path, small):
    from pipelines.infra.manifest import manifest_seal
    from pipelines.steps.verify import verify_dir

    out = tmp_path / "o"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(small.read_text() + '{"text": ""}\n')
    pipelines.run(None, base_overrides(out, str(bad), **{"output.report": "true"}))
    assert verify_dir(out)[0] == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"rejects.jsonl", "stats.json", "config.yaml", "report.html"} <= set(manifest["files"])
    pristine = {p: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def edited(path, change):
        path.write_bytes(change(pristine[path]))
        problems = verify_dir(out)[0]
        path.write_bytes(pristine[path])
        return problems

    def manifest_edit(fn, reseal=False):
        def change(raw):
            m = json.loads(raw)
            fn(m)
            if reseal:
                m["seal"] = manifest_seal(m)
            return json.dumps(m).encode()
        return change

    m = out / "manifest.json"
    seq = edited(m, manifest_edit(lambda m: m["config"]["pack"].update(seq_len=4096)))
    assert seq == ["manifest.json was edited after the run (its seal differs)"]
    # resealed by hand: the totals are still re-derived from the shards and rejects.jsonl
    for key in ("documents_accepted", "documents_rejected", "chunks"):
        problems = edited(m, manifest_edit(lambda m: m["totals"].update({key: 7}), True))
        assert any(key in p for p in problems), (key, problems)
    assert edited(out / "rejects.jsonl", lambda b: b + b"{}\n")[0].startswith(
        "rejects.jsonl: sha256 mismatch")
    assert edited(out / "stats.json", lambda b: b.replace(b"1", b"2", 1)) == [
        "stats.json: sha256 mismatch (the file changed after the run)"]
    assert verify_dir(out)[0] == []


def test_seq_len_beyond_the_packer_is_refused_before_any_work(tmp_path, small):
    from packing import pack
    from packing.validate import MAX_CAPACITY, check_capacity
    from pipelines.infra.errors import ConfigError

    for seq_len in (100_000_000, 3_000_000_000, 10**23):
        with pytest.raises(ConfigError, match=r"pack\.seq_len = [\d,]+ exceeds the packer's"):
            _small_run(small, tmp_path / "o", **{"pack.seq_len": seq_len})
        assert not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="exceeds the packers' limit"):
        pack([1, 2], MAX_CAPACITY + 1)
    assert check_capacity(MAX_CAPACITY) == MAX_CAPACITY


def test_null_text_is_named_null(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "n.jsonl"
    path.write_text('{"text": null}\n{"body": "x"}\n' + json.dumps({"text": GOOD[0]}) + "\n")
    _run(tmp_path / "o", path)
    assert [r["reason"] for r in _rejects(tmp_path / "o")] == [
        "text field 'text' is null", "missing text field 'text'"]
    pq.write_table(pa.table({"text": [GOOD[0], None]}), tmp_path / "n.parquet")
    _run(tmp_path / "p", tmp_path / "n.parquet")
    assert [r["reason"] for r in _rejects(tmp_path / "p")] == ["text field 'text' is null"]


def test_the_same_input_listed_twice_is_refused(tmp_path):
    from pipelines.infra.errors import ConfigError
    from tests.pipelines.conftest import write_jsonl

    (tmp_path / "d").mkdir()
    a = write_jsonl(tmp_path / "d" / "a.jsonl", [{"text": GOOD[0]}])
    write_jsonl(tmp_path / "d" / "b.jsonl", [{"text": GOOD[1]}])
    os.symlink(a, tmp_path / "alias.jsonl")
    for paths in [(a, a), (f"{tmp_path}/d/*.jsonl", a), (a, tmp_path / "alias.jsonl")]:
        with pytest.raises(ConfigError, match=r"input\.paths\[1\] .* which input\.paths\[0\] "
                           r".* already gives: every input must be listed once"):
            _run(tmp_path / "o", *paths)
    assert _run(tmp_path / "o", a, tmp_path / "d" / "b.jsonl")["status"] == "complete"


def test_missing_local_path_with_format_hf_is_an_error(tmp_path, monkeypatch):
    from pipelines.infra.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for missing in (str(tmp_path / "nope"), "./nope", "data/nope", "{assets}/nope"):
        with pytest.raises(ConfigError, match=r"no such file or directory \(a path, not a "
                           r"dataset name\)"):
            _run(tmp_path / "o", missing, **{"input.format": "hf"})
    assert not (tmp_path / "o").exists()


def test_a_file_that_changes_during_the_run_is_detected(tmp_path):
    from pipelines.config import load_run_config
    from pipelines.steps.plan import plan_units
    from pipelines.steps.read import Reader
    from tests.pipelines.conftest import write_jsonl

    a = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in GOOD[:3]])
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": t} for t in GOOD[3:]])

    def read(policy, batch_bytes=10**9):
        cfg = load_run_config(None, base_overrides(tmp_path / "o", str(a), str(b),
                                                   **{"input.on_error": policy}))
        (unit,) = plan_units(cfg.input)
        with open(a, "a") as f:  # appended after planning, before the reader is done
            f.write(json.dumps({"text": "appended"}) + "\n")
        return list(Reader(cfg.input, batch_bytes)(unit))

    (batch,) = read("skip")
    assert batch.texts == GOOD[3:]  # a's records withdrawn: it is one reject
    assert batch.records == 1 + 2 and len(batch.doc_ids) == len(batch.index) == 2
    (rej,) = batch.rejects
    assert rej["file"] == str(a) and rej["reason"].startswith("changed while the run read it (")
    with pytest.raises(InputError, match=r"a\.jsonl: changed while the run read it"):
        read("fail")
    with pytest.raises(InputError, match="already went on, so the run stops"):
        read("skip", batch_bytes=10)  # its first records left in an earlier batch


# --- engines ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_private_ray_dies_with_a_killed_driver(tmp_path):
    """engine=ray without an address: kill -9 the driver while its Ray is up, and every Ray
    process it started (GCS, raylet, dashboard and runtime-env agents, workers) goes too."""
    import signal
    import time

    from tests.ray_cluster import loopback_env
    from pipelines.engines.ray_watchdog import ray_descendants
    from tests.pipelines.conftest import write_jsonl

    recs = [{"text": r["text"]} for r in english_records()] * 20
    data = write_jsonl(tmp_path / "big.jsonl", recs)
    driver = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", str(_empty_config(tmp_path)), "--quiet",
         "engine=ray", "ray.num_cpus=1", *base_overrides(tmp_path / "o", str(data))],
        env=loopback_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, ray_procs = time.monotonic() + 120, {}
        while time.monotonic() < deadline and driver.poll() is None:
            ray_procs.update(ray_descendants(driver.pid))
            if len(ray_procs) >= 4:  # gcs_server, raylet, both agents
                break
            time.sleep(0.2)
        assert len(ray_procs) >= 4, "Ray did not start"
        time.sleep(1.0)  # the watchdog's list is refreshed every 0.25 s
        ray_procs.update(ray_descendants(driver.pid))
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 15
        alive = list(ray_procs)
        while alive and time.monotonic() < deadline:
            time.sleep(0.5)
            alive = [p for p in alive if os.path.exists(f"/proc/{p}")
                     and open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z"]
        names = {p: open(f"/proc/{p}/cmdline", "rb").read()[:80] for p in alive
                 if os.path.exists(f"/proc/{p}")}
        assert not alive, f"Ray processes outlived the killed driver: {names}"
    finally:
        driver.kill()
        driver.wait()
    # the killed driver's lock and work files: resumed by the local engine, same bytes as a
    # run of its own
    from tests.pipelines.conftest import file_bytes

    assert _run(tmp_path / "o", data)["status"] == "complete"
    _run(tmp_path / "fresh", data)
    got, want = file_bytes(tmp_path / "o"), file_bytes(tmp_path / "fresh")
    assert {k: v for k, v in got.items() if k.endswith(".arrow")} == \
        {k: v for k, v in want.items() if k.endswith(".arrow")}
    assert not (tmp_path / "o" / ".fewtrunc.lock").exists()


def test_pack_change_over_an_unfinished_run_reuses_its_tokens(tmp_path, small):
    import signal

    from pipelines.infra.errors import ConfigError
    from tests.pipelines.conftest import file_bytes

    out = tmp_path / "o"
    args = base_overrides(out, str(small), **{"output.rows_per_shard": 8})
    killed = _cli("run", _empty_config(tmp_path), "--quiet", *args,
                  env={**os.environ, "FEWTRUNC_CRASH": "shard:1"})
    assert killed.returncode == -signal.SIGKILL
    assert (out / "_work" / "unit-00000.done.json").exists()  # killed while writing shards
    # another seq_len and shard size: the units are not tokenized again (unit:0 would crash)
    again = _cli("run", _empty_config(tmp_path), "--quiet", *args, "pack.seq_len=512",
                 "output.rows_per_shard=5", env={**os.environ, "FEWTRUNC_CRASH": "unit:0"})
    assert again.returncode == 0, again.stderr
    fresh = tmp_path / "fresh"
    _small_run(small, fresh, **{"pack.seq_len": 512, "output.rows_per_shard": 5})
    got, want = file_bytes(out), file_bytes(fresh)
    assert {k: v for k, v in got.items() if k.endswith(".arrow")} == \
        {k: v for k, v in want.items() if k.endswith(".arrow")}
    assert got["rejects.jsonl"] == want["rejects.jsonl"] and got["stats.json"] == want["stats.json"]
    # the tokens depend on the input and tokenizer: a change there is still refused
    killed = _cli("run", _empty_config(tmp_path), "--quiet", *base_overrides(
        tmp_path / "k", str(small)), env={**os.environ, "FEWTRUNC_CRASH": "shard:0"})
    with pytest.raises(ConfigError, match=r"unfinished run with another config "
                       r"\(tokenizer\.add_bos: False -> True"):
        _run(tmp_path / "k", small, **{"tokenizer.add_bos": "true"})


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs")
@pytest.mark.parametrize("engine", ["engine=ray ray.num_cpus=1", "engine=beam"])
def test_no_space_left_on_ray_and_beam_is_one_line(tmp_path, small, engine):
    """The OSError comes back from a worker wrapped in Ray's error (as its cause) or in Beam's
    (as text only): still one clear line."""
    from tests.ray_cluster import loopback_env

    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "size=96k")
    try:
        r = subprocess.run([sys.executable, "-m", "pipelines.cli", "run",
                            str(_empty_config(tmp_path)), "--quiet", *engine.split(),
                            *base_overrides(disk / "o", str(small))],
                           capture_output=True, text=True, env=loopback_env(), timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("fewtrunc run: ")]
        assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
        assert r.stderr.rstrip().splitlines()[-1] == lines[0]  # the last word
        assert lines[0].startswith("fewtrunc run: error: cannot write ")
        assert "No space left on device" in lines[0]
        if "ray" in engine:  # Beam's own worker harness logs the worker's traceback
            assert "Traceback" not in r.stderr, r.stderr[-3000:]
    finally:
        _umount(disk)
